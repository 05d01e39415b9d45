"""WebSocket: the connection, its two-sided state machine, limits and denial responses.

Both sides of a connection have a state. The client side follows the messages the server
delivers (``websocket.connect``, ``websocket.receive``, ``websocket.disconnect``); the
application side follows the messages the handler sends (``websocket.accept``,
``websocket.send``, ``websocket.close``, ``websocket.http.response.*``). A call that does
not fit the current state raises ``RuntimeError`` naming the message that was expected and
the one that arrived.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import sys
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from typing import Any, NoReturn

import anyio
import orjson

from ._endpoint import HandlerPlan, path_kwargs
from ._json import dump_json, load_json
from ._utils import callable_name, is_async_callable, unfinalized
from .exceptions import WebSocketDisconnect, WebSocketException
from .limits import limits_for
from .requests import HTTPConnection
from .responses import JSONResponse, PlainTextResponse
from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketState",
    "build_websocket_endpoint",
    "websocket_not_found",
]

logger = logging.getLogger("microasgi")

WEBSOCKET_KEY = "microasgi.websocket"
"""Scope key of a one-item list holding the handler's WebSocket (None until the handler
runs), so error handling knows the connection's state. The router puts the list in the
scope before a mount or a middleware copies it, so every copy shares it."""

DENIAL_EXTENSION = "websocket.http.response"
"""The ASGI extension that lets an app answer the handshake with an HTTP response."""


class WebSocketState(enum.Enum):
    """Where one side of a WebSocket connection is in its lifecycle."""

    CONNECTING = 0
    """Handshake in progress: client side until ``websocket.connect`` is received,
    application side until it sends accept, close or a denial response."""
    CONNECTED = 1
    """The handshake completed; messages flow."""
    DISCONNECTED = 2
    """Closed: the client sent ``websocket.disconnect`` / the application sent
    ``websocket.close`` or finished a denial response."""
    RESPONSE = 3
    """Application side only: a denial response has started and its body is being sent."""


# PERF: module globals are one dict lookup; WebSocketState.X is two on every message.
_CONNECTING = WebSocketState.CONNECTING
_CONNECTED = WebSocketState.CONNECTED
_DISCONNECTED = WebSocketState.DISCONNECTED
_RESPONSE = WebSocketState.RESPONSE

_EXPECTED_SEND = {
    _CONNECTING: ("websocket.accept", "websocket.close", "websocket.http.response.start"),
    _CONNECTED: ("websocket.send", "websocket.close"),
    _RESPONSE: ("websocket.http.response.body",),
}

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})
"""RFC 6455 7.4.1: reserved, or only for reporting a close locally; never sent in a frame."""


def _expected(names: Iterable[str]) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _encode_headers(
    headers: Mapping[str, str] | Mapping[bytes, bytes] | Iterable[tuple[Any, Any]],
) -> list[tuple[bytes, bytes]]:
    """Turn a mapping or (name, value) pairs, str or bytes, into ASGI raw headers."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    raw: list[tuple[bytes, bytes]] = []
    for name, value in items:
        name_b = name.encode("latin-1") if isinstance(name, str) else bytes(name)
        value_b = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        # SECURITY: a CR or LF would let a value smuggle extra handshake headers.
        if any(c in name_b or c in value_b for c in (b"\r", b"\n", b"\0")) or not name_b:
            raise ValueError(f"Invalid header {name!r}: {value!r} (empty name, CR, LF or NUL)")
        raw.append((name_b.lower(), value_b))
    return raw


class WebSocket(HTTPConnection):
    """A WebSocket connection, handed to ``@app.websocket`` handlers.

    ``application_state`` and ``client_state`` are the two sides' ``WebSocketState``.
    The limits in force (``max_message_size``, ``websocket_idle_timeout``,
    ``websocket_max_rate``) are read from the route, router or app when it is built.
    """

    __slots__ = (
        "_application_state",
        "_client_state",
        "_idle_timeout",
        "_last_message",
        "_live",
        "_max_rate",
        "_max_size",
        "_send",
        "_sender",
        "_short_bytes",
        "_short_text",
        "_tokens",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError(f'WebSocket needs a "websocket" scope, got {scope["type"]!r}')
        self.scope = scope
        self._receive = receive
        self._send = send
        self._url = self._headers = self._query_params = self._cookies = None
        self._client_state = self._application_state = _CONNECTING
        self._live = False
        self._sender: Send = self.send
        limits = limits_for(scope)
        self._max_size = limits.max_message_size
        self._idle_timeout = limits.websocket_idle_timeout
        self._max_rate = limits.websocket_max_rate
        self._tokens = math.inf  # NOTE: a full bucket, once clamped on the first message
        self._last_message = 0.0
        # PERF: data this short is within max_message_size whatever it holds (a character
        # is at most 4 bytes in UTF-8), so receiving compares lengths; -1 when every message
        # must be counted (an idle timeout or a rate limit).
        counted = self._idle_timeout is not None or self._max_rate is not None
        size = sys.maxsize if self._max_size is None else self._max_size
        self._short_text = -1 if counted else size // 4
        self._short_bytes = -1 if counted else size

    @property
    def client_state(self) -> WebSocketState:
        """The client's side: what the server reported (connect, disconnect)."""
        return self._client_state

    @client_state.setter
    def client_state(self, state: WebSocketState) -> None:
        self._client_state = state
        self._live = state is _CONNECTED and self._application_state is _CONNECTED
        self._sender = self._send if self._live else self.send

    @property
    def application_state(self) -> WebSocketState:
        """The application's side: what it sent (accept, close, a denial response)."""
        return self._application_state

    @application_state.setter
    def application_state(self, state: WebSocketState) -> None:
        self._application_state = state
        self._live = state is _CONNECTED and self._client_state is _CONNECTED
        self._sender = self._send if self._live else self.send

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    # -- receiving ------------------------------------------------------------------

    async def receive(self) -> Message:
        """Receive the next ASGI message, enforcing the message limits.

        A message over ``max_message_size`` closes with 1009, a client over
        ``websocket_max_rate`` with 1008 and ``websocket_idle_timeout`` of silence with
        1001; each then raises ``WebSocketDisconnect`` with that code.
        """
        if not self._live:
            return await self._receive_outside_session()
        if self._idle_timeout is None:
            message = await self._receive()
        else:
            message = await self._receive_or_idle(self._idle_timeout)
        broken = self._admit(message)
        if broken is not None:
            await self._close_for_limit(*broken)
        return message

    def _admit(self, message: Message) -> tuple[int, str] | None:
        """Check a message received in session; return (close code, reason) if over a limit."""
        message_type = message["type"]
        if message_type == "websocket.receive":
            if self._max_size is not None and self._oversize(message):
                return CLOSE_MESSAGE_TOO_BIG, f"Message exceeds the limit of {self._max_size} bytes"
            if self._max_rate is not None:
                return self._take_token()
        elif message_type == "websocket.disconnect":
            self.client_state = _DISCONNECTED
        else:
            raise _unexpected_receive(("websocket.receive", "websocket.disconnect"), message)
        return None

    async def _receive_outside_session(self) -> Message:
        """Receive during the handshake, or after the application closed."""
        if self.client_state is _CONNECTING:
            message = await self._receive()
            if message["type"] == "websocket.connect":
                self.client_state = _CONNECTED
            elif message["type"] == "websocket.disconnect":
                self.client_state = _DISCONNECTED
            else:
                raise _unexpected_receive(("websocket.connect",), message)
            return message
        if self.client_state is _DISCONNECTED:
            raise RuntimeError(
                'Cannot receive: "websocket.disconnect" was already received and the client is gone'
            )
        if self.application_state is _CONNECTING:
            raise RuntimeError(
                'Expected "websocket.accept" to be sent before receiving messages: '
                "call await ws.accept() first"
            )
        # NOTE: after the application closed (or answered with a denial response) the
        # server still reports the disconnect; no limits apply to what remains.
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.client_state = _DISCONNECTED
        return message

    async def _receive_or_idle(self, timeout: float) -> Message:
        with anyio.move_on_after(timeout):
            return await self._receive()
        await self._close_for_limit(CLOSE_GOING_AWAY, f"No message for {timeout:g} seconds")
        raise AssertionError("unreachable")  # pragma: no cover

    def _oversize(self, message: Message) -> bool:
        text = message.get("text")
        if text is None:
            return len(message.get("bytes") or b"") > self._max_size  # type: ignore[operator]
        # PERF: isascii() is O(1) on CPython strings; only non-ASCII text is encoded.
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        return size > self._max_size  # type: ignore[operator]

    def _take_token(self) -> tuple[int, str] | None:
        rate: float = self._max_rate  # type: ignore[assignment]
        now = time.monotonic()
        # A token bucket holding one second's worth of messages (at least one).
        tokens = min(max(rate, 1.0), self._tokens + (now - self._last_message) * rate) - 1.0
        self._last_message = now
        self._tokens = tokens
        if tokens < 0:
            return CLOSE_POLICY_VIOLATION, f"More than {rate:g} messages per second"
        return None

    async def _close_for_limit(self, code: int, reason: str) -> None:
        """Close for a broken limit and end the handler's receive loop."""
        await self.close(code, reason)
        raise WebSocketDisconnect(code, reason)

    def receive_text(self) -> Coroutine[Any, Any, str]:
        """Receive a text message; ``WebSocketDisconnect`` when the client goes."""
        # PERF: the coroutine of _receive_data() itself, not one more awaiting it.
        return self._receive_data("text", self._short_text)

    def receive_bytes(self) -> Coroutine[Any, Any, bytes]:
        """Receive a binary message; ``WebSocketDisconnect`` when the client goes."""
        return self._receive_data("bytes", self._short_bytes)

    async def receive_json(self, mode: str = "text") -> Any:
        """Receive a JSON message, from a text frame or (``mode="binary"``) a binary one.

        Malformed JSON closes the connection with 1007.
        """
        key = _data_key(mode)
        return _loads(await self._receive_data(key, self._short_for(key)))

    def _short_for(self, key: str) -> int:
        """The length of "text" or "bytes" data surely within the limits (-1: none is)."""
        return self._short_text if key == "text" else self._short_bytes

    async def _receive_data(self, key: str, short: int) -> Any:
        """Receive the "text" or "bytes" of a message, as ``receive()`` would check it."""
        if self._live and short >= 0:
            # PERF: receive() inlined for data within the limits: one await per message.
            message = await self._receive()
            data = message.get(key)
            if data is not None and len(data) <= short:
                return data
            broken = self._admit(message)
            if broken is not None:
                await self._close_for_limit(*broken)
        else:
            message = await self.receive()
        return _data(message, key)

    def iter_text(self) -> AsyncIterator[str]:
        """Iterate over text messages until the client disconnects."""
        return _iterate_messages(self, "text", None)

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Iterate over binary messages until the client disconnects."""
        return _iterate_messages(self, "bytes", None)

    def iter_json(self, mode: str = "text") -> AsyncIterator[Any]:
        """Iterate over JSON messages until the client disconnects."""
        return _iterate_messages(self, _data_key(mode), _loads)

    # -- sending --------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send an ASGI message, checking it against the application state."""
        state = self.application_state
        message_type = message["type"]
        if state is _CONNECTED and self.client_state is _DISCONNECTED:
            # NOTE: the server reported the disconnect, so nothing more reaches the client;
            # servers disagree on a later send (uvicorn's websockets raises RuntimeError,
            # hypercorn, granian and daphne drop it), so answer it here, the same everywhere.
            self.application_state = state = _DISCONNECTED
            if message_type == "websocket.close":
                return
        if state is _DISCONNECTED:
            if self.client_state is _DISCONNECTED:
                # NOTE: the client is gone; every sender (several tasks may share the
                # socket) learns it the same way.
                raise WebSocketDisconnect(CLOSE_ABNORMAL)
            raise RuntimeError(
                f'Cannot send "{message_type}": the application already closed the '
                "connection (or answered the handshake with a response)"
            )
        expected = _EXPECTED_SEND[state]
        if message_type not in expected:
            raise RuntimeError(
                f"Expected ASGI message {_expected(expected)}, but got {message_type!r}"
                + _HINTS.get((state, message_type), "")
            )
        if state is _CONNECTING:
            if self.client_state is _CONNECTING:
                # NOTE: the handshake starts with "websocket.connect"; take it first.
                await self._receive_outside_session()
            if self.client_state is _DISCONNECTED:
                # The client left during the handshake: there is nobody left to answer.
                self.application_state = _DISCONNECTED
                raise WebSocketDisconnect(CLOSE_ABNORMAL)
            if message_type == "websocket.accept":
                self.application_state = _CONNECTED
            elif message_type == "websocket.close":
                self.application_state = _DISCONNECTED
            else:
                if DENIAL_EXTENSION not in (self.scope.get("extensions") or {}):
                    raise RuntimeError(
                        f'The server does not support the "{DENIAL_EXTENSION}" extension; '
                        "use send_denial_response(), which falls back to a close (403)"
                    )
                self.application_state = _RESPONSE
        elif message_type == "websocket.close" or (
            state is _RESPONSE and not message.get("more_body", False)
        ):
            self.application_state = _DISCONNECTED
        await self._send_or_disconnect(message)

    async def _send_or_disconnect(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:
            self._sent_to_gone_client()

    def _sent_to_gone_client(self) -> NoReturn:
        # NOTE: ASGI servers raise an OSError (uvicorn's ClientDisconnected, ...) when
        # the client is gone; for the handler that is a disconnect.
        self.application_state = _DISCONNECTED
        self.client_state = _DISCONNECTED
        raise WebSocketDisconnect(CLOSE_ABNORMAL) from None

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str]
        | Mapping[bytes, bytes]
        | Iterable[tuple[Any, Any]]
        | None = None,
    ) -> None:
        """Complete the handshake, choosing a subprotocol and adding response headers.

        ``subprotocol`` must be one the client offered (``ws.subprotocols``), or None.
        """
        if subprotocol is not None and subprotocol not in self.subprotocols:
            # NOTE: RFC 6455 4.1: a client fails the handshake when the server picks a
            # subprotocol it did not offer; the mistake is reported here instead.
            raise ValueError(
                f"Cannot accept with subprotocol {subprotocol!r}: the client offered "
                f"{self.subprotocols!r}; pass one of them, or None"
            )
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = _encode_headers(headers)
        await self.send(message)

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        # PERF: while both sides are connected, _sender is the server's send itself: no
        # checks, and one await fewer than send(). Otherwise it is send(), which raises the
        # error naming the expected message (or sends to a client that is gone).
        # NOTE: this awaits the server's send, so a slow client slows the sender here:
        # backpressure is the server's transport, microasgi buffers nothing.
        send = self._sender
        try:
            await send({"type": "websocket.send", "text": data})
        except OSError:
            self._sent_to_gone_client()

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        send = self._sender
        try:
            await send({"type": "websocket.send", "bytes": data})
        except OSError:
            self._sent_to_gone_client()

    def send_json(self, data: Any, mode: str = "text") -> Coroutine[Any, Any, None]:
        """Send ``data`` as JSON (orjson): a text frame, or binary with ``mode="binary"``."""
        # PERF: the coroutine of send_text() or send_bytes() itself, not one awaiting it.
        encoded = dump_json(data)
        if _data_key(mode) == "text":
            return self.send_text(encoded.decode())
        return self.send_bytes(encoded)

    async def close(self, code: int = CLOSE_NORMAL, reason: str | None = "") -> None:
        """Close the connection; before ``accept()`` the server answers HTTP 403.

        Closing a connection that is already closed, by either side, does nothing. A
        ``code`` that is not a close code raises ``ValueError``; a ``reason`` of ``None`` is
        the empty reason.
        """
        _check_close_code(code)
        if self.application_state is _DISCONNECTED or self.client_state is _DISCONNECTED:
            self.application_state = _DISCONNECTED
            return
        accepted = self.application_state is _CONNECTED
        reason = _fit_close_reason(reason or "")
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except WebSocketDisconnect:
            raise
        except Exception:
            if not accepted or code == CLOSE_NORMAL or 3000 <= code <= 4999:
                raise
            # NOTE: daphne (autobahn) refuses any close code from an application but 1000
            # and 3000-4999, so 1001/1008/1009/1011 would leave the socket open; close with
            # 1000 and the same reason instead.
            await self._send_or_disconnect(
                {"type": "websocket.close", "code": CLOSE_NORMAL, "reason": reason}
            )

    async def send_denial_response(self, response: ASGIApp) -> None:
        """Refuse the handshake with an HTTP response (e.g. 401 with WWW-Authenticate).

        Uses the ASGI ``websocket.http.response`` extension; a server without it gets a
        close instead, which it answers with HTTP 403.
        """
        if self.application_state is not _CONNECTING:
            raise RuntimeError(
                "Expected the handshake to be in progress for a denial response, but the "
                f"application state is {self.application_state.name}: deny before accept()"
            )
        if DENIAL_EXTENSION not in (self.scope.get("extensions") or {}):
            await self.close()
            return
        await response(self.scope, self._receive, self._send_denial_message)
        if self.application_state is not _DISCONNECTED:
            raise RuntimeError(
                'Expected the denial response to end with "http.response.body" and '
                "more_body=False, but it returned before"
            )

    async def _send_denial_message(self, message: Message) -> None:
        message_type = message["type"]
        if message_type in ("http.response.start", "http.response.body"):
            message = {**message, "type": "websocket." + message_type}
        await self.send(message)


def _fast_path(websocket: WebSocket, key: str) -> tuple[Receive, int]:
    """Return the receive to await, and a length of data that is within the limits."""
    receive: Receive = websocket._receive
    if websocket._idle_timeout is not None:
        receive = functools.partial(websocket._receive_or_idle, websocket._idle_timeout)
    return receive, websocket._short_for(key)


async def _next_slowly(websocket: WebSocket, key: str, message: Message | None) -> Any:
    """Return the data of the next message off the fast path, or ``_END`` when it ends.

    ``message`` was received in session and left by the fast path; it is None when the
    connection is not in session (before accept, or after the application closed).
    """
    if message is not None:
        broken = websocket._admit(message)
        if broken is not None:
            try:
                await websocket._close_for_limit(*broken)
            except WebSocketDisconnect:
                return _END
    elif websocket.client_state is _DISCONNECTED:
        return _END
    else:  # before accept() (an error) or after close() (the remaining messages)
        message = await websocket._receive_outside_session()
    if message["type"] == _DISCONNECT:
        return _END
    return _data(message, key)


async def _messages(
    websocket: WebSocket, key: str, decode: Callable[[Any], Any] | None
) -> AsyncGenerator[Any, None]:
    """Yield the data of received messages (decoded by ``decode``) until the client goes."""
    receive, short = _fast_path(websocket, key)
    yield None  # NOTE: the step unfinalized() takes; the handler never sees it.
    while True:
        if websocket._live:
            # PERF: receive() inlined: one await per message, as raw ASGI has.
            try:
                message = await receive()
            except WebSocketDisconnect:  # closed for being idle
                return
            # PERF: a subscript costs less than .get(); a KeyError comes once, at the end.
            try:
                data = message[key]
            except KeyError:
                data = None
            # NOTE: only "websocket.receive" carries "text" or "bytes".
            if data is not None and len(data) <= short:
                yield data if decode is None else decode(data)
                continue
            data = await _next_slowly(websocket, key, message)
        else:
            data = await _next_slowly(websocket, key, None)
        if data is _END:
            return
        yield data if decode is None else decode(data)


def _generated_messages(
    websocket: WebSocket, key: str, decode: Callable[[Any], Any] | None
) -> AsyncIterator[Any]:
    """Iterate over ``_messages()``, stepped past its first ``yield``."""
    return unfinalized(_messages(websocket, key, decode))


class _MessageIterator:
    """What ``_messages()`` yields, as an iterator whose every step is one coroutine."""

    __slots__ = ("_decode", "_key", "_receive", "_short", "_websocket")

    def __init__(self, websocket: WebSocket, key: str, decode: Callable[[Any], Any] | None) -> None:
        self._websocket = websocket
        self._key = key
        self._decode = decode
        self._receive, self._short = _fast_path(websocket, key)

    def __aiter__(self) -> _MessageIterator:
        return self

    async def __anext__(self) -> Any:
        websocket = self._websocket
        if websocket._live:
            try:
                message = await self._receive()
            except WebSocketDisconnect:  # closed for being idle
                raise StopAsyncIteration from None
            try:
                data = message[self._key]
            except KeyError:
                data = None
            if data is not None and len(data) <= self._short:
                return data if self._decode is None else self._decode(data)
            data = await _next_slowly(websocket, self._key, message)
        else:
            data = await _next_slowly(websocket, self._key, None)
        if data is _END:
            raise StopAsyncIteration
        return data if self._decode is None else self._decode(data)


# PERF: per message, an async generator step costs less than a coroutine call up to
# Python 3.11 and more from 3.12 on. The WebSocket echo benchmark, generator against
# iterator: 1.49x raw ASGI against 1.59x on 3.11, 1.78x against 1.54x on 3.12.
_iterate_messages: Callable[[WebSocket, str, Callable[[Any], Any] | None], AsyncIterator[Any]] = (
    _MessageIterator if sys.version_info >= (3, 12) else _generated_messages
)


_HINTS = {
    (_CONNECTING, "websocket.send"): ": call await ws.accept() before sending messages",
    (_CONNECTED, "websocket.accept"): ": accept() was already called",
    (_CONNECTED, "websocket.http.response.start"): (
        ": a denial response must be sent before accept()"
    ),
}


def _fit_close_reason(reason: str) -> str:
    """Cut ``reason`` to the 123 bytes of UTF-8 a close frame holds, at a character boundary."""
    if len(reason) <= MAX_CLOSE_REASON // 4:
        return reason
    encoded = reason.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_CLOSE_REASON:
        return reason
    # NOTE: a longer reason makes servers fail the close frame itself ("control frame too
    # long"), so the client would see an abnormal closure instead of the code.
    return encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


def _check_close_code(code: int) -> None:
    """Raise ``ValueError`` unless ``code`` may be sent in a close frame."""
    # NOTE: servers fail a close frame with another code in their own ways (an exception
    # from send(), or a protocol error seen by the client), far from the call.
    if (
        not isinstance(code, int)
        or isinstance(code, bool)
        or not 1000 <= code <= 4999
        or code in _RESERVED_CLOSE_CODES
    ):
        raise ValueError(
            f"Invalid WebSocket close code {code!r}: use 1000-4999 but 1004, 1005, 1006 and "
            "1015, which are reserved (3000-4999 are for applications)"
        )


def _unexpected_receive(expected: Iterable[str], message: Message) -> RuntimeError:
    return RuntimeError(
        f"Expected ASGI message {_expected(expected)}, but got {message.get('type')!r}"
    )


_RECEIVE = "websocket.receive"
MAX_CLOSE_REASON = 123  # RFC 6455 5.5: 125 bytes of payload, 2 for the code
_DISCONNECT = "websocket.disconnect"
_END = object()  # what _next_slowly() returns when the messages end
_WRONG_TYPE = {"text": "Expected a text message", "bytes": "Expected a binary message"}


def _data(message: Message, key: str) -> Any:
    """Return the "text" or "bytes" of a received message; raise on anything else."""
    data = message.get(key)
    if data is not None:
        return data
    message_type = message["type"]
    if message_type == _DISCONNECT:
        raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL), message.get("reason"))
    if message_type == _RECEIVE:
        raise WebSocketException(CLOSE_UNSUPPORTED_DATA, _WRONG_TYPE[key])
    raise RuntimeError(
        f'Expected ASGI message "websocket.receive", but got {message_type!r}: '
        "call await ws.accept() before receiving messages"
    )


def _loads(data: str | bytes) -> Any:
    try:
        return load_json(data)
    except orjson.JSONDecodeError:
        raise WebSocketException(CLOSE_INVALID_DATA, "Malformed JSON message") from None


def _data_key(mode: str) -> str:
    """Return the message key for a JSON ``mode``: "text" or "binary"."""
    if mode == "text":
        return "text"
    if mode == "binary":
        return "bytes"
    raise ValueError(f'mode must be "text" or "binary", got {mode!r}')


# -- endpoints -------------------------------------------------------------------------


def build_websocket_endpoint(func: Callable[..., Any], plan: HandlerPlan) -> ASGIApp:
    """Return the ASGI app that runs a WebSocket handler and ends its connection properly.

    The handler gets the WebSocket first and the path parameters it names as keywords. A
    handler that returns without closing gets a 1000 close (a 403 before ``accept()``).
    Exceptions go to the app's error handling, which answers through ``answer_exception``
    with the connection's state in hand.
    """
    name = callable_name(func)
    if not is_async_callable(func):
        raise TypeError(
            f"WebSocket handler {name} must be an async function (async def {name}(ws): ...)"
        )
    pass_websocket, wanted, outer, websocket_keyword, _ = plan

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        slot: list[WebSocket | None] | None = scope.get(WEBSOCKET_KEY)
        if slot is None:
            scope[WEBSOCKET_KEY] = [websocket]
        else:
            slot[0] = websocket
        if wanted or outer != ():
            kwargs = path_kwargs(scope.get("path_params") or {}, wanted, outer)
        else:
            kwargs = {}
        if websocket_keyword is not None:
            kwargs[websocket_keyword] = websocket
        try:
            if pass_websocket:
                await func(websocket, **kwargs)
            else:
                await func(**kwargs)
        except WebSocketDisconnect:
            return
        except Exception as exc:
            # NOTE: a disconnect seen by several tasks of a task group arrives grouped;
            # it is still the client going away, not an error.
            errors = _errors_besides_disconnects(exc)
            if not errors:
                return
            if len(errors) > 1 or errors[0] is exc:
                raise
            error = errors[0]
        else:
            await close_quietly(websocket, CLOSE_NORMAL, "")
            return
        # NOTE: one error out of a task group (a WebSocketException or HTTPException raised
        # next to a receive loop) is answered as if raised alone: its close code, not 1011.
        # Raised outside the except block, so its own cause and context are kept.
        raise error

    return app


def _errors_besides_disconnects(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` (an exception group flattened) but WebSocketDisconnect."""
    group = getattr(exc, "exceptions", None)
    if group is None:
        return [] if isinstance(exc, WebSocketDisconnect) else [exc]
    return [error for inner in group for error in _errors_besides_disconnects(inner)]


def connection_of(scope: Scope, receive: Receive, send: Send) -> WebSocket:
    """The WebSocket the handler used for ``scope``, or a new one if none was made yet."""
    # SECURITY: the handler's own WebSocket, even when the handler ran on a copy of this
    # scope (a mount, a route middleware): a new one would think the handshake still open,
    # and answer an error after accept() with a denial the server refuses, never closing.
    slot: list[WebSocket | None] | None = scope.get(WEBSOCKET_KEY)
    websocket = slot[0] if slot else None
    if websocket is not None:
        return websocket
    return WebSocket(scope, receive, send)


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close unless already closed; a client that went meanwhile is not an error."""
    if websocket.application_state in (_RESPONSE, WebSocketState.DISCONNECTED):
        return
    try:
        await websocket.close(code, reason)
    except WebSocketDisconnect:
        pass


async def refuse(websocket: WebSocket, response: ASGIApp, close_code: int, reason: str) -> None:
    """Answer with ``response`` before accept (a denial), or close with ``close_code`` after."""
    if websocket.application_state is _CONNECTING:
        try:
            await websocket.send_denial_response(response)
        except WebSocketDisconnect:
            pass
    else:
        await close_quietly(websocket, close_code, reason)


async def answer_error(websocket: WebSocket) -> None:
    """Answer an unhandled error: a 500 denial before accept, a 1011 close after."""
    await refuse(websocket, _SERVER_ERROR, CLOSE_INTERNAL_ERROR, "Internal Server Error")


_SERVER_ERROR = PlainTextResponse("Internal Server Error", status_code=500)
_NOT_FOUND = JSONResponse({"detail": "Not Found"}, status_code=404)


async def websocket_not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse a WebSocket to an unknown path: 404 denial response, or a close (HTTP 403)."""
    websocket = WebSocket(scope, receive, send)
    try:
        await websocket.send_denial_response(_NOT_FOUND)
    except WebSocketDisconnect:
        pass
