"""The ASGI lifespan protocol, run around a client session as a server does."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

from microasgi.testing._server import Target
from microasgi.types import Message


class LifespanFailed(RuntimeError):
    """The app answered ``lifespan.startup.failed`` or ``lifespan.shutdown.failed``.

    ``phase`` is ``"startup"`` or ``"shutdown"``; ``message`` is the text the app sent. When
    the app raised, its exception is the ``__cause__``.
    """

    def __init__(self, phase: str, message: str) -> None:
        self.phase = phase
        self.message = message
        super().__init__(
            f"Lifespan {phase} failed: {message}" if message else f"Lifespan {phase} failed."
        )


_LIFESPAN_REPLIES = {
    "startup": ("lifespan.startup.complete", "lifespan.startup.failed"),
    "shutdown": ("lifespan.shutdown.complete", "lifespan.shutdown.failed"),
}


class Lifespan:
    """Runs the ASGI lifespan protocol around a client session, as a server does."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._state: dict[str, Any] = {}
        # "startup"/"shutdown" while an event waits for its answer, "idle" otherwise
        self._phase = "idle"
        self._sent = False
        self._supported = True
        self._error: Exception | None = None

    async def __aenter__(self) -> None:
        # NOTE: the app's task is shielded from the test's own cancellation (a timeout
        # around `async with client:`): its lifespan ends through shutdown, as on a server.
        self._app_scope = anyio.CancelScope(shield=True)
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[Message](1)
        self._to_client, self._client_inbox = anyio.create_memory_object_stream[Message](1)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run)
        self._target.state = self._state
        try:
            reply = await self._exchange("startup")
        except BaseException:
            # NOTE: the test was cancelled while the app started; the task group entered
            # above must be left here, or the caller's cancel scopes are left corrupted.
            await self._stop()
            raise
        if reply is not None and reply["type"] == "lifespan.startup.complete":
            return
        await self._stop()
        if reply is None and not self._sent:
            # NOTE: the app raised or returned on the lifespan scope without a word: it does
            # not speak lifespan, and servers carry on without it.
            self._supported = False
            return
        raise self._failure("startup", reply)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._supported:
            return
        try:
            # NOTE: shielded, so the shutdown also runs when the test was cancelled.
            with anyio.CancelScope(shield=True):
                reply = await self._exchange("shutdown")
        finally:
            await self._stop()
        if self._error is None and (reply is None or reply["type"].endswith(".complete")):
            return  # NOTE: an app that ended without answering shutdown is done all the same
        raise self._failure("shutdown", reply)

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }
        try:
            with self._app_scope:
                await self._target.app(scope, self._app_inbox.receive, self._send)
        except Exception as exc:
            self._error = exc
        finally:
            self._to_client.close()

    async def _send(self, message: Message) -> None:
        self._sent = True
        kind = message["type"]
        expected = _LIFESPAN_REPLIES.get(self._phase)
        if expected is None:
            raise RuntimeError(
                f"Unexpected ASGI message {kind!r}: no lifespan event awaits an answer."
            )
        if kind not in expected:
            raise RuntimeError(
                f'Expected ASGI message "{expected[0]}" or "{expected[1]}", but got {kind!r}.'
            )
        self._phase = "idle"
        await self._to_client.send(message)

    async def _exchange(self, event: str) -> Message | None:
        """Send ``lifespan.<event>`` and return the answer, or None if the app ended first."""
        self._phase = event
        try:
            await self._to_app.send({"type": f"lifespan.{event}"})
            return await self._client_inbox.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None

    async def _stop(self) -> None:
        # NOTE: an app has nothing left to do once it answered; whatever it still awaits
        # (a server would exit the process here) is cancelled rather than waited for.
        self._app_scope.cancel()
        # NOTE: the wait for the app to end is shielded too, so that it completes when the
        # test was cancelled; the task group's own scope is shielded, as a new scope around
        # its exit would interleave with it.
        self._task_group.cancel_scope.shield = True
        try:
            await self._task_group.__aexit__(None, None, None)
        finally:
            for stream in (self._to_app, self._app_inbox, self._to_client, self._client_inbox):
                stream.close()
            self._target.state = {}

    def _failure(self, phase: str, reply: Message | None) -> Exception:
        error = self._error
        if reply is not None and reply["type"].endswith(".failed"):
            failure = LifespanFailed(phase, str(reply.get("message", "")))
        elif error is not None and self._target.raise_server_exceptions:
            return error
        elif error is not None:
            failure = LifespanFailed(phase, f"the app raised {error!r}")
        else:
            failure = LifespanFailed(
                phase, f'the app returned without answering "lifespan.{phase}"'
            )
        failure.__cause__ = error
        return failure
