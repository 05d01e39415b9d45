"""Error handling: exception handlers (innermost) and the server-error layer (outermost).

An exception raised by a handler meets the innermost layer first, so the response made
from it (a registered handler's, or the default 500) still passes through user middleware
(CORS headers on errors, for instance). Exceptions raised by middleware itself meet the
outermost layer, which answers them with the same handlers. Either way an unhandled
exception is logged once, with its traceback, on the ``microasgi`` logger, and is not
re-raised to the server (which would log it again), except to microasgi's test client,
which asks for it to re-raise it in the test.
A ``ClientDisconnect`` that nothing handled ends the request quietly: the client has gone,
so there is no one to answer and no server error to log.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._json import dump_json
from ._utils import callable_name, escape_for_log, is_async_callable
from .concurrency import run_in_threadpool
from .exceptions import ClientDisconnect, HTTPException, WebSocketException
from .requests import Request
from .responses import DISCONNECT_WATCH, DisconnectWatch, HTMLResponse, PlainTextResponse, Response
from .types import Message, Receive, Scope, Send
from .websockets import answer_error, close_quietly, connection_of, refuse

__all__ = ["ExceptionHandler", "ExceptionHandlers", "handle_server_error"]

logger = logging.getLogger("microasgi")

ExceptionHandler = Callable[[Any, Any], Awaitable[Response | None] | Response | None]
"""``handler(request_or_websocket, exc) -> Response``; may be sync or async."""

TESTING_EXTENSION = "microasgi.testing"
"""Present in ``scope["extensions"]`` when the test client wants exceptions re-raised (a
real server would merely log them a second time)."""

_REPORTED = "reported"
"""Key, in the testing extension's dict, of the exception already logged and answered.

The extension's dict is the one object every layer of a request shares (mounts copy the
scope, not its extensions), so an outer App sees what an inner one reported.
"""


class ResponseFailed(Exception):
    """The response of an app below failed after it started, and that error was logged.

    Raised where the response is read on (an http middleware's ``body_iterator``), so the
    response made from it is not passed off as whole. It answers 500 when nothing was sent
    yet, and is not logged a second time.
    """


def _already_reported(scope: Scope, exc: Exception) -> bool:
    testing = (scope.get("extensions") or {}).get(TESTING_EXTENSION)
    return testing is not None and testing.get(_REPORTED) is exc


class ExceptionHandlers:
    """Turn exceptions into responses: registered handlers, HTTPException, or a 500.

    The router calls ``handle`` for what its routes raise (``Router.error_handler``).
    """

    def __init__(
        self,
        handlers: Mapping[int | type[BaseException], ExceptionHandler],
        *,
        debug: bool = False,
    ) -> None:
        self.debug = debug
        self.status_handlers = {k: v for k, v in handlers.items() if isinstance(k, int)}
        self.class_handlers = {k: v for k, v in handlers.items() if not isinstance(k, int)}

    async def handle(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``exc`` raised while serving ``scope``; re-raise it outside http/websocket.

        An exception already logged and answered further in (re-raised for the test
        client) passes through untouched.
        """
        if scope["type"] not in ("http", "websocket") or _already_reported(scope, exc):
            raise exc
        if scope["type"] == "websocket":
            await self._handle_websocket(exc, scope, receive, send)
            return
        if isinstance(exc, ClientDisconnect):
            watch: DisconnectWatch | None = scope.get(DISCONNECT_WATCH)
            if watch is not None:
                watch.gone = True
        elif isinstance(exc, ResponseFailed):
            await _send_safely(error_response(exc, scope, debug=False), scope, receive, send)
            return
        handler = self.lookup(exc)
        if handler is not None:
            await self._answer_with(handler, exc, scope, receive, send)
        elif isinstance(exc, HTTPException):
            await _send_safely(http_exception_response(exc), scope, receive, send)
        elif not isinstance(exc, ClientDisconnect):
            await report_unhandled(exc, scope, receive, send, debug=self.debug)

    async def _answer_with(
        self, handler: ExceptionHandler, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            response = await _call_handler(handler, Request(scope, receive, send), exc)
            if response is not None and not isinstance(response, Response):
                raise TypeError(
                    f"The exception handler {callable_name(handler)} returned "
                    f"{type(response).__name__}; return a Response (or None when it has "
                    "answered itself)"
                ) from exc
        except Exception as error:
            # NOTE: a failing handler is reported here, once; handed outward, the app's
            # outermost layer would call it a second time.
            await report_unhandled(error, scope, receive, send, debug=self.debug)
            return
        if response is not None and not await _send_safely(response, scope, receive, send):
            # NOTE: the response had already been sent (a background task failed, say):
            # the handler's answer cannot go out, and the error must not go unseen.
            _log(exc, scope, " after the response had started")

    async def _handle_websocket(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        websocket = connection_of(scope, receive, send)
        handler = self.lookup(exc)
        if handler is not None:
            try:
                response = await _call_handler(handler, websocket, exc)
            except Exception as error:
                await report_unhandled(error, scope, receive, send, debug=self.debug)
                return
            if isinstance(response, Response):
                await refuse(websocket, response, 1011, "")
            else:
                await close_quietly(websocket, 1011, "")
        elif isinstance(exc, HTTPException):
            # NOTE: before accept, the status becomes a denial response (403 where the
            # server lacks the extension); after it, a policy-violation close.
            await refuse(websocket, http_exception_response(exc), 1008, str(exc.detail))
        elif isinstance(exc, WebSocketException):
            await close_quietly(websocket, exc.code, exc.reason)
        else:
            await report_unhandled(exc, scope, receive, send, debug=self.debug)

    def lookup(self, exc: Exception) -> ExceptionHandler | None:
        """Return the handler for ``exc``: by status code first, then the closest class."""
        if isinstance(exc, HTTPException):
            handler = self.status_handlers.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            handler = self.class_handlers.get(cls)
            if handler is not None:
                return handler
            if cls in _ANSWERED_BY_DEFAULT:
                # NOTE: as in Starlette, the built-in answer ranks as the handler for its
                # class, so a handler for `Exception` (the 500 handler) does not turn every
                # 404 into a 500; and a client that left mid-body is no server error.
                return None
        return self.status_handlers.get(500)


_ANSWERED_BY_DEFAULT = frozenset({HTTPException, WebSocketException, ClientDisconnect})


async def _call_handler(handler: ExceptionHandler, connection: Any, exc: Exception) -> Any:
    if is_async_callable(handler):
        return await handler(connection, exc)  # type: ignore[misc]
    return await run_in_threadpool(handler, connection, exc)


async def handle_server_error(
    exc: Exception, scope: Scope, receive: Receive, send: Send, *, debug: bool
) -> None:
    """The outermost handling while the app cannot be set up: log and answer ``exc``.

    Once the app is built, ``ExceptionHandlers.handle`` takes this place.
    """
    if scope["type"] not in ("http", "websocket"):
        raise exc
    await report_unhandled(exc, scope, receive, send, debug=debug)


async def report_unhandled(
    exc: Exception, scope: Scope, receive: Receive, send: Send, *, debug: bool
) -> None:
    """Log ``exc`` once, answer 500 (or close 1011) if still possible, re-raise for tests."""
    if scope["type"] == "websocket":
        _log(exc, scope, "")
        await answer_error(connection_of(scope, receive, send))
    else:
        sent = await _send_safely(error_response(exc, scope, debug=debug), scope, receive, send)
        _log(exc, scope, "" if sent else " after the response had started")
    testing = (scope.get("extensions") or {}).get(TESTING_EXTENSION)
    if testing is not None:
        testing[_REPORTED] = exc
        raise exc


def _log(exc: Exception, scope: Scope, when: str) -> None:
    logger.error(
        "Unhandled %s in %s %s%s",
        type(exc).__name__,
        escape_for_log(scope.get("method", "WEBSOCKET")),
        escape_for_log(scope.get("path", "")),
        when,
        exc_info=exc,
    )


def http_exception_response(exc: HTTPException) -> Response:
    """The default answer to an HTTPException: JSON ``{"detail": ...}``."""
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=exc.headers)
    # NOTE: written as JSONResponse writes it (int dict keys, big ints, named tuples), so
    # that no detail turns the error into a 500; what JSON cannot hold becomes its str().
    body = dump_json({"detail": exc.detail}, fallback=str)
    return Response(body, exc.status_code, exc.headers, media_type="application/json")


def error_response(exc: Exception, scope: Scope, *, debug: bool) -> Response:
    """The default 500: a bare message, or the traceback when ``debug`` is on."""
    if not debug:
        return PlainTextResponse("Internal Server Error", status_code=500)
    accept = ""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value.decode("latin-1")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if "text/html" in accept:
        return HTMLResponse(_debug_page(exc, text), status_code=500)
    return PlainTextResponse(text, status_code=500)


def _debug_page(exc: Exception, text: str) -> str:
    import html  # PERF: imported on first use, to keep `import microasgi` light

    try:
        message = str(exc)
    except Exception:
        # NOTE: as traceback words it; raised here, the page would show this error instead.
        message = "<exception str() failed>"
    title = html.escape(f"{type(exc).__name__}: {message}")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>500 Internal Server Error"
        "</title><style>body{font:14px/1.5 system-ui,sans-serif;margin:2rem;color:#222}"
        "h1{font-size:1.3rem;color:#b00}pre{background:#f6f6f6;padding:1rem;overflow:auto;"
        "border-left:4px solid #b00}</style></head><body><h1>" + title + "</h1>"
        "<p>microasgi is running with <code>debug=True</code>; never do so in production."
        "</p><pre>" + html.escape(text) + "</pre></body></html>"
    )


async def _send_safely(response: Response, scope: Scope, receive: Receive, send: Send) -> bool:
    """Send ``response``; False if the server refused it because a response already started."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        await send(message)
        started = True

    try:
        await response(scope, receive, tracking_send)
    except Exception:
        # NOTE: the first message failing means a response was already under way (or the
        # client left); the connection is then ended by the server, which is all we can do.
        if started:
            raise
        return False
    return True
