from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from microasgi import App, Middleware, Request
from microasgi.testing import LifespanFailed, TestClient
from microasgi.types import Message, Receive, Scope, Send
from tests.integration.servers import ROOT, require_module, serve, server_argv
from tests.support import free_port

ClientFactory = Callable[..., TestClient]


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("lifespan not supported")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"plain"})


async def ends_after_startup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        return
    await no_lifespan(scope, receive, send)


def make_counting_app(events: list[str]) -> Callable[[Scope, Receive, Send], Any]:
    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        assert scope["state"] is not None
        message: Message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})

    return counting


def test_mounted_apps_without_lifespan_are_served(client_factory: ClientFactory) -> None:
    events: list[str] = []
    app = App()
    app.mount("/none", no_lifespan)
    app.mount("/short", ends_after_startup)
    app.mount("/counting", make_counting_app(events))

    @app.get("/")
    async def home(request: Request) -> str:
        return "home"

    with client_factory(app) as client:
        assert client.get("/none/x").text == "plain"
        assert client.get("/short/x").text == "plain"
        assert client.get("/").text == "home"
        assert events == ["lifespan.startup"]
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_a_mounted_app_failing_shutdown_fails_the_shutdown(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def flushes_at_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "queue not flushed"})

    app = App()
    app.mount("/queue", flushes_at_shutdown)
    client = client_factory(app)
    match = "failed to shut down: queue not flushed"
    with pytest.raises(LifespanFailed, match=match) as info, client:
        pass
    assert info.value.phase == "shutdown"
    assert [r.getMessage() for r in caplog.records] == ["Lifespan shutdown failed"]


def test_router_alone_acknowledges_lifespan(client_factory: ClientFactory) -> None:
    from microasgi import Router

    router = Router()
    with client_factory(router):
        pass


@pytest.mark.anyio
async def test_app_without_state_support_still_starts() -> None:
    from microasgi.lifespan import combine, serve_lifespan

    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []
    states: list[dict[str, Any]] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    factory = combine([], [], [])
    await serve_lifespan(None, factory, {"type": "lifespan"}, receive, send, states.append)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert states == [{}]


# --- failures: what the server is told, what is logged -------------------------------------


def test_a_failed_startup_logs_the_traceback_once_and_tells_the_error(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.on_startup
    def broken() -> None:
        raise RuntimeError("database unreachable")

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        with pytest.raises(LifespanFailed) as info, client_factory(app):
            pass
    # NOTE: servers log the message too (Uvicorn: "ERROR: <message>"): the error, not a
    # second copy of the traceback.
    assert info.value.message == "RuntimeError: database unreachable"
    records = [r for r in caplog.records if r.name == "microasgi"]
    assert [r.getMessage() for r in records] == ["Lifespan startup failed"]
    assert records[0].exc_info is not None and records[0].exc_info[0] is RuntimeError


def test_an_exception_group_is_told_error_by_error(client_factory: ClientFactory) -> None:
    app = App()

    async def fail(error: Exception) -> None:
        raise error

    @app.on_shutdown
    async def broken() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(fail, KeyError("a"))
            group.start_soon(fail, OSError("disk full"))

    with pytest.raises(LifespanFailed) as info, client_factory(app):
        pass
    assert info.value.phase == "shutdown"
    assert sorted(info.value.message.split("; ")) == ["KeyError: 'a'", "OSError: disk full"]


# --- a middleware that refuses its options, under a real server ------------------------------


def misconfigured_app() -> App:
    """An app whose middleware stack cannot be built (served by the tests below)."""
    from microasgi.middleware import CORSMiddleware

    app = App(middleware=[Middleware(CORSMiddleware, allow_origins=["https://a.example/"])])

    @app.get("/")
    async def index(request: Request) -> str:
        return "never served"

    return app


MISCONFIGURED = "tests.test_lifespan:misconfigured_app"
ERROR = "ValueError: Invalid CORS origin 'https://a.example/'"


@pytest.mark.integration
def test_uvicorn_refuses_to_start_an_app_whose_middleware_fails() -> None:
    require_module("uvicorn")
    argv = [*server_argv("uvicorn", MISCONFIGURED, free_port()), "--factory"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as running:
        pytest.fail(f"uvicorn started and served the broken app:\n{running.stderr!r}")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Application startup failed. Exiting." in output
    assert f"ERROR:    {ERROR}" in output
    assert "appears unsupported" not in output
    assert output.count("Traceback (most recent call last)") == 1, output


@pytest.mark.integration
def test_uvicorn_without_lifespan_answers_500_to_each_request(tmp_path: Path) -> None:
    require_module("uvicorn")
    port = free_port()
    argv = [*server_argv("uvicorn", MISCONFIGURED, port), "--factory", "--lifespan", "off"]
    with serve(argv, tmp_path / "uvicorn.log", port=port) as server:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            for _ in range(2):
                response = client.get("/")
                assert (response.status_code, response.text) == (500, "Internal Server Error")
    output = server.log_text()
    assert output.count("Unhandled ValueError in GET /") == 2, output
    assert output.count(ERROR) == 2, output


def test_an_undecorated_async_generator_is_a_lifespan(client_factory: ClientFactory) -> None:
    async def lifespan(app: App) -> Any:
        yield {"greeting": "hello"}

    app = App(lifespan=lifespan)
    app.add_lifespan(lifespan)

    @app.get("/")
    async def home(request: Request) -> str:
        return str(request.state.greeting)

    with client_factory(app) as client:
        assert client.get("/").text == "hello"


def test_a_plain_def_hook_returning_a_coroutine_is_awaited(
    client_factory: ClientFactory,
) -> None:
    events: list[str] = []

    async def connect() -> None:
        events.append("connected")

    async def disconnect() -> None:
        events.append("disconnected")

    app = App(on_startup=[lambda: connect()])
    app.on_shutdown(lambda: disconnect())
    with client_factory(app):
        assert events == ["connected"]
    assert events == ["connected", "disconnected"]


def test_a_lifespan_or_hook_that_cannot_work_fails_at_registration() -> None:
    def sync_generator(app: App) -> Any:
        yield

    def takes_the_app(app: App) -> None: ...

    with pytest.raises(TypeError, match="async context manager"):
        App(lifespan=sync_generator)
    with pytest.raises(TypeError, match="async context manager"):
        App().add_lifespan("lifespan")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        App(on_startup=[None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"without arguments; .*takes_the_app\(app"):
        App().on_startup(takes_the_app)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="without arguments"):
        App(on_shutdown=[takes_the_app])  # type: ignore[list-item]
    App(on_startup=[dict, lambda greeting="hi": None])  # no signature, defaults: both fine


def test_a_lifespan_that_cannot_take_the_app_fails_at_registration() -> None:
    @asynccontextmanager
    async def no_app() -> AsyncIterator[None]:
        yield

    async def undecorated() -> AsyncIterator[None]:
        yield

    async def two(app: App, pool: object) -> AsyncIterator[None]:
        yield

    with pytest.raises(
        TypeError, match=r"the app as its one argument.*no_app\(\) cannot take that"
    ):
        App(lifespan=no_app)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"undecorated\(\) cannot take that"):
        App().add_lifespan(undecorated)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"two\(app: .*pool"):
        App(lifespan=two)  # type: ignore[arg-type]

    def with_a_default(app: App, pool: object = None) -> Any:
        return no_app()

    App(lifespan=with_a_default)  # a default for the rest: fine
    App(lifespan=dict)  # type: ignore[arg-type]  # no signature to check


# --- a failed startup: the startup error, and no shutdown hooks -------------------------------


def test_a_failed_startup_hook_runs_no_shutdown_hook(client_factory: ClientFactory) -> None:
    log: list[str] = []
    resources: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        log.append("enter")
        try:
            yield
        finally:
            log.append("exit")

    app = App(lifespan=lifespan)

    @app.on_startup
    def check_config() -> None:
        log.append("check_config")
        raise RuntimeError("bad config")

    @app.on_startup
    def open_db() -> None:
        log.append("open_db")
        resources["db"] = object()

    @app.on_shutdown
    def close_db() -> None:
        log.append("close_db")
        del resources["db"]

    with pytest.raises(LifespanFailed) as info, client_factory(app):
        pass
    assert (info.value.phase, info.value.message) == ("startup", "RuntimeError: bad config")
    # NOTE: the lifespan context manager that was entered is still exited.
    assert log == ["enter", "check_config", "exit"]


def test_a_failed_lifespan_runs_no_shutdown_hook(client_factory: ClientFactory) -> None:
    log: list[str] = []

    @asynccontextmanager
    async def broken(app: Any) -> AsyncIterator[None]:
        raise OSError("no disk")
        yield

    app = App(lifespan=broken, on_shutdown=[lambda: log.append("shutdown")])
    with pytest.raises(LifespanFailed) as info, client_factory(app):
        pass
    assert info.value.message == "OSError: no disk"
    assert log == []


def test_shutdown_hooks_run_in_reverse_after_a_successful_startup(
    client_factory: ClientFactory,
) -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        log.append("enter")
        yield
        log.append("exit")

    app = App(
        lifespan=lifespan,
        on_startup=[lambda: log.append("start 1"), lambda: log.append("start 2")],
        on_shutdown=[lambda: log.append("stop 1"), lambda: log.append("stop 2")],
    )
    with client_factory(app):
        assert log == ["enter", "start 1", "start 2"]
    assert log == ["enter", "start 1", "start 2", "stop 2", "stop 1", "exit"]
