"""GZipMiddleware and CompressionMiddleware: compress responses the client can decode.

``CompressionMiddleware`` negotiates zstd, brotli and gzip from ``Accept-Encoding`` (with
q-values); zstd needs Python 3.14's ``compression.zstd`` or the ``zstandard`` package,
brotli the ``brotli`` package (the ``zstd`` and ``brotli`` extras). Streaming responses
stay streaming: each chunk is compressed and flushed as it passes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Protocol

from microasgi.datastructures import MutableHeaders
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

from ._optional import load_optional

__all__ = ["CompressionMiddleware", "GZipMiddleware", "available_encodings"]


class Encoder(Protocol):
    """One response's compressor: chunks in, compressed (and flushed) bytes out."""

    def compress(self, data: bytes) -> bytes:
        """Compress ``data`` and flush, so that the client can decode all of it now."""

    def finish(self) -> bytes:
        """End the stream."""


class _GzipEncoder:
    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


class _BrotliEncoder:
    def __init__(self, quality: int) -> None:
        self._compressor = load_optional("brotli").Compressor(quality=quality)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.process(data) + self._compressor.flush()  # type: ignore[no-any-return]

    def finish(self) -> bytes:
        return self._compressor.finish()  # type: ignore[no-any-return]


class _ZstdEncoder:
    """zstd from the standard library (3.14+) when it is there, else ``zstandard``."""

    def __init__(self, level: int) -> None:
        self._compress: Callable[[bytes], bytes]
        self._finish: Callable[[], bytes]
        stdlib = load_optional("compression.zstd")
        if stdlib is not None:
            compressor = stdlib.ZstdCompressor(level=level)
            self._compress = lambda data: compressor.compress(data, compressor.FLUSH_BLOCK)
            self._finish = lambda: compressor.flush(compressor.FLUSH_FRAME)
        else:
            zstandard = load_optional("zstandard")
            stream = zstandard.ZstdCompressor(level=level).compressobj()
            block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
            self._compress = lambda data: stream.compress(data) + stream.flush(block)
            self._finish = stream.flush

    def compress(self, data: bytes) -> bytes:
        return self._compress(data)

    def finish(self) -> bytes:
        return self._finish()


def available_encodings() -> tuple[str, ...]:
    """The encodings this Python can produce, best first: zstd, br, gzip."""
    encodings = []
    if load_optional("compression.zstd") is not None or load_optional("zstandard") is not None:
        encodings.append("zstd")
    if load_optional("brotli") is not None:
        encodings.append("br")
    encodings.append("gzip")
    return tuple(encodings)


def parse_accept_encoding(header: str) -> dict[str, float]:
    """Parse ``Accept-Encoding`` into ``{coding: q}``; a malformed q counts as 0."""
    accepted: dict[str, float] = {}
    for item in header.split(",")[:64]:
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        accepted[coding] = quality
    return accepted


class CompressionMiddleware:
    """Compress responses with the best encoding the client accepts.

    - ``minimum_size``: bytes below which a response is sent as it is.
    - ``encodings``: those to offer, in order of preference (default: every available
      one of ``zstd``, ``br``, ``gzip``); the client's q-values decide first, this order
      breaks ties. An unavailable encoding raises ``ValueError`` here, not per request.
    - ``gzip_level`` (1-9), ``brotli_quality`` (0-11), ``zstd_level`` (1-19; higher levels
      need windows browsers refuse).

    Never compressed: responses that already have a ``Content-Encoding``, event streams
    (``text/event-stream``), partial content (206), bodiless statuses and HEAD requests.
    Compressed responses get ``Vary: Accept-Encoding``, lose ``Content-Length`` when they
    stream and ``Accept-Ranges``, and a strong ``ETag`` becomes weak. A response that would
    have been compressed for another ``Accept-Encoding`` gets ``Vary: Accept-Encoding`` too.
    """

    def __init__(
        self,
        app: ASGIApp,
        minimum_size: int = 500,
        encodings: Iterable[str] | None = None,
        gzip_level: int = 6,
        brotli_quality: int = 4,
        zstd_level: int = 3,
    ) -> None:
        self.app = app
        self.minimum_size = minimum_size
        available = available_encodings()
        offered = tuple(available if encodings is None else (e.lower() for e in encodings))
        for encoding in offered:
            if encoding not in available:
                raise ValueError(
                    f"The {encoding!r} encoding is not available: choose from {available} "
                    "(install microasgi[zstd] for zstd, microasgi[brotli] for br)"
                )
        if not offered:
            raise ValueError("CompressionMiddleware needs at least one encoding")
        if not 1 <= zstd_level <= 19:
            raise ValueError(f"zstd_level must be 1 to 19, not {zstd_level}")
        self.encodings = offered
        self.levels = {"gzip": gzip_level, "br": brotli_quality, "zstd": zstd_level}
        # PERF: browsers send a handful of distinct headers; each is negotiated once.
        self._choices: dict[bytes, str | None] = {}

    def choose(self, accept_encoding: bytes) -> str | None:
        """The encoding to use for a request with this ``Accept-Encoding``, if any."""
        choice = self._choices.get(accept_encoding, "")
        if choice != "":
            return choice
        accepted = parse_accept_encoding(accept_encoding.decode("latin-1"))
        wildcard = accepted.get("*", 0.0)
        best: str | None = None
        best_quality = 0.0
        for encoding in self.encodings:
            quality = accepted.get(encoding, wildcard)
            if encoding == "gzip" and "gzip" not in accepted:
                quality = accepted.get("x-gzip", quality)
            if quality > best_quality:
                best, best_quality = encoding, quality
        if len(self._choices) < 256:
            self._choices[accept_encoding] = best
        return best

    def encoder(self, encoding: str) -> Encoder:
        """A new compressor for ``encoding``."""
        level = self.levels[encoding]
        if encoding == "gzip":
            return _GzipEncoder(level)
        if encoding == "br":
            return _BrotliEncoder(level)
        return _ZstdEncoder(level)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        # NOTE: a field sent on several lines is one list (RFC 9110, 5.3): the last line
        # alone could name an encoding that an earlier one refused ("zstd;q=0", then "*").
        accept = [value for name, value in scope["headers"] if name == b"accept-encoding"]
        encoding = self.choose(b", ".join(accept)) if accept else None
        # NOTE: sent as it is, a response that another client would get compressed still
        # depends on Accept-Encoding, which caches must know (RFC 9110, 12.5.5): it goes
        # through the same decision, to get its Vary.
        compressing = _CompressingSend(self, encoding, send)
        await self.app(scope, receive, compressing.send)
        # NOTE: not in a finally: when the app raises, the start stays unsent, so an
        # error layer outside can still answer 500.
        await compressing.release()


class GZipMiddleware(CompressionMiddleware):
    """Compress responses with gzip for clients that accept it.

    ``minimum_size``: bytes below which a response is sent as it is; ``compresslevel``:
    1 (fast) to 9 (small). See ``CompressionMiddleware`` for what is never compressed.
    """

    def __init__(self, app: ASGIApp, minimum_size: int = 500, compresslevel: int = 9) -> None:
        super().__init__(app, minimum_size, encodings=("gzip",), gzip_level=compresslevel)


_NEVER_COMPRESSED = (b"text/event-stream",)


class _CompressingSend:
    """The ``send`` of one response: decides at the first body, then compresses.

    Without an ``encoding`` (the client accepts none), a response that would have been
    compressed is sent as it is, with ``Vary: Accept-Encoding``.
    """

    __slots__ = ("_encoder", "_encoding", "_middleware", "_send", "_start", "_state")

    def __init__(self, middleware: CompressionMiddleware, encoding: str | None, send: Send) -> None:
        self._middleware = middleware
        self._encoding = encoding
        self._send = send
        self._start: Message | None = None
        self._encoder: Encoder | None = None
        self._state = "start"  # start -> held -> compressing | passing

    async def send(self, message: Message) -> None:
        state = self._state
        if state == "passing":
            await self._send(message)
        elif state == "compressing":
            await self._compress(message)
        elif state == "start":
            if message["type"] == "http.response.start" and not self._should_pass(message):
                self._state = "held"
                self._start = message
            else:
                self._state = "passing"
                if message["type"] == "http.response.start" and message["status"] == 304:
                    message = self._revalidated(message)
                await self._send(message)
        elif message["type"] == "http.response.body":
            await self._first_body(message)
        else:
            # NOTE: anything but a body (a file sent by path): sent as it is.
            self._state = "passing"
            await self._send(self._start)  # type: ignore[arg-type]
            await self._send(message)

    async def release(self) -> None:
        """Send a start still held once the app has returned without a body.

        The server then sees what it would have seen without compression: a response
        started and never completed (a stream cut by a deadline), which it reports and
        cuts, rather than no response at all.
        """
        if self._state == "held":
            assert self._start is not None
            self._state = "passing"
            await self._send(_with_vary(self._start))

    def _should_pass(self, start: Message) -> bool:
        status = start["status"]
        if status < 200 or status in (204, 206, 304):
            return True
        # PERF: one pass over the raw headers, no Headers object: this runs per response,
        # for the requests that accept no encoding too.
        media_type = length = None
        for name, value in start.get("headers", ()):
            if name == b"content-encoding":
                return True
            if name == b"content-type" and media_type is None:
                media_type = value
            elif name == b"content-length" and length is None:
                length = value
        if media_type is not None and _media_type(media_type) in _NEVER_COMPRESSED:
            return True
        return (
            length is not None and length.isdigit() and int(length) < self._middleware.minimum_size
        )

    async def _first_body(self, message: Message) -> None:
        assert self._start is not None
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        small = not more_body and len(body) < self._middleware.minimum_size
        if small or self._encoding is None:
            # NOTE: as Starlette does, a small response gets no Vary: it is never compressed.
            self._state = "passing"
            await self._send(self._start if small else _with_vary(self._start))
            await self._send(message)
            return
        body = bytes(body)
        self._state = "compressing"
        encoder = self._encoder = self._middleware.encoder(self._encoding)
        compressed = encoder.compress(body) if body else b""
        if not more_body:
            compressed += encoder.finish()
        await self._send(self._compressed_start(self._start, None if more_body else compressed))
        await self._send({"type": "http.response.body", "body": compressed, "more_body": more_body})

    async def _compress(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        assert self._encoder is not None
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        compressed = self._encoder.compress(bytes(body)) if body else b""
        if not more_body:
            compressed += self._encoder.finish()
        elif not compressed:
            return
        await self._send({"type": "http.response.body", "body": compressed, "more_body": more_body})

    def _revalidated(self, start: Message) -> Message:
        """A 304 with the ``Vary`` and ``ETag`` its 200 would have had (RFC 9110 §15.4.5)."""
        # NOTE: with the strong ETag of the file, a cache would keep compressed bytes under
        # it, and a later If-Range could then splice ranges of the plain file into them.
        headers = MutableHeaders(raw=list(start.get("headers", ())))
        headers.add_vary_header("Accept-Encoding")
        if self._encoding is not None:
            _weaken_etag(headers)
        return {**start, "headers": headers.raw}

    def _compressed_start(self, start: Message, whole: bytes | None) -> Message:
        assert self._encoding is not None
        headers = MutableHeaders(raw=list(start.get("headers", ())))
        del headers["content-length"]
        del headers["accept-ranges"]
        headers.raw.append((b"content-encoding", self._encoding.encode("latin-1")))
        if whole is not None:
            headers.raw.append((b"content-length", b"%d" % len(whole)))
        headers.add_vary_header("Accept-Encoding")
        _weaken_etag(headers)
        return {**start, "headers": headers.raw}


def _weaken_etag(headers: MutableHeaders) -> None:
    # NOTE: compressed bytes are not the bytes a strong validator names.
    etag = headers.get("etag")
    if etag is not None and not etag.startswith("W/"):
        headers["etag"] = "W/" + etag


def _media_type(content_type: bytes) -> bytes:
    return content_type.partition(b";")[0].strip().lower()


def _with_vary(start: Message) -> Message:
    raw = list(start.get("headers", ()))
    # PERF: most responses have no Vary yet; only a list that has one is parsed.
    for name, _ in raw:
        if name == b"vary":
            MutableHeaders(raw=raw).add_vary_header("Accept-Encoding")
            break
    else:
        raw.append((b"vary", b"Accept-Encoding"))
    return {**start, "headers": raw}
