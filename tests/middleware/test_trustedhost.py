from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi.app import App
from microasgi.middleware import Middleware, TrustedHostMiddleware
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse
from microasgi.testing import TestClient, WebSocketDenied
from microasgi.websockets import WebSocket

from . import Server, http_scope

ClientFactory = Callable[..., TestClient]


def make_app(*hosts: str, **options: Any) -> App:
    app = App(middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts, **options)])

    @app.get("/{path:path}")
    async def index(request: Request, path: str) -> str:
        return f"hello {request.url.hostname}"

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("in")
        await websocket.close()

    return app


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "EXAMPLE.com",
        "example.com:8000",
        "example.com.",
        "example.com.:8000",
        "example.com:0",
        "example.com:65535",
        "example.com:00080",
    ],
)
def test_allowed_hosts(client_factory: ClientFactory, host: str) -> None:
    with client_factory(make_app("example.com")) as client:
        response = client.get("/", headers={"host": host})
        assert response.status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "exampleXcom",
        "example.com.evil.com",
        "evil.com",
        "evilexample.com",
        "sub.example.com",
        "example.com@evil.com",
        "example.com/evil",
        "example.com:80:80",
        "",
        # NOTE: request.url falls back to the server's address for these, so they must
        # not pass as example.com: one trailing dot (the DNS root) at most, ports to 65535.
        "example.com..",
        "example.com...:80",
        "example.com:65536",
        "example.com:99999",
        "example.com:",
        "example.com:8o",
        "example.com:-1",
        "example.com:+80",
        ".",
        "[::1]:70000",
    ],
)
def test_bypass_attempts_are_refused(client_factory: ClientFactory, host: str) -> None:
    with client_factory(make_app("example.com")) as client:
        response = client.get("/", headers={"host": host})
        assert response.status_code == 400
        assert response.json() == {"detail": "Invalid host header"}


@pytest.mark.anyio
async def test_no_host_header_with_a_forwarded_host_is_refused() -> None:
    app = make_app("example.com")
    server = Server()
    scope = http_scope("/", headers=[("x-forwarded-host", "example.com")])
    await app(scope, server.receive, server.send)
    assert server.status == 400


def test_a_forwarded_host_is_never_read(client_factory: ClientFactory) -> None:
    with client_factory(make_app("example.com")) as client:
        headers = {"host": "evil.com", "x-forwarded-host": "example.com"}
        assert client.get("/", headers=headers).status_code == 400


def test_wildcard_subdomains(client_factory: ClientFactory) -> None:
    with client_factory(make_app("*.example.com")) as client:
        assert client.get("/", headers={"host": "api.example.com"}).status_code == 200
        assert client.get("/", headers={"host": "a.b.example.com"}).status_code == 200
        assert client.get("/", headers={"host": "api.example.com.:443"}).status_code == 200
        for host in (
            "example.com",
            "evil.com",
            "api.example.com.evil",
            "apiXexample.com",
            "api.example.com..",
            "api.example.com:99999",
            "..example.com",
        ):
            assert client.get("/", headers={"host": host}).status_code == 400, host


def test_underscores_in_host_names(client_factory: ClientFactory) -> None:
    # NOTE: docker-compose service names ("web_app") and some internal names carry them.
    with client_factory(make_app("web_app", "*.example.com")) as client:
        for host in ("web_app", "WEB_APP:8000", "web_app.", "a_b.example.com", "_x.example.com"):
            response = client.get("/", headers={"host": host})
            assert response.status_code == 200, host
            assert response.text == f"hello {host.lower().partition(':')[0]}"
        for host in (
            "web_app..",
            "web_app:",
            "web_app:99999",
            "web-app",
            "webapp",
            "web_app.evil.com",
            "a_b.example.com..",
            "u@web_app",
            "web_app/x",
            "web_app?x",
            "web_app#x",
            "a_b.example.com:99999",
        ):
            assert client.get("/", headers={"host": host}).status_code == 400, host
    with client_factory(make_app("www.web_app"), follow_redirects=False) as client:
        response = client.get("/", headers={"host": "web_app"})
        assert response.status_code == 307
        assert response.headers["location"] == "http://www.web_app/"


def test_www_redirect_refuses_invalid_ports_and_dots(client_factory: ClientFactory) -> None:
    with client_factory(make_app("www.example.com"), follow_redirects=False) as client:
        for host in ("example.com:99999", "example.com.."):
            assert client.get("/", headers={"host": host}).status_code == 400, host


def test_any_host(client_factory: ClientFactory) -> None:
    with client_factory(make_app("*")) as client:
        assert client.get("/", headers={"host": "whatever.test"}).status_code == 200


def test_ipv6_hosts(client_factory: ClientFactory) -> None:
    with client_factory(make_app("[::1]")) as client:
        assert client.get("/", headers={"host": "[::1]:8000"}).status_code == 200
        assert client.get("/", headers={"host": "[::2]"}).status_code == 400


def test_www_redirect(client_factory: ClientFactory) -> None:
    with client_factory(make_app("www.example.com"), follow_redirects=False) as client:
        response = client.get("/shop/items?q=1", headers={"host": "example.com"})
        assert response.status_code == 307
        assert response.headers["location"] == "http://www.example.com/shop/items?q=1"
        response = client.get("/", headers={"host": "example.com:8080"})
        assert response.headers["location"] == "http://www.example.com:8080/"
    app = make_app("www.example.com", www_redirect=False)
    with client_factory(app, follow_redirects=False) as client:
        assert client.get("/", headers={"host": "example.com"}).status_code == 400


def test_websocket_handshakes_are_checked(client_factory: ClientFactory) -> None:
    with client_factory(make_app("example.com")) as client:
        with client.websocket_connect("/ws", headers={"host": "example.com"}) as session:
            assert session.receive_text() == "in"
        with pytest.raises(WebSocketDenied) as denied:
            with client.websocket_connect("/ws", headers={"host": "evil.com"}):
                pass
        assert denied.value.status_code == 400
    with client_factory(make_app("www.example.com")) as client:
        with pytest.raises(WebSocketDenied) as denied:
            with client.websocket_connect("/ws", headers={"host": "example.com"}):
                pass
        assert denied.value.status_code == 307
        assert denied.value.headers["location"] == "ws://www.example.com/ws"


@pytest.mark.parametrize(
    "pattern",
    ["exa*mple.com", "*example.com", "example.com/x", "a b", "*.*.com", "a_b..com", "u@web_app"],
)
def test_invalid_patterns_are_refused_at_setup(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"'\*\.example\.com'"):
        TrustedHostMiddleware(PlainTextResponse("x"), allowed_hosts=[pattern])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "raw_path", "root_path", "location"),
    [
        # NOTE: scope["path"] already holds root_path (ASGI, and uvicorn's --root-path).
        ("/api/items", b"/api/items", "/api", "http://www.example.com/api/items?q=1"),
        # NOTE: scope["path"] is decoded: an escaped "?" must stay in the path.
        ("/a?b c", b"/a%3Fb%20c", "", "http://www.example.com/a%3Fb%20c?q=1"),
    ],
)
async def test_www_redirect_keeps_the_path_as_sent(
    path: str, raw_path: bytes, root_path: str, location: str
) -> None:
    scope = http_scope(path, headers=[("host", "example.com")], query_string=b"q=1")
    scope["raw_path"] = raw_path
    scope["root_path"] = root_path
    server = Server()
    app = TrustedHostMiddleware(PlainTextResponse("x"), allowed_hosts=["www.example.com"])
    await app(scope, server.receive, server.send)
    assert server.status == 307
    assert server.headers["location"] == location


@pytest.mark.parametrize("hosts", ["localhost", "example.com"])
def test_a_string_where_a_list_belongs_is_refused(hosts: str) -> None:
    with pytest.raises(TypeError, match="allowed_hosts takes a list"):
        TrustedHostMiddleware(PlainTextResponse("x"), allowed_hosts=hosts)


def test_a_lone_star_string_means_any_host(client_factory: ClientFactory) -> None:
    app = App(middleware=[Middleware(TrustedHostMiddleware, allowed_hosts="*")])

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client:
        assert client.get("/", headers={"host": "anything.example"}).text == "ok"
