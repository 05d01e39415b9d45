"""Files from disk: `FileResponse` (conditional and range requests) and `StaticFiles`."""

from __future__ import annotations

import importlib.util
import mimetypes
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from email.utils import formatdate, mktime_tz, parsedate_tz
from typing import BinaryIO
from urllib.parse import quote

import anyio
import anyio.to_thread

from microasgi._ranges import ByteRange, multipart_framing, parse_range
from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.datastructures import _QUERY_SAFE, encode_header, first_value
from microasgi.exceptions import HTTPException
from microasgi.lifespan import acknowledge_lifespan
from microasgi.limits import limits_for
from microasgi.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
    _websocket_denial_send,
)
from microasgi.routing.router import route_path
from microasgi.types import Message, RawHeaders, Receive, Scope, Send
from microasgi.websockets import websocket_not_found

__all__ = ["FileResponse", "StaticFiles", "content_disposition", "guess_media_type"]

Piece = bytes | ByteRange
"""Part of a body: literal bytes, or a byte range of the file."""

_PATHSEND = "http.response.pathsend"
_CONTENT_LENGTH = b"content-length"
_CONTENT_TYPE = b"content-type"
_ETAG = b"etag"
_LAST_MODIFIED = b"last-modified"
_STAT_HEADERS = frozenset({_CONTENT_LENGTH, _ETAG, _LAST_MODIFIED, b"accept-ranges"})
# NOTE: metadata of the representation itself; a 304 or a 416 does not carry one.
_REPRESENTATION_HEADERS = frozenset(
    {
        _CONTENT_LENGTH,
        _CONTENT_TYPE,
        b"content-disposition",
        b"content-encoding",
        b"content-language",
        b"content-range",
    }
)
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
}
# RFC 9110 §5.6.2 token: the disposition type.
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII).fullmatch
# NOTE: what may stand in a quoted `filename="..."` for every client: printable ASCII but
# the quote, the backslash, and "%" (which some clients percent-decode).
_unsafe_in_fallback = re.compile(r"[^ !#$&-\[\]-~]").sub
# RFC 5987 attr-char beyond the letters, digits and "-._~" that quote() always keeps.
_ATTR_CHARS = "!#$&+^`|"
# NOTE: an HTTP-date is 29 characters; anything much longer is not one.
_MAX_DATE_LENGTH = 64


def guess_media_type(name: str) -> str:
    """Return the media type for a file name, `application/octet-stream` if unknown."""
    # SECURITY: guess_type() takes a URL, so "data:text/html,x.png" would be text/html;
    # behind a "/" the last segment of the name can never read as a URL scheme.
    media_type, encoding = mimetypes.guess_type("/" + os.path.basename(name))
    if encoding is not None:
        # NOTE: "x.tar.gz" guesses as application/x-tar encoded with gzip; sent without a
        # Content-Encoding, the bytes are a gzip file, so that is the type to announce.
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    return media_type or "application/octet-stream"


def content_disposition(disposition_type: str, filename: str) -> str:
    """Return a `Content-Disposition` value naming ``filename`` (RFC 6266, RFC 5987).

    A name that is not plain printable ASCII gets an ASCII fallback in ``filename=`` and
    its exact UTF-8 form in ``filename*=``; CR, LF and other controls can never break out.
    """
    if _is_token(disposition_type) is None:
        raise ValueError(
            f"Invalid content_disposition_type {disposition_type!r}: use 'attachment' or 'inline'"
        )
    fallback = _unsafe_in_fallback("_", filename)
    value = f'{disposition_type}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=utf-8''{quote(filename, safe=_ATTR_CHARS)}"
    return value


def _http_date(value: str) -> int | None:
    """Return an HTTP-date as a Unix timestamp, or None when it is not one."""
    if len(value) > _MAX_DATE_LENGTH:
        return None
    try:
        parsed = parsedate_tz(value)
        return None if parsed is None else mktime_tz(parsed)
    except (ValueError, OverflowError, IndexError, TypeError):
        return None


def _without(headers: RawHeaders, names: frozenset[bytes]) -> RawHeaders:
    return [(key, value) for key, value in headers if key not in names]


def _empty(headers: RawHeaders) -> RawHeaders:
    """Return ``headers`` for an empty error body (412, 416): no representation metadata."""
    return [*_without(headers, _REPRESENTATION_HEADERS), (_CONTENT_LENGTH, b"0")]


def _with_stat_headers(headers: RawHeaders, stat_result: os.stat_result) -> RawHeaders:
    """Return ``headers`` with the length, `ETag` and `Last-Modified` of the file added.

    Given `ETag` and `Last-Modified` values are kept; the length is always the file's.
    """
    present = {key for key, _ in headers}
    added = [(_CONTENT_LENGTH, b"%d" % stat_result.st_size)]
    if _LAST_MODIFIED not in present:
        # NOTE: RFC 9110 §8.8.2.1: a modification time in the future (clock skew, an unpacked
        # archive) is sent as now; a client revalidating with that future date would get 304
        # for every later version of the file until then.
        modified = min(stat_result.st_mtime, time.time())
        added.append((_LAST_MODIFIED, formatdate(modified, usegmt=True).encode()))
    if _ETAG not in present:
        # NOTE: a strong validator (If-Range needs one to resume a download) made of the
        # nanosecond mtime and the size, as nginx and Apache make theirs.
        added.append((_ETAG, b'"%x-%x"' % (stat_result.st_mtime_ns, stat_result.st_size)))
    if b"accept-ranges" not in present:
        added.append((b"accept-ranges", b"bytes"))
    return [*(item for item in headers if item[0] != _CONTENT_LENGTH), *added]


class _Conditions:
    """The request headers that make a file request conditional or partial."""

    __slots__ = (
        "if_match",
        "if_modified_since",
        "if_none_match",
        "if_range",
        "if_unmodified_since",
        "range",
    )

    def __init__(self, scope: Scope) -> None:
        found: dict[bytes, list[str]] = {
            b"if-match": [],
            b"if-none-match": [],
            b"if-modified-since": [],
            b"if-unmodified-since": [],
            b"range": [],
            b"if-range": [],
        }
        for name, value in scope.get("headers", ()):
            values = found.get(name)
            if values is not None:
                values.append(value.decode("latin-1"))
        # NOTE: list-valued fields may come in several lines, joined as one list.
        self.if_match = ",".join(found[b"if-match"]) if found[b"if-match"] else None
        self.if_none_match = ",".join(found[b"if-none-match"]) if found[b"if-none-match"] else None
        # NOTE: these are single-valued: a repeated one is malformed and ignored.
        self.if_modified_since = _single(found[b"if-modified-since"])
        self.if_unmodified_since = _single(found[b"if-unmodified-since"])
        self.range = _single(found[b"range"])
        # NOTE: a repeated If-Range joins into a value that matches nothing, so the whole
        # file is sent: ignoring it instead would send ranges of a possibly changed file.
        self.if_range = ",".join(found[b"if-range"]) if found[b"if-range"] else None

    def precondition_failed(self, headers: RawHeaders) -> bool:
        """Whether to answer 412 (RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since)."""
        if self.if_match is not None:
            return not _etag_listed(self.if_match, first_value(headers, _ETAG), weak=False)
        if self.if_unmodified_since is not None:
            since = _http_date(self.if_unmodified_since)
            modified = _last_modified(headers)
            return since is not None and modified is not None and modified > since
        return False

    def not_modified(self, headers: RawHeaders) -> bool:
        """Whether the client's copy is current (RFC 9110 §13.2.2: If-None-Match wins)."""
        if self.if_none_match is not None:
            return _etag_listed(self.if_none_match, first_value(headers, _ETAG), weak=True)
        if self.if_modified_since is not None:
            since = _http_date(self.if_modified_since)
            modified = _last_modified(headers)
            return since is not None and modified is not None and modified <= since
        return False

    def range_applies(self, headers: RawHeaders) -> bool:
        """Whether `If-Range` (if any) still matches, so the ranges may be sent."""
        if self.if_range is None:
            return True
        value = self.if_range.strip()
        if value.startswith(('"', "W/")):
            # NOTE: If-Range compares entity tags strongly: a weak tag never matches.
            etag = first_value(headers, _ETAG)
            return etag is not None and not etag.startswith("W/") and value == etag
        last_modified = first_value(headers, _LAST_MODIFIED)
        date = _http_date(value)
        return date is not None and last_modified is not None and date == _http_date(last_modified)


def _single(values: list[str]) -> str | None:
    return values[0] if len(values) == 1 else None


def _last_modified(headers: RawHeaders) -> int | None:
    value = first_value(headers, _LAST_MODIFIED)
    return None if value is None else _http_date(value)


# NOTE: an entity-tag is an optional "W/" and a quoted string without quotes inside (it
# may hold commas, so a list is not split on them). Linear: no nested repetition.
_find_etags = re.compile(r'(W/)?("[^"]*")').finditer


def _etag_listed(header: str, etag: str | None, *, weak: bool) -> bool:
    """Whether ``etag`` matches a tag of an `If-None-Match` (``weak``) or `If-Match` list.

    The strong comparison (If-Match) never matches a weak tag on either side.
    """
    if etag is None:
        return False
    if header.strip() == "*":
        return True
    etag_weak = etag.startswith("W/")
    opaque = etag.removeprefix("W/")
    if etag_weak and not weak:
        return False
    return any(match[2] == opaque and (weak or match[1] is None) for match in _find_etags(header))


def _read_pieces(path: str, pieces: Sequence[Piece]) -> bytes:
    """Read ``pieces`` of the file at ``path`` in one go (runs in a worker thread)."""
    out: list[bytes] = []
    with _open(path) as file:
        for piece in pieces:
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            start, stop = piece
            file.seek(start)
            data = file.read(stop - start)
            if len(data) != stop - start:
                raise _shrunk(path)
            out.append(data)
    return b"".join(out)


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise _missing(path) from None


def _open_holding(path: str, size: int) -> BinaryIO:
    """Open the file at ``path``, which must still hold ``size`` bytes (worker thread)."""
    file = _open(path)
    if os.fstat(file.fileno()).st_size < size:
        # NOTE: shorter than its stat() said (rewritten in place since): an error the app can
        # still answer, not a response cut short after its Content-Length went out.
        file.close()
        raise _shrunk(path)
    return file


def _missing(path: str) -> RuntimeError:
    return RuntimeError(f"File at path {path!r} does not exist.")


def _shrunk(path: str) -> RuntimeError:
    return RuntimeError(f"File at path {path!r} became shorter while it was being sent.")


async def _file_chunks(
    file: anyio.AsyncFile[bytes], path: str, pieces: Sequence[Piece], chunk_size: int
) -> AsyncIterator[bytes]:
    """Yield ``pieces`` of the open ``file``, reading at most ``chunk_size`` at a time."""
    pending = b""
    for piece in pieces:
        if isinstance(piece, bytes):
            pending += piece
            continue
        start, stop = piece
        await file.seek(start)
        while start < stop:
            chunk = await file.read(min(chunk_size, stop - start))
            if not chunk:
                raise _shrunk(path)
            start += len(chunk)
            yield pending + chunk if pending else chunk
            pending = b""
    if pending:
        yield pending


class FileResponse(Response):
    """A file from disk, with conditional requests and byte ranges.

    Sends `Content-Length`, `Content-Type` (``media_type``, else guessed from ``filename``
    or ``path``), `Last-Modified`, a strong `ETag` and `Accept-Ranges: bytes`. A 200 GET or
    HEAD answers `If-Match` / `If-Unmodified-Since` that fail with 412,
    `If-None-Match` / `If-Modified-Since` with 304, and a GET answers `Range`
    with 206 (several ranges as `multipart/byteranges`) or 416, honouring `If-Range`; more
    than ``limits_for(scope).max_ranges`` ranges get the whole file. ``filename`` adds a
    `Content-Disposition` of ``content_disposition_type``. ``stat_result`` saves the
    `stat()` call; ``method`` overrides the request's (``"HEAD"``: no body). The file is
    read in ``chunk_size`` chunks in worker threads, or handed to the server when it offers
    the ASGI ``http.response.pathsend`` extension.
    """

    chunk_size = 64 * 1024

    def __init__(
        self,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
        filename: str | None = None,
        stat_result: os.stat_result | None = None,
        method: str | None = None,
        content_disposition_type: str = "attachment",
    ) -> None:
        self.path = os.fspath(path)
        self.status_code = status_code
        self.filename = filename
        self.background = background
        self.stat_result = stat_result
        self.method = method.upper() if method is not None else None
        self.media_type = media_type or guess_media_type(filename or self.path)
        self.init_headers(headers)
        if filename is not None and "content-disposition" not in self.headers:
            self.headers["content-disposition"] = content_disposition(
                content_disposition_type, filename
            )
        if stat_result is not None:
            self.raw_headers = _with_stat_headers(self.raw_headers, stat_result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = self.method or scope.get("method", "GET")
        stat_result = self.stat_result
        headers = self.raw_headers
        if stat_result is None:
            stat_result = await self._stat()
            headers = _with_stat_headers(headers, stat_result)
        status, headers, pieces = self._plan(scope, method, stat_result.st_size, headers)
        # NOTE: StreamingResponse frames a denial response itself; the sends here do not.
        whole_send = _websocket_denial_send(send) if scope["type"] == "websocket" else send
        if status == 200 and pieces and _PATHSEND in (scope.get("extensions") or {}):
            # NOTE: `pieces` of a 200 are the whole file: the server sends it from disk.
            await self._send(whole_send, status, headers, None)
            return
        length = sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in pieces)
        if length <= self.chunk_size:
            # PERF: a small body is opened, read and closed in one trip to a worker thread.
            body = (
                await anyio.to_thread.run_sync(_read_pieces, self.path, pieces) if pieces else b""
            )
            await self._send(whole_send, status, headers, body)
            return
        # NOTE: opened before the response starts, so a file removed or shortened since its
        # stat() is an error the app can still answer, not a 200 cut short.
        end = max((p[1] for p in pieces if not isinstance(p, bytes)), default=0)
        opened = await anyio.to_thread.run_sync(_open_holding, self.path, end)
        async with anyio.wrap_file(opened) as file:
            # NOTE: StreamingResponse stops reading when the client goes away (whatever
            # the server's ASGI version) and then skips the background task.
            chunks = _file_chunks(file, self.path, pieces, self.chunk_size)
            streaming = StreamingResponse(chunks, status, background=self.background)
            streaming.raw_headers = headers
            await streaming(scope, receive, send)

    async def _stat(self) -> os.stat_result:
        try:
            stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
        except FileNotFoundError:
            raise _missing(self.path) from None
        if not stat.S_ISREG(stat_result.st_mode):
            raise RuntimeError(f"File at path {self.path!r} is not a regular file.")
        return stat_result

    def _plan(
        self, scope: Scope, method: str, size: int, headers: RawHeaders
    ) -> tuple[int, RawHeaders, list[Piece]]:
        """Decide the status, the headers and the pieces of the body to send."""
        whole: list[Piece] = [(0, size)] if size and method != "HEAD" else []
        if self.status_code != 200 or method not in ("GET", "HEAD"):
            return self.status_code, headers, whole
        conditions = _Conditions(scope)
        if conditions.precondition_failed(headers):
            return 412, _empty(headers), []
        if conditions.not_modified(headers):
            return 304, _without(headers, _REPRESENTATION_HEADERS), []
        # NOTE: RFC 9110 §14.2: GET is the only method with range handling.
        if method != "GET" or conditions.range is None or not conditions.range_applies(headers):
            return 200, headers, whole
        ranges = parse_range(conditions.range, size, limits_for(scope).max_ranges)
        if ranges is None:
            return 200, headers, whole
        if not ranges:
            return 416, [*_empty(headers), (b"content-range", b"bytes */%d" % size)], []
        return self._partial(ranges, size, headers)

    def _partial(
        self, ranges: list[ByteRange], size: int, headers: RawHeaders
    ) -> tuple[int, RawHeaders, list[Piece]]:
        if len(ranges) == 1:
            [(start, stop)] = ranges
            partial = _without(headers, frozenset({_CONTENT_LENGTH}))
            partial.append((b"content-range", b"bytes %d-%d/%d" % (start, stop - 1, size)))
            partial.append((_CONTENT_LENGTH, b"%d" % (stop - start)))
            return 206, partial, [(start, stop)]
        framing = multipart_framing(ranges, size, first_value(headers, _CONTENT_TYPE))
        partial = _without(headers, frozenset({_CONTENT_LENGTH, _CONTENT_TYPE}))
        partial.append((_CONTENT_TYPE, framing.content_type.encode("latin-1")))
        partial.append((_CONTENT_LENGTH, b"%d" % framing.content_length))
        pieces: list[Piece] = []
        for header, byte_range in zip(framing.headers, ranges):
            pieces += (header, byte_range)
        pieces.append(framing.trailer)
        return 206, partial, pieces

    async def _send(self, send: Send, status: int, headers: RawHeaders, body: bytes | None) -> None:
        """Send the whole response (``body=None``: the file, by pathsend), then the task."""
        second: Message = (
            {"type": _PATHSEND, "path": os.path.abspath(self.path)}
            if body is None
            else {"type": "http.response.body", "body": body}
        )
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send(second)
        except OSError:
            return  # NOTE: ASGI 2.4: the client went away; the background task is skipped.
        if self.background is not None:
            await self.background()


# --- StaticFiles -----------------------------------------------------------------------------


_MAX_PATH = 4096


def _segments(path: str) -> list[str] | None:
    """Split a request path into safe file-name segments; None if it must be refused."""
    # SECURITY: the server decoded the path once; a NUL, a backslash (a separator on
    # Windows, and the `\\host\share` UNC form), a ".." or a drive never reaches the disk.
    if "\x00" in path or "\\" in path:
        return None
    # SECURITY: no file has a longer path (PATH_MAX), and resolving one costs a system call
    # per segment: refuse it before it reaches the disk.
    if len(path) > _MAX_PATH:
        return None
    segments = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        # NOTE: Windows drops trailing dots and spaces, so "..." and ".. " mean "..";
        # a segment of only dots and spaces is refused everywhere.
        if not segment.strip(". ") or os.path.splitdrive(segment)[0]:
            return None
        segments.append(segment)
    return segments


def _is_within(path: str, root: str) -> bool:
    # SECURITY: compare whole path components, so "/srv/static" does not contain
    # "/srv/static-secret".
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def _package_directory(package: str | tuple[str, str]) -> str:
    name, subdirectory = (package, "statics") if isinstance(package, str) else package
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"StaticFiles: package {name!r} could not be found.")
    directory = os.path.join(os.path.dirname(spec.origin), subdirectory)
    if not os.path.isdir(directory):
        raise RuntimeError(
            f"StaticFiles: package {name!r} has no {subdirectory!r} directory ({directory})."
        )
    return directory


_Found = tuple[str, os.stat_result, int]
"""A file to serve: its path, its stat result and the status to send it with."""
_REDIRECT = "redirect"


class StaticFiles:
    """An ASGI app serving the files of a directory: ``app.mount("/static", StaticFiles(...))``.

    ``directory`` is the root; ``packages`` adds the ``statics`` directory of each named
    package (or ``(package, directory)``). Only GET and HEAD are answered (405 otherwise).
    No request path resolves outside the roots; a missing file, a forbidden path and a
    directory all get the same 404. ``html=True`` serves ``index.html`` for a directory
    (redirecting to the slash-ended URL) and ``404.html`` for a miss. Symlinks are followed
    while they stay inside the root; ``follow_symlinks=True`` follows them anywhere
    (``follow_symlink``, Starlette's spelling, is taken too).
    ``check_dir`` raises `RuntimeError` now if ``directory`` does not exist;
    ``cache_control`` is sent as `Cache-Control` with every file. Conditional requests and
    ranges are those of `FileResponse`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        packages: Sequence[str | tuple[str, str]] | None = None,
        html: bool = False,
        check_dir: bool = True,
        follow_symlinks: bool = False,
        cache_control: str | None = None,
        follow_symlink: bool | None = None,
    ) -> None:
        if follow_symlink is not None:
            if follow_symlinks and not follow_symlink:
                raise TypeError("StaticFiles() got follow_symlinks=True and follow_symlink=False")
            follow_symlinks = follow_symlink
        if directory is None and not packages:
            raise TypeError("StaticFiles() needs a directory= or packages= to serve.")
        self.directory = None if directory is None else os.fspath(directory)
        if check_dir and self.directory is not None and not os.path.isdir(self.directory):
            raise RuntimeError(
                f"StaticFiles directory {self.directory!r} does not exist; create it, or "
                "pass check_dir=False if it will exist before the first request."
            )
        self.all_directories = [self.directory] if self.directory is not None else []
        self.all_directories += [_package_directory(package) for package in packages or ()]
        self.html = html
        self.follow_symlinks = follow_symlinks
        self.file_headers = None
        if cache_control:
            encode_header("cache-control", cache_control)  # NOTE: ValueError on CR/LF, now.
            self.file_headers = {"cache-control": cache_control}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await websocket_not_found(scope, receive, send)
            elif scope["type"] == "lifespan":
                await acknowledge_lifespan(receive, send)
            return
        try:
            response = await self.get_response(self.get_path(scope), scope)
        except HTTPException as exc:
            # NOTE: inside a microasgi App the app's error handlers answer (JSON, or the
            # user's 404 handler); served on its own, a plain-text answer.
            if isinstance(scope.get("app"), App):
                raise
            response = PlainTextResponse(str(exc.detail), exc.status_code, exc.headers)
        await response(scope, receive, send)

    def get_path(self, scope: Scope) -> str:
        """Return the request path below the mount point."""
        root_path = scope.get("root_path")
        path: str = scope["path"]
        return route_path(path, root_path) if root_path else path

    async def get_response(self, path: str, scope: Scope) -> Response:
        """Return the response for ``path`` (below the mount); raise `HTTPException`."""
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"Allow": "GET, HEAD"})
        segments = _segments(path)
        found = await anyio.to_thread.run_sync(self._find, segments, scope["path"].endswith("/"))
        if found is None:
            raise HTTPException(404)
        if isinstance(found, str):
            return RedirectResponse(self._directory_url(scope, segments or []))
        full_path, stat_result, status_code = found
        return FileResponse(
            full_path,
            status_code,
            headers=self.file_headers if status_code == 200 else None,
            stat_result=stat_result,
            method=scope["method"],
        )

    def lookup_path(self, segments: Sequence[str]) -> tuple[str, os.stat_result] | None:
        """Return the path and stat of ``segments`` in the first root that has them.

        Runs blocking file-system calls: call it from a worker thread. ``segments`` must
        come from a checked path (no "..", separators or drives).
        """
        for directory in self.all_directories:
            try:
                # NOTE: the root is resolved on every lookup, so a deployment that swaps a
                # symlinked release directory is served from the new one at once.
                root = os.path.realpath(directory)
                candidate = os.path.join(root, *segments)
                full_path = candidate if self.follow_symlinks else os.path.realpath(candidate)
                if not _is_within(full_path, root):
                    continue
                return full_path, os.stat(full_path)
            except (OSError, ValueError):
                # NOTE: missing, unreadable, a loop, a name too long, a character the file
                # system cannot take: all of them are "not found", with no difference.
                continue
        return None

    def _find(self, segments: list[str] | None, slash: bool) -> _Found | str | None:
        # SECURITY: a refused path (``segments is None``) takes the same way out as a
        # missing file, 404.html included, so the two cannot be told apart.
        found = self.lookup_path(segments) if segments is not None else None
        if found is not None and segments is not None:
            full_path, stat_result = found
            if stat.S_ISREG(stat_result.st_mode):
                # NOTE: "a.txt/" names a directory, as on disk (ENOTDIR): not found. An
                # unreadable file is not found either, rather than a 500 that says it exists.
                if not slash and os.access(full_path, os.R_OK):
                    return full_path, stat_result, 200
            elif self.html and stat.S_ISDIR(stat_result.st_mode):
                index = self.lookup_path([*segments, "index.html"])
                if index is not None and stat.S_ISREG(index[1].st_mode):
                    return (*index, 200) if slash else _REDIRECT
        if self.html:
            page = self.lookup_path(["404.html"])
            if page is not None and stat.S_ISREG(page[1].st_mode):
                return (*page, 404)
        # NOTE: directories, devices and FIFOs are never served (a FIFO would block).
        return None

    def _directory_url(self, scope: Scope, segments: list[str]) -> str:
        # SECURITY: built from the checked segments, so "//evil.com" can only ever become
        # the same-origin "/evil.com/".
        root_path: str = scope.get("root_path", "")
        prefix = root_path.rstrip("/") if scope["path"].startswith(root_path) else ""
        url = quote(prefix + "/" + "".join(f"{segment}/" for segment in segments))
        query: bytes = scope.get("query_string", b"")
        # NOTE: the raw bytes are escaped here, as the client sent them; decoded to text
        # first, a UTF-8 byte would be escaped once per latin-1 character it became.
        return f"{url}?{quote(query, safe=_QUERY_SAFE)}" if query else url

    def __repr__(self) -> str:
        where = self.directory if self.directory is not None else self.all_directories
        return f"StaticFiles({where!r}, html={self.html})"
