"""@app.middleware("http"): the same-task adapter, and one regression test per known
failure of the task-based design (streaming, contextvars, body, background, disconnect)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from types import coroutine
from typing import Any

import anyio
import pytest

from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.exceptions import HTTPException
from microasgi.limits import Limits
from microasgi.middleware import Middleware
from microasgi.middleware.http import CallNext, HTTPMiddleware
from microasgi.requests import Request
from microasgi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from microasgi.sse import EventSourceResponse
from microasgi.testing import TestClient
from microasgi.types import Message, Receive, Scope, Send
from microasgi.websockets import WebSocket

from . import Server, http_scope

ClientFactory = Callable[..., TestClient]

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


async def pass_through(request: Request, call_next: CallNext) -> Response:
    return await call_next(request)


def test_headers_and_status_can_be_changed(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def timing(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers["x-time"] = "12ms"
        if request.query_params.get("teapot"):
            response.status_code = 418
        return response

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    with client_factory(app) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert response.text == "hello"
        assert response.headers["x-time"] == "12ms"
        assert response.headers["content-length"] == "5"
        assert client.get("/?teapot=1").status_code == 418


def test_only_the_status_changed(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def created(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.status_code = 201
        return response

    @app.get("/")
    async def index(request: Request) -> str:
        return "made"

    with client_factory(app) as client:
        response = client.get("/")
        assert (response.status_code, response.text) == (201, "made")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("read_first", [False, True])
def test_a_status_made_bodiless_sends_no_body(
    client_factory: ClientFactory, read_first: bool
) -> None:
    app = App()
    ran: list[str] = []

    @app.middleware("http")
    async def not_modified(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        if request.headers.get("if-none-match") != response.headers.get("etag"):
            return response
        if read_first:
            await response.body_iterator.__anext__()
        response.status_code = 304
        return response

    @app.get("/")
    async def index(request: Request) -> Response:
        task = BackgroundTask(ran.append, "background")
        return PlainTextResponse("hello", headers={"etag": '"v1"'}, background=task)

    with client_factory(app) as client:
        response = client.get("/", headers={"if-none-match": '"v1"'})
        assert (response.status_code, response.content) == (304, b"")
        assert "content-length" not in response.headers
        assert response.headers["etag"] == '"v1"'
        assert client.get("/").text == "hello"
    assert ran == ["background"] * 2


def test_a_shared_response_is_not_changed(client_factory: ClientFactory) -> None:
    shared = PlainTextResponse("shared")
    app = App()

    @app.middleware("http")
    async def stamp(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers.append("x-stamp", "1")
        response.set_cookie("seen", "yes")
        return response

    @app.get("/")
    async def index(request: Request) -> Response:
        return shared

    with client_factory(app) as client:
        for _ in range(3):
            response = client.get("/")
            assert response.headers.get_list("x-stamp") == ["1"]
            assert response.cookies["seen"] == "yes"
    assert [name for name, _ in shared.raw_headers] == [b"content-length", b"content-type"]


@pytest.mark.parametrize("path", ["/missing", "/upload"])
def test_a_form_parsed_in_middleware_is_closed(client_factory: ClientFactory, path: str) -> None:
    """Its spooled files are closed once the response is done, whether a route ran or not."""
    app = App(limits=Limits(spool_max_size=10))
    uploads: list[Any] = []

    @app.middleware("http")
    async def read_form(request: Request, call_next: CallNext) -> Response:
        uploads.append((await request.form())["f"])
        return await call_next(request)

    @app.post("/upload")
    async def upload() -> str:
        return "ok"

    with client_factory(app) as client:
        response = client.post(path, files={"f": ("x.txt", b"hello world, a long file")})
    assert response.status_code == (404 if path == "/missing" else 200)
    (upload_file,) = uploads
    assert upload_file.file.closed


def test_first_added_is_outermost(client_factory: ClientFactory) -> None:
    app = App()
    order: list[str] = []

    @app.middleware("http")
    async def outer(request: Request, call_next: CallNext) -> Response:
        order.append("outer in")
        response = await call_next(request)
        order.append("outer out")
        return response

    @app.middleware("http")
    async def inner(request: Request, call_next: CallNext) -> Response:
        order.append("inner in")
        response = await call_next(request)
        order.append("inner out")
        return response

    @app.get("/")
    async def index(request: Request) -> str:
        order.append("handler")
        return "ok"

    with client_factory(app) as client:
        assert client.get("/").text == "ok"
    assert order == ["outer in", "inner in", "handler", "inner out", "outer out"]


def test_the_decorator_returns_the_function_and_checks_the_kind() -> None:
    app = App()
    assert app.middleware("http")(pass_through) is pass_through
    with pytest.raises(ValueError, match='"http" only'):
        app.middleware("websocket")


def test_subclass_with_a_dispatch_method(client_factory: ClientFactory) -> None:
    class Tagging(HTTPMiddleware):
        async def dispatch(self, request: Request, call_next: CallNext) -> Response:
            response = await call_next(request)
            response.headers["x-tag"] = "sub"
            return response

    app = App(middleware=[Middleware(Tagging)])

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client:
        assert client.get("/").headers["x-tag"] == "sub"


def test_without_a_dispatch_function(client_factory: ClientFactory) -> None:
    app = App(middleware=[Middleware(HTTPMiddleware)])
    with client_factory(app) as client, pytest.raises(NotImplementedError, match="dispatch"):
        client.get("/")


# --- streaming (Kludex/starlette#1012: the body was buffered) ------------------------------


@pytest.mark.anyio
async def test_streaming_passes_chunk_by_chunk() -> None:
    app = App()
    first_chunk_sent = anyio.Event()
    finished = []

    @app.middleware("http")
    async def tag(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers["x-tag"] = "1"
        return response

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            # NOTE: only the client side sets this, once the first chunk has reached it;
            # a middleware that buffered the body would wait here for ever.
            await first_chunk_sent.wait()
            yield b"second"
            finished.append(True)

        return StreamingResponse(chunks())

    async def on_message(message: Message) -> None:
        if message.get("body") == b"first":
            assert not finished
            first_chunk_sent.set()

    server = Server(on_message=on_message)
    with anyio.fail_after(5):
        await app(http_scope("/stream"), server.receive, server.send)
    assert server.events == [
        "http.response.start",
        "body:first",
        "body:second",
        "body:",
        "complete",
    ]
    assert server.headers["x-tag"] == "1"


@pytest.mark.anyio
async def test_streaming_through_the_body_iterator() -> None:
    app = App()
    first_chunk_sent = anyio.Event()

    @app.middleware("http")
    async def shout(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)

        async def upper() -> AsyncIterator[bytes]:
            async for chunk in response.body_iterator:
                yield chunk.upper()

        return StreamingResponse(upper(), headers={"x-shout": "yes"})

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await first_chunk_sent.wait()
            yield b""
            yield b"second"

        return StreamingResponse(chunks())

    async def on_message(message: Message) -> None:
        if message.get("body") == b"FIRST":
            first_chunk_sent.set()

    for spec_version in ("2.4", "2.3"):
        first_chunk_sent = anyio.Event()
        server = Server(on_message=on_message)
        with anyio.fail_after(5):
            await app(http_scope("/stream", spec_version=spec_version), server.receive, server.send)
        assert server.body == b"FIRSTSECOND"
        assert server.headers["x-shout"] == "yes"


def test_the_body_can_be_read_and_replaced(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def envelope(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        body = b"".join([chunk async for chunk in response.body_iterator])
        return JSONResponse({"wrapped": body.decode()}, status_code=response.status_code)

    @app.get("/")
    async def index(request: Request) -> str:
        return "inner"

    with client_factory(app) as client:
        assert client.get("/").json() == {"wrapped": "inner"}


def test_part_of_the_body_read_then_the_response_returned(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def peek(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        iterator = response.body_iterator
        assert iterator is response.body_iterator
        first = await iterator.__anext__()
        response.headers["x-first"] = first.decode()
        return response

    @app.get("/")
    async def index(request: Request) -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b", b"c"]))

    with client_factory(app) as client:
        response = client.get("/")
        assert response.text == "bc"
        assert response.headers["x-first"] == "a"


def test_the_body_iterator_cannot_be_replaced(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def replace(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.body_iterator = iter([b"x"])
        return response

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client, pytest.raises(AttributeError, match="StreamingResponse"):
        client.get("/")


# --- contextvars (Kludex/starlette#1525) ------------------------------------------------


def test_contextvars_are_shared_both_ways(client_factory: ClientFactory) -> None:
    app = App()
    seen: dict[str, str] = {}

    @app.middleware("http")
    async def outer(request: Request, call_next: CallNext) -> Response:
        request_var.set("set by the middleware")
        response = await call_next(request)
        seen["middleware"] = request_var.get()
        return response

    def background() -> None:
        seen["background"] = request_var.get()

    @app.get("/")
    async def index(request: Request) -> Response:
        seen["handler"] = request_var.get()
        request_var.set("set by the handler")
        return PlainTextResponse("ok", background=BackgroundTask(background))

    with client_factory(app) as client:
        assert client.get("/").text == "ok"
    assert seen == {
        "handler": "set by the middleware",
        "middleware": "set by the handler",
        "background": "set by the handler",
    }


def test_contextvars_across_two_middleware(client_factory: ClientFactory) -> None:
    app = App()
    seen: list[str] = []

    @app.middleware("http")
    async def setter(request: Request, call_next: CallNext) -> Response:
        request_var.set("outer")
        return await call_next(request)

    @app.middleware("http")
    async def reader(request: Request, call_next: CallNext) -> Response:
        seen.append(request_var.get())
        response = await call_next(request)
        request_var.set("inner")
        return response

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client:
        client.get("/")
    assert seen == ["outer"]


# --- the request body (Kludex/starlette#495, #2555) --------------------------------------


def test_the_handler_reads_a_body_the_middleware_read(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def audit(request: Request, call_next: CallNext) -> Response:
        body = await request.body()
        response = await call_next(request)
        response.headers["x-audited"] = str(len(body))
        return response

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    with client_factory(app) as client:
        response = client.post("/echo", json={"a": [1, 2, 3]})
        assert response.json() == {"a": [1, 2, 3]}
        assert response.headers["x-audited"] == str(len(b'{"a":[1,2,3]}'))


def test_a_pure_asgi_app_below_gets_the_body_replayed(client_factory: ClientFactory) -> None:
    received: list[Message] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            received.append(message)
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": received[0]["body"]})

    async def read_first(request: Request, call_next: CallNext) -> Response:
        assert await request.body() == b"x" * 100_000
        return await call_next(request)

    client = client_factory(HTTPMiddleware(raw_app, read_first))
    response = client.post("/", content=b"x" * 100_000)
    assert response.content == b"x" * 100_000
    assert len(received) == 1


def test_body_read_in_two_middleware_is_replayed_once(client_factory: ClientFactory) -> None:
    messages: list[Message] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": messages[0]["body"]})

    async def read(request: Request, call_next: CallNext) -> Response:
        assert await request.body() == b"data"
        return await call_next(request)

    stack = HTTPMiddleware(HTTPMiddleware(raw_app, read), read)
    assert client_factory(stack).post("/", content=b"data").content == b"data"
    assert messages == [{"type": "http.request", "body": b"data", "more_body": False}]


def test_a_body_streamed_above_is_empty_below(client_factory: ClientFactory) -> None:
    app = App()
    seen: list[bytes] = []

    @app.middleware("http")
    async def stream_it(request: Request, call_next: CallNext) -> Response:
        seen.append(b"".join([chunk async for chunk in request.stream()]))
        return await call_next(request)

    @app.post("/")
    async def index(request: Request) -> bytes:
        return b"below: " + await request.body()

    with client_factory(app) as client:
        assert client.post("/", content=b"abc").content == b"below: "
    assert seen == [b"abc"]


def test_a_form_read_above_is_read_below(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def form_first(request: Request, call_next: CallNext) -> Response:
        form = await request.form()
        response = await call_next(request)
        response.headers["x-name"] = str(form["name"])
        return response

    @app.post("/")
    async def index(request: Request) -> StreamingResponse:
        form = await request.form()

        async def chunks() -> AsyncIterator[str]:
            yield f"hello {form['name']}"

        return StreamingResponse(chunks())

    with client_factory(app) as client:
        response = client.post("/", data={"name": "ann"})
        assert (response.text, response.headers["x-name"]) == ("hello ann", "ann")


@pytest.mark.anyio
async def test_messages_buffered_by_a_disconnect_poll_are_replayed() -> None:
    app = App()

    @app.middleware("http")
    async def poll(request: Request, call_next: CallNext) -> Response:
        assert not await request.is_disconnected()
        return await call_next(request)

    @app.post("/")
    async def index(request: Request) -> bytes:
        return await request.body()

    server = Server(body=b"polled")
    with anyio.fail_after(5):
        await app(http_scope("/", "POST"), server.receive, server.send)
    assert server.body == b"polled"


# --- background tasks (Kludex/starlette#919) ----------------------------------------------


@pytest.mark.anyio
async def test_background_tasks_run_after_the_response() -> None:
    app = App()
    app.middleware("http")(pass_through)

    async def task() -> None:
        server.events.append("background")

    @app.get("/")
    async def index(request: Request) -> Response:
        return PlainTextResponse("done", background=BackgroundTask(task))

    server = Server()
    await app(http_scope("/"), server.receive, server.send)
    assert server.events == ["http.response.start", "body:done", "complete", "background"]


@pytest.mark.anyio
async def test_background_tasks_run_after_a_replaced_body() -> None:
    app = App()

    @app.middleware("http")
    async def upper(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        body = b"".join([chunk async for chunk in response.body_iterator])

        async def own_task() -> None:
            server.events.append("middleware background")

        return Response(body.upper(), background=BackgroundTask(own_task))

    async def task() -> None:
        server.events.append("handler background")

    @app.get("/")
    async def index(request: Request) -> Response:
        return PlainTextResponse("done", background=BackgroundTask(task))

    server = Server()
    await app(http_scope("/"), server.receive, server.send)
    assert server.events == [
        "http.response.start",
        "body:DONE",
        "complete",
        "middleware background",
        "handler background",
    ]


def test_a_background_task_on_the_returned_response(client_factory: ClientFactory) -> None:
    app = App()
    ran: list[str] = []

    @app.middleware("http")
    async def add_task(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.background = BackgroundTask(ran.append, "middleware")
        return response

    @app.get("/")
    async def index(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(ran.append, "handler"))

    with client_factory(app) as client:
        assert client.get("/").text == "ok"
    assert ran == ["handler", "middleware"]


# --- disconnects -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_disconnect_reaches_the_handler() -> None:
    app = App()
    app.middleware("http")(pass_through)
    seen: list[bool] = []

    @app.get("/")
    async def index(request: Request) -> str:
        await request.body()
        server.disconnected.set()
        seen.append(await request.is_disconnected())
        message = await request.receive()
        return str(message["type"])

    server = Server()
    await app(http_scope("/"), server.receive, server.send)
    assert seen == [True]


@pytest.mark.anyio
async def test_a_failing_send_reaches_the_streaming_handler() -> None:
    app = App()
    app.middleware("http")(pass_through)
    closed: list[bool] = []
    ran: list[str] = []

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                for _ in range(100):
                    yield b"chunk"
            finally:
                closed.append(True)

        return StreamingResponse(chunks(), background=BackgroundTask(ran.append, "bg"))

    async def gone(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client went away")

    server = Server(on_message=gone)
    await app(http_scope("/stream"), server.receive, server.send)
    assert closed == [True]
    assert ran == []
    assert server.events == ["http.response.start", "body:chunk"]


@pytest.mark.anyio
async def test_a_failing_start_reaches_the_app_below() -> None:
    outcomes: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError:
            outcomes.append("start failed")
            return

    async def gone(message: Message) -> None:
        raise OSError("client went away")

    server = Server(on_message=gone)
    await HTTPMiddleware(below, pass_through)(http_scope(), server.receive, server.send)
    assert outcomes == ["start failed"]


# --- short-circuits, errors ---------------------------------------------------------------


def test_the_middleware_answers_itself(client_factory: ClientFactory) -> None:
    app = App()
    called: list[bool] = []

    @app.middleware("http")
    async def gate(request: Request, call_next: CallNext) -> Response:
        if "x-key" not in request.headers:
            return JSONResponse({"detail": "No key"}, status_code=401)
        return await call_next(request)

    @app.get("/")
    async def index(request: Request) -> str:
        called.append(True)
        return "secret"

    with client_factory(app) as client:
        response = client.get("/")
        assert (response.status_code, response.json()) == (401, {"detail": "No key"})
        assert called == []
        assert client.get("/", headers={"x-key": "1"}).text == "secret"
        assert called == [True]


def test_exceptions_meet_the_exception_handlers_inside(client_factory: ClientFactory) -> None:
    class OutOfStock(Exception):
        pass

    app = App()

    @app.exception_handler(OutOfStock)
    async def out_of_stock(request: Request, exc: OutOfStock) -> JSONResponse:
        return JSONResponse({"detail": "out of stock"}, status_code=409)

    @app.middleware("http")
    async def tag(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.headers["x-tag"] = str(response.status_code)
        return response

    @app.get("/stock")
    async def stock(request: Request) -> str:
        raise OutOfStock

    @app.get("/missing")
    async def missing(request: Request) -> str:
        raise HTTPException(404, "No such thing")

    @app.get("/crash")
    async def crash(request: Request) -> str:
        raise RuntimeError("boom")

    with client_factory(app, raise_server_exceptions=False) as client:
        response = client.get("/stock")
        assert (response.status_code, response.headers["x-tag"]) == (409, "409")
        response = client.get("/missing")
        assert response.json() == {"detail": "No such thing"}
        assert response.headers["x-tag"] == "404"
        response = client.get("/crash")
        assert (response.status_code, response.headers["x-tag"]) == (500, "500")
    with client_factory(app) as client, pytest.raises(RuntimeError, match="boom"):
        client.get("/crash")


def test_an_unhandled_error_is_logged_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    app.middleware("http")(pass_through)

    @app.get("/crash")
    async def crash(request: Request) -> str:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app, raise_server_exceptions=False) as client:
            assert client.get("/crash").status_code == 500
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_route_level_middleware_sees_the_exception(client_factory: ClientFactory) -> None:
    app = App()
    seen: list[str] = []

    async def watch(request: Request, call_next: CallNext) -> Response:
        try:
            return await call_next(request)
        except HTTPException as exc:
            seen.append(str(exc.detail))
            raise

    @app.get("/x", middleware=[Middleware(HTTPMiddleware, dispatch=watch)])
    async def x(request: Request) -> str:
        raise HTTPException(403, "no")

    with client_factory(app) as client:
        assert client.get("/x").status_code == 403
    assert seen == ["no"]


async def _below_with_cleanup(scope: Scope, receive: Receive, send: Send) -> None:
    """Sends a start and two body chunks; notes in scope["cleaned"] when it is stopped."""
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"below", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        scope["cleaned"].append(True)


def _cleanup_scope(spec_version: str = "2.4") -> Scope:
    scope = http_scope(spec_version=spec_version)
    scope["cleaned"] = []
    return scope


@pytest.mark.anyio
async def test_an_error_in_the_middleware_after_call_next() -> None:
    async def broken(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        raise ValueError("middleware bug")

    scope = _cleanup_scope()
    server = Server()
    with pytest.raises(ValueError, match="middleware bug"):
        await HTTPMiddleware(_below_with_cleanup, broken)(scope, server.receive, server.send)
    assert scope["cleaned"] == [True]
    assert server.messages == []


def test_an_error_in_the_middleware_is_a_500(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def broken(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        raise ValueError("middleware bug")

    @app.get("/")
    async def index(request: Request) -> str:
        return "never sent"

    with client_factory(app, raise_server_exceptions=False) as client:
        response = client.get("/")
        assert (response.status_code, response.text) == (500, "Internal Server Error")


@pytest.mark.anyio
async def test_a_replacement_response_discards_the_one_below() -> None:
    async def replace(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        return PlainTextResponse("replaced")

    app = App()
    ran: list[str] = []
    app.middleware("http")(replace)

    @app.get("/")
    async def index(request: Request) -> Response:
        return PlainTextResponse("below", background=BackgroundTask(ran.append, "bg"))

    for spec_version in ("2.4", "2.3"):
        scope = _cleanup_scope(spec_version)
        server = Server()
        await HTTPMiddleware(_below_with_cleanup, replace)(scope, server.receive, server.send)
        assert server.body == b"replaced"
        assert scope["cleaned"] == [True]
        server = Server()
        await app(http_scope(spec_version=spec_version), server.receive, server.send)
        assert server.body == b"replaced"
    assert ran == []


@pytest.mark.anyio
async def test_a_partly_read_body_then_a_replacement() -> None:
    async def replace(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        first = await response.body_iterator.__anext__()
        return PlainTextResponse(first.upper())

    scope = _cleanup_scope()
    server = Server()
    await HTTPMiddleware(_below_with_cleanup, replace)(scope, server.receive, server.send)
    assert server.body == b"BELOW"
    assert scope["cleaned"] == [True]


@pytest.mark.anyio
async def test_the_app_below_keeps_sending_after_being_discarded() -> None:
    attempts: list[str] = []

    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        messages = [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": b"x", "more_body": True},
            {"type": "http.response.body", "body": b"y"},
        ]
        for message in messages:
            try:
                await send(message)
            except BaseException as exc:
                attempts.append(type(exc).__name__)

    async def replace(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        return PlainTextResponse("replaced")

    server = Server()
    await HTTPMiddleware(stubborn, replace)(http_scope(), server.receive, server.send)
    assert attempts == ["_ResponseDiscarded"] * 3
    assert server.body == b"replaced"


@pytest.mark.anyio
async def test_a_failing_replacement_response_discards_the_one_below() -> None:
    class Broken(Response):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            raise ValueError("cannot send")

    async def replace(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        return Broken()

    scope = _cleanup_scope()
    server = Server()
    with pytest.raises(ValueError, match="cannot send"):
        await HTTPMiddleware(_below_with_cleanup, replace)(scope, server.receive, server.send)
    assert scope["cleaned"] == [True]


@pytest.mark.anyio
async def test_the_app_below_in_a_task_group_is_discarded() -> None:
    async def grouped(scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0)
            await _below_with_cleanup(scope, receive, send)

    async def replace(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        return PlainTextResponse("replaced")

    scope = _cleanup_scope()
    server = Server()
    await HTTPMiddleware(grouped, replace)(scope, server.receive, server.send)
    assert server.body == b"replaced"
    assert scope["cleaned"] == [True]


def test_returning_nothing_is_an_error(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def forgetful(request: Request, call_next: CallNext) -> Any:
        await call_next(request)

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client, pytest.raises(TypeError, match="forgetful returned None"):
        client.get("/")


def test_call_next_twice_is_an_error(client_factory: ClientFactory) -> None:
    app = App()

    @app.middleware("http")
    async def twice(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        return await call_next(request)

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client, pytest.raises(RuntimeError, match="call it once"):
        client.get("/")


def test_the_response_can_be_sent_only_once(client_factory: ClientFactory) -> None:
    async def send_twice(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await response(request.scope, request.receive, request._send)
        return response

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    with pytest.raises(RuntimeError, match="only once"):
        client_factory(HTTPMiddleware(ok, send_twice)).get("/")


def test_an_app_below_without_a_response(client_factory: ClientFactory) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0)

    async def at_once(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    async def body_first(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.body", "body": b""})

    for app in (silent, at_once):
        with pytest.raises(RuntimeError, match="but it returned"):
            client_factory(HTTPMiddleware(app, pass_through)).get("/")
    with pytest.raises(RuntimeError, match=r"'http\.response\.body'"):
        client_factory(HTTPMiddleware(body_first, pass_through)).get("/")


# --- HEAD, WebSocket, other awaitables ------------------------------------------------------


def test_head_requests(client_factory: ClientFactory) -> None:
    app = App()
    app.middleware("http")(pass_through)

    @app.get("/")
    async def index(request: Request) -> str:
        return "a body"

    with client_factory(app) as client:
        response = client.head("/")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "6"


def test_websockets_pass_through_untouched(client_factory: ClientFactory) -> None:
    app = App()
    calls: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: CallNext) -> Response:
        calls.append(request.url.path)
        return await call_next(request)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    with client_factory(app) as client:
        with client.websocket_connect("/ws") as session:
            session.send_text("echo")
            assert session.receive_text() == "echo"
    assert calls == []


@pytest.mark.anyio
async def test_the_app_below_may_wait_before_responding() -> None:
    app = App()
    app.middleware("http")(pass_through)

    @app.get("/")
    async def index(request: Request) -> str:
        await anyio.sleep(0.01)
        return "waited"

    server = Server()
    await app(http_scope("/"), server.receive, server.send)
    assert server.body == b"waited"


class _Yielding:
    """An awaitable that is not a coroutine: it waits once on the event loop."""

    def __init__(self, app: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._coro = app(*args)

    def __await__(self) -> Generator[Any, Any, None]:
        return self._coro.__await__()  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_an_app_returning_another_awaitable() -> None:
    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0)
        await PlainTextResponse("awaitable")(scope, receive, send)

    def app(scope: Scope, receive: Receive, send: Send) -> _Yielding:
        return _Yielding(below, (scope, receive, send))

    server = Server()
    await HTTPMiddleware(app, pass_through)(http_scope(), server.receive, server.send)  # type: ignore[arg-type]
    assert server.body == b"awaitable"


# --- cancellation, other tasks ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_cancellation_owned_by_the_app_below() -> None:
    reached: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        # NOTE: this scope stays open across the start message, and its deadline passes
        # while the middleware runs.
        with anyio.move_on_after(0.05):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})
        reached.append("absorbed")

    async def slow(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await anyio.sleep(5)
        return response

    server = Server()
    with anyio.fail_after(3):
        await HTTPMiddleware(below, slow)(http_scope(), server.receive, server.send)
    assert reached == ["absorbed"]
    assert server.messages == []


@pytest.mark.anyio
async def test_a_cancellation_that_keeps_the_app_below_sending() -> None:
    attempts: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(0.05):
            await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except BaseException as exc:
            attempts.append(type(exc).__name__)
            raise

    async def slow(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await anyio.sleep(5)
        return response

    server = Server()
    with anyio.fail_after(3):
        await HTTPMiddleware(below, slow)(http_scope(), server.receive, server.send)
    assert attempts == ["_ResponseDiscarded"]


@pytest.mark.anyio
async def test_an_outer_cancellation_is_not_absorbed() -> None:
    cleaned: list[bool] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        finally:
            cleaned.append(True)

    async def slow(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await anyio.sleep(5)
        return response

    server = Server()
    with anyio.move_on_after(0.05) as scope:
        await HTTPMiddleware(below, slow)(http_scope(), server.receive, server.send)
    assert scope.cancelled_caught
    assert cleaned == [True]


@pytest.mark.anyio
async def test_a_cancellation_while_the_app_below_waits() -> None:
    cleaned: list[bool] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await anyio.sleep(5)
        finally:
            cleaned.append(True)

    async def read_body(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        async for _ in response.body_iterator:
            pass
        return response

    server = Server()
    with anyio.move_on_after(0.05) as scope:
        await HTTPMiddleware(below, read_body)(http_scope(), server.receive, server.send)
    assert scope.cancelled_caught
    assert cleaned == [True]


@pytest.mark.anyio
async def test_sends_from_another_task() -> None:
    async def helper_sends_body(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with anyio.create_task_group() as group:
            group.start_soon(send, {"type": "http.response.body", "body": b"from a task"})

    server = Server()
    await HTTPMiddleware(helper_sends_body, pass_through)(http_scope(), server.receive, server.send)
    assert server.body == b"from a task"

    async def helper_sends_start(scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(PlainTextResponse("x"), scope, receive, send)

    with pytest.raises(Exception) as info:
        await HTTPMiddleware(helper_sends_start, pass_through)(
            http_scope(), server.receive, server.send
        )
    assert "from another task" in repr(info.value.exceptions)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_sends_from_another_task_while_the_body_is_read() -> None:
    async def pinging(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with anyio.create_task_group() as group:
            group.start_soon(
                send, {"type": "http.response.body", "body": b"ping ", "more_body": True}
            )
            await anyio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"event"})

    async def upper(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in response.body_iterator:
                yield chunk.upper()

        return StreamingResponse(chunks())

    server = Server()
    with anyio.fail_after(3):
        await HTTPMiddleware(pinging, upper)(http_scope(), server.receive, server.send)
    assert server.body == b"PING EVENT"


def test_an_event_stream_with_pings_through_middleware(client_factory: ClientFactory) -> None:
    from microasgi.sse import EventSourceResponse

    app = App()

    @app.middleware("http")
    async def upper(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        if request.query_params.get("read"):

            async def chunks() -> AsyncIterator[bytes]:
                async for chunk in response.body_iterator:
                    yield chunk.upper()

            return StreamingResponse(chunks(), media_type="text/event-stream")
        return response

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        async def stream() -> AsyncIterator[str]:
            yield "one"
            await anyio.sleep(0.05)
            yield "two"

        return EventSourceResponse(stream(), ping=0.01)

    with client_factory(app) as client:
        for query in ("", "?read=1"):
            text = client.get("/events" + query).text.lower()
            assert "data: one" in text and "data: two" in text
            assert ": ping" in text


# --- http.response.pathsend ---------------------------------------------------------------


@pytest.mark.anyio
async def test_pathsend_passes_through_or_is_read(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"0123456789" * 10_000)

    async def send_path(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    server = Server()
    await HTTPMiddleware(send_path, pass_through)(http_scope(), server.receive, server.send)
    assert server.messages[-1] == {"type": "http.response.pathsend", "path": str(path)}

    async def read_all(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        body = b"".join([chunk async for chunk in response.body_iterator])
        return Response(body)

    server = Server()
    await HTTPMiddleware(send_path, read_all)(http_scope(), server.receive, server.send)
    assert server.body == path.read_bytes()

    async def read_one(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        iterator = response.body_iterator
        chunk = await iterator.__anext__()
        await iterator.aclose()  # type: ignore[attr-defined]
        return Response(chunk)

    server = Server()
    await HTTPMiddleware(send_path, read_one)(http_scope(), server.receive, server.send)
    assert len(server.body) == 64 * 1024

    async def not_modified(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.status_code = 304
        return response

    server = Server()
    await HTTPMiddleware(send_path, not_modified)(http_scope(), server.receive, server.send)
    assert [m["type"] for m in server.messages] == ["http.response.start", "http.response.body"]
    assert (server.messages[0]["status"], server.body) == (304, b"")


# --- the coroutine being closed ---------------------------------------------------------------


class _Wait:
    """An awaitable yielding a bare marker, so a test can drive coroutines by hand."""

    def __await__(self) -> Generator[Any, Any, None]:
        yield "waiting"


@coroutine
def _wait() -> Generator[Any, Any, None]:
    yield "waiting"


def _drive(coro: Any) -> None:
    assert coro.send(None) == "waiting"
    coro.close()


def test_closing_while_the_app_below_waits() -> None:
    closed: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await _Wait()
        finally:
            closed.append("below")

    _drive(HTTPMiddleware(below, pass_through)(http_scope(), Server().receive, Server().send))
    assert closed == ["below"]


def test_closing_while_the_middleware_waits() -> None:
    closed: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        finally:
            closed.append("below")

    async def waits(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await _wait()
        return response

    _drive(HTTPMiddleware(below, waits)(http_scope(), Server().receive, Server().send))
    assert closed == ["below"]


def test_closing_while_sending() -> None:
    closed: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        finally:
            closed.append("below")

    async def waiting_send(message: Message) -> None:
        await _wait()

    for dispatch in (pass_through, _replace):
        _drive(HTTPMiddleware(below, dispatch)(http_scope(), Server().receive, waiting_send))
    assert closed == ["below", "below"]


async def _replace(request: Request, call_next: CallNext) -> Response:
    await call_next(request)
    return PlainTextResponse("own")


def test_closing_while_the_response_object_sends() -> None:
    closed: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        finally:
            closed.append("below")

    async def waiting_send(message: Message) -> None:
        await _wait()

    async def through_the_object(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        await response(request.scope, request.receive, waiting_send)
        return response

    _drive(HTTPMiddleware(below, through_the_object)(http_scope(), Server().receive, Server().send))
    assert closed == ["below"]


# --- the less travelled paths -----------------------------------------------------------------


def test_returning_nothing_without_calling_next(client_factory: ClientFactory) -> None:
    async def lazy(request: Request, call_next: CallNext) -> Any:
        return None

    with pytest.raises(TypeError, match="lazy returned None"):
        client_factory(HTTPMiddleware(PlainTextResponse("x"), lazy)).get("/")


@pytest.mark.anyio
async def test_an_error_while_the_app_below_is_discarded() -> None:
    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except BaseException:
            raise LookupError("cleanup failed") from None

    async def replace(request: Request, call_next: CallNext) -> Response:
        await call_next(request)
        return PlainTextResponse("replaced")

    server = Server()
    with pytest.raises(LookupError, match="cleanup failed"):
        await HTTPMiddleware(below, replace)(http_scope(), server.receive, server.send)


async def _read_all(request: Request, call_next: CallNext) -> Response:
    response = await call_next(request)
    body = b"".join([chunk async for chunk in response.body_iterator])
    return Response(body, status_code=response.status_code)


@pytest.mark.anyio
async def test_messages_the_body_iterator_does_not_use() -> None:
    after: list[str] = []

    async def chatty(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.debug", "note": "ignored"})
        await send({"type": "http.response.body", "body": b"b"})
        await send({"type": "http.response.trailers", "headers": []})
        after.append("returned")

    server = Server()
    await HTTPMiddleware(chatty, _read_all)(http_scope(), server.receive, server.send)
    assert server.body == b"ab"
    assert after == ["returned"]


@pytest.mark.anyio
async def test_an_app_below_that_never_ends_its_body() -> None:
    async def unfinished(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    server = Server()
    await HTTPMiddleware(unfinished, _read_all)(http_scope(), server.receive, server.send)
    assert server.body == b"partial"


@pytest.mark.anyio
async def test_the_response_sent_by_the_middleware_itself() -> None:
    ran: list[str] = []
    failures: list[str] = []

    async def below(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError:
            failures.append("start")
            return
        await send({"type": "http.response.body", "body": b"below"})

    async def gone(message: Message) -> None:
        raise OSError("client went away")

    async def sends_itself(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        response.status_code = 202
        response.raw_headers = [(b"x-set", b"raw")]
        response.background = BackgroundTask(ran.append, "background")
        target = gone if request.query_params.get("gone") else side.send
        await response(request.scope, request.receive, target)
        return PlainTextResponse("main")

    side = Server()
    server = Server()
    await HTTPMiddleware(below, sends_itself)(http_scope(), server.receive, server.send)
    assert (side.status, side.headers, side.body) == (202, {"x-set": "raw"}, b"below")
    assert server.body == b"main"
    assert ran == ["background"]
    server = Server()
    await HTTPMiddleware(below, sends_itself)(
        http_scope(query_string=b"gone=1"), server.receive, server.send
    )
    assert failures == ["start"]


@pytest.mark.anyio
async def test_a_disconnect_poll_that_finds_nothing() -> None:
    app = App()

    @app.middleware("http")
    async def poll(request: Request, call_next: CallNext) -> Response:
        assert not await request.is_disconnected()
        return await call_next(request)

    @app.get("/")
    async def index(request: Request) -> str:
        return "nothing buffered"

    server = Server(body=[])
    await app(http_scope("/"), server.receive, server.send)
    assert server.body == b"nothing buffered"


@pytest.mark.anyio
async def test_the_replay_hands_over_to_the_server() -> None:
    seen: list[str] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        seen.append((await receive())["type"])

    async def read_first(request: Request, call_next: CallNext) -> Response:
        await request.body()
        return await call_next(request)

    server = Server(body=b"once")
    await HTTPMiddleware(raw_app, read_first)(http_scope("/", "POST"), server.receive, server.send)
    assert server.body == b"once"
    assert seen == ["http.disconnect"]


# --- the example -------------------------------------------------------------------------------


def test_the_example_app(client_factory: ClientFactory) -> None:
    from examples.middleware import app as example

    with client_factory(example) as client:
        first = client.get("/", headers={"x-user": "ann"})
        assert first.json()["visits"] == 1
        assert first.json()["user"] == "ann"
        assert first.headers["x-process-time"].endswith("ms")
        assert first.headers["x-request-id"] == first.json()["request_id"]
        assert client.get("/").json()["visits"] == 2
        response = client.get("/stream", headers={"accept-encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip"
        assert response.text.count("\n") == 5
        response = client.get("/", headers={"origin": "https://shop.example"})
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        assert client.get("/", headers={"host": "evil.example"}).status_code == 400
        assert client.post("/webhooks/stripe").json() == {"received from": "stripe"}
        response = client.post("/", headers={"origin": "https://evil.example"})
        assert response.status_code == 403


def _shout(response: Any) -> StreamingResponse:
    async def upper() -> AsyncIterator[bytes]:
        async for chunk in response.body_iterator:
            yield chunk.upper()

    return StreamingResponse(upper(), headers=dict(response.headers))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["stream", "events"])
async def test_a_wrapped_endless_stream_stops_when_the_client_goes(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # ASGI 2.3: the app below and the middleware's response both listen for the
    # disconnect, in one task; their cancel scopes must not interleave.
    app = App()
    cleaned: list[str] = []

    @app.middleware("http")
    async def shout(request: Request, call_next: CallNext) -> Response:
        return _shout(await call_next(request))

    @app.get("/")
    async def endless(request: Request) -> Response:
        async def ticks() -> AsyncIterator[str]:
            try:
                while True:
                    yield "tick"
                    await anyio.sleep(0.01)
            finally:
                cleaned.append("finally")

        if kind == "stream":
            return StreamingResponse(ticks())
        return EventSourceResponse(ticks(), ping=None)

    async def on_message(message: Message) -> None:
        if len(server.messages) == 4:
            server.disconnected.set()

    server = Server(on_message=on_message)
    with anyio.fail_after(5):
        await app(http_scope("/", spec_version="2.3"), server.receive, server.send)
    assert cleaned == ["finally"]
    assert b"TICK" in server.body
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.anyio
async def test_another_endless_stream_stops_when_the_client_goes() -> None:
    # The app below listens for nothing (a plain response): the middleware's own stream
    # listens for the disconnect itself.
    app = App()

    @app.middleware("http")
    async def replace(request: Request, call_next: CallNext) -> Response:
        await call_next(request)

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"x"
                await anyio.sleep(0.01)

        return StreamingResponse(endless())

    @app.get("/")
    async def index(request: Request) -> str:
        return "below"

    async def on_message(message: Message) -> None:
        if len(server.messages) == 3:
            server.disconnected.set()

    server = Server(on_message=on_message)
    with anyio.fail_after(5):
        await app(http_scope("/", spec_version="2.3"), server.receive, server.send)
    assert server.body.startswith(b"xx")


@pytest.mark.anyio
async def test_a_client_leaving_mid_body_ends_the_request_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    app.middleware("http")(pass_through)

    @app.post("/")
    async def upload(request: Request) -> int:
        return len(await request.body())

    messages: list[Message] = [
        {"type": "http.request", "body": b"a" * 100, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    with caplog.at_level(logging.WARNING, logger="microasgi"):
        await app(http_scope("/", method="POST"), receive, send)
    assert sent == []
    assert caplog.records == []


def _failing_stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("the stream broke")

    return StreamingResponse(chunks())


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_a_failure_mid_stream_cuts_a_stream_made_from_the_body(
    caplog: pytest.LogCaptureFixture, spec_version: str
) -> None:
    # The error layer below tries to answer 500; a response made from the body must end
    # cut, not as a whole 200 with "Internal Server Error" appended.
    app = App()

    @app.middleware("http")
    async def shout(request: Request, call_next: CallNext) -> Response:
        return _shout(await call_next(request))

    @app.get("/")
    async def stream(request: Request) -> StreamingResponse:
        return _failing_stream()

    server = Server()
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        await app(http_scope("/", spec_version=spec_version), server.receive, server.send)
    assert server.status == 200
    assert server.body == b"FIRST"
    assert server.events[-1] != "complete"
    assert [r.getMessage() for r in caplog.records] == [
        "Unhandled RuntimeError in GET / after the response had started"
    ]


@pytest.mark.anyio
async def test_a_failure_before_a_buffered_body_is_answered_500_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.middleware("http")
    async def envelope(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        body = b"".join([chunk async for chunk in response.body_iterator])
        return Response(b"[" + body + b"]")

    @app.get("/")
    async def stream(request: Request) -> StreamingResponse:
        return _failing_stream()

    server = Server()
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        await app(http_scope("/"), server.receive, server.send)
    assert (server.status, server.body) == (500, b"Internal Server Error")
    assert len(caplog.records) == 1


@pytest.mark.anyio
async def test_a_failing_background_task_below_is_logged_as_after_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.middleware("http")
    async def envelope(request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        return _shout(response)

    def fail() -> None:
        raise RuntimeError("background broke")

    @app.get("/")
    async def index(request: Request) -> Response:
        return PlainTextResponse("done", background=BackgroundTask(fail))

    server = Server()
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        await app(http_scope("/"), server.receive, server.send)
    assert (server.status, server.body) == (200, b"DONE")
    assert [m["type"] for m in server.messages].count("http.response.start") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Unhandled RuntimeError in GET / after the response had started"
    ]
