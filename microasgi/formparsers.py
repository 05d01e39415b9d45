"""Form bodies: urlencoded and multipart, parsed as they stream in, within the Limits.

Both encodings run on python-multipart's streaming parsers, fed one slice of the body at a
time, so nothing is held whole: non-file fields are bounded by ``max_part_size``, files
spool to disk past ``spool_max_size`` (the rollover and every disk write in a worker
thread), and the body by ``max_body_size``. Over a size limit is a 413, over a count or a
format rule a 400, each with a reason; a malformed body is never a 500.

Urlencoded names and values are percent-decoded as their bytes arrive, in time and memory
linear in their size, so no step of the parse decodes more than one slice of the body.

Text decodes with the request's ``charset`` (UTF-8 by default); a multipart field whose own
``Content-Type`` names a ``charset`` decodes with that one. Only UTF-8, US-ASCII and
ISO-8859-1 are accepted: another request charset is a 415, another part charset a 400
(never a silent fallback, so what the application reads is what the client meant).
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, BinaryIO, cast

import anyio
import anyio.lowlevel
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser as _MultipartStream
from python_multipart.multipart import QuerystringParser as _QuerystringStream

from ._spool import SharedSpool, SharedSpooledFile
from .concurrency import run_in_threadpool
from .datastructures import FormData, Headers, UploadFile
from .exceptions import HTTPException
from .limits import KiB, Limits, body_too_large

__all__ = [
    "MAX_BOUNDARY_LENGTH",
    "FormParser",
    "FormReader",
    "FormUsage",
    "MultiPartParser",
    "parse_form",
    "parse_options_header",
    "safe_filename",
    "tightened",
    "unquote_plus",
]

MAX_BOUNDARY_LENGTH = 256
"""Longest multipart boundary accepted (RFC 2046 allows 70; clients stay well under 256)."""

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

# PERF: the most handed to a parser at once. A larger chunk (a cached body) is fed in
# slices with a checkpoint between them, so that even a body crafted for the parser's
# slowest path (about 0.2 ms per KiB) blocks the event loop for tens of milliseconds, not
# seconds. 256 KiB is what uvicorn hands over per message: slicing smaller would copy every
# byte once more and cost a loop turn per slice.
_FEED_SIZE = 256 * KiB
# PERF: smaller messages are gathered up to this size before a parser call (see parse()).
_MIN_FEED_SIZE = 4 * KiB
# PERF: file data gathered before one write, so small messages cost one worker-thread hop
# per 256 KiB, not one each. Larger batches hold the loop back from receiving for longer
# (the server stops reading once its buffer fills) and measured slower end to end.
_FLUSH_SIZE = 256 * KiB
# SECURITY: the files of one form keep at most this many times spool_max_size in memory
# together; past that every file spools to disk, so a thousand small files cannot pin a
# thousand times spool_max_size when max_body_size is lifted for a route. On disk they share
# one temporary file (see microasgi._spool), so they cannot pin a thousand descriptors either.
_SPOOLED_FILES = 8
# PERF: the most percent-decoded in one pass. A pass holds about 200 bytes per escape until
# it joins the pieces, so slices keep that under a MiB whatever a field holds, at no
# measurable cost in time.
_DECODE_SLICE = 16 * KiB
_UNBOUNDED = sys.maxsize
_CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
}

# NOTE: python-multipart logs a warning for each malformed body it meets; here each one is
# a 400 with the reason, so its log lines would only let clients flood the logs. A logger
# above CRITICAL that belongs to no hierarchy makes its calls no-ops.
_QUIET = logging.Logger("microasgi.formparsers.quiet", level=logging.CRITICAL + 1)

# SECURITY: every pattern below is linear: no nested or overlapping repetition, and each
# scan stops at the first piece it cannot match (probe: 10k backslashes in a parameter).
_PARAM = re.compile(
    r"(?:[ \t]*;)+[ \t]*"  # one separator, or a run of them
    r'(?:([^\s;="]+)[ \t]*'  # name
    r'(?:=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"'  # value: a quoted string with \" and \\ escapes,
    r'|"([^"]*)"'  # or one whose backslashes are literal (as browsers send them),
    r'|([^;"]*)))?)?',  # or a bare token
    re.DOTALL,
)
_QUOTED_PAIR = re.compile(r'\\([\\"])')
_AMPERSANDS = re.compile(rb"&&+")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_HEX_BYTES = {
    bytes((high, low)): bytes.fromhex(chr(high) + chr(low))
    for high in _HEX_DIGITS
    for low in _HEX_DIGITS
}
# C0 and C1 controls, NUL included, and the bidirectional overrides that disguise an
# extension ("evil\u202egpj.exe" shows as "evilexe.jpg").
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SINGLE_PART_HEADERS = {
    b"content-disposition": "Content-Disposition",
    b"content-type": "Content-Type",
}
_HEADER_ERRORS = {
    "Maximum header count exceeded": "max_part_headers",
    "Maximum header size exceeded": "max_part_header_size",
}


def parse_options_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; name=value; ...`` into the lower-cased type and its parameters.

    Parameter names are lower-cased and quoted values unquoted. Extended parameters
    (``name*``, RFC 2231/5987) are ignored: RFC 7578 forbids them in form data, and the
    plain parameter is the one that counts. Raises ``ValueError`` for a malformed value
    or a repeated parameter. Runs in time linear in ``len(value)``.
    """
    value = value.strip(" \t")
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    if not rest:
        return media_type.strip(" \t").lower(), params
    position = len(media_type)
    while position < len(value):
        match = _PARAM.match(value, position)
        if match is None:
            raise ValueError(f"unexpected {value[position]!r} at offset {position}")
        position = match.end()
        name, escaped, literal, token = match.groups()
        if name is None or "*" in name:
            continue
        name = name.lower()
        if name in params:
            raise ValueError(f"parameter {name!r} given twice")
        if escaped is not None:
            params[name] = _QUOTED_PAIR.sub(r"\1", escaped)
        else:
            params[name] = literal if literal is not None else (token or "").rstrip(" \t")
    return media_type.strip(" \t").lower(), params


def safe_filename(filename: str) -> str:
    """Reduce a client's file name to a base name that is safe to show.

    Directories (``/`` and ``\\``) and a drive prefix go, so do control characters
    (NUL included) and bidirectional overrides; a name of dots only (``..``) becomes
    ``""``. Still never use it as a path without choosing the directory yourself.
    """
    name = _UNSAFE_CHARS.sub("", filename)
    name = name.replace("\\", "/").rpartition("/")[2]
    name = _DRIVE.sub("", name).strip()
    return "" if not name.strip(".") else name


def tightened(
    limits: Limits,
    *,
    max_files: int | None = None,
    max_fields: int | None = None,
    max_part_size: int | None = None,
) -> Limits:
    """Return ``limits`` with the given bounds lowered to these values (never raised)."""
    lowered: dict[str, int] = {}
    for name, value in (
        ("max_files", max_files),
        ("max_fields", max_fields),
        ("max_part_size", max_part_size),
    ):
        current = getattr(limits, name)
        if value is not None and (current is None or value < current):
            lowered[name] = value
    return limits.merged(Limits(**lowered)) if lowered else limits


class FormReader:
    """What ``request.form()`` returns: await it, or use it as an async context manager.

    ``async with request.form() as form:`` closes the form's files on exit.
    """

    __slots__ = ("_close", "_load")

    def __init__(
        self, load: Callable[[], Awaitable[FormData]], close: Callable[[], Awaitable[None]]
    ) -> None:
        self._load = load
        self._close = close

    def __await__(self) -> Generator[Any, None, FormData]:
        return self._load().__await__()

    async def __aenter__(self) -> FormData:
        return await self._load()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()


class FormUsage:
    """What one form took of the limits: body bytes, fields, files and its largest field.

    A form is parsed once and cached on the scope, under the limits of whoever read it
    first (a middleware reads it under the app's); ``check`` holds it to a later reader's.
    """

    __slots__ = ("body", "fields", "files", "largest_part")

    def __init__(self) -> None:
        self.body = self.fields = self.files = self.largest_part = 0

    def check(self, limits: Limits) -> None:
        """Raise the `HTTPException` a parse within ``limits`` would have raised, if any."""
        if limits.max_body_size is not None and self.body > limits.max_body_size:
            raise body_too_large(limits.max_body_size)
        if limits.max_fields is not None and self.fields > limits.max_fields:
            raise _too_many("fields", limits.max_fields, "max_fields")
        if limits.max_files is not None and self.files > limits.max_files:
            raise _too_many("files", limits.max_files, "max_files")
        if limits.max_part_size is not None and self.largest_part > limits.max_part_size:
            raise _part_too_large(limits.max_part_size)


async def parse_form(
    headers: Headers,
    stream: AsyncIterator[bytes],
    limits: Limits,
    *,
    strict: bool = True,
    usage: FormUsage | None = None,
) -> FormData:
    """Parse the form body in ``stream``, as its request ``headers`` describe, within ``limits``.

    Another media type (or none) is a 415 when ``strict``, else an empty form. A compressed
    body (``Content-Encoding`` other than identity) is a 415 too. Neither is read.
    ``usage``, when given, is filled in with what the form took (see `FormUsage`).
    """
    content_type: str | None = headers.get("content-type")
    media_type = (content_type or "").partition(";")[0].strip(" \t").lower()
    if media_type not in (URLENCODED, MULTIPART):
        if strict:
            raise HTTPException(
                415,
                f"Expected a form body with Content-Type: {URLENCODED} or {MULTIPART}, "
                f"got {content_type or 'no Content-Type'!r}",
            )
        return FormData()
    encoding = headers.get("content-encoding", "identity").strip(" \t").lower()
    if encoding != "identity":
        # SECURITY: a compressed form is refused unread, never inflated (RFC 9110 §15.5.16);
        # a decompressing middleware that enforces max_decompressed_size may sit in front.
        raise HTTPException(415, f"Unsupported Content-Encoding {encoding!r} for a form body")
    try:
        _, options = parse_options_header(content_type or "")
    except ValueError as exc:
        raise HTTPException(400, f"Malformed Content-Type header: {exc}") from None
    charset = _charset(options)
    parser: FormParser | MultiPartParser
    if media_type == URLENCODED:
        parser = FormParser(limits, charset)
    else:
        parser = MultiPartParser(_boundary(options), limits, charset)
    form = await parser.parse(stream)
    if usage is not None:
        usage.body = parser.received
        usage.fields = parser._fields
        usage.files = parser.files
        usage.largest_part = parser.largest_part
    return form


def _charset(options: dict[str, str]) -> str:
    # SECURITY: a short allow-list, not any codec Python knows: some (punycode, for one)
    # decode in quadratic time, and browsers send UTF-8 without a charset parameter anyway.
    name = options.get("charset", "utf-8")
    charset = _CHARSETS.get(name.lower())
    if charset is None:
        raise HTTPException(415, f"Unsupported form charset {name!r}: send UTF-8")
    return charset


def _part_charset(content_type: str | None, default: str) -> str:
    """The charset a multipart field's own Content-Type names, else the request's."""
    if content_type is None:
        return default
    try:
        _, options = parse_options_header(content_type)
    except ValueError as exc:
        raise HTTPException(400, f"Malformed multipart part Content-Type: {exc}") from None
    name = options.get("charset")
    if name is None:
        return default
    charset = _CHARSETS.get(name.lower())
    if charset is None:
        # SECURITY: the same allow-list as the request's charset. Falling back to another
        # charset would hand the application text that the client did not send.
        raise HTTPException(
            400, f"Unsupported charset {name[:40]!r} in a multipart part: send UTF-8"
        )
    return charset


def _boundary(options: dict[str, str]) -> bytes:
    boundary = options.get("boundary")
    if not boundary:
        raise HTTPException(400, "Malformed multipart Content-Type: no boundary parameter")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise HTTPException(
            400,
            f"Malformed multipart Content-Type: the boundary is {len(boundary)} characters "
            f"long, the limit is {MAX_BOUNDARY_LENGTH}",
        )
    return boundary.encode("latin-1")


def _refuse_repeated(headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse a part that gives Content-Disposition or Content-Type more than once."""
    # SECURITY: parsers disagree on which copy wins (the first here, the last in others), so a
    # proxy or scanner in front could see another name, file name or type than the app does.
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in _SINGLE_PART_HEADERS:
            if name in seen:
                raise HTTPException(
                    400, f"Malformed multipart part: {_SINGLE_PART_HEADERS[name]} given twice"
                )
            seen.add(name)


def _too_many(what: str, limit: int, name: str) -> HTTPException:
    return HTTPException(400, f"Too many {what} in the form: the limit is {limit} ({name})")


def _part_too_large(limit: int) -> HTTPException:
    return HTTPException(
        413, f"A form field exceeds the limit of {limit} bytes (max_part_size); send it as a file"
    )


def _decode(raw: bytes | bytearray, charset: str) -> str:
    return raw.decode(charset, "replace")


def unquote_plus(raw: bytes) -> bytes:
    """Decode the ``+`` and ``%XX`` of an urlencoded name or value."""
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    return _unescape(raw) if b"%" in raw else raw


def _unescape(raw: bytes, _byte: Callable[[bytes], bytes] = _HEX_BYTES.__getitem__) -> bytes:
    """Decode the ``%XX`` escapes in ``raw``; a ``%`` that starts none is kept as sent.

    Linear in time and memory whatever the input, unlike ``urllib.parse.unquote_to_bytes``,
    which raises and catches an exception for each ``%`` that starts no escape and holds
    about 185 bytes per ``%`` until it returns.
    """
    if len(raw) <= _DECODE_SLICE:
        # PERF: split() leaves the hex digits of the escapes at the odd indexes, and map()
        # turns them into bytes with no Python call per escape.
        pieces = _ESCAPE.split(raw)
        pieces[1::2] = map(_byte, pieces[1::2])
        return b"".join(pieces)
    decoded: list[bytes] = []
    start = 0
    while start < len(raw):
        piece = raw[start : start + _DECODE_SLICE]
        if start + len(piece) < len(raw):
            piece = piece[: len(piece) - _open_escape(piece)]
        decoded.append(_unescape(piece))
        start += len(piece)
    return b"".join(decoded)


def _open_escape(raw: bytes) -> int:
    """How many bytes at the end of ``raw`` may start an escape that later bytes finish."""
    # NOTE: "%" is no hex digit, so escapes never overlap: cutting before the last "%" of
    # the final two bytes never splits one.
    if raw.endswith(b"%"):
        return 1
    return 2 if raw[-2:-1] == b"%" else 0


def _settle(pieces: list[bytes | bytearray]) -> list[bytes | bytearray]:
    """Decode a long urlencoded name or value as far as it has arrived.

    Returns its decoded bytes so far (a bytearray, extended at each call), followed by
    the bytes of an escape that the next piece may finish, if any.
    """
    head = pieces[0]
    if isinstance(head, bytearray):
        raw = b"".join(pieces[1:])
    else:
        head, raw = bytearray(), b"".join(pieces)
    keep = _open_escape(raw)
    head += unquote_plus(raw[: len(raw) - keep])
    return [head, raw[len(raw) - keep :]] if keep else [head]


def _decoded(pieces: list[bytes | bytearray]) -> bytes | bytearray:
    """The decoded bytes of a name or value that _settle may have seen."""
    if pieces and isinstance(pieces[0], bytearray):
        head = pieces[0]
        head += unquote_plus(b"".join(pieces[1:]))
        return head
    return unquote_plus(b"".join(pieces))


class _StreamingParser:
    """What both parsers share: feeding the body in slices, and the count of fields."""

    def __init__(self, limits: Limits, charset: str) -> None:
        self.limits = limits
        self.charset = charset
        self.items: list[tuple[str, UploadFile | str]] = []
        self._fields = 0
        self._max_fields = _bound(limits.max_fields)
        self.received = 0  # body bytes read
        self.files = 0
        self.largest_part = 0  # bytes of the largest non-file name, value or part

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Hand gathered file data to the files; nothing to do for urlencoded bodies."""

    async def finish(self) -> FormData:
        raise NotImplementedError

    async def abort(self) -> None:
        """Release what a failed parse holds."""

    async def parse(self, stream: AsyncIterator[bytes]) -> FormData:
        """Read ``stream`` to its end and return the form."""
        small: list[bytes] = []
        small_size = 0
        try:
            async for chunk in stream:
                self.received += len(chunk)
                if not small and len(chunk) >= _MIN_FEED_SIZE:
                    await self._feed(chunk)
                    continue
                # PERF: tiny messages (a trickling client) are gathered first: a parser call
                # costs microseconds whatever its size, so 100,000 one-byte messages would
                # otherwise cost a parser call each.
                small.append(chunk)
                small_size += len(chunk)
                if small_size >= _MIN_FEED_SIZE:
                    await self._feed(b"".join(small))
                    small, small_size = [], 0
            if small:
                await self._feed(b"".join(small))
            return await self.finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _feed(self, chunk: bytes) -> None:
        if len(chunk) <= _FEED_SIZE:
            self.write(chunk)
            await self.flush()
            return
        for start in range(0, len(chunk), _FEED_SIZE):
            self.write(chunk[start : start + _FEED_SIZE])
            await self.flush()
            await anyio.lowlevel.checkpoint()

    def _count_field(self) -> None:
        self._fields += 1
        if self._fields > self._max_fields:
            raise _too_many("fields", self._max_fields, "max_fields")


class FormParser(_StreamingParser):
    """Streaming parser of ``application/x-www-form-urlencoded`` bodies.

    Only ``&`` separates fields (``;`` is data); ``max_fields`` bounds the count and
    ``max_part_size`` the bytes of each name and each value, as sent.
    """

    def __init__(self, limits: Limits, charset: str = "utf-8") -> None:
        super().__init__(limits, charset)
        self._max_size = _UNBOUNDED if limits.max_part_size is None else limits.max_part_size
        self._name: list[bytes | bytearray] = []
        self._value: list[bytes | bytearray] = []
        self._name_size = self._value_size = 0
        # Whether _settle ran on the name or the value of the field being read.
        self._settled = False
        self._parser = _QuerystringStream(
            {
                "on_field_start": self._on_field_start,
                "on_field_name": self._on_field_name,
                "on_field_data": self._on_field_data,
                "on_field_end": self._on_field_end,
            }
        )
        self._parser.logger = _QUIET

    def write(self, data: bytes) -> None:
        """Parse the next piece of the body."""
        # PERF: the parser steps through a run of "&" one byte at a time in Python; a run
        # means the same as a single "&", so a body of "&&&..." costs C speed.
        if b"&&" in data:
            data = _AMPERSANDS.sub(b"&", data)
        self._parser.write(data)
        # SECURITY: a long name or value that goes on into the next piece is decoded as far
        # as it came, so no step of the parse decodes more than the piece it was handed
        # (max_part_size may be lifted), and raw bytes are not held next to decoded ones.
        if self._name_size >= _DECODE_SLICE:
            self._name = _settle(self._name)
            self._settled = True
        if self._value_size >= _DECODE_SLICE:
            self._value = _settle(self._value)
            self._settled = True

    async def finish(self) -> FormData:
        self._parser.finalize()
        return FormData(self.items)

    def _on_field_start(self) -> None:
        self._count_field()

    def _on_field_name(self, data: bytes, start: int, end: int) -> None:
        self._name_size += end - start
        if self._name_size > self._max_size:
            raise _part_too_large(self._max_size)
        self._name.append(data[start:end])

    def _on_field_data(self, data: bytes, start: int, end: int) -> None:
        self._value_size += end - start
        if self._value_size > self._max_size:
            raise _part_too_large(self._max_size)
        self._value.append(data[start:end])

    def _on_field_end(self) -> None:
        largest = max(self._name_size, self._value_size)
        if largest > self.largest_part:
            self.largest_part = largest
        if self._settled:
            self._settled = False
            name, value = _decoded(self._name), _decoded(self._value)
            self.items.append((_decode(name, self.charset), _decode(value, self.charset)))
        else:
            self.items.append((self._text(self._name), self._text(self._value)))
        self._name, self._value = [], []
        self._name_size = self._value_size = 0

    def _text(self, pieces: list[bytes | bytearray]) -> str:
        raw = b"".join(pieces)
        if b"+" in raw:
            raw = raw.replace(b"+", b" ")
        if b"%" in raw:
            raw = _unescape(raw)
        return _decode(raw, self.charset)


class MultiPartParser(_StreamingParser):
    """Streaming parser of ``multipart/form-data`` bodies.

    Non-file parts are bounded by ``max_part_size``, their count by ``max_fields``; files
    by ``max_body_size``, their count by ``max_files``. A non-file part decodes with the
    ``charset`` of its own ``Content-Type`` when it names one (a 400 when that charset is not
    UTF-8, US-ASCII or ISO-8859-1), else with the request's. Each part may have at most
    ``max_part_headers`` headers of ``max_part_header_size`` bytes. Files spool to disk
    past ``spool_max_size``, the rollover and every disk write in a worker thread; on disk
    they share one temporary file, so a form holds one descriptor however many files it has.
    """

    def __init__(self, boundary: bytes, limits: Limits, charset: str = "utf-8") -> None:
        super().__init__(limits, charset)
        self._max_part_size = limits.max_part_size
        spool = limits.spool_max_size
        # NOTE: SpooledTemporaryFile reads a max_size of 0 as "never roll"; this class
        # reads spool_max_size=0 as "always on disk", through the memory budget below.
        self._spool_max_size = max(spool, 1)
        self._memory_budget = spool * _SPOOLED_FILES
        self._in_memory = 0
        self._spool = SharedSpool()
        self._uploads: list[UploadFile] = []
        self._header_name: list[bytes] = []
        self._header_value: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._name = ""
        self._field_charset = charset
        self._upload: UploadFile | None = None
        self._data: list[bytes] = []
        self._size = 0
        # File data not yet written, in order; None marks the end of that file.
        self._pending: list[tuple[UploadFile, memoryview | None]] = []
        self._pending_size = 0
        self._pending_end = False
        self._ended = False
        self._received = False
        self._parser = _MultipartStream(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            max_header_count=_bound(limits.max_part_headers),
            max_header_size=_bound(limits.max_part_header_size),
        )
        self._parser.logger = _QUIET

    def write(self, data: bytes) -> None:
        """Parse the next piece of the body."""
        self._received |= bool(data)
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            message = str(exc)
            limit_name = _HEADER_ERRORS.get(message)
            if limit_name is None:
                raise HTTPException(400, f"Malformed multipart body: {message}") from None
            limit = getattr(self.limits, limit_name)
            raise HTTPException(
                400, f"A multipart part header exceeds the limit of {limit} ({limit_name})"
            ) from None

    async def flush(self) -> None:
        if self._pending_end or self._pending_size >= _FLUSH_SIZE:
            await self._drain()

    async def finish(self) -> FormData:
        self._parser.finalize()
        if not self._ended:
            reason = "it ends before the closing boundary" if self._received else "it is empty"
            raise HTTPException(400, f"Malformed multipart body: {reason}")
        await self._drain()
        return FormData(self.items)

    async def abort(self) -> None:
        for upload in self._uploads:
            await upload.close()

    # --- parser callbacks (synchronous; file data is written by _drain afterwards) -------

    def _on_part_begin(self) -> None:
        self._headers = []
        self._header_name, self._header_value = [], []

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name.append(data[start:end])

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value.append(data[start:end])

    def _on_header_end(self) -> None:
        name = b"".join(self._header_name).lower()
        self._headers.append((name, b"".join(self._header_value)))
        self._header_name, self._header_value = [], []

    def _on_headers_finished(self) -> None:
        _refuse_repeated(self._headers)
        headers = Headers(raw=self._headers)
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise HTTPException(400, "Malformed multipart part: no Content-Disposition header")
        try:
            kind, options = parse_options_header(disposition)
        except ValueError as exc:
            raise HTTPException(400, f"Malformed multipart Content-Disposition: {exc}") from None
        name = options.get("name")
        if kind != "form-data" or name is None:
            raise HTTPException(
                400, 'Malformed multipart part: expected Content-Disposition: form-data; name="..."'
            )
        self._name = self._transcode(name)
        filename = options.get("filename")
        if filename is None:
            self._count_field()
            self._field_charset = _part_charset(headers.get("content-type"), self.charset)
            self._upload = None
            self._data = []
            self._size = 0
            return
        self.files += 1
        limit = self.limits.max_files
        if limit is not None and self.files > limit:
            raise _too_many("files", limit, "max_files")
        # NOTE: the file outlives this call: FormData.close() or abort() closes it.
        file = SharedSpooledFile(self._spool, self._spool_max_size)
        self._upload = UploadFile(
            cast(BinaryIO, file),
            size=0,
            filename=safe_filename(self._transcode(filename)),
            headers=headers,
        )
        self._uploads.append(self._upload)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._upload is not None:
            # PERF: a view, not a copy: _drain hands the views to the file.
            self._pending.append((self._upload, memoryview(data)[start:end]))
            self._pending_size += end - start
            return
        self._size += end - start
        if self._max_part_size is not None and self._size > self._max_part_size:
            raise _part_too_large(self._max_part_size)
        self._data.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._upload is None:
            if self._size > self.largest_part:
                self.largest_part = self._size
            self.items.append((self._name, _decode(b"".join(self._data), self._field_charset)))
            self._data = []
            return
        self.items.append((self._name, self._upload))
        self._pending.append((self._upload, None))
        self._pending_end = True

    def _on_end(self) -> None:
        self._ended = True

    def _transcode(self, value: str) -> str:
        # NOTE: header values arrive as latin-1 text; browsers send names as raw UTF-8.
        return _decode(value.encode("latin-1"), self.charset)

    # --- file writes ------------------------------------------------------------------------

    async def _drain(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_size = 0
        self._pending_end = False
        # NOTE: parts follow one another, so the views before an end marker (or at the tail)
        # all belong to the file that marker (or the last entry) names.
        views: list[memoryview] = []
        for upload, view in pending:
            if view is not None:
                views.append(view)
                continue
            if views:
                await self._write(upload, views)
                views = []
            await upload.seek(0)
        if views:
            await self._write(pending[-1][0], views)

    async def _write(self, upload: UploadFile, views: list[memoryview]) -> None:
        if not _in_memory(upload):
            # PERF: the views go to the file as they are, in one worker-thread call: joining
            # them first would copy every byte of the upload once more.
            await run_in_threadpool(upload.file.writelines, views)
            upload.size = (upload.size or 0) + sum(map(len, views))
            return
        data = b"".join(views)
        held = upload.size or 0
        if self._in_memory + len(data) > self._memory_budget:
            file = cast("tempfile.SpooledTemporaryFile[bytes]", upload.file)
            await run_in_threadpool(file.rollover)
        await upload.write(data)
        if _in_memory(upload):
            self._in_memory += len(data)
        else:
            self._in_memory -= held


def _in_memory(upload: UploadFile) -> bool:
    return upload._in_memory


def _bound(limit: int | None) -> int:
    return _UNBOUNDED if limit is None else limit
