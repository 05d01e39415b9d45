from __future__ import annotations

import contextvars
import dataclasses
import datetime
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import pytest

from microasgi import (
    App,
    HTTPException,
    JSONResponse,
    Limits,
    Middleware,
    PlainTextResponse,
    Request,
    Response,
    SetupError,
    WebSocketException,
)
from microasgi.testing import TestClient
from microasgi.types import Message, Receive, Scope, Send
from tests.support import run_startup

ClientFactory = Callable[..., TestClient]


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Custom(dict[str, Any]):
    pass


def test_return_values_are_converted(client_factory: ClientFactory) -> None:
    app = App()
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")

    @app.get("/dict")
    async def as_dict(request: Request) -> dict[str, Any]:
        return {"a": 1, "when": moment, "id": ident, "point": Point(1, 2)}

    @app.get("/list")
    async def as_list(request: Request) -> list[int]:
        return [1, 2]

    @app.get("/str")
    async def as_str(request: Request) -> str:
        return "héllo"

    @app.get("/bytes")
    async def as_bytes(request: Request) -> bytes:
        return b"\x00\x01"

    @app.get("/none")
    async def as_none(request: Request) -> None:
        return None

    @app.get("/response")
    async def as_response(request: Request) -> Response:
        return PlainTextResponse("made", status_code=201)

    @app.get("/subclass")
    async def as_subclass(request: Request) -> Custom:
        return Custom(k="v")

    @app.get("/bad")
    async def bad(request: Request) -> object:
        return object()

    with client_factory(app) as client:
        response = client.get("/dict")
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "a": 1,
            "when": "2026-01-02T03:04:05",
            "id": str(ident),
            "point": {"x": 1, "y": 2},
        }
        assert client.get("/list").json() == [1, 2]
        response = client.get("/str")
        assert response.text == "héllo"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["content-length"] == str(len("héllo".encode()))
        response = client.get("/bytes")
        assert response.content == b"\x00\x01"
        assert response.headers["content-type"] == "application/octet-stream"
        response = client.get("/none")
        assert response.status_code == 204
        assert response.content == b""
        response = client.get("/response")
        assert (response.status_code, response.text) == (201, "made")
        assert client.get("/subclass").json() == {"k": "v"}
        with pytest.raises(TypeError, match="returned object"):
            client.get("/bad")


def test_sync_handlers_run_in_a_worker_thread(client_factory: ClientFactory) -> None:
    app = App()
    main_thread = threading.get_ident()

    @app.get("/sync/{n:int}")
    def sync_handler(request: Request, n: int) -> dict[str, Any]:
        return {"n": n, "other_thread": threading.get_ident() != main_thread}

    @app.get("/sync-plain")
    def sync_plain(request: Request) -> str:
        return "plain"

    with client_factory(app) as client:
        assert client.get("/sync/5").json() == {"n": 5, "other_thread": True}
        assert client.get("/sync-plain").text == "plain"


def test_handler_calling_conventions(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/none-args")
    async def no_args() -> str:
        return "no args"

    @app.get("/kw/{a}/{b:int}")
    async def only_some(request: Request, b: int) -> dict[str, Any]:
        return {"b": b, "all": dict(request.path_params)}

    @app.get("/star/{a}")
    async def star(*args: Any) -> str:
        return type(args[0]).__name__

    class Endpoint:
        async def __call__(self, request: Request) -> str:
            return "callable object"

    app.add_route("/object", Endpoint())
    app.add_route("/builtin", print)

    with client_factory(app) as client:
        assert client.get("/none-args").text == "no args"
        assert client.get("/kw/x/2").json() == {"b": 2, "all": {"a": "x", "b": 2}}
        assert client.get("/star/x").text == "Request"
        assert client.get("/object").text == "callable object"
        assert client.get("/builtin").status_code == 204


def test_http_exception_and_handlers_by_status_and_class(client_factory: ClientFactory) -> None:
    class Base(Exception):
        pass

    class Child(Base):
        pass

    class Grandchild(Child):
        pass

    app = App()

    @app.exception_handler(404)
    async def not_found(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"missing": request.url.path}, status_code=404)

    @app.exception_handler(Base)
    async def base(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("base", status_code=400)

    @app.exception_handler(Child)
    def child(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("child", status_code=409)

    @app.get("/teapot")
    async def teapot(request: Request) -> None:
        raise HTTPException(418, headers={"x-tea": "earl grey"})

    @app.get("/detail")
    async def detail(request: Request) -> None:
        raise HTTPException(400, detail={"field": "bad"})

    @app.get("/empty")
    async def empty(request: Request) -> None:
        raise HTTPException(304)

    @app.get("/grandchild")
    async def grandchild(request: Request) -> None:
        raise Grandchild()

    @app.get("/base")
    async def raise_base(request: Request) -> None:
        raise Base()

    with client_factory(app) as client:
        response = client.get("/teapot")
        assert response.status_code == 418
        assert response.json() == {"detail": "I'm a Teapot"}
        assert response.headers["x-tea"] == "earl grey"
        assert client.get("/detail").json() == {"detail": {"field": "bad"}}
        response = client.get("/empty")
        assert (response.status_code, response.content) == (304, b"")
        assert client.get("/nothing/here").json() == {"missing": "/nothing/here"}
        response = client.get("/grandchild")
        assert (response.status_code, response.text) == (409, "child")
        assert client.get("/base").text == "base"


def test_unhandled_error_is_a_logged_500_without_traceback(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/boom/{rest:path}")
    async def boom(request: Request) -> None:
        raise RuntimeError("secret detail")

    with client_factory(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="microasgi"):
            response = client.get("/boom/%1b[31m%0d%0aFAKE LOG LINE")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert "secret" not in response.text
    records = [r for r in caplog.records if r.name == "microasgi"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    message = records[0].getMessage()
    assert "RuntimeError" in message
    assert "\x1b" not in message and "\r" not in message and "\n" not in message
    assert "\\x1b[31m\\r\\nFAKE LOG LINE" in message


@pytest.mark.anyio
async def test_a_method_with_escape_sequences_is_escaped_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # HTTP/2 servers (hypercorn) may pass on a method holding ESC; HTTP/1.1 ones refuse it.
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = App()
    app.mount("/raw", failing)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "2",
        "method": "GET\x1b[2J\x1b[31mFAKE",
        "scheme": "http",
        "path": "/raw/x",
        "raw_path": b"/raw/x",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    message = caplog.records[-1].getMessage()
    assert "\x1b" not in message
    assert "GET\\x1b[2J\\x1b[31mFAKE /raw/x" in message


def test_unhandled_error_is_reraised_to_the_test_client(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("raised in the test")

    with client_factory(app) as client, pytest.raises(RuntimeError, match="raised in the test"):
        client.get("/boom")


def test_debug_error_pages(client_factory: ClientFactory) -> None:
    app = App(debug=True)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise ValueError("<broken>")

    with client_factory(app, raise_server_exceptions=False) as client:
        html = client.get("/boom", headers={"accept": "text/html"})
        assert html.status_code == 500
        assert html.headers["content-type"].startswith("text/html")
        assert "ValueError: &lt;broken&gt;" in html.text
        assert "Traceback" in html.text
        plain = client.get("/boom", headers={"accept": "*/*"})
        assert plain.headers["content-type"].startswith("text/plain")
        assert "ValueError: <broken>" in plain.text


def test_error_handler_for_500_and_exception(client_factory: ClientFactory) -> None:
    app = App(exception_handlers={500: lambda request, exc: PlainTextResponse("oops", 500)})

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise KeyError("k")

    with client_factory(app) as client:
        assert client.get("/boom").text == "oops"
        assert client.get("/missing").status_code == 404

    app2 = App()

    @app2.exception_handler(Exception)
    async def everything(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(type(exc).__name__, status_code=500)

    @app2.get("/boom")
    async def boom2(request: Request) -> None:
        raise KeyError("k")

    with client_factory(app2) as client:
        assert client.get("/boom").text == "KeyError"


def test_errors_pass_through_user_middleware(client_factory: ClientFactory) -> None:
    class AddHeader:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def send_with_header(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"x-mw", b"yes")]
                await send(message)

            await self.app(scope, receive, send_with_header)

    app = App(middleware=[Middleware(AddHeader)])

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("boom")

    @app.get("/http")
    async def http(request: Request) -> None:
        raise HTTPException(403)

    with client_factory(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
        assert response.status_code == 500
        assert response.headers["x-mw"] == "yes"
        assert client.get("/http").headers["x-mw"] == "yes"
        assert client.get("/missing").headers["x-mw"] == "yes"


def test_error_in_middleware_is_a_500_logged_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                raise RuntimeError("middleware broke")
            await self.app(scope, receive, send)

    app = App()
    app.add_middleware(Broken)

    @app.get("/")
    async def home(request: Request) -> str:
        return "never"

    with client_factory(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="microasgi"):
            response = client.get("/")
    assert response.status_code == 500
    assert len([r for r in caplog.records if r.name == "microasgi"]) == 1
    with client_factory(app) as client, pytest.raises(RuntimeError, match="middleware broke"):
        client.get("/")


def test_exception_inner_reraised_once_through_middleware(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Passthrough:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app(scope, receive, send)

    app = App(middleware=[Middleware(Passthrough)])

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("inner")

    with client_factory(app) as client, caplog.at_level(logging.ERROR, logger="microasgi"):
        with pytest.raises(RuntimeError, match="inner"):
            client.get("/boom")
    assert len([r for r in caplog.records if r.name == "microasgi"]) == 1


def test_error_after_response_started_is_not_answered_twice(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from microasgi import StreamingResponse

    app = App()

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            raise RuntimeError("mid-stream")

        return StreamingResponse(chunks())

    with client_factory(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="microasgi"):
            response = client.get("/stream")
        assert response.status_code == 200
        assert response.content.startswith(b"first")
    assert len([r for r in caplog.records if r.name == "microasgi"]) == 1


def test_exception_handler_registration_errors() -> None:
    app = App()
    with pytest.raises(TypeError, match="status code or exception class"):
        app.add_exception_handler("nope", lambda r, e: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status code or exception class: True"):
        app.add_exception_handler(True, lambda r, e: None)
    for status in (99, 600, 1008, 4040, -404):
        with pytest.raises(ValueError, match=rf"are 100-599, not {status}: for WebSocket"):
            app.add_exception_handler(status, lambda r, e: None)
        with pytest.raises(ValueError, match=rf"not {status}"):
            App(exception_handlers={status: lambda r, e: None})
    app.add_exception_handler(HTTPStatus.IM_A_TEAPOT, lambda r, e: None)
    assert app.exception_handlers == {418: app.exception_handlers[418]}


def test_an_exception_handler_that_cannot_be_called_fails_at_registration() -> None:
    async def takes_the_exception_only(exc: Exception) -> None: ...

    def takes_a_keyword(request: Request, exc: Exception, *, log: bool) -> None: ...

    with pytest.raises(TypeError, match=r"for 404 must be callable, not 'not_found\.html'"):
        App().add_exception_handler(404, "not_found.html")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes_the_exception_only\(exc: .*\) cannot take"):
        App(exception_handlers={KeyError: takes_the_exception_only})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"the request .* and the exception"):
        App().exception_handler(500)(takes_a_keyword)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="status code or exception class"):
        App(exception_handlers={"404": takes_a_keyword})  # type: ignore[dict-item]
    App(exception_handlers={KeyError: lambda *args: None})  # can take them
    App(exception_handlers={404: dict})  # type: ignore[dict-item]  # no signature to check


def test_a_middleware_list_entry_that_is_not_a_spec_fails_at_registration() -> None:
    from microasgi.middleware import GZipMiddleware
    from microasgi.routing import Mount, Router

    async def handler(request: Request) -> str:
        return "ok"

    hint = r"got <class .*GZipMiddleware'>: write Middleware\(GZipMiddleware, \.\.\.\)"
    with pytest.raises(TypeError, match=hint):
        App(middleware=[GZipMiddleware])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"got 'gzip': write Middleware\(cls, \*\*options\)"):
        App().add_route("/", handler, middleware=["gzip"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="middleware= takes Middleware"):
        Router(middleware=[(GZipMiddleware, (), {})])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="middleware= takes Middleware"):
        Mount("/static", App(), middleware=[GZipMiddleware])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="middleware= takes Middleware"):
        App().include_router(Router(), middleware=[GZipMiddleware])  # type: ignore[list-item]
    App(middleware=[Middleware(GZipMiddleware)])


def test_websocket_exceptions_close_the_socket(client_factory: ClientFactory) -> None:
    from microasgi.exceptions import WebSocketDisconnect

    class Refused(Exception):
        pass

    app = App()

    @app.exception_handler(Refused)
    async def refused(websocket: Any, exc: Exception) -> Response:
        return PlainTextResponse("refused by handler", status_code=401)

    @app.websocket("/ws-http")
    async def ws_http(websocket: Any) -> None:
        raise HTTPException(403, "no entry")

    @app.websocket("/ws-ws")
    async def ws_ws(websocket: Any) -> None:
        raise WebSocketException(4001, "bye")

    from microasgi.testing import WebSocketDenied

    with client_factory(app) as client:
        for path in ("/ws-http", "/ws-ws"):
            with pytest.raises((WebSocketDisconnect, WebSocketDenied)):
                with client.websocket_connect(path):
                    pass


def test_lifespan_state_reaches_requests(client_factory: ClientFactory) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        events.append("enter")
        yield {"db": "connection"}
        events.append("exit")

    app = App(lifespan=lifespan)

    @app.on_startup
    async def first() -> None:
        events.append("startup 1")

    @app.on_startup
    def second() -> None:
        events.append("startup 2")

    @app.on_shutdown
    async def third() -> None:
        events.append("shutdown 1")

    @app.on_shutdown
    def fourth() -> None:
        events.append("shutdown 2")

    @app.get("/")
    async def home(request: Request) -> dict[str, Any]:
        request.state.per_request = True
        return {"db": request.state.db}

    with client_factory(app) as client:
        assert events == ["enter", "startup 1", "startup 2"]
        assert client.get("/").json() == {"db": "connection"}
        assert client.get("/").json() == {"db": "connection"}
    assert events[3:] == ["shutdown 2", "shutdown 1", "exit"]
    assert app.lifespan_state == {"db": "connection"}


def test_state_without_server_support_uses_lifespan_defaults() -> None:
    import anyio

    app = App()
    app.lifespan_state = {"answer": 42}

    @app.get("/")
    async def home(request: Request) -> dict[str, Any]:
        return {"answer": request.state.answer}

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    anyio.run(app, scope, receive, send)
    assert sent[1]["body"] == b'{"answer":42}'


def test_startup_failure_is_reported(client_factory: ClientFactory) -> None:
    from microasgi.testing import LifespanFailed

    app = App()

    @app.on_startup
    async def fail() -> None:
        raise RuntimeError("database unreachable")

    with pytest.raises(LifespanFailed, match="database unreachable"), client_factory(app):
        pass


def test_lifespan_yielding_a_non_mapping_fails(client_factory: ClientFactory) -> None:
    from microasgi.testing import LifespanFailed

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[int]:
        yield 3

    with pytest.raises(LifespanFailed, match="yield a dict"):
        with client_factory(App(lifespan=lifespan)):
            pass


def test_mounted_apps_lifespans_run(client_factory: ClientFactory) -> None:
    events: list[str] = []
    sub = App()

    @sub.on_startup
    def sub_start() -> None:
        events.append("sub start")

    @sub.on_shutdown
    def sub_stop() -> None:
        events.append("sub stop")

    @sub.get("/")
    async def sub_home(request: Request) -> str:
        return "sub"

    from microasgi import Router

    inner = Router()
    inner.mount("/deep", sub)
    app = App()
    app.mount("/sub", inner)

    with client_factory(app) as client:
        assert events == ["sub start"]
        assert client.get("/sub/deep/").text == "sub"
    assert events == ["sub start", "sub stop"]


def _counted_app(events: list[str], name: str) -> App:
    sub = App()
    sub.on_startup(lambda: events.append(f"{name} start"))
    sub.on_shutdown(lambda: events.append(f"{name} stop"))
    sub.get("/")(lambda request: name)
    return sub


def test_an_app_mounted_in_several_places_starts_once(client_factory: ClientFactory) -> None:
    from microasgi import Router

    events: list[str] = []
    sub = _counted_app(events, "sub")
    inner = Router()
    inner.mount("/s", sub)
    app = App()
    app.mount("/r1", inner)
    app.mount("/r2", inner)
    app.mount("/direct", sub)
    app.host("sub.example.com", sub)
    with client_factory(app) as client:
        assert events == ["sub start"]
        assert client.get("/r1/s/").text == client.get("/r2/s/").text == "sub"
        assert client.get("/direct/").text == "sub"
    assert events == ["sub start", "sub stop"]


@pytest.mark.parametrize("direct_first", [True, False])
def test_an_app_mounted_directly_and_inside_another_app_starts_once(
    client_factory: ClientFactory, direct_first: bool
) -> None:
    events: list[str] = []
    sub = _counted_app(events, "sub")
    middle = _counted_app(events, "middle")
    middle.mount("/sub", sub)
    app = App()
    if direct_first:
        app.mount("/sub", sub)
    app.mount("/middle", middle)
    if not direct_first:
        app.mount("/sub", sub)
    with client_factory(app) as client:
        assert sorted(events) == ["middle start", "sub start"]
        assert client.get("/middle/sub/").text == client.get("/sub/").text == "sub"
    assert sorted(events) == ["middle start", "middle stop", "sub start", "sub stop"]
    # A second run of the lifespan starts everything again, once.
    events.clear()
    with client_factory(app):
        assert sorted(events) == ["middle start", "sub start"]


def test_an_app_mounted_inside_itself_starts_once(client_factory: ClientFactory) -> None:
    events: list[str] = []
    app = _counted_app(events, "app")
    app.mount("/again", app)
    with client_factory(app) as client:
        assert events == ["app start"]
        assert client.get("/again/").text == "app"
    assert events == ["app start", "app stop"]


def test_app_routes_plus_equals_registers_the_routes(client_factory: ClientFactory) -> None:
    from microasgi.routing import Route

    app = App()
    app.routes += [Route("/y", lambda request: "y")]
    assert [route.path for route in app.routes] == ["/y"]
    with client_factory(app) as client:
        assert client.get("/y").text == "y"
    with pytest.raises(TypeError, match=r"App.routes cannot be replaced"):
        app.routes = []  # type: ignore[assignment]
    with pytest.raises(SetupError):
        app.routes += [Route("/z", lambda request: "z")]


def test_mounted_app_failing_startup_fails_the_app(client_factory: ClientFactory) -> None:
    from microasgi.testing import LifespanFailed

    sub = App()

    @sub.on_startup
    def broken() -> None:
        raise RuntimeError("sub failed")

    app = App()
    app.mount("/sub", sub)
    with pytest.raises(LifespanFailed, match="sub failed"), client_factory(app):
        pass


def test_shutdown_failure_is_reported(client_factory: ClientFactory) -> None:
    from microasgi.testing import LifespanFailed

    app = App()

    @app.on_shutdown
    def broken() -> None:
        raise RuntimeError("flush failed")

    with pytest.raises(LifespanFailed, match="flush failed"), client_factory(app):
        pass


def test_the_decorators_and_the_router_facade(client_factory: ClientFactory) -> None:
    from microasgi import Router, WebSocket

    app = App()
    for method in ("put", "patch", "delete", "head", "options"):

        async def handler(request: Request) -> str:
            return request.method

        getattr(app, method)(f"/{method}", name=method)(handler)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ws")
        await websocket.close()

    app.add_websocket_route("/ws", ws, name="ws")
    api = Router()

    @api.get("/things")
    async def things(request: Request) -> str:
        return "things"

    app.include_router(api, prefix="/api")
    app.host("{sub}.example.com", Router(routes=[*api.routes]))
    with pytest.raises(ValueError, match='kind "http" only'):
        app.middleware("websocket")
    assert app.url_path_for("patch") == "/patch"
    assert len(app.routes) == 8
    with client_factory(app) as client:
        for method in ("put", "patch", "delete", "options"):
            assert client.request(method, f"/{method}").text == method.upper()
        assert client.head("/head").status_code == 200
        assert client.get("/api/things").text == "things"
        assert client.get("/things", headers={"host": "a.example.com"}).text == "things"
        with client.websocket_connect("/ws") as session:
            assert session.receive_text() == "ws"
    built = app._app
    app._build()  # a second call (two first requests at once) keeps the stack
    assert app._app is built


# --- a middleware that refuses its options ------------------------------------------------


def misconfigured_app(middleware: Middleware | None = None) -> App:
    from microasgi.middleware import CORSMiddleware

    spec = middleware or Middleware(CORSMiddleware, allow_origins=["https://a.example/"])
    app = App(middleware=[spec])

    @app.get("/")
    async def index(request: Request) -> str:
        return "never served"

    return app


def session_without_https() -> Middleware:
    from microasgi.middleware import SessionMiddleware

    return Middleware(SessionMiddleware, secret_key="k" * 32, same_site="none")


@pytest.mark.parametrize(
    ("middleware", "error"),
    [(None, "Invalid CORS origin 'https://a.example/'"), ("session", "needs https_only=True")],
)
def test_a_middleware_that_refuses_its_options_fails_startup(
    client_factory: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    middleware: str | None,
    error: str,
) -> None:
    from microasgi.testing import LifespanFailed

    app = misconfigured_app(session_without_https() if middleware else None)
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with pytest.raises(LifespanFailed, match=error) as info, client_factory(app):
            pass
    assert info.value.phase == "startup"
    assert isinstance(info.value.__cause__, ValueError)
    records = [r for r in caplog.records if r.name == "microasgi"]
    assert len(records) == 1
    assert records[0].getMessage() == "Lifespan startup failed"
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError


@pytest.mark.anyio
async def test_a_setup_failure_answers_startup_failed(anyio_backend: str) -> None:
    sent, raised = await run_startup(misconfigured_app())
    assert isinstance(raised, ValueError)
    assert str(raised).startswith("Invalid CORS origin")
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "ValueError: Invalid CORS origin 'https://a.example/': write "
            "scheme://host[:port] with no path or trailing slash, or use allow_origin_regex "
            "for patterns",
        }
    ]


def test_a_mounted_app_that_cannot_be_set_up_fails_startup(client_factory: ClientFactory) -> None:
    from microasgi.testing import LifespanFailed

    app = App()
    app.mount("/sub", misconfigured_app())
    with pytest.raises(LifespanFailed, match="failed to start: ValueError: Invalid CORS origin"):
        with client_factory(app):
            pass


def test_a_setup_failure_without_lifespan_is_a_500_per_request(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # NOTE: a server without lifespan (uvicorn --lifespan off) calls the app first with a
    # request: each one is answered 500 and logged, none hangs.
    client = client_factory(misconfigured_app(), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        for _ in range(2):
            response = client.get("/")
            assert (response.status_code, response.text) == (500, "Internal Server Error")
    records = [r for r in caplog.records if r.name == "microasgi"]
    assert len(records) == 2
    for record in records:
        assert record.exc_info is not None and record.exc_info[0] is ValueError
        assert "Invalid CORS origin" in str(record.exc_info[1])
    with pytest.raises(ValueError, match="Invalid CORS origin"):
        client_factory(misconfigured_app()).get("/")


def test_middleware_order_first_added_is_outermost(client_factory: ClientFactory) -> None:
    order: list[str] = []

    class Tag:
        def __init__(self, app: Any, name: str) -> None:
            self.app = app
            self.name = name

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                order.append(self.name)
            await self.app(scope, receive, send)

    app = App(middleware=[Middleware(Tag, name="a")])
    app.add_middleware(Tag, name="b")
    app.add_middleware(Tag, "c")

    @app.get("/")
    async def home(request: Request) -> str:
        return "ok"

    with client_factory(app) as client:
        client.get("/")
        client.get("/")
    assert order == ["a", "b", "c", "a", "b", "c"]
    with pytest.raises(SetupError, match=r"App\.add_middleware\(\)"):
        app.add_middleware(Tag, name="late")
    with pytest.raises(SetupError, match=r"exception_handler"):
        app.add_exception_handler(404, lambda r, e: None)
    with pytest.raises(SetupError, match=r"on_startup"):
        app.on_startup(lambda: None)
    with pytest.raises(SetupError, match=r"on_shutdown"):
        app.on_shutdown(lambda: None)
    with pytest.raises(SetupError, match=r"add_lifespan"):
        app.add_lifespan(lambda app: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="middleware class"):
        Middleware("nope")
    assert repr(Middleware(Tag, 1, name="x")) == "Middleware(Tag, 1, name='x')"
    cls, args, kwargs = Middleware(Tag, name="x")
    assert (cls, args, kwargs) == (Tag, (), {"name": "x"})


def test_plugins_can_add_everything_once(client_factory: ClientFactory) -> None:
    events: list[str] = []

    class Plugin:
        def setup(self, app: App) -> None:
            @asynccontextmanager
            async def lifespan(app: App) -> AsyncIterator[None]:
                events.append("plugin up")
                yield
                events.append("plugin down")

            app.add_lifespan(lifespan)
            app.get("/plugin")(self.handler)
            app.add_exception_handler(KeyError, self.on_key_error)

        async def handler(self, request: Request) -> str:
            raise KeyError("x")

        async def on_key_error(self, request: Request, exc: Exception) -> Response:
            return PlainTextResponse("handled by plugin", status_code=400)

    plugin = Plugin()
    app = App()
    app.install(plugin)
    with pytest.raises(SetupError, match="already installed"):
        app.install(plugin)
    with pytest.raises(TypeError, match="not a plugin"):
        app.install(object())  # type: ignore[arg-type]
    with client_factory(app) as client:
        assert client.get("/plugin").text == "handled by plugin"
    assert events == ["plugin up", "plugin down"]
    with pytest.raises(SetupError, match="install"):
        app.install(Plugin())


def test_limits_from_keywords_and_objects() -> None:
    app = App(max_body_size=100, limits=Limits(max_fields=5))
    assert app.limits.max_body_size == 100
    assert app.limits.max_fields == 5
    assert App().limits == Limits()
    with pytest.raises(TypeError, match="unknown limits: nope"):
        App(nope=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="non-negative"):
        Limits(max_body_size=-1)


def test_route_limits_override_app_limits(client_factory: ClientFactory) -> None:
    app = App(max_body_size=4, max_fields=7)
    seen: dict[str, Any] = {}

    @app.post("/small")
    async def small(request: Request) -> int:
        return len(await request.body())  # type: ignore[return-value]

    @app.post("/large", limits=Limits(max_body_size=None))
    async def large(request: Request) -> str:
        from microasgi.limits import limits_for

        seen["limits"] = limits_for(request.scope)
        return str(len(await request.body()))

    with client_factory(app) as client:
        assert client.post("/small", content=b"12345").status_code == 413
        assert client.post("/large", content=b"12345").text == "5"
    assert seen["limits"].max_body_size is None
    assert seen["limits"].max_fields == 7


def test_contextvars_set_in_handler_thread_and_loop(client_factory: ClientFactory) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    app = App()

    @app.get("/")
    def sync_handler(request: Request) -> str:
        return var.get()

    with client_factory(app) as client:
        assert client.get("/").text == "unset"


def test_app_repr_and_state() -> None:
    app = App(debug=True)
    app.state.name = "demo"
    assert app.state.name == "demo"
    assert repr(app) == "<App with 0 routes, debug=True>"


def test_str_subclasses_are_text(client_factory: ClientFactory) -> None:
    class Name(str):
        pass

    app = App()

    @app.get("/")
    async def home(request: Request) -> str:
        return Name("subclass")

    with client_factory(app) as client:
        response = client.get("/")
    assert (response.text, response.headers["content-type"]) == (
        "subclass",
        "text/plain; charset=utf-8",
    )


def test_handler_params_under_a_mount_with_params(client_factory: ClientFactory) -> None:
    from microasgi import Router

    sub = Router()

    @sub.get("/items/{item_id:int}")
    async def item(request: Request, item_id: int) -> dict[str, Any]:
        return {"item_id": item_id, "all": dict(request.path_params)}

    app = App()
    app.mount("/users/{user}", sub)
    with client_factory(app) as client:
        assert client.get("/users/ann/items/3").json() == {
            "item_id": 3,
            "all": {"user": "ann", "item_id": 3},
        }
