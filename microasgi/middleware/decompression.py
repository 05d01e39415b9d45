"""RequestDecompressionMiddleware: inflate request bodies sent with a ``Content-Encoding``.

The body is inflated as the app reads it, a step of about 64 KiB of output at a time
(2 MiB for zstd), and each step is counted against ``Limits.max_decompressed_size``: a body
that would inflate past it is refused with 413 at the read that crosses the limit, so a
bomb costs no more memory than the limit allows. ``max_body_size`` bounds the body both as
sent and as inflated. gzip and deflate come from the standard library; br needs ``brotli``
1.2 or later and zstd the ``zstandard`` package or Python 3.14's ``compression.zstd`` (the
``brotli`` and ``zstd`` extras).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from microasgi.exceptions import HTTPException
from microasgi.limits import Limits, announces_more, body_too_large, limits_for
from microasgi.requests import BODY_KEY, BODY_LIMITS_KEY, FORM_KEY
from microasgi.responses import JSONResponse
from microasgi.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

from ._optional import load_optional

__all__ = ["RequestDecompressionMiddleware", "available_decodings"]

_CHUNK = 64 * 1024
"""Bytes of inflated output asked of a decoder per step (and at most per message)."""

_SLICE = 16 * 1024
"""Compressed bytes handed to zlib or brotli per call."""

# SECURITY: zstandard cannot bound the output of one call, only its input: a 4-byte RLE
# block inflates to 128 KiB, so 64 bytes in are at most 2 MiB out.
_ZSTD_SLICE = 64

# SECURITY: RFC 9659 caps the window of HTTP zstd at 8 MiB; a frame asking for more would
# make the decoder allocate it (up to 2 GiB) before producing a byte.
_ZSTD_WINDOW_LOG = 23

_MAX_CODINGS = 4
"""Stacked codings decoded in one Content-Encoding; each costs a decoder's memory."""


class _Decoder:
    """One content coding's decoder: compressed bytes in, inflated bytes out in steps."""

    __slots__ = ("_input", "_offset", "errors", "fed", "name")

    def __init__(self, name: str, errors: tuple[type[Exception], ...]) -> None:
        self.name = name
        self.errors = errors  # what the decoder raises for corrupt data
        self._input = memoryview(b"")
        self._offset = 0
        self.fed = False  # some compressed bytes were taken

    def feed(self, data: bytes) -> None:
        """Add compressed bytes (``read`` returned b"", so the last ones are used up)."""
        if self._offset < len(self._input):
            data = bytes(self._input[self._offset :]) + data
        self._input = memoryview(data)
        self._offset = 0

    def _take(self, size: int) -> memoryview:
        start = self._offset
        piece = self._input[start : start + size]
        self._offset = start + len(piece)
        if piece:
            self.fed = True
        return piece

    def _untake(self, size: int) -> None:
        self._offset -= size

    @property
    def _drained(self) -> bool:
        return self._offset >= len(self._input)

    def read(self, size: int) -> bytes:
        """Return the next inflated bytes (about ``size``), or b"" when it needs input."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        """The stream ended, and no compressed byte is left over."""
        raise NotImplementedError


class _ZlibDecoder(_Decoder):
    """gzip (one member or several) and deflate (zlib-wrapped, or raw as some clients send)."""

    __slots__ = ("_obj", "_tail")

    def __init__(self, name: str) -> None:
        super().__init__(name, (zlib.error,))
        self._obj: Any = None
        self._tail: bytes = b""

    def read(self, size: int) -> bytes:
        obj = self._obj
        while True:
            data = self._tail or self._take(_SLICE)
            if obj is None or obj.eof:
                if not data:
                    return b""
                obj = self._obj = self._open(data)
            # NOTE: called even without data: a step cut short by `size` may owe output.
            out: bytes = obj.decompress(data, size)
            self._tail = obj.unconsumed_tail or obj.unused_data
            if out or not data:
                return out

    def _open(self, data: bytes | memoryview) -> Any:
        if self.name == "gzip":
            # NOTE: bytes after a gzip member start another one (RFC 1952 §2.2).
            return zlib.decompressobj(31)
        if self._obj is not None:
            raise zlib.error("data after the end of the deflate stream")
        # NOTE: HTTP's deflate is zlib-wrapped (RFC 9110 §8.4.1.2), but some clients send raw
        # deflate; a zlib stream starts with CM=8 and CINFO<=7, a raw one practically never.
        first = data[0]
        return zlib.decompressobj(15 if first & 0x0F == 8 and first >> 4 <= 7 else -15)

    @property
    def done(self) -> bool:
        return self._obj is not None and self._obj.eof and not self._tail and self._drained


class _BrotliDecoder(_Decoder):
    __slots__ = ("_obj",)

    def __init__(self, brotli: Any) -> None:
        super().__init__("br", (brotli.error,))
        self._obj = brotli.Decompressor()

    def read(self, size: int) -> bytes:
        obj = self._obj
        while True:
            # NOTE: brotli keeps input it could not inflate within the output limit, and
            # takes more only once that is drained.
            data = self._take(_SLICE) if obj.can_accept_more_data() else b""
            out: bytes = obj.process(data, output_buffer_limit=size)
            if out or not data:
                return out

    @property
    def done(self) -> bool:
        return bool(self._obj.is_finished()) and self._drained


class _ZstdDecoder(_Decoder):
    """zstd, one frame or several (RFC 8878 §3.1)."""

    __slots__ = ("_new", "_obj")

    def __init__(self, new: Callable[[], Any], errors: tuple[type[Exception], ...]) -> None:
        super().__init__("zstd", errors)
        self._new = new
        self._obj: Any = None

    def read(self, size: int) -> bytes:
        obj = self._obj
        while True:
            data = self._take(_ZSTD_SLICE)
            if not data:
                return b""
            if obj is None or obj.eof:
                obj = self._obj = self._new()
            out: bytes = obj.decompress(data)
            if obj.eof:
                # NOTE: the rest of the slice belongs to the next frame.
                self._untake(len(obj.unused_data))
            if out:
                return out

    @property
    def done(self) -> bool:
        return self._obj is not None and self._obj.eof and self._drained


def _brotli_factory() -> Callable[[], _Decoder] | None:
    brotli = load_optional("brotli")
    # SECURITY: brotli before 1.2 cannot bound the output of one call, and a few bytes of
    # br can inflate to many MiB; br is not decoded with it.
    if brotli is None or not hasattr(brotli.Decompressor, "can_accept_more_data"):
        return None
    return functools.partial(_BrotliDecoder, brotli)


def _zstd_factory() -> Callable[[], _Decoder] | None:
    stdlib = load_optional("compression.zstd")
    if stdlib is not None:
        options = {stdlib.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG}
        return functools.partial(
            _ZstdDecoder, lambda: stdlib.ZstdDecompressor(options=options), (stdlib.ZstdError,)
        )
    zstandard = load_optional("zstandard")
    if zstandard is None:
        return None

    def new_decoder() -> _Decoder:
        # NOTE: one context per request: a decompressobj uses its context's state, so two
        # requests must not share one.
        context = zstandard.ZstdDecompressor(max_window_size=1 << _ZSTD_WINDOW_LOG)
        return _ZstdDecoder(context.decompressobj, (zstandard.ZstdError,))

    return new_decoder


def _decoders() -> dict[str, Callable[[], _Decoder]]:
    found: dict[str, Callable[[], _Decoder] | None] = {
        "gzip": functools.partial(_ZlibDecoder, "gzip"),
        "deflate": functools.partial(_ZlibDecoder, "deflate"),
        "br": _brotli_factory(),
        "zstd": _zstd_factory(),
    }
    return {name: factory for name, factory in found.items() if factory is not None}


def available_decodings() -> tuple[str, ...]:
    """The content codings this Python can decode: gzip, deflate, then br and zstd."""
    return tuple(_decoders())


class RequestDecompressionMiddleware:
    """Inflate request bodies sent with ``Content-Encoding`` gzip, deflate, br or zstd.

    ``encodings``: those to decode (default: every available one); an unavailable one
    raises ``ValueError`` here, not per request. Stacked codings (``gzip, br``) are decoded
    in reverse order; ``identity`` is ignored and ``x-gzip`` is gzip.

    The app sees the inflated body, without ``Content-Encoding`` and ``Content-Length``.
    Answers: 413 when the body would inflate past ``max_decompressed_size`` (or is over
    ``max_body_size``, as sent or inflated), 415 for another coding (with the supported ones
    in ``Accept-Encoding``), 400 for a corrupt or truncated body. The 413 and 400 are
    ``HTTPException``s raised where the app reads the body, as the body limit is; bodies
    are decoded only as they are read. Add it before (outside) middleware that reads the
    body.
    """

    def __init__(self, app: ASGIApp, encodings: Iterable[str] | None = None) -> None:
        self.app = app
        available = _decoders()
        chosen = tuple(available if encodings is None else (e.lower() for e in encodings))
        for encoding in chosen:
            if encoding not in available:
                raise ValueError(
                    f"The {encoding!r} request encoding cannot be decoded here: choose from "
                    f"{tuple(available)} (microasgi[brotli] adds br, microasgi[zstd] zstd)"
                )
        self.encodings = chosen
        self._factories = {name: available[name] for name in chosen}
        if "gzip" in chosen:
            self._factories["x-gzip"] = available["gzip"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # PERF: without a Content-Encoding, this loop is all a request pays.
            for name, _ in scope["headers"]:
                if name == b"content-encoding":
                    await self._decode(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _decode(self, scope: Scope, receive: Receive, send: Send) -> None:
        codings: list[str] = []
        headers: RawHeaders = []
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                codings += (c.strip(" \t").lower() for c in value.decode("latin-1").split(","))
            elif name == b"content-length":
                length = value
            else:
                headers.append((name, value))
        codings = [c for c in codings if c and c != "identity"]
        if not codings:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(codings)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        decoders = [self._factories[coding]() for coding in reversed(codings)]
        inner = {**scope, "headers": headers}
        # SECURITY: a body cached further out is the compressed one; the app must not see it.
        inner.pop(BODY_KEY, None)
        inner.pop(FORM_KEY, None)
        inflating = _InflatingReceive(decoders, receive, inner, length)
        # SECURITY: a mount runs its app on a copy of the scope, where a route below it puts
        # its own limits; the Request that reads the body hands them over.
        inner[BODY_LIMITS_KEY] = inflating.use_limits
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(inner, inflating, tracking_send)
        except HTTPException as exc:
            # NOTE: a microasgi app answers these itself; this is for other ASGI apps.
            if exc is not inflating.error:
                raise
            if not started:
                response = JSONResponse({"detail": exc.detail}, exc.status_code)
                await response(inner, receive, send)
            # NOTE: else the response is under way and is cut short, as for the body limit.

    def _refusal(self, codings: list[str]) -> JSONResponse | None:
        accepted = ", ".join(self.encodings)
        unsupported = [c for c in codings if c not in self._factories]
        if unsupported:
            detail = (
                f"Unsupported Content-Encoding {unsupported[0]!r}: request bodies may be "
                f"encoded with {accepted or 'no coding'} (or identity)"
            )
        elif len(codings) > _MAX_CODINGS:
            detail = (
                f"Content-Encoding stacks {len(codings)} codings; at most {_MAX_CODINGS} "
                "are decoded"
            )
        else:
            return None
        # NOTE: RFC 7694 §3: a 415 for a content coding lists the acceptable ones.
        return JSONResponse({"detail": detail}, 415, headers={"accept-encoding": accepted})


_UNREAD: Any = object()


class _InflatingReceive:
    """The ``receive`` of one request's app: body messages carry inflated bytes."""

    __slots__ = (
        "_decoders",
        "_ended",
        "_input_done",
        "_length",
        "_limit",
        "_max_body",
        "_produced",
        "_receive",
        "_received",
        "_scope",
        "error",
    )

    def __init__(
        self, decoders: list[_Decoder], receive: Receive, scope: Scope, length: bytes | None
    ) -> None:
        self._decoders = decoders  # the first decodes the bytes as received
        self._receive = receive
        self._scope = scope
        self._length = length
        self._limit: int | None = _UNREAD
        self._max_body: int | None = None
        self._produced = [0] * len(decoders)
        self._received = 0
        self._input_done = False
        self._ended = False
        self.error: HTTPException | None = None

    async def __call__(self) -> Message:
        if self.error is not None:
            raise self.error
        if self._ended:
            return await self._receive()
        try:
            return await self._next()
        except HTTPException as exc:
            self.error = exc
            raise

    def use_limits(self, limits: Limits) -> None:
        """Hold the body to ``limits``: those of the route whose Request reads it."""
        self._start(limits)

    def _start(self, limits: Limits | None = None) -> None:
        # NOTE: looked up at the first read, not per call of the middleware: by then the
        # route has put its own limits in the scope (unless it runs under a mount, whose
        # copy of the scope this one does not see: its Request calls use_limits()).
        if limits is None:
            limits = limits_for(self._scope)
        self._limit = limits.max_decompressed_size
        self._max_body = limit = limits.max_body_size
        length = self._length
        # SECURITY: refuse before reading anything when the client announces too much.
        if limit is not None and length is not None and announces_more(length, limit):
            raise body_too_large(limit)

    async def _next(self) -> Message:
        if self._limit is _UNREAD:
            self._start()
        last = len(self._decoders) - 1
        while True:
            chunk = self._pull(last)
            if chunk:
                if self._max_body is not None and self._produced[last] > self._max_body:
                    raise body_too_large(self._max_body)
                more = not (self._input_done and all(d.done for d in self._decoders))
                self._ended = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            if self._input_done:
                self._check_complete()
                self._ended = True
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await self._receive()
            if message["type"] != "http.request":
                return message
            body: bytes = message.get("body", b"")
            self._received += len(body)
            if self._max_body is not None and self._received > self._max_body:
                raise body_too_large(self._max_body)
            self._input_done = not message.get("more_body", False)
            if body:
                self._decoders[0].feed(body)

    def _pull(self, index: int) -> bytes:
        """Inflated bytes from decoder ``index``, feeding it from the one before."""
        decoder = self._decoders[index]
        while True:
            try:
                out = decoder.read(_CHUNK)
            except decoder.errors as exc:
                raise HTTPException(400, f"Malformed {decoder.name} request body: {exc}") from None
            if out:
                produced = self._produced[index] = self._produced[index] + len(out)
                # SECURITY: every stage is bounded, so a stack cannot hide a huge middle.
                if self._limit is not None and produced > self._limit:
                    raise HTTPException(
                        413,
                        f"Request body inflates past the limit of {self._limit} bytes "
                        "(max_decompressed_size)",
                    )
                return out
            if index == 0:
                return b""
            upstream = self._pull(index - 1)
            if not upstream:
                return b""
            decoder.feed(upstream)

    def _check_complete(self) -> None:
        for decoder in self._decoders:
            # NOTE: an empty body stays empty, whatever its coding says.
            if decoder.fed and not decoder.done:
                raise HTTPException(
                    400, f"Truncated {decoder.name} request body: it ends mid-stream"
                )
