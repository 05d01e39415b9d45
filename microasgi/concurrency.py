"""Run blocking code in worker threads without blocking the event loop."""

from __future__ import annotations

import enum
import functools
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread

__all__ = ["iterate_in_threadpool", "run_in_threadpool"]

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
