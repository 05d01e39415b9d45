"""HTTP requests to the app: scope, streamed request body, collected response."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import anyio
import httpx

from microasgi.testing._server import PortalFactory, Target, http_scope, raw_headers
from microasgi.types import Message, RawHeaders

# NOTE: the most handed to the app per "http.request" message, so that large bodies arrive
# in several messages, as they do from a socket.
CHUNK_SIZE = 64 * 1024


class _RequestBody:
    """The request body, handed out in chunks of at most ``CHUNK_SIZE`` bytes."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        self._stream = stream
        self._sync: Iterator[bytes] | None = None
        self._async: AsyncIterator[bytes] | None = None
        self._buffer = bytearray()
        self._exhausted = False

    async def _pull(self) -> bytes | None:
        # NOTE: a stream that is also sync (bytes, files, multipart) is read without an
        # async generator, which would otherwise need closing when the app stops early.
        if isinstance(self._stream, httpx.SyncByteStream):
            if self._sync is None:
                self._sync = iter(self._stream)
            return next(self._sync, None)
        if self._async is None:
            self._async = self._stream.__aiter__()
        try:
            return await self._async.__anext__()
        except StopAsyncIteration:
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

    async def aclose(self) -> None:
        if isinstance(self._async, AsyncGenerator):
            await self._async.aclose()


class _Exchange:
    """One HTTP request/response cycle: the app's ``receive``/``send`` and what it sent."""

    def __init__(self, request: httpx.Request) -> None:
        self.body = _RequestBody(request.stream)
        self._request_complete = False
        self._response_complete = anyio.Event()
        # NOTE: servers send no body for HEAD whatever the app sends.
        self._keep_body = request.method != "HEAD"
        self.status: int | None = None
        self.headers: RawHeaders = []
        self.chunks: list[bytes] = []

    async def receive(self) -> Message:
        if not self._request_complete:
            body, more = await self.body.read()
            self._request_complete = not more
            return {"type": "http.request", "body": body, "more_body": more}
        # NOTE: a server reports the disconnect only once the response is over.
        await self._response_complete.wait()
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
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError(
                    'Expected ASGI message "http.response.start", but got "http.response.body".'
                )
            if self._response_complete.is_set():
                raise RuntimeError(
                    'Unexpected ASGI message "http.response.body": the response is complete '
                    "(the previous body message had more_body=False)."
                )
            if self._keep_body:
                self.chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._response_complete.set()
        else:
            raise RuntimeError(
                f"Unexpected ASGI message {kind!r}: an HTTP app sends "
                '"http.response.start" and then "http.response.body".'
            )

    def response(self, raise_errors: bool) -> httpx.Response:
        if self.status is None:
            if raise_errors:
                raise RuntimeError('The ASGI app returned without sending "http.response.start".')
            body = b"Internal Server Error"
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ]
            return httpx.Response(500, headers=headers, stream=httpx.ByteStream(body))
        if raise_errors and not self._response_complete.is_set():
            raise RuntimeError(
                "The ASGI app returned without completing the response: "
                'its last "http.response.body" had more_body=True.'
            )
        stream = httpx.ByteStream(b"".join(self.chunks))
        return httpx.Response(self.status, headers=self.headers, stream=stream)


async def _call_http(target: Target, request: httpx.Request) -> httpx.Response:
    exchange = _Exchange(request)
    failed = False
    try:
        await target.app(http_scope(target, request), exchange.receive, exchange.send)
    except Exception:
        if target.raise_server_exceptions:
            raise
        failed = True
    finally:
        await exchange.body.aclose()
    # NOTE: once the app raised (and that was not re-raised), a missing or unfinished
    # response is answered as a server would: 500, or what was sent so far.
    return exchange.response(target.raise_server_exceptions and not failed)


class Transport(httpx.BaseTransport):
    def __init__(self, target: Target, portal_factory: PortalFactory) -> None:
        self._target = target
        self._portal_factory = portal_factory

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._portal_factory() as portal:
            return portal.call(_call_http, self._target, request)


class AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, target: Target) -> None:
        self._target = target

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await _call_http(self._target, request)
