"""Run blocking code in worker threads without blocking the event loop."""

from __future__ import annotations

import enum
import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread

__all__ = [
    "iterate_in_threadpool",
    "run_in_threadpool",
    "watch_event_loop",
    "watch_until_the_loop_stops",
]

P = ParamSpec("P")
T = TypeVar("T")


async def run_in_threadpool(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call `func(*args, **kwargs)` in a worker thread and return its result."""
    if kwargs:
        # NOTE: anyio passes positional arguments only; keywords go through a partial.
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))
    return await anyio.to_thread.run_sync(func, *args)


class _Stop(enum.Enum):
    STOP = enum.auto()


def _next(iterator: Iterator[T]) -> T | Literal[_Stop.STOP]:
    # NOTE: StopIteration cannot cross the thread boundary (it would end the awaiting
    # coroutine), so exhaustion is reported with a sentinel.
    return next(iterator, _Stop.STOP)


async def iterate_in_threadpool(iterator: Iterable[T]) -> AsyncGenerator[T, None]:
    """Iterate a blocking iterable, each `next()` in a worker thread.

    When the async iteration is closed or cancelled before the end, the sync iterator's
    `close()` (a generator's `finally:` blocks) runs in a worker thread too.
    """
    as_iterator = iter(iterator)
    exhausted = False
    try:
        while True:
            item = await anyio.to_thread.run_sync(_next, as_iterator)
            if item is _Stop.STOP:
                exhausted = True
                return
            yield item
    finally:
        close = getattr(as_iterator, "close", None)
        if not exhausted and close is not None:
            # NOTE: shielded so a cancelled stream still runs the iterator's clean-up.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)


logger = logging.getLogger("microasgi")


@asynccontextmanager
async def watch_event_loop(threshold: float = 0.1, interval: float = 0.02) -> AsyncIterator[None]:
    """Warn on the ``microasgi`` logger whenever the event loop is blocked.

    A task in the loop records a heartbeat every ``interval`` seconds; a watchdog thread
    notices when the heartbeat is older than ``threshold`` and logs, once per stall, how
    long the loop has been blocked and the loop thread's current stack, which points at
    the blocking call. ``App(debug=True)`` watches its loop this way between the end of
    its startup and the start of its shutdown (see `while_serving`).
    """
    state = _new_watch()
    if state is None:
        # NOTE: an app with debug=True mounted in another: one watchdog per event loop, or
        # every stall would be reported once per app.
        yield
        return
    async with _watch_loop(state, threshold, interval):
        yield


def watch_until_the_loop_stops(threshold: float = 0.1, interval: float = 0.02) -> None:
    """Watch the running event loop as `watch_event_loop` does, from now until it stops.

    For an app served without a lifespan (Daphne, ``uvicorn --lifespan off``, a test
    client not entered with ``with``): nothing marks the end of its startup or the start
    of its shutdown, so ``App(debug=True)`` starts this with a request. Does nothing when
    the loop is watched already.
    """
    import asyncio  # NOTE: here, not at the top: it would add 20 ms to `import microasgi`.

    state = _new_watch()
    if state is None:
        return
    loop = state["loop"]
    stopped: threading.Event = state["stopped"]
    running: Callable[[], bool]
    if not isinstance(loop, asyncio.AbstractEventLoop):
        # NOTE: trio ends a run by cancelling its system tasks.
        _spawn_trio_heartbeat(state, interval)
        running = _always
    else:

        def beat() -> None:
            state["beat"] = time.monotonic()
            # NOTE: not again once the watchdog is gone, should the loop run again.
            if not stopped.is_set():
                loop.call_later(interval, beat)

        beat()
        running = loop.is_running
    threading.Thread(
        target=_watch,
        args=(state, threshold, interval, running),
        daemon=True,
        name="microasgi-loop-watchdog",
    ).start()


def _new_watch() -> dict[str, Any] | None:
    """Register a watch of the running loop and return its state; None if it has one."""
    thread = threading.get_ident()
    loop = _running_loop()
    existing = _watched_loops.get(thread)
    if existing is not None:
        if existing["loop"] is loop:
            return None
        # NOTE: a loop that ended on this thread, its watchdog not gone yet.
        existing["stopped"].set()
    state = {"beat": time.monotonic(), "thread": thread, "loop": loop, "stopped": threading.Event()}
    _watched_loops[thread] = state
    return state


def _running_loop() -> object:
    """The running asyncio loop, or the token of the running trio run."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token()


def _spawn_trio_heartbeat(state: dict[str, Any], interval: float) -> None:
    import trio

    async def heartbeat() -> None:
        try:
            while True:
                state["beat"] = time.monotonic()
                await trio.sleep(interval)
        finally:
            state["stopped"].set()

    trio.lowlevel.spawn_system_task(heartbeat, name="microasgi-loop-heartbeat")


def _always() -> bool:
    return True


_watched_loops: dict[int, dict[str, Any]] = {}
"""The threads whose event loop a watchdog watches, and the state shared with it."""

_not_serving_depth: dict[int, int] = {}
"""How many `_not_serving` blocks each event loop thread is in."""


@asynccontextmanager
async def while_serving(
    context: AbstractAsyncContextManager[T], *, watch: bool
) -> AsyncIterator[T]:
    """Enter ``context`` (an app's lifespan), watching the loop while it is entered.

    The loop is watched (`watch_event_loop`) when ``watch`` is true. Stalls during the
    startup and shutdown are not reported, not even by the watchdog of another app on the
    same loop (a mounted ``debug=True`` app): no request is served then, since servers
    accept connections only once the startup is complete.
    """
    with _not_serving():
        value = await context.__aenter__()
    try:
        if watch:
            async with watch_event_loop():
                yield value
        else:
            yield value
    except BaseException:
        with _not_serving():
            if not await context.__aexit__(*sys.exc_info()):
                raise
    else:
        with _not_serving():
            await context.__aexit__(None, None, None)


@contextmanager
def _not_serving() -> Iterator[None]:
    """Keep the watchdog of this thread's event loop quiet: it serves no request."""
    thread = threading.get_ident()
    _not_serving_depth[thread] = _not_serving_depth.get(thread, 0) + 1
    try:
        yield
    finally:
        state = _watched_loops.get(thread)
        if state is not None:
            # NOTE: a fresh beat before the mark is lifted (the watchdog reads the mark
            # first), so a stall that began inside is never reported once it is lifted.
            state["beat"] = time.monotonic()
        remaining = _not_serving_depth[thread] - 1
        if remaining:
            _not_serving_depth[thread] = remaining
        else:
            del _not_serving_depth[thread]


@asynccontextmanager
async def _watch_loop(
    state: dict[str, Any], threshold: float, interval: float
) -> AsyncIterator[None]:
    stopped: threading.Event = state["stopped"]

    async def heartbeat() -> None:
        while True:
            state["beat"] = time.monotonic()
            await anyio.sleep(interval)

    watchdog = threading.Thread(
        target=_watch,
        args=(state, threshold, interval, _always),
        daemon=True,
        name="microasgi-loop-watchdog",
    )
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        watchdog.start()
        try:
            yield
        except Exception as exc:
            # NOTE: re-raised outside the task group, so the app's lifespan around this
            # gets the error itself, not an ExceptionGroup.
            error = exc
        finally:
            stopped.set()
            tg.cancel_scope.cancel()
    await anyio.to_thread.run_sync(watchdog.join)
    if error is not None:
        raise error


def _watch(
    state: dict[str, Any], threshold: float, interval: float, running: Callable[[], bool]
) -> None:
    thread = state["thread"]
    try:
        _report_stalls(state, threshold, interval, running)
    finally:
        # NOTE: a loop that runs again on this thread, or the next one, is watched anew.
        if _watched_loops.get(thread) is state:
            del _watched_loops[thread]


def _report_stalls(
    state: dict[str, Any], threshold: float, interval: float, running: Callable[[], bool]
) -> None:
    reported_beat = None
    thread = state["thread"]
    stopped: threading.Event = state["stopped"]
    while not stopped.wait(interval):
        if not running():
            stopped.set()
            return
        if thread in _not_serving_depth:
            continue
        beat = state["beat"]
        lag = time.monotonic() - beat
        if lag < threshold or beat == reported_beat:
            continue
        reported_beat = beat
        frame = sys._current_frames().get(thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        logger.warning(
            "The event loop has been blocked for %.0f ms (debug=True). A blocking call in "
            "async code stalls every connection; move it to a `def` handler or "
            "run_in_threadpool(). The loop thread is at:\n%s",
            lag * 1000,
            stack,
        )
