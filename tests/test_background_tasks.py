"""Background tasks through the App: after the last byte, and their errors logged once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from microasgi.app import App
from microasgi.background import BackgroundTask, BackgroundTasks
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response, StreamingResponse
from microasgi.sse import EventSourceResponse
from microasgi.staticfiles import FileResponse
from microasgi.testing import TestClient
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]

BIG = 200 * 1024  # streamed in several chunks by FileResponse


class TaskFailed(Exception):
    """The error a background task raises in these tests."""


def http_scope(path: str, method: str = "GET") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "extensions": {},
    }


class Server:
    """The server side of one request, strict as uvicorn is once a response is complete."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refused: list[Message] = []
        self.complete = anyio.Event()
        self.request_sent = False

    async def receive(self) -> Message:
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.complete.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.complete.is_set():
            self.refused.append(message)
            raise RuntimeError(
                f"Unexpected ASGI message {message['type']!r} sent, after response already "
                "completed."
            )
        self.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


class Passthrough:
    """A pure ASGI middleware, so the app's middleware stack is in the way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def make_response(kind: str, body: bytes, background: BackgroundTask, path: Path) -> Response:
    if kind == "response":
        return Response(body, media_type="text/plain", background=background)
    if kind == "streaming":

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 10):
                yield body[start : start + 10]

        return StreamingResponse(chunks(), media_type="text/plain", background=background)
    if kind == "sse":
        return EventSourceResponse([body.decode()], ping=None, background=background)
    path.write_bytes(body)
    return FileResponse(path, background=background)


KINDS = ["response", "streaming", "file", "big-file", "sse"]


def expected_body(kind: str) -> bytes:
    if kind == "big-file":
        return b"x" * BIG
    if kind == "sse":
        return b"data: the whole response\n\n"
    return b"the whole response"


def build_app(kind: str, background: BackgroundTask, tmp_path: Path, *, middleware: bool) -> App:
    app = App()
    if middleware:
        app.add_middleware(Passthrough)
    body = b"x" * BIG if kind == "big-file" else b"the whole response"

    @app.get("/")
    async def endpoint(request: Request) -> Response:
        return make_response(kind, body, background, tmp_path / "file.bin")

    return app


# --- after the last byte ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("middleware", [False, True])
async def test_the_client_has_the_whole_response_before_the_task_ends(
    kind: str, middleware: bool, tmp_path: Path
) -> None:
    server = Server()
    release = anyio.Event()
    seen_at_start: list[bool] = []
    finished: list[str] = []

    async def task() -> None:
        seen_at_start.append(server.complete.is_set())
        await release.wait()
        finished.append("done")

    app = build_app(kind, BackgroundTask(task), tmp_path, middleware=middleware)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, http_scope("/"), server.receive, server.send)
            await server.complete.wait()
            # The response is complete on the client's side while the task still runs.
            assert server.body == expected_body(kind)
            assert server.messages[0]["status"] == 200
            assert finished == []
            release.set()
    assert seen_at_start == [True]
    assert finished == ["done"]
    assert server.refused == []


def test_tasks_run_in_order_after_the_response(client_factory: ClientFactory) -> None:
    app = App()
    order: list[str] = []

    async def first(name: str) -> None:
        order.append(name)

    def second(name: str) -> None:
        order.append(name)

    @app.get("/")
    async def endpoint(request: Request) -> PlainTextResponse:
        tasks = BackgroundTasks()
        tasks.add_task(first, "async task")
        tasks.add_task(second, name="sync task")
        order.append("handler")
        return PlainTextResponse("ok", background=tasks)

    with client_factory(app) as client:
        assert client.get("/").text == "ok"
        assert client.head("/").status_code == 200
    assert order == ["handler", "async task", "sync task"] * 2


# --- errors in a task ---------------------------------------------------------------------------


def failing_tasks(kind: str) -> BackgroundTask:
    async def boom() -> None:
        raise TaskFailed("the task failed")

    def sync_boom() -> None:
        raise TaskFailed("the sync task failed")

    never: list[str] = []
    if kind == "async":
        return BackgroundTask(boom)
    if kind == "sync":
        return BackgroundTask(sync_boom)
    tasks = BackgroundTasks()
    tasks.add_task(never.append, "ran before")
    tasks.add_task(boom)
    tasks.add_task(pytest.fail, "a task after a failed one ran")
    return tasks


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("microasgi") and r.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize("task_kind", ["async", "sync", "several"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("middleware", [False, True])
def test_a_failing_task_is_logged_once_and_the_response_is_intact(
    client_factory: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    task_kind: str,
    kind: str,
    middleware: bool,
) -> None:
    app = build_app(kind, failing_tasks(task_kind), tmp_path, middleware=middleware)
    with client_factory(app, raise_server_exceptions=False) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.content == expected_body(kind)
    [record] = error_records(caplog)
    assert record.name == "microasgi"
    assert record.getMessage() == "Unhandled TaskFailed in GET / after the response had started"
    assert record.exc_info is not None and isinstance(record.exc_info[1], TaskFailed)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("middleware", [False, True])
async def test_nothing_is_sent_after_a_failing_task(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, kind: str, middleware: bool
) -> None:
    # On a real server (no test-client extension) the error layer logs the error, and its
    # attempt at a 500 meets a server that refuses it: the connection keeps its response.
    server = Server()
    app = build_app(kind, failing_tasks("async"), tmp_path, middleware=middleware)
    with anyio.fail_after(10):
        await app(http_scope("/"), server.receive, server.send)
    assert server.body == expected_body(kind)
    assert server.messages[0]["status"] == 200
    assert len([m for m in server.messages if m["type"] == "http.response.start"]) == 1
    assert [m["type"] for m in server.refused] in ([], ["http.response.start"])
    assert len(error_records(caplog)) == 1


def test_the_test_client_re_raises_a_task_error_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = build_app("response", failing_tasks("async"), tmp_path, middleware=True)
    with client_factory(app) as client:
        with pytest.raises(TaskFailed, match="the task failed"):
            client.get("/")
    assert len(error_records(caplog)) == 1


def test_a_task_error_does_not_break_the_next_request(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = build_app("streaming", failing_tasks("sync"), tmp_path, middleware=False)

    @app.get("/ok")
    async def ok(request: Request) -> str:
        return "still serving"

    with client_factory(app, raise_server_exceptions=False) as client:
        for _ in range(3):
            assert client.get("/").content == b"the whole response"
        assert client.get("/ok").text == "still serving"
    assert len(error_records(caplog)) == 3


@pytest.mark.anyio
async def test_a_task_is_not_run_when_the_client_left(tmp_path: Path) -> None:
    ran: list[str] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"chunk"
            await anyio.sleep(0.001)

    app = App()

    @app.get("/")
    async def endpoint(request: Request) -> StreamingResponse:
        return StreamingResponse(endless(), background=BackgroundTask(ran.append, "task"))

    sent: list[Message] = []

    async def receive() -> Message:
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if len(sent) >= 3:
            raise OSError("connection reset by peer")
        sent.append(message)

    with anyio.fail_after(10):
        await app(http_scope("/"), receive, send)
    assert ran == []


@pytest.mark.anyio
@pytest.mark.parametrize("key", [500, Exception])
async def test_a_failing_task_with_a_500_handler_is_logged_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, key: int | type[Exception]
) -> None:
    app = build_app("response", failing_tasks("async"), tmp_path, middleware=False)

    @app.exception_handler(key)
    async def handler(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("custom error page", status_code=500)

    server = Server()
    with anyio.fail_after(10):
        await app(http_scope("/"), server.receive, server.send)
    assert server.body == expected_body("response")
    [record] = error_records(caplog)
    assert record.exc_info is not None and isinstance(record.exc_info[1], TaskFailed)
