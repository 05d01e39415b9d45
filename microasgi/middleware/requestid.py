"""RequestIDMiddleware: one id per request, in the response, the request state and logs."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from microasgi.datastructures import encode_header, first_value
from microasgi.requests import HTTPConnection
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIDFilter", "RequestIDMiddleware", "get_request_id"]

_request_id: ContextVar[str | None] = ContextVar("microasgi.request_id", default=None)

# SECURITY: an incoming id reaches log lines and a response header: only a short run of
# characters that cannot start a new line, an escape sequence or a header is accepted.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}", re.ASCII).fullmatch


def get_request_id() -> str | None:
    """Return the id of the request being handled, or None outside one."""
    return _request_id.get()


class RequestIDFilter(logging.Filter):
    """A logging filter that sets ``record.request_id``.

    ``handler.addFilter(RequestIDFilter())`` and ``%(request_id)s`` in the format; outside
    a request the id is ``default``.
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        record.request_id = self.default if request_id is None else request_id
        return True


class RequestIDMiddleware:
    """Give each request an id: a sane ``X-Request-ID``, or a new one.

    The id is on ``request.state.request_id``, in the response header, from
    ``get_request_id()`` and in log records through ``RequestIDFilter``, for the whole
    request, background tasks included. An incoming id is kept when it is 1 to 128 of
    ``A-Z a-z 0-9 . _ : + / = @ -``; otherwise, or with ``trust_incoming=False``, a new
    uuid4 (32 hex digits) is made. ``header_name`` changes the header, both ways.
    """

    def __init__(
        self,
        app: ASGIApp,
        header_name: str = "x-request-id",
        trust_incoming: bool = True,
    ) -> None:
        self.app = app
        self.header_name = encode_header(header_name, "")[0]
        self.trust_incoming = trust_incoming

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = None
        if self.trust_incoming:
            incoming = first_value(scope["headers"], self.header_name)
            if incoming is not None and _SAFE_ID(incoming) is not None:
                request_id = incoming
        if request_id is None:
            request_id = uuid.uuid4().hex
        HTTPConnection(scope).state.request_id = request_id
        token = _request_id.set(request_id)
        try:
            if scope["type"] == "http":
                await self.app(scope, receive, self._with_header(send, request_id))
            else:
                await self.app(scope, receive, send)
        finally:
            _request_id.reset(token)

    def _with_header(self, send: Send, request_id: str) -> Send:
        header = (self.header_name, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [item for item in message.get("headers", ()) if item[0] != header[0]]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        return send_with_id
