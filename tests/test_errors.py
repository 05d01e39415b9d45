from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import pytest

from microasgi import (
    App,
    HTTPException,
    Middleware,
    PlainTextResponse,
    Request,
    Response,
    WebSocketDisconnect,
    WebSocketException,
)
from microasgi._errors import error_response, http_exception_response
from microasgi.datastructures import Address
from microasgi.testing import TestClient, WebSocketDenied
from microasgi.types import Message, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]


class RaiseOnWebSocket:
    """Route middleware that raises before the handler runs."""

    def __init__(self, app: Any, exc: Exception) -> None:
        self.app = app
        self.exc = exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise self.exc


async def never(websocket: Any) -> None:
    raise AssertionError("the middleware raises first")


def websocket_app(exc: Exception, **handlers: Any) -> App:
    app = App()
    for key, handler in handlers.items():
        app.add_exception_handler(int(key[1:]) if key.startswith("s") else Exception, handler)
    app.add_websocket_route("/ws", never, middleware=[Middleware(RaiseOnWebSocket, exc=exc)])
    return app


def test_websocket_exception_from_middleware_closes_with_its_code(
    client_factory: ClientFactory,
) -> None:
    app = websocket_app(WebSocketException(4003, "go away"))
    with client_factory(app) as client, pytest.raises(WebSocketDisconnect) as info:
        with client.websocket_connect("/ws"):
            pass
    assert (info.value.code, info.value.reason) == (4003, "go away")


def test_http_exception_before_accept_is_a_denial(client_factory: ClientFactory) -> None:
    app = websocket_app(HTTPException(401, "who are you", {"www-authenticate": "Bearer"}))
    with client_factory(app) as client, pytest.raises(WebSocketDenied) as info:
        with client.websocket_connect("/ws"):
            pass
    assert info.value.status_code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"
    assert info.value.json() == {"detail": "who are you"}


def test_http_exception_after_accept_closes_1008(client_factory: ClientFactory) -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(websocket: Any) -> None:
        await websocket.accept()
        raise HTTPException(403, "not any more")

    with client_factory(app) as client, client.websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
    assert (info.value.code, info.value.reason) == (1008, "not any more")


@pytest.mark.parametrize(
    "exc", [HTTPException(403, "Unknown room " + "é" * 60), WebSocketException(4000, "é" * 70)]
)
def test_long_error_reasons_fit_the_close_frame(
    client_factory: ClientFactory, exc: Exception
) -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(websocket: Any) -> None:
        await websocket.accept()
        raise exc

    with client_factory(app) as client, client.websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
    reason = info.value.reason
    assert len(reason.encode()) <= 123
    assert str(getattr(exc, "detail", None) or getattr(exc, "reason", "")).startswith(reason)
    assert len(reason.encode()) > 120


def test_exception_handlers_answer_websocket_errors(client_factory: ClientFactory) -> None:
    app = App()

    @app.exception_handler(KeyError)
    async def on_key_error(websocket: Any, exc: Exception) -> None:
        await websocket.close(4004, "no such key")

    @app.websocket("/ws")
    async def handler(websocket: Any) -> None:
        await websocket.accept()
        raise KeyError("k")

    with client_factory(app) as client, client.websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
    assert (info.value.code, info.value.reason) == (4004, "no such key")


def test_handler_response_for_a_websocket_is_a_denial(client_factory: ClientFactory) -> None:
    async def denied(websocket: Any, exc: Exception) -> Response:
        return PlainTextResponse("nope", status_code=401, headers={"www-authenticate": "Bearer"})

    app = websocket_app(KeyError("k"), handler=denied)
    with client_factory(app) as client, pytest.raises(WebSocketDenied) as info:
        with client.websocket_connect("/ws"):
            pass
    assert info.value.status_code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"
    assert info.value.content == b"nope"


def test_unhandled_websocket_error_before_accept_is_a_500_denial(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = websocket_app(RuntimeError("broken"))
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app, raise_server_exceptions=False) as client:
            with pytest.raises(WebSocketDenied) as info:
                with client.websocket_connect("/ws"):
                    pass
    assert info.value.status_code == 500
    assert [r.getMessage() for r in caplog.records if r.name == "microasgi"] == [
        "Unhandled RuntimeError in WEBSOCKET /ws"
    ]


def test_handler_returning_nothing_sends_nothing_more(client_factory: ClientFactory) -> None:
    app = App()
    sent: list[str] = []

    @app.exception_handler(KeyError)
    async def answered_elsewhere(request: Request, exc: Exception) -> None:
        sent.append("handler ran")

    @app.get("/")
    async def home(request: Request) -> None:
        await request._send({"type": "http.response.start", "status": 202, "headers": []})
        await request._send({"type": "http.response.body", "body": b"early"})
        raise KeyError("after the response")

    with client_factory(app) as client:
        response = client.get("/")
    assert (response.status_code, response.text) == (202, "early")
    assert sent == ["handler ran"]


@pytest.mark.anyio
async def test_error_while_sending_the_500_body_propagates() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client gone")
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    app = App()

    @app.get("/")
    async def home(request: Request) -> None:
        raise HTTPException(400)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    with pytest.raises(OSError, match="client gone"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 400


@pytest.mark.anyio
async def test_lifespan_errors_are_not_answered_as_http() -> None:
    from microasgi._errors import ExceptionHandlers, handle_server_error

    layer = ExceptionHandlers({})
    with pytest.raises(KeyError):
        await layer.handle(KeyError("k"), {"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        await handle_server_error(KeyError("k"), {"type": "lifespan"}, None, None, debug=False)  # type: ignore[arg-type]


def test_default_responses() -> None:
    response = http_exception_response(HTTPException(101))
    assert (response.status_code, response.body) == (101, b"")
    response = http_exception_response(HTTPException(422, detail=["a", object]))
    assert response.status_code == 422
    assert response.body.startswith(b'{"detail":["a","<class')
    scope: Scope = {"headers": [(b"accept", b"text/html")]}
    assert error_response(ValueError("x"), scope, debug=False).body == b"Internal Server Error"
    page = error_response(ValueError("<x>"), scope, debug=True)
    assert b"ValueError: &lt;x&gt;" in page.body


@pytest.mark.parametrize(
    ("detail", "body"),
    [
        ({"errors": {0: "bad row"}}, {"errors": {"0": "bad row"}}),
        ({"id": 2**70}, {"id": 2**70}),
        (Address("a", 1), ["a", 1]),
        ({"n": 2**70, "x": Address}, {"n": 2**70, "x": str(Address)}),
    ],
)
def test_http_exception_details_are_written_as_json_responses_write_them(
    client_factory: ClientFactory, detail: Any, body: Any
) -> None:
    app = App()

    @app.get("/")
    async def refuse(request: Request) -> None:
        raise HTTPException(422, detail=detail)

    with client_factory(app) as client:
        response = client.get("/")
    assert response.status_code == 422
    assert response.json() == {"detail": body}


class ReadBodyFirst:
    """Middleware that reads the request body before the app runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Request(scope, receive, send).body()
        await self.app(scope, receive, send)


async def call_leaving_mid_body(app: App) -> list[Message]:
    """Call ``app`` with a POST whose client leaves after 5 of its 10 bytes."""
    messages: list[Message] = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", b"10")],
        "query_string": b"",
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["handler", "middleware"])
async def test_client_leaving_mid_body_is_no_server_error(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(middleware=[Middleware(ReadBodyFirst)] if where == "middleware" else [])
    called: list[str] = []

    @app.exception_handler(500)
    async def on_500(request: Request, exc: Exception) -> Response:
        called.append("500")
        return PlainTextResponse("failed", status_code=500)

    @app.post("/")
    async def home(request: Request) -> bytes:
        return await request.body()

    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        sent = await call_leaving_mid_body(app)
    assert sent == []  # nobody is left to answer
    assert called == []
    assert [r for r in caplog.records if r.name == "microasgi"] == []


@pytest.mark.anyio
async def test_client_disconnect_handler_still_runs() -> None:
    from microasgi import ClientDisconnect

    app = App()
    seen: list[str] = []

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: Exception) -> None:
        seen.append(request.url.path)

    @app.post("/")
    async def home(request: Request) -> bytes:
        return await request.body()

    assert await call_leaving_mid_body(app) == []
    assert seen == ["/"]


def microasgi_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "microasgi"]


def test_http_exceptions_raised_in_middleware_keep_their_status(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(max_body_size=10)

    @app.exception_handler(403)
    async def forbidden(request: Request, exc: HTTPException) -> Response:
        return PlainTextResponse("custom 403", status_code=403)

    @app.middleware("http")
    async def reads_json(request: Request, call_next: Any) -> Response:
        if request.url.path == "/private":
            raise HTTPException(403)
        await request.json()
        response: Response = await call_next(request)
        return response

    @app.post("/")
    async def home(request: Request) -> str:
        return "ok"

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app) as client:
            big = client.post("/", content=b"[" * 100, headers={"content-type": "application/json"})
            bad = client.post("/", content=b"{", headers={"content-type": "application/json"})
            plain = client.post("/", content=b"{}", headers={"content-type": "text/plain"})
            private = client.post("/private")
    assert [r.status_code for r in (big, bad, plain, private)] == [413, 400, 415, 403]
    assert big.json() == {"detail": "Request body exceeds the limit of 10 bytes"}
    assert private.text == "custom 403"
    assert microasgi_errors(caplog) == []


def test_the_exception_handler_answers_errors_raised_in_middleware(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            raise KeyError("in middleware")

    app = App(middleware=[Middleware(Broken)])

    @app.exception_handler(Exception)
    async def everything(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"handled {type(exc).__name__}", status_code=500)

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app) as client:
            response = client.get("/")
    assert (response.status_code, response.text) == (500, "handled KeyError")
    assert microasgi_errors(caplog) == []


@pytest.mark.parametrize("mode", ["reraise", "new error", "returns dict"])
def test_a_failing_exception_handler_runs_once_and_is_logged_once(
    mode: str, client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def on_key_error(request: Request, exc: Exception) -> Any:
        calls.append(request.url.path)
        if mode == "reraise":
            raise exc
        if mode == "new error":
            raise ValueError("in the handler")
        return {"detail": "not a response"}

    app = App(exception_handlers={KeyError: on_key_error})

    @app.middleware("http")
    async def passthrough(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        return response

    @app.get("/")
    async def home(request: Request) -> None:
        raise KeyError("k")

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app, raise_server_exceptions=False) as client:
            response = client.get("/")
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert calls == ["/"]
    expected = {"reraise": "KeyError", "new error": "ValueError", "returns dict": "TypeError"}
    assert microasgi_errors(caplog) == [f"Unhandled {expected[mode]} in GET /"]
    record = next(r for r in caplog.records if r.name == "microasgi")
    assert record.exc_info is not None
    if mode == "returns dict":
        assert "on_key_error returned dict" in str(record.exc_info[1])
        assert isinstance(record.exc_info[1].__cause__, KeyError)


def test_a_failing_websocket_exception_handler_is_logged_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def on_key_error(websocket: Any, exc: Exception) -> None:
        calls.append("called")
        raise ValueError("in the handler")

    app = websocket_app(KeyError("k"), handler=on_key_error)
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app, raise_server_exceptions=False) as client:
            with pytest.raises(WebSocketDenied) as info:
                with client.websocket_connect("/ws"):
                    pass
    assert info.value.status_code == 500
    assert calls == ["called"]
    assert microasgi_errors(caplog) == ["Unhandled ValueError in WEBSOCKET /ws"]


def test_a_plain_def_wrapper_around_an_async_exception_handler(
    client_factory: ClientFactory,
) -> None:
    async def on_key_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("handled", status_code=409)

    @functools.wraps(on_key_error)
    def logged(request: Request, exc: Exception) -> Any:
        return on_key_error(request, exc)

    app = App(exception_handlers={KeyError: logged})

    @app.get("/")
    async def home(request: Request) -> None:
        raise KeyError("k")

    with client_factory(app) as client:
        response = client.get("/")
    assert (response.status_code, response.text) == (409, "handled")


def test_the_debug_page_of_an_exception_whose_str_fails(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    app = App(debug=True)

    @app.get("/")
    async def home(request: Request) -> None:
        raise Unprintable()

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with client_factory(app, raise_server_exceptions=False) as client:
            response = client.get("/", headers={"accept": "text/html"})
    assert response.status_code == 500
    assert "<h1>Unprintable: &lt;exception str() failed&gt;</h1>" in response.text
    assert "no str" not in response.text
    assert microasgi_errors(caplog) == ["Unhandled Unprintable in GET /"]
