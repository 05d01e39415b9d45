from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi.app import App
from microasgi.middleware import HTTPSRedirectMiddleware, Middleware
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response
from microasgi.testing import TestClient, WebSocketDenied
from microasgi.websockets import WebSocket

ClientFactory = Callable[..., TestClient]


def make_app(**options: Any) -> App:
    app = App(middleware=[Middleware(HTTPSRedirectMiddleware, **options)])

    @app.get("/{path:path}")
    async def index(request: Request, path: str) -> Response:
        return PlainTextResponse(str(request.url), headers={"strict-transport-security": "x"})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.url.scheme)
        await websocket.close()

    return app


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("http://testserver/", "https://testserver/"),
        ("http://testserver/a%20b/c?x=1&y=%2F", "https://testserver/a%20b/c?x=1&y=%2F"),
        ("http://testserver:80/path", "https://testserver/path"),
        ("http://testserver:8080/path", "https://testserver:8080/path"),
        ("http://[::1]:80/", "https://[::1]/"),
        ("http://[::1]:8080/", "https://[::1]:8080/"),
    ],
)
def test_http_is_redirected(client_factory: ClientFactory, url: str, location: str) -> None:
    with client_factory(make_app(), follow_redirects=False) as client:
        response = client.get(url)
        assert response.status_code == 307
        assert response.headers["location"] == location


@pytest.mark.parametrize(
    ("host", "location"),
    [
        ("example.com:80", "https://example.com/p"),
        ("[::1]:80", "https://[::1]/p"),
        ("example.com:8000", "https://example.com:8000/p"),
    ],
)
def test_the_default_port_is_dropped(
    client_factory: ClientFactory, host: str, location: str
) -> None:
    with client_factory(make_app(), follow_redirects=False) as client:
        assert client.get("/p", headers={"host": host}).headers["location"] == location


def test_https_is_served_without_hsts_by_default(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), base_url="https://testserver") as client:
        response = client.get("/page")
        assert response.text == "https://testserver/page"
        assert response.headers["strict-transport-security"] == "x"


def test_hsts_header(client_factory: ClientFactory) -> None:
    app = make_app(hsts_max_age=31536000, hsts_include_subdomains=True, hsts_preload=True)
    with client_factory(app, base_url="https://testserver") as client:
        response = client.get("/")
        assert response.headers.get_list("strict-transport-security") == [
            "max-age=31536000; includeSubDomains; preload"
        ]
    with client_factory(make_app(hsts_max_age=60), base_url="https://testserver") as client:
        assert client.get("/").headers["strict-transport-security"] == "max-age=60"
    with client_factory(make_app(hsts_max_age=60), follow_redirects=False) as client:
        assert "strict-transport-security" not in client.get("/").headers


def test_websockets_are_redirected_to_wss(client_factory: ClientFactory) -> None:
    with client_factory(make_app(hsts_max_age=60)) as client:
        with pytest.raises(WebSocketDenied) as denied:
            with client.websocket_connect("ws://testserver/ws?room=1"):
                pass
        assert denied.value.status_code == 307
        assert denied.value.headers["location"] == "wss://testserver/ws?room=1"
        with client.websocket_connect("wss://testserver/ws") as session:
            assert session.receive_text() == "wss"


@pytest.mark.parametrize(
    "options",
    [
        {"hsts_max_age": -1},
        {"hsts_include_subdomains": True},
        {"hsts_preload": True},
    ],
)
def test_bad_hsts_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="hsts_max_age"):
        HTTPSRedirectMiddleware(PlainTextResponse("x"), **options)
