"""The ASGI lifespan protocol: startup and shutdown of an app and of what it mounts."""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from ._utils import check_arity
from .types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from anyio.abc import ObjectReceiveStream, ObjectSendStream

__all__ = [
    "RUNNING_KEY",
    "Hook",
    "LifespanFactory",
    "acknowledge_lifespan",
    "check_hook",
    "check_lifespan",
    "child_lifespan",
    "combine",
    "refuse_startup",
    "running_lifespans",
    "serve_lifespan",
]

logger = logging.getLogger("microasgi")

Hook = Callable[[], Awaitable[None] | None]
"""A startup or shutdown hook: a function without arguments, sync or async."""

LifespanFactory = Callable[[Any], AbstractAsyncContextManager[Any]]
"""``lifespan(app)``: an async context manager; a mapping it yields becomes state."""


async def _call_hook(hook: Hook) -> None:
    # NOTE: awaiting whatever comes back also runs the coroutine of a plain `def` that
    # returns one, such as `app.on_startup(lambda: pool.open())`.
    result = hook()
    if inspect.isawaitable(result):
        await result


_LIFESPAN_ARITY = "A lifespan is called with the app as its one argument: write `lifespan(app)`"


def check_lifespan(lifespan: Any) -> LifespanFactory:
    """Check a lifespan at registration; an async generator function is accepted as is.

    ``async def lifespan(app): ... yield ...`` without ``@asynccontextmanager`` is wrapped,
    as Starlette does, rather than failing at startup.
    """
    if inspect.isasyncgenfunction(lifespan):
        check_arity(lifespan, 1, _LIFESPAN_ARITY)
        return asynccontextmanager(lifespan)
    if not callable(lifespan) or inspect.isgeneratorfunction(lifespan):
        raise TypeError(
            f"lifespan must be a function of the app that returns an async context manager "
            f"(an `async def` with @asynccontextmanager), not {lifespan!r}"
        )
    check_arity(lifespan, 1, _LIFESPAN_ARITY)
    return lifespan  # type: ignore[no-any-return]


def check_hook(hook: Any) -> Hook:
    """Check at registration that ``hook`` can be called without arguments."""
    if not callable(hook):
        raise TypeError(f"A startup or shutdown hook must be callable, not {hook!r}")
    check_arity(hook, 0, "Startup and shutdown hooks are called without arguments")
    return hook  # type: ignore[no-any-return]


def combine(
    factories: Sequence[LifespanFactory],
    on_startup: Sequence[Hook],
    on_shutdown: Sequence[Hook],
) -> LifespanFactory:
    """Merge lifespan factories and hooks into one lifespan factory.

    Factories are entered in order, then startup hooks run in registration order; at
    shutdown, shutdown hooks run in reverse registration order, then the factories exit in
    reverse. The mappings the factories yield are merged into the yielded state.

    Shutdown hooks run only after a successful startup: when a factory or a startup hook
    fails, the factories already entered exit and the startup error is what is raised.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        state: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            for factory in factories:
                value = await stack.enter_async_context(factory(app))
                if isinstance(value, Mapping):
                    state.update(value)
                elif value is not None:
                    raise TypeError(
                        f"The lifespan {factory!r} yielded {type(value).__name__}; "
                        "yield a dict of state, or nothing"
                    )
            for hook in on_startup:
                await _call_hook(hook)
            # NOTE: registered once startup is complete, as in Starlette: a shutdown hook
            # may rely on what a startup hook opened, and its error would hide the
            # startup error.
            for hook in on_shutdown:
                stack.push_async_callback(_call_hook, hook)
            yield state

    return lifespan


async def serve_lifespan(
    app: Any,
    factory: LifespanFactory,
    scope: Scope,
    receive: Receive,
    send: Send,
    on_state: Callable[[dict[str, Any]], None],
) -> None:
    """Run the lifespan protocol for ``app`` with the combined ``factory``."""
    started = False
    await receive()  # lifespan.startup
    try:
        async with factory(app) as state:
            on_state(state)
            if state and isinstance(scope.get("state"), dict):
                scope["state"].update(state)
            await send({"type": "lifespan.startup.complete"})
            started = True
            await receive()  # lifespan.shutdown
    except BaseException as exc:
        await _report_failure("shutdown" if started else "startup", exc, send)
        raise
    await send({"type": "lifespan.shutdown.complete"})


async def refuse_startup(error: BaseException, receive: Receive, send: Send) -> None:
    """Answer ``lifespan.startup`` with ``lifespan.startup.failed`` for ``error``.

    For an app whose setup (its routes or its middleware stack) failed before its lifespan
    could run: the server refuses to start, as for a lifespan that fails.
    """
    await receive()  # lifespan.startup
    await _report_failure("startup", error, send)


async def _report_failure(phase: str, error: BaseException, send: Send) -> None:
    # NOTE: the traceback is logged here, once; the server gets the error alone, which
    # servers log too (Uvicorn: "ERROR: ValueError: ..."), so it is not printed twice.
    logger.error("Lifespan %s failed", phase, exc_info=error)
    await send({"type": f"lifespan.{phase}.failed", "message": _describe(error)})


def _describe(error: BaseException) -> str:
    """``Type: message`` for ``error``; for an exception group, for each error in it."""
    errors = getattr(error, "exceptions", None)
    if isinstance(errors, tuple) and errors:
        return "; ".join(_describe(inner) for inner in errors)
    return "".join(traceback.format_exception_only(type(error), error)).strip()


async def acknowledge_lifespan(receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol for an app that has nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


RUNNING_KEY = "microasgi.lifespans"
"""Lifespan scope key: the ids of the apps whose lifespan the enclosing apps already run.

A mounted App skips those it also mounts, so that an app mounted in several places, or
both directly and inside another mounted App, starts once.
"""


def running_lifespans(scope: Scope, app: Any) -> set[int]:
    """The ids of the apps whose lifespan runs already, ``app`` included (see RUNNING_KEY)."""
    running = scope.get(RUNNING_KEY)
    if not isinstance(running, set):
        running = set()
    running.add(id(app))
    return running


def child_lifespan(app: ASGIApp, state: dict[str, Any], running: set[int]) -> LifespanFactory:
    """Return a lifespan factory that runs a mounted ASGI app's own lifespan.

    ``running`` (see ``RUNNING_KEY``) is passed on to the app in its lifespan scope.
    """

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        to_child, child_inbox = anyio.create_memory_object_stream[Message](2)
        child_outbox, from_child = anyio.create_memory_object_stream[Message](2)
        scope: Scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": state,
            RUNNING_KEY: running,
        }

        async def run() -> None:
            async with child_outbox, child_inbox:
                try:
                    await app(scope, child_inbox.receive, child_outbox.send)
                except Exception:
                    # NOTE: an app that raises on a lifespan scope does not support the
                    # protocol (ASGI spec); its startup is then skipped, not failed.
                    logger.debug("Mounted app %r does not support lifespan", app)

        async with anyio.create_task_group() as tg, to_child, from_child:
            tg.start_soon(run)
            try:
                await to_child.send({"type": "lifespan.startup"})
            except anyio.BrokenResourceError:
                pass  # the app already returned: it has no lifespan
            answer = await _receive_or_none(from_child)
            if answer is not None and answer["type"] == "lifespan.startup.failed":
                raise RuntimeError(
                    f"Mounted app {app!r} failed to start: {answer.get('message', '')}"
                )
            try:
                yield
            finally:
                if answer is not None:
                    answer = await _shutdown_child(to_child, from_child)
            # NOTE: as for startup, a failed shutdown of a mounted app is the app's: the
            # server hears lifespan.shutdown.failed instead of nothing.
            if answer is not None and answer["type"] == "lifespan.shutdown.failed":
                raise RuntimeError(
                    f"Mounted app {app!r} failed to shut down: {answer.get('message', '')}"
                )

    return lifespan


async def _shutdown_child(
    to_child: ObjectSendStream[Message], from_child: ObjectReceiveStream[Message]
) -> Message | None:
    try:
        await to_child.send({"type": "lifespan.shutdown"})
    except anyio.BrokenResourceError:
        return None  # the app already ended its lifespan
    return await _receive_or_none(from_child)


async def _receive_or_none(stream: ObjectReceiveStream[Message]) -> Message | None:
    try:
        return await stream.receive()
    except anyio.EndOfStream:
        return None
