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

__all__ = ["iterate_in_threadpool", "run_in_threadpool", "watch_event_loop"]

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
    thread = threading.get_ident()
    if thread in _watched_loops:
        # NOTE: an app with debug=True mounted in another: one watchdog per event loop, or
        # every stall would be reported once per app.
        yield
        return
    state: dict[str, Any] = {"beat": time.monotonic(), "thread": thread}
    _watched_loops[thread] = state
    try:
        async with _watch_loop(state, threshold, interval):
            yield
    finally:
        del _watched_loops[thread]


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
    stopped = threading.Event()

    async def heartbeat() -> None:
        while True:
            state["beat"] = time.monotonic()
            await anyio.sleep(interval)

    watchdog = threading.Thread(
        target=_watch,
        args=(state, stopped, threshold, interval),
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
    state: dict[str, Any], stopped: threading.Event, threshold: float, interval: float
) -> None:
    reported_beat = None
    thread = state["thread"]
    while not stopped.wait(interval):
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
