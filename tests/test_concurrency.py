from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from microasgi.concurrency import iterate_in_threadpool, run_in_threadpool

pytestmark = pytest.mark.anyio

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


async def test_run_in_threadpool_runs_in_a_worker_thread() -> None:
    def where(a: int, b: int) -> tuple[int, int]:
        return threading.get_ident(), a + b

    ident, total = await run_in_threadpool(where, 1, 2)
    assert ident != threading.get_ident()
    assert total == 3


async def test_run_in_threadpool_passes_keywords() -> None:
    def join(*parts: str, sep: str = "-") -> str:
        return sep.join(parts)

    assert await run_in_threadpool(join, "a", "b", sep="+") == "a+b"


async def test_run_in_threadpool_sees_context_variables() -> None:
    request_id.set("abc")
    assert await run_in_threadpool(request_id.get) == "abc"


async def test_run_in_threadpool_propagates_errors() -> None:
    def fail() -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await run_in_threadpool(fail)


async def test_iterate_in_threadpool_yields_every_item_from_worker_threads() -> None:
    threads: list[int] = []

    def numbers() -> Iterator[int]:
        for number in range(3):
            threads.append(threading.get_ident())
            yield number

    assert [item async for item in iterate_in_threadpool(numbers())] == [0, 1, 2]
    assert threading.get_ident() not in threads


async def test_iterate_in_threadpool_accepts_any_iterable() -> None:
    assert [item async for item in iterate_in_threadpool(["a", "b"])] == ["a", "b"]
    empty: list[str] = []
    assert [item async for item in iterate_in_threadpool(empty)] == []


async def test_iterate_in_threadpool_propagates_errors() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise LookupError("boom")

    seen: list[int] = []
    with pytest.raises(LookupError, match="boom"):
        async for item in iterate_in_threadpool(broken()):
            seen.append(item)
    assert seen == [1]


class CountingIterator:
    def __init__(self, items: int) -> None:
        self.remaining = items
        self.close_calls = 0
        self.close_threads: list[int] = []

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> int:
        if self.remaining == 0:
            raise StopIteration
        self.remaining -= 1
        return self.remaining

    def close(self) -> None:
        self.close_calls += 1
        self.close_threads.append(threading.get_ident())


async def test_closing_early_closes_the_sync_iterator_in_a_worker_thread() -> None:
    iterator = CountingIterator(10)
    stream = iterate_in_threadpool(iterator)
    assert await stream.__anext__() == 9
    await stream.aclose()
    assert iterator.close_calls == 1
    assert iterator.close_threads != [threading.get_ident()]


async def test_an_exhausted_iterator_is_not_closed_again() -> None:
    iterator = CountingIterator(2)
    assert [item async for item in iterate_in_threadpool(iterator)] == [1, 0]
    assert iterator.close_calls == 0


async def test_cancelling_the_iteration_runs_the_generator_cleanup() -> None:
    cleaned_up = threading.Event()

    def endless() -> Iterator[int]:
        try:
            while True:
                yield 1
        finally:
            cleaned_up.set()

    stream = iterate_in_threadpool(endless())
    with anyio.move_on_after(0.05):
        async for _ in stream:
            await anyio.sleep(0.001)
    await stream.aclose()
    assert cleaned_up.is_set()


@pytest.mark.parametrize("lifespan", [True, False])
def test_debug_mode_warns_when_the_loop_blocks(
    client_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture, lifespan: bool
) -> None:
    # NOTE: a client not entered with `with` sends no lifespan, as Daphne or
    # `uvicorn --lifespan off`; the first request starts the watch, which ends with its loop.
    import time as _time

    from microasgi import App

    app = App(debug=True)

    @app.get("/blocking")
    async def blocking_handler(request: Any) -> str:
        _time.sleep(0.4)
        return "done"

    @app.get("/fine")
    async def fine(request: Any) -> str:
        return "fine"

    gc.collect()
    gc.disable()
    try:
        with caplog.at_level(logging.WARNING, logger="microasgi"):
            client = client_factory(app)
            with client if lifespan else contextlib.nullcontext():
                assert client.get("/fine").text == "fine"
                assert client.get("/blocking").text == "done"
    finally:
        gc.enable()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "event loop has been blocked" in warnings[0]
    assert "blocking_handler" in warnings[0]
    assert "_time.sleep(0.4)" in warnings[0]
    deadline = _time.monotonic() + 5
    while any(t.name == "microasgi-loop-watchdog" for t in threading.enumerate()):
        assert _time.monotonic() < deadline, "the watchdog outlived its event loop"
        _time.sleep(0.01)
    assert watched_loops() == {}


def watched_loops() -> dict[int, Any]:
    from microasgi import concurrency

    return dict(concurrency._watched_loops)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_watch_without_lifespan_ends_when_its_loop_stops_running(
    anyio_backend: str,
) -> None:
    import asyncio

    from microasgi.concurrency import watch_until_the_loop_stops

    def serve_once() -> int:
        # NOTE: a loop that stops but is not closed, as a server may leave it.
        loop = asyncio.new_event_loop()
        try:

            async def request() -> int:
                watch_until_the_loop_stops()
                watch_until_the_loop_stops()  # once per loop
                return threading.get_ident()

            thread = loop.run_until_complete(request())
            assert thread in watched_loops()
            watchdogs = [t for t in threading.enumerate() if t.name == "microasgi-loop-watchdog"]
            for watchdog in watchdogs:
                watchdog.join(5)
            assert thread not in watched_loops()
            # NOTE: run again, the loop's old heartbeat is not scheduled any more.
            loop.run_until_complete(asyncio.sleep(0.05))
            assert not loop._scheduled  # type: ignore[attr-defined]
            return thread
        finally:
            loop.close()

    await anyio.to_thread.run_sync(serve_once)


def test_no_watchdog_without_debug(
    client_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    import time as _time

    from microasgi import App

    app = App()

    @app.get("/blocking")
    async def blocking_handler(request: Any) -> str:
        _time.sleep(0.3)
        return "done"

    with caplog.at_level(logging.WARNING, logger="microasgi"):
        with client_factory(app) as client:
            assert client.get("/blocking").text == "done"
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


def test_nested_debug_apps_report_a_stall_once_and_stop_their_watchdog(
    client_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    import time as _time

    from microasgi import App

    inner = App(debug=True)
    app = App(debug=True)
    app.mount("/inner", inner)

    @inner.get("/blocking")
    async def blocking_handler(request: Any) -> str:
        _time.sleep(0.4)
        return "done"

    with caplog.at_level(logging.WARNING, logger="microasgi"):
        with client_factory(app) as client:
            assert client.get("/inner/blocking").text == "done"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    watchdogs = [t for t in threading.enumerate() if t.name == "microasgi-loop-watchdog"]
    assert watchdogs == []


def assert_one_warning_for_a_blocking_handler(
    app: Any,
    router: Any,
    path: str,
    client_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Serve ``app`` with a blocking ``/blocking`` on ``router`` (requested at ``path``).

    Exactly one warning is logged, and it names the handler.
    """
    import time as _time

    @router.get("/blocking")
    async def blocking_handler(request: Any) -> str:
        _time.sleep(0.4)
        return "done"

    # NOTE: a full collection of the whole test session's objects can stall the loop for
    # a quarter of a second on its own, and would be reported in the handler's place.
    gc.collect()
    gc.disable()
    try:
        with caplog.at_level(logging.WARNING, logger="microasgi"):
            with client_factory(app) as client:
                assert client.get(path).text == "done"
    finally:
        gc.enable()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "blocking_handler" in warnings[0]


def test_blocking_startup_and_shutdown_are_not_reported(
    client_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # No request is served while an app starts or stops (servers accept connections once
    # the startup is complete), so a blocking hook there is no stall worth a warning.
    import time as _time
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from microasgi import App

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        _time.sleep(0.3)
        yield
        _time.sleep(0.3)

    app = App(debug=True, lifespan=lifespan)
    app.on_startup(lambda: _time.sleep(0.3))
    app.on_shutdown(lambda: _time.sleep(0.3))

    assert_one_warning_for_a_blocking_handler(app, app, "/blocking", client_factory, caplog)


def test_a_mounted_debug_app_is_quiet_during_the_startup_of_its_parent(
    client_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # The mounted app's lifespan runs inside the parent's startup, before the parent's
    # startup hooks: its watchdog must not report them.
    import time as _time

    from microasgi import App

    inner = App(debug=True)
    app = App()
    app.mount("/inner", inner)
    app.on_startup(lambda: _time.sleep(0.3))
    app.on_shutdown(lambda: _time.sleep(0.3))

    assert_one_warning_for_a_blocking_handler(app, inner, "/inner/blocking", client_factory, caplog)


@pytest.mark.parametrize("suppress", [False, True])
async def test_while_serving_hands_an_error_to_the_lifespan(suppress: bool) -> None:
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from microasgi.concurrency import while_serving

    seen: list[BaseException] = []

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[str]:
        try:
            yield "state"
        except LookupError as exc:
            seen.append(exc)
            if not suppress:
                raise

    async def serve() -> None:
        async with while_serving(lifespan(), watch=True) as state:
            assert state == "state"
            raise LookupError("while serving")

    # The lifespan gets the error itself, not an ExceptionGroup of the watchdog's tasks.
    with pytest.raises(LookupError) if not suppress else contextlib.nullcontext():
        await serve()
    assert [str(exc) for exc in seen] == ["while serving"]
