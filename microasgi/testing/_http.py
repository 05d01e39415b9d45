"""HTTP requests to the app: scope, streamed request body, collected response."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
import httpx
from anyio.from_thread import BlockingPortal

from microasgi.testing._server import PortalFactory, Target, http_scope, raw_headers
from microasgi.types import Message, RawHeaders

# NOTE: the most handed to the app per "http.request" message, so that large bodies arrive
# in several messages, as they do from a socket.
CHUNK_SIZE = 64 * 1024

_T = TypeVar("_T")


class _RequestBody:
    """The request body, handed out in chunks of at most ``CHUNK_SIZE`` bytes."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        self._stream = stream
        self._sync: Iterator[bytes] | None = None
        self._buffer = bytearray()
        self._exhausted = False
        self._feeding = anyio.CancelScope()
        # NOTE: a stream that is also sync (bytes, files, multipart) is read without an
        # async generator, which would otherwise need closing when the app stops early.
        self.needs_feeding = not isinstance(stream, httpx.SyncByteStream)
        """Whether ``feed()`` must run beside the app: the body is an async stream."""
        if self.needs_feeding:
            self._to_app, self._fed = anyio.create_memory_object_stream[bytes](0)

    async def feed(self) -> None:
        """Pull an async body in a task of its own, until the app has it all or ends.

        ``receive()`` may be cancelled while it waits for the next chunk (``is_disconnected()``
        polls that way); pulled there, the cancellation would end the test's generator and the
        rest of the body with it.
        """
        assert isinstance(self._stream, httpx.AsyncByteStream)
        chunks = self._stream.__aiter__()
        try:
            with self._feeding, self._to_app:
                async for chunk in chunks:
                    await self._to_app.send(chunk)
        finally:
            if isinstance(chunks, AsyncGenerator):
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()

    async def _pull(self) -> bytes | None:
        if isinstance(self._stream, httpx.SyncByteStream):
            if self._sync is None:
                self._sync = iter(self._stream)
            return next(self._sync, None)
        try:
            return await self._fed.receive()
        except anyio.EndOfStream:
            return None

    async def read(self) -> tuple[bytes, bool]:
        """Return the next chunk and whether more follows."""
        while not self._exhausted and len(self._buffer) <= CHUNK_SIZE:
            chunk = await self._pull()
            if chunk is None:
                self._exhausted = True
            else:
                self._buffer += chunk
        piece = bytes(self._buffer[:CHUNK_SIZE])
        del self._buffer[:CHUNK_SIZE]
        return piece, bool(self._buffer) or not self._exhausted

    def stop(self) -> None:
        """Stop feeding: the app has ended."""
        if self.needs_feeding:
            self._feeding.cancel()
            self._fed.close()


class _Exchange:
    """One HTTP request/response cycle: the app's ``receive``/``send`` and what it sent."""

    def __init__(self, request: httpx.Request) -> None:
        self.body = _RequestBody(request.stream)
        self._request_complete = False
        self.started = anyio.Event()
        self.response_complete = anyio.Event()
        # NOTE: unbuffered, so a streamed response reaches the test chunk by chunk and an
        # app that sends forever waits for the test to read instead of filling memory.
        self.to_client, self.from_app = anyio.create_memory_object_stream[bytes](0)
        # NOTE: servers send no body for HEAD whatever the app sends.
        self._keep_body = request.method != "HEAD"
        self.status: int | None = None
        self.headers: RawHeaders = []

    async def receive(self) -> Message:
        if not self._request_complete:
            body, more = await self.body.read()
            self._request_complete = not more
            return {"type": "http.request", "body": body, "more_body": more}
        # NOTE: a server reports the disconnect only once the response is over.
        await self.response_complete.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError(
                    'Expected ASGI message "http.response.body", but got "http.response.start": '
                    "the response has already started."
                )
            status = message["status"]
            if not isinstance(status, int):
                raise TypeError(
                    f'"status" in "http.response.start" must be an int, not {status!r}.'
                )
            self.headers = raw_headers(message.get("headers", ()), kind)
            self.status = status
            self.started.set()
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError(
                    'Expected ASGI message "http.response.start", but got "http.response.body".'
                )
            if self.response_complete.is_set():
                raise RuntimeError(
                    'Unexpected ASGI message "http.response.body": the response is complete '
                    "(the previous body message had more_body=False)."
                )
            body = bytes(message.get("body", b""))
            if self._keep_body and body:
                await self.to_client.send(body)
            if not message.get("more_body", False):
                self.response_complete.set()
        else:
            raise RuntimeError(
                f"Unexpected ASGI message {kind!r}: an HTTP app sends "
                '"http.response.start" and then "http.response.body".'
            )


class _Call:
    """One request in flight: the app runs as a task while the test reads the response.

    Every wait for the app is bounded by the request's httpx read timeout, so an app that
    never answers fails the test with ``httpx.ReadTimeout`` instead of hanging it.
    """

    def __init__(self, target: Target, request: httpx.Request) -> None:
        self._target = target
        self._request = request
        self._exchange = _Exchange(request)
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        self._timeout = timeout.get("read")
        self._cancel_scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._error: Exception | None = None

    @property
    def body(self) -> _RequestBody:
        """The request body the app receives."""
        return self._exchange.body

    async def run(self) -> None:
        """Call the app; its exception is kept for the test rather than raised in the loop."""
        try:
            with self._cancel_scope:
                await self._target.app(
                    http_scope(self._target, self._request),
                    self._exchange.receive,
                    self._exchange.send,
                )
        except Exception as exc:
            self._error = exc
        finally:
            self._exchange.to_client.close()
            self._exchange.started.set()
            self._exchange.body.stop()
            self._done.set()

    async def started(self) -> bool:
        """Wait until the response starts (True) or the app ends without one (False)."""
        await self._wait(self._exchange.started.wait, "start a response")
        if self._exchange.status is not None:
            return True
        await self._done.wait()
        return False

    async def next_chunk(self) -> bytes | None:
        """Return the next chunk of the body, or None once the app has returned."""
        try:
            return await self._wait(self._exchange.from_app.receive, "send more of the body")
        except anyio.EndOfStream:
            await self._done.wait()
            return None

    async def close(self) -> None:
        """Stop an app the test no longer listens to and wait for it to end."""
        # NOTE: as Starlette's client does, an unfinished response is cancelled, not drained.
        self._cancel_scope.cancel()
        # NOTE: shielded, so that a cancelled test still waits for the cancelled app to end
        # and closes the stream.
        with anyio.CancelScope(shield=True):
            await self._done.wait()
        self._exchange.from_app.close()

    async def _wait(self, receive: Callable[[], Awaitable[_T]], what: str) -> _T:
        with anyio.move_on_after(self._timeout):
            return await receive()
        await self.close()
        if self._exchange.response_complete.is_set():
            what = "return after completing the response (is a background task stuck?)"
        raise httpx.ReadTimeout(
            f"The app did not {what} within {self._timeout} s, the client's read timeout "
            "(pass timeout= to the client or the request to change it).",
            request=self._request,
        )

    def _raise_error(self) -> None:
        if self._error is not None and self._target.raise_server_exceptions:
            raise self._error

    def failed_response(self) -> httpx.Response:
        """Answer for an app that returned without starting a response."""
        self._raise_error()
        if self._target.raise_server_exceptions:
            raise RuntimeError('The ASGI app returned without sending "http.response.start".')
        body = b"Internal Server Error"
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        return httpx.Response(500, headers=headers, stream=httpx.ByteStream(body))

    def check_complete(self) -> None:
        """Raise the app's error, or complain about a response it left unfinished."""
        self._raise_error()
        # NOTE: once the app raised (and that was not re-raised), an unfinished response is
        # what a server would have sent: the part that arrived.
        if self._target.raise_server_exceptions and not self._exchange.response_complete.is_set():
            raise RuntimeError(
                "The ASGI app returned without completing the response: "
                'its last "http.response.body" had more_body=True.'
            )

    def response(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> httpx.Response:
        assert self._exchange.status is not None
        return httpx.Response(self._exchange.status, headers=self._exchange.headers, stream=stream)


class _ResponseStream(httpx.SyncByteStream):
    """The body as the app sends it; closing it early cancels the app."""

    def __init__(self, call: _Call, portal: BlockingPortal, stack: contextlib.ExitStack) -> None:
        self._call = call
        self._portal = portal
        self._stack = stack

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._portal.call(self._call.next_chunk)) is not None:
            yield chunk
        self._call.check_complete()

    def on_close(self, callback: Callable[..., object], *args: object) -> None:
        """Call ``callback(*args)`` first when the stream closes."""
        self._stack.callback(callback, *args)

    def close(self) -> None:
        self._stack.close()


class _AsyncResponseStream(httpx.AsyncByteStream):
    """The body as the app sends it; closing it early cancels the app."""

    def __init__(self, call: _Call, stack: contextlib.AsyncExitStack) -> None:
        self._call = call
        self._stack = stack

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._call.next_chunk()) is not None:
            yield chunk
        self._call.check_complete()

    def on_close(self, callback: Callable[..., object], *args: object) -> None:
        """Call ``callback(*args)`` first when the stream closes."""
        self._stack.callback(callback, *args)

    async def aclose(self) -> None:
        await self._stack.aclose()


class Transport(httpx.BaseTransport):
    def __init__(self, target: Target, portal_factory: PortalFactory) -> None:
        self._target = target
        self._portal_factory = portal_factory
        # NOTE: responses whose body is still open, oldest first (a dict keeps the order).
        self._open: dict[_ResponseStream, None] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with contextlib.ExitStack() as stack:
            # NOTE: outside `with client:` the portal (and its thread) lives as long as the
            # response stream, which closes it.
            portal = stack.enter_context(self._portal_factory())
            call = portal.call(_Call, self._target, request)
            stack.callback(portal.call, call.close)
            portal.start_task_soon(call.run)
            if portal.call(call.started):
                stream = _ResponseStream(call, portal, stack.pop_all())
                self._open[stream] = None
                stream.on_close(self._open.pop, stream)
                return call.response(stream)
        return call.failed_response()

    def close(self) -> None:
        """Cancel the apps of responses left open, newest first.

        A streamed response the test never closed would otherwise keep its app running: the
        end of ``with client:`` would wait for it forever, and its thread would outlive
        ``client.close()``.
        """
        for stream in reversed(list(self._open)):
            stream.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, target: Target) -> None:
        self._target = target
        self._open: dict[_AsyncResponseStream, None] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with contextlib.AsyncExitStack() as stack:
            # NOTE: the app's task group stays open until the response stream is closed, in
            # the task that sent the request, as httpx does for `send` and `stream`.
            task_group = await stack.enter_async_context(anyio.create_task_group())
            call = _Call(self._target, request)
            stack.push_async_callback(call.close)
            task_group.start_soon(call.run)
            if call.body.needs_feeding:
                task_group.start_soon(call.body.feed)
            timed_out: httpx.ReadTimeout | None = None
            try:
                if await call.started():
                    stream = _AsyncResponseStream(call, stack.pop_all())
                    self._open[stream] = None
                    stream.on_close(self._open.pop, stream)
                    return call.response(stream)
            except httpx.ReadTimeout as exc:
                timed_out = exc
        # NOTE: raised outside the task group, which would wrap them in an exception group.
        if timed_out is not None:
            raise timed_out
        return call.failed_response()

    async def aclose(self) -> None:
        """Cancel the apps of responses left open, newest first (see ``Transport.close``).

        Newest first, as each holds a task group entered after the one before it.
        """
        for stream in reversed(list(self._open)):
            await stream.aclose()
