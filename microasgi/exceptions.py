"""Exceptions raised by microasgi.

The hierarchy::

    Exception
    ├── HTTPException            -- answered as an HTTP error response
    ├── WebSocketException       -- closes a WebSocket with a code and reason
    ├── WebSocketDisconnect      -- the peer closed the WebSocket
    ├── ClientDisconnect         -- the HTTP client went away while the body was read
    ├── LookupError
    │   └── NoMatchFound         -- url_path_for found no route with that name and params
    ├── ValueError
    │   ├── RouteTemplateError   -- a malformed path template, at registration
    │   └── RouteConflictError   -- two routes that can never both be reached
    └── RuntimeError
        └── SetupError           -- the app was changed after it started serving
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

__all__ = [
    "ClientDisconnect",
    "HTTPException",
    "NoMatchFound",
    "RouteConflictError",
    "RouteTemplateError",
    "SetupError",
    "WebSocketDisconnect",
    "WebSocketException",
]


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


class HTTPException(Exception):
    """An HTTP error answered as JSON ``{"detail": ...}`` with the given status."""

    def __init__(
        self,
        status_code: int,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # NOTE: refused here, where the mistake is made; raised, a status no server can send
        # would only fail (or go out as sent) far from the line that wrote it.
        if not isinstance(status_code, int) or isinstance(status_code, bool):
            raise TypeError(f"HTTPException status_code must be an int, not {status_code!r}")
        if not 100 <= status_code <= 599:
            raise ValueError(f"HTTPException status_code must be 100-599, not {status_code}")
        if detail is None:
            detail = _phrase(status_code)
        self.status_code = int(status_code)  # an HTTPStatus member too
        self.detail = detail
        self.headers = dict(headers) if headers else None
        super().__init__(status_code, detail)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, detail={self.detail!r})"


class WebSocketException(Exception):
    """Close the WebSocket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        # NOTE: refused where it is written, as HTTPException refuses a status, rather than
        # when the close frame is sent. Imported here: websockets imports this module.
        from .websockets import _check_close_code

        _check_close_code(code)
        self.code = code
        self.reason = reason or ""
        super().__init__(code, self.reason)

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class WebSocketDisconnect(Exception):
    """The WebSocket peer went away (``code`` and ``reason`` from its close frame)."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""
        super().__init__(code, self.reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class ClientDisconnect(Exception):
    """The HTTP client disconnected before the request body was read."""


class NoMatchFound(LookupError):
    """No route has the name and parameters given to ``url_path_for``."""

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        keys = ", ".join(sorted(params))
        super().__init__(f'No route named "{name}" accepts the parameters ({keys}).')


class RouteTemplateError(ValueError):
    """A path template is malformed; the message names the template and the rule."""


class RouteConflictError(ValueError):
    """Two routes can never both be reached; the message names both."""

    def __init__(self, existing: object, new: object, why: str = "") -> None:
        self.existing = existing
        self.new = new
        message = f"{new!r} conflicts with {existing!r}"
        if why:
            message += f": {why}"
        super().__init__(message)


class SetupError(RuntimeError):
    """The app was changed after it started serving."""
