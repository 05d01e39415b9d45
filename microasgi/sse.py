"""Server-sent events: `EventSourceResponse` and `ServerSentEvent`.

The wire format is the one of the HTML Standard, §9.2 "Server-sent events": an event is a
few ``field: value`` lines ended by a blank line; a line starting with ``:`` is a comment.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel

from microasgi.background import BackgroundTask
from microasgi.concurrency import iterate_in_threadpool
from microasgi.exceptions import ClientDisconnect
from microasgi.responses import CHECKPOINT_EVERY, StreamingResponse, _send_or_gone
from microasgi.types import Message, Receive, Scope, Send

__all__ = ["EventSourceResponse", "ServerSentEvent"]

# NOTE: the only line ends of the format; str.splitlines() would also split on \v, \f,
# \x1c-\x1e, \x85, \u2028 and \u2029, which a browser keeps inside the data.
_split_lines = re.compile(r"\r\n|\r|\n").split
_find_line_break = re.compile(r"[\r\n]").search
_find_unsafe_id = re.compile(r"[\r\n\x00]").search
_SEPARATORS = ("\n", "\r\n", "\r")


class ServerSentEvent:
    """One server-sent event: ``ServerSentEvent(data, event=, id=, retry=, comment=)``.

    ``data`` is sent as text (bytes decoded as UTF-8, ``str(data)`` for other objects), one
    ``data:`` line per line, so a client gets it back with its line breaks as ``\\n``.
    ``event`` names the event type, ``id`` sets the client's last event ID (sent back as
    `Last-Event-ID` when it reconnects), ``retry`` is the reconnection delay in
    milliseconds, ``comment`` a comment the client ignores. CR or LF in ``event`` or ``id``,
    NUL in ``id``, and bytes ``data`` that are not UTF-8 raise `ValueError`, as does a
    ``retry`` that is not a non-negative int.
    """

    __slots__ = ("comment", "data", "event", "id", "retry")

    def __init__(
        self,
        data: Any = None,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        if event is not None and _find_line_break(event) is not None:
            raise ValueError(f"Invalid SSE event {event!r}: CR and LF are not allowed")
        if id is not None:
            id = str(id)
            # NOTE: a browser ignores an id holding NUL; CR/LF would start a new field.
            if _find_unsafe_id(id) is not None:
                raise ValueError(f"Invalid SSE id {id!r}: CR, LF and NUL are not allowed")
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"Invalid SSE retry {retry!r}: use a non-negative int (ms)")
        if isinstance(data, (bytes, bytearray, memoryview)):
            # NOTE: str() would send the repr, "b'...'"; an event stream is UTF-8 text.
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"SSE data is UTF-8 text; these bytes are not: {exc}") from None
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment

    def encode(self, sep: str = "\n") -> bytes:
        """Return the event as UTF-8 bytes, lines ended with ``sep``, blank line last."""
        lines = []
        if self.comment is not None:
            lines += [f": {line}" for line in _split_lines(self.comment)]
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.data is not None:
            lines += [f"data: {line}" for line in _split_lines(str(self.data))]
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.append(sep)
        return sep.join(lines).encode("utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("data", "event", "id", "retry", "comment")
            if getattr(self, name) is not None
        )
        return f"ServerSentEvent({fields})"


EventItem: TypeAlias = "ServerSentEvent | Mapping[str, Any] | str | bytes"
"""What an event stream may yield: an event, its fields as a dict, or the data alone."""
EventStream: TypeAlias = "AsyncIterable[EventItem] | Iterable[EventItem]"


def _encode_item(item: Any, sep: str) -> bytes:
    if isinstance(item, ServerSentEvent):
        return item.encode(sep)
    if isinstance(item, (str, bytes)):
        return ServerSentEvent(item).encode(sep)
    if isinstance(item, Mapping):
        return ServerSentEvent(**item).encode(sep)
    raise TypeError(
        f"An EventSourceResponse stream yields ServerSentEvent, dict, str or bytes, "
        f"not {type(item).__name__}"
    )


async def _encoded(events: AsyncIterable[Any], sep: str) -> AsyncGenerator[bytes, None]:
    try:
        async for item in events:
            yield _encode_item(item, sep)
    finally:
        # NOTE: closing this generator does not close the one it iterates; that is done
        # here, shielded, so the user's `finally:` runs now and not at garbage collection.
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


class EventSourceResponse(StreamingResponse):
    """A `text/event-stream` response sending each item of ``content`` as an event.

    ``content`` is an async or sync iterable (a sync one is iterated in a worker thread)
    of `ServerSentEvent` objects, dicts of their fields, or strings (the data). While it
    yields nothing for ``ping`` seconds a comment line is sent, so proxies keep the
    connection open (``None`` or ``0``: never). `Cache-Control: no-cache` and
    `X-Accel-Buffering: no` keep caches and nginx from holding the events back; ``sep``
    (``"\\n"``, ``"\\r\\n"`` or ``"\\r"``) ends the lines. A send that takes longer than
    ``send_timeout`` seconds (30 by default; ``None``: no limit) counts as the client going
    away, so one that stops reading without closing the connection is let go. When the
    client goes away the iterator is closed and ``background`` does not run: an async
    generator sees `GeneratorExit` at its ``yield``, or, while it awaits something else, a
    cancellation (its ``finally:`` runs, and an ``await`` there needs a shielded
    `anyio.CancelScope`). A HEAD request gets the headers alone; the iterator is not run and
    ``background`` does not run. Every option is a keyword:
    ``EventSourceResponse(events(), status_code=201)``.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: EventStream,
        *,
        ping: float | None = 15,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
        background: BackgroundTask | None = None,
        sep: str = "\n",
        send_timeout: float | None = 30,
    ) -> None:
        if sep not in _SEPARATORS:
            raise ValueError(f"Invalid SSE separator {sep!r}: use '\\n', '\\r\\n' or '\\r'")
        if ping is not None and (isinstance(ping, bool) or ping < 0):
            raise ValueError(f"Invalid ping interval {ping!r}: use seconds > 0, or None")
        if send_timeout is not None and (isinstance(send_timeout, bool) or send_timeout <= 0):
            raise ValueError(f"Invalid send_timeout {send_timeout!r}: use seconds > 0, or None")
        events: AsyncIterable[Any] = (
            content if isinstance(content, AsyncIterable) else iterate_in_threadpool(content)
        )
        self.encoded_events = _encoded(events, sep)
        super().__init__(self.encoded_events, status_code, headers, None, background)
        self.ping_interval = ping or None
        self.ping_message = f": ping{sep}{sep}".encode()
        self.sep = sep
        self.send_timeout = send_timeout
        self.headers.setdefault("cache-control", "no-cache")
        self.headers.setdefault("x-accel-buffering", "no")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            # NOTE: a HEAD answer has no body, and an event stream may never end: the
            # router would drop every event and wait forever. Send the headers alone.
            await self._send_headers_only(send)
            return
        # NOTE: an event stream idles for long stretches, so the disconnect is watched on
        # `receive` whatever the ASGI version; waiting for a send to fail could take until
        # the next event, and some servers (ASGI < 2.4) never fail a send.
        completed = await self._send_stream_watching(scope, receive, send)
        if completed and self.background is not None:
            await self.background()

    async def _send_headers_only(self, send: Send) -> None:
        try:
            await self._send(send, self._start_message())
            await self._send(send, {"type": "http.response.body", "body": b""})
        except ClientDisconnect:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await self.encoded_events.aclose()

    async def _send(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await _send_or_gone(send, message)
            return
        # SECURITY: a client that stops reading without closing the connection blocks `send`
        # for as long as TCP keeps the connection (zero-window probes never give up); treat
        # it as gone, so its task and what the iterator holds are released.
        with anyio.move_on_after(self.send_timeout) as scope:
            await _send_or_gone(send, message)
        if scope.cancelled_caught:
            raise ClientDisconnect

    async def stream_response(self, send: Send) -> None:
        """Send the start message, the events with pings between them, then the end."""
        try:
            await self._send(send, self._start_message())
            if self.ping_interval is None:
                sent = 0
                async for chunk in self.body_iterator:
                    await self._send(send, _chunk_message(chunk))
                    sent += 1
                    if not sent % CHECKPOINT_EVERY:
                        await anyio.lowlevel.checkpoint()
            else:
                await self._stream_with_pings(send, self.ping_interval)
            await self._send(send, {"type": "http.response.body", "body": b""})
        finally:
            with anyio.CancelScope(shield=True):
                await self.encoded_events.aclose()

    async def _stream_with_pings(self, send: Send, interval: float) -> None:
        lock = anyio.Lock()
        last_sent = anyio.current_time()
        gone = False
        error: Exception | None = None

        async def send_pings() -> None:
            nonlocal last_sent, gone
            while True:
                await anyio.sleep_until(last_sent + interval)
                if anyio.current_time() < last_sent + interval:
                    continue  # NOTE: an event went out meanwhile; wait from that one.
                async with lock:
                    try:
                        await self._send(send, _chunk_message(self.ping_message))
                    except ClientDisconnect:
                        gone = True
                        task_group.cancel_scope.cancel()
                        return
                last_sent = anyio.current_time()

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(send_pings)
            try:
                async for chunk in self.body_iterator:
                    async with lock:
                        await self._send(send, _chunk_message(chunk))
                    last_sent = anyio.current_time()
            except Exception as exc:
                # NOTE: re-raised outside the task group, so it is not wrapped in an
                # ExceptionGroup.
                error = exc
            task_group.cancel_scope.cancel()
        if error is not None:
            raise error
        if gone:
            raise ClientDisconnect


def _chunk_message(chunk: Any) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}
