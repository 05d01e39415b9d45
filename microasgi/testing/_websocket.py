"""WebSocket sessions: the app runs as a task, two memory streams link it to the test."""

from __future__ import annotations

import contextlib
import json
import math
from types import TracebackType
from typing import Any, Literal, NoReturn

import anyio
import httpx
from anyio.from_thread import BlockingPortal

from microasgi.exceptions import WebSocketDisconnect
from microasgi.testing._server import PortalFactory, Target, raw_headers
from microasgi.types import Message, Scope
from microasgi.websockets import MAX_CLOSE_REASON

JSONMode = Literal["text", "binary"]

# NOTE: app -> test is bounded so that an app sending in a loop to a test that never reads
# blocks (as on a network) instead of growing memory. Test -> app is unbounded, as in
# Starlette's client: the test decides how much it sends, and a bound there would deadlock an
# echo test that sends many messages before reading (the app blocks on the full test inbox
# while the test blocks on the full app inbox) or block a send to an app that never reads.
_TO_CLIENT_BUFFER = 64
_TO_APP_BUFFER = math.inf
_EXIT_GRACE = 1.0  # seconds an app gets to return after the client leaves
_ABNORMAL_CLOSURE = 1006
_INTERNAL_ERROR = 1011


class WebSocketDenied(Exception):
    """The app refused a WebSocket handshake with an HTTP response.

    ``status_code``, ``headers`` (``httpx.Headers``) and ``content`` (bytes) describe the
    response the app sent through the ``websocket.http.response`` extension.
    """

    def __init__(self, status_code: int, headers: httpx.Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        super().__init__(f"The app refused the WebSocket connection with HTTP {status_code}.")

    @property
    def text(self) -> str:
        """The response body decoded as UTF-8."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Parse the response body as JSON."""
        return json.loads(self.content)


class _ClientDisconnected(OSError):
    """The app sent on a WebSocket that the test client already closed (ASGI: an OSError)."""


_WS_EXPECTED = {
    "connecting": ("websocket.accept", "websocket.close", "websocket.http.response.start"),
    "connected": ("websocket.send", "websocket.close"),
    "response": ("websocket.http.response.body",),
    "closed": (),
}


class _Connection:
    """One in-process WebSocket: the app's task and two memory streams to the test."""

    def __init__(self, target: Target, scope: Scope, timeout: float | None) -> None:
        self.target = target
        self.scope = scope
        # NOTE: the client's read timeout bounds every wait for the app, so a test whose app
        # never answers fails with TimeoutError instead of hanging.
        self.timeout = timeout
        self.done = anyio.Event()
        # NOTE: shielded from the test's own cancellation (a timeout around the session), so
        # the app ends through its disconnect, as with a server.
        self.app_scope = anyio.CancelScope(shield=True)
        self.to_app, self.app_inbox = anyio.create_memory_object_stream[Message](_TO_APP_BUFFER)
        self.to_client, self.client_inbox = anyio.create_memory_object_stream[Message](
            _TO_CLIENT_BUFFER
        )
        self.to_app.send_nowait({"type": "websocket.connect"})
        self.task_group = anyio.create_task_group()
        # connecting -> connected | response -> closed, driven by what the app sends
        self.app_state = "connecting"
        self.ended: tuple[int, str] | None = None
        self.client_gone = False
        self.error: Exception | None = None
        self.error_reported = False

    async def open(self) -> tuple[str | None, list[tuple[bytes, bytes]]]:
        """Start the app and wait for its answer to the handshake."""
        await self.task_group.__aenter__()
        self.task_group.start_soon(self._run)
        try:
            return await self._handshake()
        except TimeoutError:
            self.app_scope.cancel()  # NOTE: a stuck app gets no grace to end on its own
            await self.finish(_ABNORMAL_CLOSURE, "")
            raise
        except BaseException:
            error = await self.finish(_ABNORMAL_CLOSURE, "")
            if error is not None:
                raise error from None  # NOTE: the app's own failure explains the refusal
            raise

    async def finish(self, code: int, reason: str) -> Exception | None:
        """Leave: disconnect the app, wait for it to end and return the error to raise."""
        self.client_gone = True
        self._end(code, reason)
        # NOTE: closing our inbox wakes an app blocked on a full buffer (its send fails).
        self.client_inbox.close()
        # NOTE: an app that waits on something else than `receive` (a pub/sub feed) would
        # never see the disconnect: after a grace period it is cancelled, as Starlette's client
        # cancels it (at once), and its `finally:` blocks run.
        grace = min(_EXIT_GRACE, self.timeout or _EXIT_GRACE)
        # NOTE: the waits are shielded, so that a cancelled test still ends the app and
        # leaves the task group (left open, it would corrupt the caller's cancel scopes);
        # the group's own scope is shielded, as a new scope around its exit would interleave.
        with anyio.move_on_after(grace, shield=True) as waiting:
            await self.done.wait()
        if waiting.cancelled_caught:
            self.app_scope.cancel()
        self.task_group.cancel_scope.shield = True
        try:
            await self.task_group.__aexit__(None, None, None)
        finally:
            for stream in (self.to_app, self.app_inbox, self.to_client):
                stream.close()
        error = self.error
        if error is None or self.error_reported or not self.target.raise_server_exceptions:
            return None
        self.error_reported = True
        return error

    def close(self, code: int, reason: str) -> None:
        self.client_gone = True
        self._end(code, reason)

    async def send(self, message: Message) -> None:
        try:
            # NOTE: never waits (the stream is unbounded), so needs no timeout; the
            # checkpoint lets the app run between the test's sends.
            await self.to_app.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # NOTE: the connection is over; as on a network, the message is lost.
            self._raise_error()

    async def receive(self) -> Message:
        try:
            return await self._next("send a message")
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        self._raise_error()
        code, reason = self.ended or (1000, "")
        raise WebSocketDisconnect(code, reason)

    async def _next(self, what: str) -> Message:
        """The app's next message, waiting at most the client's read timeout."""
        with anyio.move_on_after(self.timeout):
            return await self.client_inbox.receive()
        raise TimeoutError(
            f"The ASGI app did not {what} within {self.timeout} s, the client's read timeout "
            "(pass timeout= to the client to change it)."
        )

    def _raise_error(self) -> None:
        error = self.error
        if error is not None and self.target.raise_server_exceptions and not self.error_reported:
            self.error_reported = True
            raise error

    def _end(self, code: int, reason: str) -> None:
        if self.ended is None:
            self.ended = (code, reason)
            self.to_app.close()

    async def _handshake(self) -> tuple[str | None, list[tuple[bytes, bytes]]]:
        try:
            message = await self._next("accept or refuse the WebSocket")
        except anyio.EndOfStream:
            self._raise_error()
            if self.target.raise_server_exceptions:
                raise RuntimeError(
                    "The ASGI app returned without accepting or refusing the WebSocket: it "
                    'must send "websocket.accept", "websocket.close" or '
                    '"websocket.http.response.start".'
                ) from None
            raise WebSocketDenied(500, httpx.Headers(), b"") from None
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message.get("code") or 1000, message.get("reason"))
        if message["type"] == "websocket.http.response.start":
            await self._denial(message)
        headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
        return message.get("subprotocol"), headers

    async def _denial(self, start: Message) -> NoReturn:
        body = bytearray()
        more = True
        while more:
            try:
                message = await self._next("finish its denial response")
            except anyio.EndOfStream:
                self._raise_error()
                if self.target.raise_server_exceptions:
                    raise RuntimeError(
                        "The ASGI app returned without completing its WebSocket denial "
                        'response: its last "websocket.http.response.body" had more_body=True.'
                    ) from None
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = httpx.Headers(start.get("headers", []))
        raise WebSocketDenied(start["status"], headers, bytes(body))

    async def _run(self) -> None:
        try:
            with self.app_scope:
                await self.target.app(self.scope, self._app_receive, self._app_send)
        except _ClientDisconnected:
            pass  # NOTE: the app met the client's goodbye on send; a server only logs this
        except Exception as exc:
            self.error = exc
        finally:
            self._end(_INTERNAL_ERROR if self.error else 1000, "")
            self.to_client.close()
            self.app_inbox.close()
            self.done.set()

    async def _app_receive(self) -> Message:
        try:
            return await self.app_inbox.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            code, reason = self.ended or (_ABNORMAL_CLOSURE, "")
            return {"type": "websocket.disconnect", "code": code, "reason": reason}

    async def _app_send(self, message: Message) -> None:
        kind = message["type"]
        expected = _WS_EXPECTED[self.app_state]
        if kind not in expected:
            wanted = " or ".join(f'"{name}"' for name in expected) or "nothing more"
            raise RuntimeError(
                f"Expected ASGI message {wanted}, but got {kind!r} "
                f"(the WebSocket is {self.app_state})."
            )
        self._check_message(kind, message)
        if self.client_gone:
            if kind == "websocket.close":
                self.app_state = "closed"
                return
            raise _ClientDisconnected(f"The client has closed the WebSocket; cannot send {kind!r}.")
        if kind == "websocket.accept":
            self.app_state = "connected"
        elif kind == "websocket.http.response.start":
            self.app_state = "response"
        elif kind == "websocket.close":
            self.app_state = "closed"
            self._end(message.get("code") or 1000, message.get("reason") or "")
        elif kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.app_state = "closed"
            self._end(_ABNORMAL_CLOSURE, "")
        try:
            await self.to_client.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _ClientDisconnected("The client has closed the WebSocket.") from None

    @staticmethod
    def _check_message(kind: str, message: Message) -> None:
        if kind == "websocket.send" and (message.get("text") is None) == (
            message.get("bytes") is None
        ):
            raise RuntimeError(
                'ASGI message "websocket.send" needs exactly one of "text" or "bytes".'
            )
        if kind in ("websocket.accept", "websocket.http.response.start"):
            raw_headers(message.get("headers", ()), kind)
        elif (
            kind == "websocket.close"
            and len((message.get("reason") or "").encode()) > MAX_CLOSE_REASON
        ):
            # NOTE: as real servers do: a close frame holds at most 123 bytes of reason.
            raise RuntimeError(
                'The "reason" of "websocket.close" is over 123 bytes of UTF-8; a close '
                "frame cannot hold it."
            )


def _check_mode(mode: str) -> None:
    if mode not in ("text", "binary"):
        raise ValueError(f'mode must be "text" or "binary", not {mode!r}.')


class AsyncWebSocketTestSession:
    """A WebSocket connection to the app, opened with ``async with``.

    Entering waits for the app's answer to the handshake: ``websocket.accept`` opens the
    session (``accepted_subprotocol`` and ``extra_headers`` hold what the app accepted with;
    ``extra_headers`` is the list of ``(name, value)`` byte pairs, as in Starlette);
    ``websocket.close`` raises ``WebSocketDisconnect``; a denial response raises
    ``WebSocketDenied``. Once the app closes, ``receive_*`` raise ``WebSocketDisconnect``.
    Leaving sends ``websocket.disconnect`` (code 1000), waits for the app to end and
    re-raises its exception when the client has ``raise_server_exceptions``. After the
    client closed, an app's ``send`` raises an ``OSError`` subclass, as the ASGI spec asks.
    ``send_*`` never wait: messages queue until the app reads them, as in Starlette.
    """

    def __init__(self, target: Target, scope: Scope, timeout: float | None = 5.0) -> None:
        self._target = target
        self.scope = scope
        self._timeout = timeout
        self.accepted_subprotocol: str | None = None
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self._connection: _Connection | None = None

    async def __aenter__(self) -> AsyncWebSocketTestSession:
        if self._connection is not None:
            raise RuntimeError("A WebSocket session can be entered only once.")
        self._connection = _Connection(self._target, self.scope, self._timeout)
        self.accepted_subprotocol, self.extra_headers = await self._connection.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        error = await self._open().finish(1000, "")
        if error is not None:
            raise error

    def _open(self) -> _Connection:
        if self._connection is None:
            raise RuntimeError(
                "Use the session as a context manager: "
                "`async with client.websocket_connect(url) as ws:`."
            )
        return self._connection

    async def send(self, message: Message) -> None:
        """Send a raw ASGI message (``websocket.receive``/``websocket.disconnect``) to the app."""
        await self._open().send(message)

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        await self.send({"type": "websocket.receive", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        await self.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: Any, mode: JSONMode = "text") -> None:
        """Send ``data`` as JSON in a text or (``mode="binary"``) binary message."""
        _check_mode(mode)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "text":
            await self.send_text(text)
        else:
            await self.send_bytes(text.encode("utf-8"))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close from the client side: the app receives ``websocket.disconnect``."""
        self._open().close(code, reason or "")

    async def receive(self) -> Message:
        """Return the app's next raw message (``websocket.send`` or ``websocket.close``)."""
        return await self._open().receive()

    async def receive_text(self) -> str:
        """Return the next message, which must be text."""
        text = (await self._receive_data()).get("text")
        if text is None:
            raise TypeError("Expected a text message, but the app sent bytes.")
        return str(text)

    async def receive_bytes(self) -> bytes:
        """Return the next message, which must be binary."""
        data = (await self._receive_data()).get("bytes")
        if data is None:
            raise TypeError("Expected a binary message, but the app sent text.")
        return bytes(data)

    async def receive_json(self, mode: JSONMode = "text") -> Any:
        """Parse the next text or (``mode="binary"``) binary message as JSON."""
        _check_mode(mode)
        if mode == "text":
            return json.loads(await self.receive_text())
        return json.loads(await self.receive_bytes())

    async def _receive_data(self) -> Message:
        message = await self.receive()
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message.get("code") or 1000, message.get("reason"))
        return message


class WebSocketTestSession:
    """A WebSocket connection to the app for synchronous tests, opened with ``with``.

    The same session as ``AsyncWebSocketTestSession``, driven through the client's portal;
    the app runs as a task in the portal's event loop.
    """

    def __init__(
        self,
        session: AsyncWebSocketTestSession,
        portal_factory: PortalFactory,
    ) -> None:
        self._session = session
        self._portal_factory = portal_factory
        self._portal: BlockingPortal | None = None
        self._exit_stack: contextlib.ExitStack | None = None

    @property
    def scope(self) -> Scope:
        """The scope the app was called with."""
        return self._session.scope

    @property
    def accepted_subprotocol(self) -> str | None:
        """The subprotocol the app accepted, if any."""
        return self._session.accepted_subprotocol

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers the app gave to ``websocket.accept``, as (name, value) byte pairs."""
        return self._session.extra_headers

    def __enter__(self) -> WebSocketTestSession:
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(self._portal_factory())
            stack.enter_context(portal.wrap_async_context_manager(self._session))
            self._portal = portal
            self._exit_stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack, self._portal = self._exit_stack, None, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def _running_portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError(
                "Use the session as a context manager: `with client.websocket_connect(url) as ws:`."
            )
        return self._portal

    def send(self, message: Message) -> None:
        """Send a raw ASGI message (``websocket.receive``/``websocket.disconnect``) to the app."""
        self._running_portal().call(self._session.send, message)

    def send_text(self, data: str) -> None:
        """Send a text message."""
        self._running_portal().call(self._session.send_text, data)

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        self._running_portal().call(self._session.send_bytes, data)

    def send_json(self, data: Any, mode: JSONMode = "text") -> None:
        """Send ``data`` as JSON in a text or (``mode="binary"``) binary message."""
        self._running_portal().call(self._session.send_json, data, mode)

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close from the client side: the app receives ``websocket.disconnect``."""
        self._running_portal().call(self._session.close, code, reason)

    def receive(self) -> Message:
        """Return the app's next raw message (``websocket.send`` or ``websocket.close``)."""
        return self._running_portal().call(self._session.receive)

    def receive_text(self) -> str:
        """Return the next message, which must be text."""
        return self._running_portal().call(self._session.receive_text)

    def receive_bytes(self) -> bytes:
        """Return the next message, which must be binary."""
        return self._running_portal().call(self._session.receive_bytes)

    def receive_json(self, mode: JSONMode = "text") -> Any:
        """Parse the next text or (``mode="binary"``) binary message as JSON."""
        return self._running_portal().call(self._session.receive_json, mode)
