from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.middleware import Middleware, TimeoutMiddleware
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response, StreamingResponse
from microasgi.testing import TestClient
from microasgi.websockets import WebSocket

from . import Server, http_scope

ClientFactory = Callable[..., TestClient]


def make_app(timeout: float, cleaned: list[str]) -> App:
    app = App(middleware=[Middleware(TimeoutMiddleware, timeout=timeout)])

    @app.get("/slow")
    async def slow(request: Request) -> str:
        try:
            await anyio.sleep(5)
        finally:
            cleaned.append("slow")
        return "never"

    @app.get("/fast")
    async def fast(request: Request) -> Response:
        async def background() -> None:
            await anyio.sleep(0.2)
            cleaned.append("background finished")

        return PlainTextResponse("fast", background=BackgroundTask(background))

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield b"first"
                await anyio.sleep(5)
                yield b"never"
            finally:
                cleaned.append("stream")

        return StreamingResponse(chunks())

    @app.get("/own", middleware=[Middleware(TimeoutMiddleware, timeout=5)])
    async def own(request: Request) -> str:
        await anyio.sleep(0.2)
        return "own deadline"

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await anyio.sleep(0.2)
        await websocket.send_text("not timed")
        await websocket.close()

    return app


def test_a_slow_handler_gets_504(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cleaned: list[str] = []
    with client_factory(make_app(0.05, cleaned)) as client:
        with caplog.at_level(logging.WARNING, "microasgi"):
            response = client.get("/slow")
    assert response.status_code == 504
    assert response.json() == {"detail": "The request took longer than 0.05 seconds"}
    assert cleaned == ["slow"]
    assert "GET /slow was cancelled after 0.05s; answered 504" in caplog.text


def test_a_fast_handler_and_its_background_task(client_factory: ClientFactory) -> None:
    cleaned: list[str] = []
    with client_factory(make_app(0.1, cleaned)) as client:
        assert client.get("/fast").text == "fast"
    assert cleaned == ["background finished"]


@pytest.mark.anyio
async def test_a_started_stream_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    cleaned: list[str] = []
    server = Server()
    with caplog.at_level(logging.WARNING, "microasgi"), anyio.fail_after(3):
        await make_app(0.05, cleaned)(http_scope("/stream"), server.receive, server.send)
    assert server.events == ["http.response.start", "body:first"]
    assert server.messages[-1]["more_body"] is True
    assert cleaned == ["stream"]
    assert "response under way; the stream was cut" in caplog.text


def test_a_route_with_its_own_deadline(client_factory: ClientFactory) -> None:
    with client_factory(make_app(0.05, [])) as client:
        assert client.get("/own").status_code == 504
    with client_factory(make_app(1, [])) as client:
        assert client.get("/own").text == "own deadline"


def test_websockets_are_not_timed(client_factory: ClientFactory) -> None:
    with client_factory(make_app(0.05, [])) as client:
        with client.websocket_connect("/ws") as session:
            assert session.receive_text() == "not timed"


def test_the_log_line_is_escaped(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(middleware=[Middleware(TimeoutMiddleware, timeout=0.01)])

    @app.get("/{name}")
    async def slow(request: Request, name: str) -> str:
        await anyio.sleep(1)
        return name

    with client_factory(app) as client, caplog.at_level(logging.WARNING, "microasgi"):
        assert client.get("/%1b[31mred%0d%0aFAKE").status_code == 504
    assert "\x1b" not in caplog.text
    assert "\r\n" not in caplog.text
    assert "\\x1b[31mred\\r\\nFAKE" in caplog.text


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_the_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        TimeoutMiddleware(PlainTextResponse("x"), timeout=timeout)


@pytest.mark.parametrize("path", ["/sync", "/blocking"])
def test_a_handler_that_overran_without_a_checkpoint_gets_504(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    # NOTE: a worker thread cannot be cancelled, nor can code that never awaits: the
    # deadline passes while they run, and their response must not go out as a 200 that
    # is then cut at its first body chunk.
    app = App(middleware=[Middleware(TimeoutMiddleware, timeout=0.05)])

    @app.get("/sync")
    def sync_handler(request: Request) -> str:
        time.sleep(0.2)
        return "late"

    @app.get("/blocking")
    async def blocking(request: Request) -> str:
        time.sleep(0.2)
        return "late"

    with client_factory(app) as client, caplog.at_level(logging.WARNING, "microasgi"):
        response = client.get(path)
    assert response.status_code == 504
    assert "answered 504" in caplog.text


@pytest.mark.anyio
async def test_a_method_with_escape_sequences_is_escaped_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # HTTP/2 servers (hypercorn) may pass on a method holding ESC; HTTP/1.1 ones refuse it.
    async def slow(scope: object, receive: object, send: object) -> None:
        await anyio.sleep(1)

    server = Server()
    with caplog.at_level(logging.WARNING, "microasgi"):
        await TimeoutMiddleware(slow, timeout=0.01)(
            http_scope("/", method="GET\x1b[2J\x1b[31mFAKE"), server.receive, server.send
        )
    assert server.status == 504
    assert "\x1b" not in caplog.text
    assert "GET\\x1b[2J\\x1b[31mFAKE /" in caplog.text
