"""TimeoutMiddleware: a deadline per request; 504 when the handler misses it."""

from __future__ import annotations

import logging
import math

import anyio
import anyio.lowlevel

from microasgi._utils import escape_for_log
from microasgi.responses import JSONResponse
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TimeoutMiddleware"]

logger = logging.getLogger("microasgi")


class TimeoutMiddleware:
    """Cancel a request still running after ``timeout`` seconds.

    The app below is cancelled cleanly (an anyio cancel scope: its ``finally`` blocks and
    context managers run). If it had not started its response, the client gets ``504`` with
    ``{"detail": ...}``; if the response had started, the stream is cut short, so the
    client sees an incomplete response rather than a truncated one passed off as whole,
    and a warning is logged. The deadline covers reading the request body too. It ends when
    the response is complete: background tasks that run after it are not cut.

    Use it as app middleware for a global deadline, or on a route or router
    (``middleware=[Middleware(TimeoutMiddleware, timeout=30)]``) to give it its own.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        with anyio.move_on_after(self.timeout) as deadline:

            async def send_watched(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    # NOTE: a handler that overran where it could not be cancelled (a
                    # worker thread, code that never awaits) is stopped here, before its
                    # status goes out: a 504, not a 200 cut at its first chunk.
                    if anyio.current_time() >= deadline.deadline:
                        deadline.cancel()
                        await anyio.lowlevel.checkpoint()
                    started = True
                elif not message.get("more_body", False):
                    # NOTE: the response is complete: what follows (background tasks) is
                    # not the client's wait, and is not cut.
                    deadline.deadline = math.inf
                await send(message)

            await self.app(scope, receive, send_watched)
        if not deadline.cancelled_caught:
            return
        # SECURITY: HTTP/2 servers may pass on a method holding escape sequences.
        where = escape_for_log(f"{scope.get('method', '')} {scope.get('path', '')}")
        if started:
            logger.warning(
                "%s was cancelled after %gs with its response under way; the stream was cut",
                where,
                self.timeout,
            )
            return
        logger.warning("%s was cancelled after %gs; answered 504", where, self.timeout)
        detail = f"The request took longer than {self.timeout:g} seconds"
        await JSONResponse({"detail": detail}, status_code=504)(scope, receive, send)
