"""HTTP responses: each one is an ASGI app that sends itself."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

import anyio
import anyio.lowlevel

from microasgi._json import dump_json
from microasgi.background import BackgroundTask
from microasgi.concurrency import iterate_in_threadpool
from microasgi.datastructures import URL, MutableHeaders, encode_header
from microasgi.exceptions import ClientDisconnect
from microasgi.types import Message, RawHeaders, Receive, Scope, Send

__all__ = [
    "HTMLResponse",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Response",
    "StreamingResponse",
]

_CONTENT_LENGTH = b"content-length"
_CONTENT_TYPE = b"content-type"
_LOCATION = b"location"
_SET_COOKIE = b"set-cookie"

# PERF: the encoded content-type value for each (media type, charset) seen, so the hot path
# does no string work; bounded so per-request media types cannot grow it without limit.
_content_types: dict[tuple[str, str], bytes] = {}
_CONTENT_TYPES_MAX = 256


def _content_type(media_type: str, charset: str) -> bytes:
    value = media_type
    # NOTE: media types are case-insensitive (RFC 9110, 8.3.1): "Text/HTML" is text too.
    if media_type[:5].lower() == "text/" and "charset=" not in media_type.lower():
        value = f"{media_type}; charset={charset}"
    encoded = encode_header("content-type", value)[1]
    if len(_content_types) < _CONTENT_TYPES_MAX:
        _content_types[media_type, charset] = encoded
    return encoded


HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]]
"""Response headers: a mapping, or (name, value) pairs, which may repeat a name."""


def _charset_of(media_type: str) -> str | None:
    """The `charset` parameter of `media_type`, if it has one."""
    _, found, rest = media_type.lower().partition("charset=")
    if not found:
        return None
    return rest.split(";", 1)[0].strip().strip('"') or None


def without_length(raw_headers: RawHeaders) -> RawHeaders:
    """``raw_headers`` without Content-Length, for a response that has no body."""
    # NOTE: 1xx, 204 and 304 responses have no body (RFC 9110, 6.4.1), so no Content-Length
    # may frame one: one left from the body (the status set after construction) or given
    # by hand makes uvicorn wait for those bytes, log an error and drop the connection.
    return [item for item in raw_headers if item[0] != _CONTENT_LENGTH]


def _websocket_denial_send(send: Send) -> Send:
    # NOTE: a response sent on a websocket scope is a denial response (ASGI
    # `websocket.http.response.*`), as WebSocket.send_denial_response sends it.
    async def wrapped(message: Message) -> None:
        await send({**message, "type": "websocket." + message["type"]})

    return wrapped


class Response:
    """An HTTP response with a body known up front.

    `content` is `bytes`, `str` (encoded with `charset`, or with the charset `media_type`
    names) or `None`; `headers` a mapping or (name, value) pairs, whose names and values are
    checked (`ValueError` on CR, LF or NUL). `background` runs after the body is sent.
    """

    media_type: str | None = None
    charset = "utf-8"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: HeadersArg | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.status_code = status_code
        if media_type is not None:
            self._set_media_type(media_type)
        self.background = background
        self.body = self.render(content)
        self.init_headers(headers)

    def _set_media_type(self, media_type: str) -> None:
        self.media_type = media_type
        # NOTE: text is encoded in the charset the Content-Type announces; encoded in the
        # class's utf-8 under "charset=latin-1", it would reach the client garbled.
        charset = _charset_of(media_type)
        if charset is not None:
            self.charset = charset

    def render(self, content: Any) -> bytes:
        """Turn `content` into the body bytes."""
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode(self.charset)
        if isinstance(content, (bytearray, memoryview)):
            return bytes(content)
        raise TypeError(
            f"{type(self).__name__} content must be bytes or str, not {type(content).__name__}; "
            "use JSONResponse for other data"
        )

    def init_headers(self, headers: HeadersArg | None = None) -> None:
        """Build `raw_headers` from `headers`, adding content-length and content-type."""
        if headers is None:
            raw_headers: RawHeaders = []
            add_length = add_type = True
        else:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            raw_headers = [encode_header(name, value) for name, value in pairs]
            names = {name for name, _ in raw_headers}
            add_length = _CONTENT_LENGTH not in names
            add_type = _CONTENT_TYPE not in names

        body = getattr(self, "body", None)
        status_code = self.status_code
        if (
            add_length
            and body is not None
            and status_code >= 200
            and status_code != 204
            and status_code != 304
        ):
            raw_headers.append((_CONTENT_LENGTH, b"%d" % len(body)))

        media_type = self.media_type
        if add_type and media_type is not None:
            charset = self.charset
            content_type = _content_types.get((media_type, charset))
            if content_type is None:
                content_type = _content_type(media_type, charset)
            raw_headers.append((_CONTENT_TYPE, content_type))
        self.raw_headers = raw_headers

    @property
    def headers(self) -> MutableHeaders:
        """The response headers, mutable; changes go straight to `raw_headers`."""
        headers: MutableHeaders | None = self.__dict__.get("_headers")
        if headers is None or headers._list is not self.raw_headers:
            headers = self._headers = MutableHeaders(raw=self.raw_headers)
        return headers

    def set_cookie(
        self,
        key: str,
        value: str = "",
        max_age: int | None = None,
        expires: datetime | str | int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
        partitioned: bool = False,
    ) -> None:
        """Add a `Set-Cookie` header; `ValueError` for a bad name or an unsafe attribute."""
        header = _cookie_header(
            key,
            value,
            max_age=max_age,
            expires=expires,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            partitioned=partitioned,
        )
        self.raw_headers.append((_SET_COOKIE, header.encode("latin-1")))

    def delete_cookie(
        self,
        key: str,
        path: str = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
        partitioned: bool = False,
    ) -> None:
        """Tell the client to drop cookie `key` (expired, `Max-Age=0`)."""
        self.set_cookie(
            key,
            max_age=0,
            expires=0,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            partitioned=partitioned,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            send = _websocket_denial_send(send)
        status = self.status_code
        body = self.body
        headers = self.raw_headers
        if status < 200 or status == 204 or status == 304:
            # NOTE: these statuses have no body (RFC 9110, 6.4.1); sent anyway it would be
            # read as the start of the next response on a kept-alive connection.
            body = b""
            headers = without_length(headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self.background is not None:
            await self.background()


# --- cookies ---------------------------------------------------------------------------------

# RFC 6265 cookie-name: a token; the same set `http.cookies` accepts for a key.
_is_cookie_name = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII).fullmatch
# SECURITY: `;` would start a new attribute, CR/LF a new header line; controls have no place.
_find_unsafe_attribute = re.compile(r"[;\x00-\x1f\x7f]").search
_SAMESITE = frozenset({"lax", "strict", "none"})


def _checked(attribute: str, value: str) -> str:
    if _find_unsafe_attribute(value) is not None:
        raise ValueError(
            f"Invalid cookie {attribute} {value!r}: ';' and control characters are not allowed"
        )
    return value


def _cookie_expires(expires: datetime | str | int) -> str:
    # PERF: imported on first use, to keep `import microasgi` light.
    from email.utils import format_datetime, formatdate

    if isinstance(expires, datetime):
        # NOTE: the cookie date is in GMT; an aware datetime is converted to it, and a naive
        # one is taken as UTC already (as Werkzeug and Django do).
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        return format_datetime(expires.astimezone(timezone.utc), usegmt=True)
    if isinstance(expires, int):
        return formatdate(time.time() + expires, usegmt=True)
    return _checked("expires", expires)


def _cookie_header(
    key: str,
    value: str,
    *,
    max_age: int | None,
    expires: datetime | str | int | None,
    path: str | None,
    domain: str | None,
    secure: bool,
    httponly: bool,
    samesite: str | None,
    partitioned: bool,
) -> str:
    if _is_cookie_name(key) is None:
        raise ValueError(f"Invalid cookie name {key!r}: use letters, digits and !#$%&'*+-.^_`|~")
    # NOTE: the same quoting and attribute order as `http.cookies.SimpleCookie`, so cookies
    # read the same by every client; quoting turns CR/LF in the value into octal escapes.
    from http.cookies import _quote as _quote_cookie_value  # PERF: imported on first use

    parts = [f"{key}={_quote_cookie_value(value)}"]
    if domain is not None:
        parts.append(f"Domain={_checked('domain', domain)}")
    if expires is not None:
        parts.append(f"expires={_cookie_expires(expires)}")
    if httponly:
        parts.append("HttpOnly")
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if partitioned:
        parts.append("Partitioned")
    if path is not None:
        parts.append(f"Path={_checked('path', path)}")
    if samesite is not None:
        if samesite.lower() not in _SAMESITE:
            raise ValueError(f"Invalid samesite {samesite!r}: use 'lax', 'strict' or 'none'")
        parts.append(f"SameSite={samesite}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


# --- simple subclasses -----------------------------------------------------------------------


class HTMLResponse(Response):
    """A `text/html; charset=utf-8` response."""

    media_type = "text/html"


class PlainTextResponse(Response):
    """A `text/plain; charset=utf-8` response."""

    media_type = "text/plain"


class JSONResponse(Response):
    """A JSON response rendered with orjson (dataclasses, datetimes and UUIDs included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dump_json(content)


class RedirectResponse(Response):
    """A redirect (307 by default) to `url`, percent-encoded into `Location`."""

    def __init__(
        self,
        url: str | URL,
        status_code: int = 307,
        headers: HeadersArg | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(b"", status_code, headers, None, background)
        # NOTE: CR and LF are not in `safe`, so quoting also keeps them out of the header.
        location = quote(str(url), safe=":/%#?=@[]!$&'()*+,;")
        if headers is None:
            self.raw_headers.append((_LOCATION, location.encode("latin-1")))
        else:
            self.headers["location"] = location


# --- streaming -------------------------------------------------------------------------------

Content = str | bytes | memoryview
ContentStream = AsyncIterable[Content] | Iterable[Content]


async def _send_or_gone(send: Send, message: Message) -> None:
    # NOTE: only an OSError from `send` means a disconnect; one raised by the body iterator
    # is the application's error and propagates as is.
    try:
        await send(message)
    except OSError as exc:
        raise ClientDisconnect from exc


CHECKPOINT_EVERY = 32
"""Chunks a stream sends between two yields to the event loop.

A body iterator that never waits would otherwise hold the loop for the whole stream, and
before ASGI 2.4 a send to a client that left returns at once: the disconnect watcher
would never run, and the stream would go on for no one.
"""

DISCONNECT_WATCH = "microasgi.disconnect_watch"
"""Scope key of a request's `DisconnectWatch`, put there by the http middleware."""


class DisconnectWatch:
    """What the layers of one request under an http middleware know of its disconnect.

    The app below and the response the middleware returns run in one task. ``active``
    counts the streaming responses listening for the disconnect right now: while the app
    below, stopped at a send, listens (holding its cancel scopes open), a response
    streaming from it must not open scopes of its own, which would interleave with them;
    the app below sees the disconnect and ends the body. ``gone`` is set once an error
    layer below has ended the request quietly on a `ClientDisconnect`.
    """

    __slots__ = ("active", "gone")

    def __init__(self) -> None:
        self.active = 0
        self.gone = False


def _spec_version(scope: Scope) -> tuple[int, ...]:
    asgi: dict[str, str] = scope.get("asgi") or {}
    version = asgi.get("spec_version", "2.0")
    try:
        return tuple(map(int, version.split(".")))
    except ValueError:
        return (2, 0)


class StreamingResponse(Response):
    """A response whose body comes from an async or sync iterable of `str`/`bytes` chunks.

    A sync iterable is iterated in a worker thread. When the client goes away the stream
    stops and the iterator is closed; `background` then does not run.
    """

    body_iterator: AsyncIterable[Content]

    def __init__(
        self,
        content: ContentStream,
        status_code: int = 200,
        headers: HeadersArg | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if isinstance(content, AsyncIterable):
            self.body_iterator = content
        else:
            self.body_iterator = iterate_in_threadpool(content)
        self.status_code = status_code
        if media_type is not None:
            self._set_media_type(media_type)
        self.background = background
        self.init_headers(headers)

    async def stream_response(self, send: Send) -> None:
        """Send the start message, every chunk, then the closing empty body.

        Raise `ClientDisconnect` when `send` fails with `OSError` (how ASGI 2.4 reports a
        disconnect); the body iterator is closed in every case.
        """
        try:
            start = self._start_message()
            status = start["status"]
            if status < 200 or status == 204 or status == 304:
                # NOTE: no body for these statuses (see Response.__call__); the iterator is
                # closed unread below.
                start["headers"] = without_length(start["headers"])
                await _send_or_gone(send, start)
                await _send_or_gone(send, {"type": "http.response.body", "body": b""})
                return
            await _send_or_gone(send, start)
            charset = self.charset
            sent = 0
            async for chunk in self.body_iterator:
                if isinstance(chunk, str):
                    chunk = chunk.encode(charset)
                await _send_or_gone(
                    send, {"type": "http.response.body", "body": chunk, "more_body": True}
                )
                sent += 1
                if not sent % CHECKPOINT_EVERY:
                    await anyio.lowlevel.checkpoint()
            await _send_or_gone(
                send, {"type": "http.response.body", "body": b"", "more_body": False}
            )
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                # NOTE: shielded so the iterator's clean-up runs even when we were cancelled.
                with anyio.CancelScope(shield=True):
                    await aclose()

    def _start_message(self) -> Message:
        return {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            completed = await self._send_stream(_websocket_denial_send(send))
        elif _spec_version(scope) >= (2, 4):
            completed = await self._send_stream(send)
        else:
            completed = await self._send_stream_watching(scope, receive, send)
        if completed and self.background is not None:
            await self.background()

    async def _send_stream(self, send: Send) -> bool:
        try:
            await self.stream_response(send)
        except ClientDisconnect:
            return False
        return True

    async def _send_stream_watching(self, scope: Scope, receive: Receive, send: Send) -> bool:
        # NOTE: before ASGI 2.4 a server may accept `send` after the client left, so the
        # only sign is an `http.disconnect` from `receive`: listen for it beside the stream.
        watch: DisconnectWatch | None = scope.get(DISCONNECT_WATCH)
        if watch is None:
            return await self._listen_beside_stream(receive, send)
        if watch.active:
            return await self._send_stream(send)
        watch.active += 1
        try:
            return await self._listen_beside_stream(receive, send)
        finally:
            watch.active -= 1

    async def _listen_beside_stream(self, receive: Receive, send: Send) -> bool:
        completed = False
        error: Exception | None = None
        ending = False

        async def send_watched(message: Message) -> None:
            nonlocal ending
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ending = True
            await send(message)

        async with anyio.create_task_group() as task_group:
            with anyio.CancelScope() as stream_scope:

                async def listen_for_disconnect() -> None:
                    nonlocal error
                    try:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                    except Exception as exc:
                        # NOTE: a receive wrapper may refuse the unread body (a malformed
                        # or oversized encoded one): the stream ends as for a failed body
                        # read, with the error re-raised below, not in an ExceptionGroup.
                        error = exc
                        stream_scope.cancel()
                        return
                    # NOTE: a server may answer http.disconnect once it has the last body,
                    # while its `send` is still writing it and closing the connection
                    # (hypercorn's trio worker): cut there, the connection stays open and
                    # the background never runs. Only a stream cut short is a disconnect.
                    if not ending:
                        stream_scope.cancel()

                task_group.start_soon(listen_for_disconnect)
                try:
                    completed = await self._send_stream(send_watched)
                except Exception as exc:
                    # NOTE: re-raised below, outside the task group, so it is not wrapped
                    # in an ExceptionGroup.
                    error = exc
            task_group.cancel_scope.cancel()
        if error is not None:
            raise error
        # NOTE: some servers answer `http.disconnect` as soon as the last body is sent, so
        # only a stream cut short counts as a disconnect.
        return completed
