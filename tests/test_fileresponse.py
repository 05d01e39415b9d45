from __future__ import annotations

import itertools
import os
import re
import time
import timeit
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microasgi._ranges import parse_range
from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.limits import Limits
from microasgi.requests import Request
from microasgi.staticfiles import FileResponse, content_disposition, guess_media_type
from microasgi.testing import TestClient, WebSocketDenied
from microasgi.types import Message, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]

CONTENT = bytes(range(256)) * 4  # 1 KiB, every byte value
SIZE = len(CONTENT)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(CONTENT)
    return path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.txt"
    path.write_text("0123456789")
    return path


def http_scope(
    method: str = "GET",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    spec_version: str = "2.4",
    extensions: dict[str, Any] | None = None,
    **extra: Any,
) -> Scope:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "method": method,
        "path": "/",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items],
        "extensions": extensions or {},
    }
    scope.update(extra)
    return scope


class Exchange:
    """The server side of one request: collects what the app sends."""

    def __init__(self, fail_after: int | None = None, disconnect_after: int | None = None):
        self.messages: list[Message] = []
        self.fail_after = fail_after
        self.disconnect_after = disconnect_after
        self.gone = anyio.Event()
        self.request_sent = False

    async def receive(self) -> Message:
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.fail_after is not None and len(self.messages) >= self.fail_after:
            raise OSError("connection reset")
        self.messages.append(message)
        bodies = sum(1 for m in self.messages if m["type"] == "http.response.body")
        if self.disconnect_after is not None and bodies >= self.disconnect_after:
            self.gone.set()

    @property
    def start(self) -> Message:
        assert self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def status(self) -> int:
        return int(self.start["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def run(response: FileResponse, scope: Scope | None = None, **kwargs: Any) -> Exchange:
    exchange = Exchange(**kwargs)
    with anyio.fail_after(10):
        await response(scope or http_scope(), exchange.receive, exchange.send)
    return exchange


def parse_byteranges(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/byteranges body into (part headers, part bytes)."""
    media_type, _, boundary = content_type.partition("; boundary=")
    assert media_type == "multipart/byteranges"
    delimiter = b"--" + boundary.encode()
    head, tail = delimiter + b"\r\n", b"\r\n" + delimiter + b"--\r\n"
    assert body.startswith(head) and body.endswith(tail)
    parts = []
    for part in body[len(head) : -len(tail)].split(b"\r\n" + delimiter + b"\r\n"):
        raw_headers, _, data = part.partition(b"\r\n\r\n")
        headers = dict(line.decode().split(": ", 1) for line in raw_headers.split(b"\r\n"))
        parts.append(({k.lower(): v for k, v in headers.items()}, data))
    return parts


# --- a whole file --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_whole_file_and_its_headers(data_file: Path) -> None:
    exchange = await run(FileResponse(data_file))
    stat_result = data_file.stat()
    assert exchange.status == 200
    assert exchange.body == CONTENT
    assert exchange.headers == {
        "content-type": "application/octet-stream",
        "content-length": str(SIZE),
        "last-modified": formatdate(stat_result.st_mtime, usegmt=True),
        "etag": f'"{stat_result.st_mtime_ns:x}-{SIZE:x}"',
        "accept-ranges": "bytes",
    }
    assert exchange.messages[-1].get("more_body", False) is False


@pytest.mark.anyio
async def test_etag_is_strong_and_changes_with_the_file(data_file: Path) -> None:
    first = (await run(FileResponse(data_file))).headers["etag"]
    assert first.startswith('"') and first.endswith('"')
    os.utime(data_file, ns=(0, data_file.stat().st_mtime_ns + 1))
    second = (await run(FileResponse(data_file))).headers["etag"]
    data_file.write_bytes(CONTENT + b"!")
    third = (await run(FileResponse(data_file))).headers["etag"]
    assert len({first, second, third}) == 3


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("a.txt", "text/plain"),
        ("a.html", "text/html"),
        ("a.png", "image/png"),
        ("a.json", "application/json"),
        ("a.unknown-extension", "application/octet-stream"),
        ("noextension", "application/octet-stream"),
        ("a.tar.gz", "application/gzip"),
        ("a.svg.gz", "application/gzip"),
        ("a.tar.bz2", "application/x-bzip2"),
        ("a.tar.xz", "application/x-xz"),
        ("a.txt.br", "application/octet-stream"),
        ("data:text/html,x.png", "image/png"),
        ("data:,x.png", "image/png"),
        ("dir/data:text/html;base64,eA==", "application/octet-stream"),
    ],
)
def test_media_type_guess(name: str, media_type: str) -> None:
    assert guess_media_type(name) == media_type


@pytest.mark.anyio
async def test_text_types_get_a_charset_and_media_type_wins(text_file: Path) -> None:
    guessed = await run(FileResponse(text_file))
    assert guessed.headers["content-type"] == "text/plain; charset=utf-8"
    given = await run(FileResponse(text_file, media_type="application/x-custom"))
    assert given.headers["content-type"] == "application/x-custom"
    by_filename = await run(FileResponse(text_file, filename="report.csv"))
    assert by_filename.headers["content-type"] == "text/csv; charset=utf-8"


@pytest.mark.anyio
async def test_given_headers_are_kept_and_length_is_the_files(text_file: Path) -> None:
    response = FileResponse(
        text_file,
        headers={"x-extra": "1", "content-length": "999", "etag": '"mine"', "cache-control": "no"},
    )
    exchange = await run(response)
    assert exchange.headers["x-extra"] == "1"
    assert exchange.headers["cache-control"] == "no"
    assert exchange.headers["content-length"] == "10"
    assert exchange.headers["etag"] == '"mine"'
    assert [k for k, _ in exchange.start["headers"]].count(b"content-length") == 1
    revalidated = await run(response, http_scope(headers={"if-none-match": '"mine"'}))
    assert revalidated.status == 304


@pytest.mark.anyio
async def test_large_file_is_streamed_in_chunks(tmp_path: Path) -> None:
    content = os.urandom(3 * FileResponse.chunk_size + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    exchange = await run(FileResponse(path))
    bodies = [m for m in exchange.messages if m["type"] == "http.response.body"]
    assert exchange.body == content
    assert exchange.headers["content-length"] == str(len(content))
    assert all(len(m["body"]) <= FileResponse.chunk_size for m in bodies)
    assert len(bodies) >= 4
    assert bodies[-1].get("more_body", False) is False
    assert all(m["more_body"] for m in bodies[:-1])


@pytest.mark.anyio
async def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    exchange = await run(FileResponse(path))
    assert (exchange.status, exchange.body, exchange.headers["content-length"]) == (200, b"", "0")
    ranged = await run(FileResponse(path), http_scope(headers={"range": "bytes=0-10"}))
    assert (ranged.status, ranged.body) == (200, b"")


@pytest.mark.anyio
async def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        await run(FileResponse(tmp_path / "missing.txt"))
    with pytest.raises(RuntimeError, match="not a regular file"):
        await run(FileResponse(tmp_path))


@pytest.mark.anyio
async def test_a_filename_is_never_read_as_a_data_url(text_file: Path) -> None:
    # A user-supplied download name must not pick the Content-Type (here: text/html).
    exchange = await run(
        FileResponse(text_file, filename="data:text/html,x.png", content_disposition_type="inline")
    )
    assert exchange.headers["content-type"] == "image/png"


@pytest.mark.anyio
@pytest.mark.parametrize("size", [10, 3 * FileResponse.chunk_size])
async def test_file_removed_after_its_stat_raises_before_the_response_starts(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "gone.bin"
    path.write_bytes(b"x" * size)
    response = FileResponse(path, stat_result=path.stat())
    path.unlink()
    exchange = Exchange()
    with pytest.raises(RuntimeError, match="does not exist"):
        await response(http_scope(), exchange.receive, exchange.send)
    assert exchange.messages == []  # so the app can still answer with an error status


@pytest.mark.anyio
async def test_stat_result_sets_headers_at_construction(data_file: Path) -> None:
    response = FileResponse(data_file, stat_result=data_file.stat())
    assert response.headers["content-length"] == str(SIZE)
    assert "etag" in response.headers and "last-modified" in response.headers
    first = await run(response)
    second = await run(response)
    assert first.body == second.body == CONTENT
    assert first.start["headers"] == second.start["headers"]


@pytest.mark.anyio
async def test_file_that_shrinks_while_sent_raises(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (2 * FileResponse.chunk_size))
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 10)
    # A stat taken before the file shrank: its size promises more than the file holds.
    with pytest.raises(RuntimeError, match="became shorter"):
        await run(FileResponse(small, stat_result=big.stat()))
    medium = tmp_path / "medium.bin"
    medium.write_bytes(b"x" * (FileResponse.chunk_size + 10))
    with pytest.raises(RuntimeError, match="became shorter"):
        await run(FileResponse(medium, stat_result=big.stat()))


@pytest.mark.anyio
async def test_file_shortened_before_it_is_opened_raises_before_the_response_starts(
    tmp_path: Path,
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (2 * FileResponse.chunk_size))
    stat_result = big.stat()
    big.write_bytes(b"x" * (FileResponse.chunk_size + 10))  # rewritten in place, shorter
    exchange = Exchange()
    with pytest.raises(RuntimeError, match="became shorter"):
        with anyio.fail_after(10):
            await FileResponse(big, stat_result=stat_result)(
                http_scope(), exchange.receive, exchange.send
            )
    # Nothing went out, so the app can still answer 500 instead of a 200 cut short.
    assert exchange.messages == []


@pytest.mark.anyio
async def test_file_shortened_while_it_streams_raises(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 * FileResponse.chunk_size))
    exchange = Exchange()

    async def send(message: Message) -> None:
        await exchange.send(message)
        if message["type"] == "http.response.body":
            os.truncate(big, FileResponse.chunk_size)

    with pytest.raises(RuntimeError, match="became shorter"):
        with anyio.fail_after(10):
            await FileResponse(big)(http_scope(), exchange.receive, send)
    assert exchange.status == 200


@pytest.mark.anyio
async def test_last_modified_in_the_future_is_sent_as_now(tmp_path: Path) -> None:
    path = tmp_path / "skewed.txt"
    path.write_bytes(b"old")
    future = time.time() + 86_400
    os.utime(path, (future, future))
    first = await run(FileResponse(path))
    last_modified = first.headers["last-modified"]
    # Sent as the future date, a client revalidating with it (wget -N, curl -z send
    # If-Modified-Since alone) would get 304 for every new version written until then.
    assert parsedate_to_datetime(last_modified).timestamp() <= time.time()
    assert first.body == b"old"


@pytest.mark.parametrize("size", [10, 3 * FileResponse.chunk_size])
def test_websocket_denial_response_from_a_plain_asgi_app(
    client_factory: ClientFactory, tmp_path: Path, size: int
) -> None:
    page = tmp_path / "denied.html"
    page.write_bytes(b"d" * size)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        await FileResponse(page, status_code=403)(scope, receive, send)

    with client_factory(app) as client, pytest.raises(WebSocketDenied) as denied:
        with client.websocket_connect("/"):
            pass  # pragma: no cover
    assert denied.value.status_code == 403
    assert denied.value.headers["content-type"] == "text/html; charset=utf-8"
    assert denied.value.content == b"d" * size


# --- HEAD ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_head_sends_headers_without_reading_the_file(data_file: Path) -> None:
    # The path does not exist: only a response that never opens it can succeed.
    response = FileResponse("/nonexistent/file.bin", stat_result=data_file.stat())
    exchange = await run(response, http_scope("HEAD"))
    assert exchange.status == 200
    assert exchange.headers["content-length"] == str(SIZE)
    assert exchange.body == b""
    forced = FileResponse("/nonexistent/file.bin", stat_result=data_file.stat(), method="head")
    assert (await run(forced)).body == b""


@pytest.mark.anyio
async def test_head_ignores_range(data_file: Path) -> None:
    exchange = await run(FileResponse(data_file), http_scope("HEAD", {"range": "bytes=0-9"}))
    assert exchange.status == 200
    assert exchange.headers["content-length"] == str(SIZE)


def test_head_through_the_app_matches_get(client_factory: ClientFactory, data_file: Path) -> None:
    app = App()

    @app.get("/file")
    async def file(request: Request) -> FileResponse:
        return FileResponse(data_file)

    with client_factory(app) as client:
        get = client.get("/file")
        head = client.head("/file")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers == get.headers


# --- conditional requests ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_if_none_match(data_file: Path) -> None:
    etag = (await run(FileResponse(data_file))).headers["etag"]
    for header in [etag, f'"other", {etag}', f"W/{etag}", "*", f' "x",W/{etag} ']:
        exchange = await run(FileResponse(data_file), http_scope(headers={"if-none-match": header}))
        assert exchange.status == 304, header
        assert exchange.body == b""
        assert exchange.headers["etag"] == etag
        assert "content-length" not in exchange.headers
        assert "content-type" not in exchange.headers
    for header in ['"other"', 'W/"other"', etag[:-2] + '"', ""]:
        exchange = await run(FileResponse(data_file), http_scope(headers={"if-none-match": header}))
        assert exchange.status == 200, header
        assert exchange.body == CONTENT


@pytest.mark.anyio
async def test_entity_tags_may_contain_commas(data_file: Path) -> None:
    response = FileResponse(data_file, headers={"etag": '"v1,v2"'})
    for header in ['"v1,v2"', '"x", W/"v1,v2"', '"a,b","v1,v2"']:
        exchange = await run(response, http_scope(headers={"if-none-match": header}))
        assert exchange.status == 304, header
    for header in ['"v1"', 'v2"', '"v1,v2']:
        exchange = await run(response, http_scope(headers={"if-none-match": header}))
        assert exchange.status == 200, header


@pytest.mark.anyio
async def test_if_match(data_file: Path) -> None:
    etag = (await run(FileResponse(data_file))).headers["etag"]
    for header in [etag, f'"other", {etag}', "*", f' "a,b" ,{etag} ']:
        exchange = await run(FileResponse(data_file), http_scope(headers={"if-match": header}))
        assert (exchange.status, exchange.body) == (200, CONTENT), header
    # NOTE: If-Match compares strongly: W/ on either side never matches.
    for header in ['"other"', f"W/{etag}", etag[:-2] + '"', ""]:
        exchange = await run(FileResponse(data_file), http_scope(headers={"if-match": header}))
        assert exchange.status == 412, header
        assert exchange.body == b""
        assert exchange.headers["content-length"] == "0"
        assert exchange.headers["etag"] == etag
        assert "content-type" not in exchange.headers
    weak = FileResponse(data_file, headers={"etag": 'W/"weak"'})
    assert (await run(weak, http_scope(headers={"if-match": 'W/"weak"'}))).status == 412
    assert (await run(weak, http_scope(headers={"if-match": "*"}))).status == 200
    several = [("if-match", '"a"'), ("if-match", etag)]
    assert (await run(FileResponse(data_file), http_scope(headers=several))).status == 200
    head = await run(FileResponse(data_file), http_scope("HEAD", {"if-match": '"other"'}))
    assert (head.status, head.body) == (412, b"")


@pytest.mark.anyio
async def test_if_unmodified_since(data_file: Path) -> None:
    mtime = data_file.stat().st_mtime

    async def status(*values: str, **headers: str) -> int:
        items = [("if-unmodified-since", value) for value in values] + list(headers.items())
        return (await run(FileResponse(data_file), http_scope(headers=items))).status

    assert await status(formatdate(mtime, usegmt=True)) == 200
    assert await status(formatdate(mtime + 3600, usegmt=True)) == 200
    earlier = formatdate(mtime - 3600, usegmt=True)
    assert await status(earlier) == 412
    assert await status(earlier, range="bytes=0-1") == 412  # before ranges
    assert await status(earlier, **{"if-none-match": '"x"'}) == 412  # before If-None-Match
    assert await status("not a date") == 200
    assert await status(earlier, earlier) == 200  # a list of dates is ignored
    # NOTE: If-Match, when present, is the one evaluated.
    etag = (await run(FileResponse(data_file))).headers["etag"]
    assert await status(earlier, **{"if-match": etag}) == 200
    assert await status(formatdate(mtime, usegmt=True), **{"if-match": '"x"'}) == 412


@pytest.mark.anyio
async def test_preconditions_apply_only_to_a_200_get_or_head(data_file: Path) -> None:
    headers = {"if-match": '"other"'}
    not_found_page = await run(
        FileResponse(data_file, status_code=404), http_scope(headers=headers)
    )
    assert (not_found_page.status, not_found_page.body) == (404, CONTENT)
    posted = await run(FileResponse(data_file), http_scope("POST", headers))
    assert (posted.status, posted.body) == (200, CONTENT)


@pytest.mark.anyio
async def test_if_none_match_in_several_headers(data_file: Path) -> None:
    etag = (await run(FileResponse(data_file))).headers["etag"]
    headers = [("if-none-match", '"a"'), ("if-none-match", etag)]
    assert (await run(FileResponse(data_file), http_scope(headers=headers))).status == 304


@pytest.mark.anyio
async def test_if_modified_since(data_file: Path) -> None:
    mtime = data_file.stat().st_mtime

    async def status(value: str | list[tuple[str, str]]) -> int:
        headers = [("if-modified-since", value)] if isinstance(value, str) else value
        return (await run(FileResponse(data_file), http_scope(headers=headers))).status

    assert await status(formatdate(mtime, usegmt=True)) == 304
    assert await status(formatdate(mtime + 3600, usegmt=True)) == 304
    assert await status(formatdate(mtime - 3600, usegmt=True)) == 200
    assert await status(formatdate(mtime, localtime=True)) == 304  # any zone
    assert await status("not a date") == 200
    assert await status("Mon, 01 Jan 99999 00:00:00 GMT") == 200
    assert await status("x" * 10_000) == 200
    later = formatdate(mtime + 3600, usegmt=True)
    assert await status([("if-modified-since", later), ("if-modified-since", later)]) == 200


@pytest.mark.anyio
async def test_if_none_match_wins_over_if_modified_since(data_file: Path) -> None:
    later = formatdate(data_file.stat().st_mtime + 3600, usegmt=True)
    headers = {"if-none-match": '"other"', "if-modified-since": later}
    assert (await run(FileResponse(data_file), http_scope(headers=headers))).status == 200


@pytest.mark.anyio
async def test_conditions_apply_only_to_a_200_get_or_head(data_file: Path) -> None:
    etag = (await run(FileResponse(data_file))).headers["etag"]
    headers = {"if-none-match": etag, "range": "bytes=0-1"}
    not_found_page = await run(
        FileResponse(data_file, status_code=404), http_scope(headers=headers)
    )
    assert (not_found_page.status, not_found_page.body) == (404, CONTENT)
    posted = await run(FileResponse(data_file), http_scope("POST", headers))
    assert (posted.status, posted.body) == (200, CONTENT)
    head = await run(FileResponse(data_file), http_scope("HEAD", headers))
    assert (head.status, head.body) == (304, b"")


@pytest.mark.anyio
async def test_a_user_last_modified_is_the_one_compared(data_file: Path) -> None:
    response = FileResponse(data_file, headers={"last-modified": "Wed, 01 Jan 2020 00:00:00 GMT"})
    headers = {"if-modified-since": "Thu, 02 Jan 2020 00:00:00 GMT"}
    assert (await run(response, http_scope(headers=headers))).status == 304


# --- ranges ------------------------------------------------------------------------------------


async def ranged(path: Path, value: str, **headers: str) -> Exchange:
    return await run(FileResponse(path), http_scope(headers={"range": value, **headers}))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "start", "stop"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=100-", 100, SIZE),
        ("bytes=-10", SIZE - 10, SIZE),
        ("bytes=-99999999999", 0, SIZE),
        ("bytes=-" + "9" * 5000, 0, SIZE),
        ("bytes=1000-99999999999999999999999", 1000, SIZE),
        ("bytes=5-5", 5, 6),
        ("BYTES = 0-0", 0, 1),
        ("bytes=0-1,2-3", 0, 4),  # adjacent: merged into one
        ("bytes=10-20,0-30", 0, 31),  # overlapping: merged into one
        ("bytes=0-3,2000-3000", 0, 4),  # the unsatisfiable one dropped
        ("bytes= 0-9 , ,", 0, 10),  # empty list elements are allowed
    ],
)
async def test_single_range(data_file: Path, value: str, start: int, stop: int) -> None:
    exchange = await ranged(data_file, value)
    assert exchange.status == 206
    assert exchange.body == CONTENT[start:stop]
    assert exchange.headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert exchange.headers["content-length"] == str(stop - start)
    assert exchange.headers["content-type"] == "application/octet-stream"


@pytest.mark.anyio
async def test_multiple_ranges(text_file: Path) -> None:
    exchange = await ranged(text_file, "bytes=7-,0-1,-1,3-4")
    assert exchange.status == 206
    assert exchange.headers["content-length"] == str(len(exchange.body))
    parts = parse_byteranges(exchange.headers["content-type"], exchange.body)
    assert [(headers["content-range"], data) for headers, data in parts] == [
        ("bytes 0-1/10", b"01"),
        ("bytes 3-4/10", b"34"),
        ("bytes 7-9/10", b"789"),
    ]
    assert all(h["content-type"] == "text/plain; charset=utf-8" for h, _ in parts)


@pytest.mark.anyio
async def test_multipart_boundary_is_random(text_file: Path) -> None:
    boundaries = {(await ranged(text_file, "bytes=0-0,2-2")).headers["content-type"] for _ in "ab"}
    assert len(boundaries) == 2


@pytest.mark.anyio
async def test_multiple_ranges_of_a_large_file_are_streamed(tmp_path: Path) -> None:
    content = os.urandom(4 * FileResponse.chunk_size)
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    chunk = FileResponse.chunk_size
    value = f"bytes=0-{chunk + 9},{3 * chunk}-"
    exchange = await run(
        FileResponse(path, media_type="video/mp4"), http_scope(headers={"range": value})
    )
    parts = parse_byteranges(exchange.headers["content-type"], exchange.body)
    assert [data for _, data in parts] == [content[: chunk + 10], content[3 * chunk :]]
    assert parts[0][0]["content-type"] == "video/mp4"
    assert exchange.headers["content-length"] == str(len(exchange.body))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    [
        f"bytes={SIZE}-",
        f"bytes={SIZE}-{SIZE + 5}",
        "bytes=-0",
        f"bytes={SIZE * 2}-{SIZE * 3},-0",
        "bytes=" + "9" * 40 + "-",
    ],
)
async def test_unsatisfiable_range_is_416(data_file: Path, value: str) -> None:
    exchange = await ranged(data_file, value)
    assert exchange.status == 416
    assert exchange.headers["content-range"] == f"bytes */{SIZE}"
    assert exchange.headers["content-length"] == "0"
    assert "content-type" not in exchange.headers
    assert exchange.body == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    [
        "bytes=10-5",  # last < first: invalid, ignored
        "bytes=abc",
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=+1-2",
        "bytes=1_0-20",
        "bytes=²-³",  # digits to str.isdigit(), not to HTTP
        "bytes= 1 - 2",
        "bytes=",
        "bytes=,,",
        "bytes",
        "items=0-1",
        "bytes=0-1,abc",
        "",
    ],
)
async def test_malformed_or_foreign_range_is_ignored(data_file: Path, value: str) -> None:
    exchange = await ranged(data_file, value)
    assert exchange.status == 200
    assert exchange.body == CONTENT
    assert "content-range" not in exchange.headers


@pytest.mark.anyio
async def test_several_range_headers_are_ignored(data_file: Path) -> None:
    headers = [("range", "bytes=0-1"), ("range", "bytes=2-3")]
    exchange = await run(FileResponse(data_file), http_scope(headers=headers))
    assert (exchange.status, exchange.body) == (200, CONTENT)


@pytest.mark.anyio
async def test_if_range(data_file: Path) -> None:
    first = await run(FileResponse(data_file))
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    assert (await ranged(data_file, "bytes=0-1", **{"if-range": etag})).status == 206
    assert (await ranged(data_file, "bytes=0-1", **{"if-range": last_modified})).status == 206
    for stale in ['"other"', f"W/{etag}", "Wed, 01 Jan 2020 00:00:00 GMT", "garbage"]:
        exchange = await ranged(data_file, "bytes=0-1", **{"if-range": stale})
        assert (exchange.status, exchange.body) == (200, CONTENT), stale
    weak = FileResponse(data_file, headers={"etag": 'W/"weak"'})
    exchange = await run(weak, http_scope(headers={"range": "bytes=0-1", "if-range": 'W/"weak"'}))
    assert exchange.status == 200  # If-Range compares strongly: a weak tag never matches


@pytest.mark.anyio
async def test_a_repeated_if_range_sends_the_whole_file(data_file: Path) -> None:
    # A malformed If-Range must not be taken as absent: the ranges could be of another file.
    for value in ['"other"', (await run(FileResponse(data_file))).headers["etag"]]:
        headers = [("range", "bytes=0-1"), ("if-range", value), ("if-range", value)]
        exchange = await run(FileResponse(data_file), http_scope(headers=headers))
        assert (exchange.status, exchange.body) == (200, CONTENT), value


@pytest.mark.anyio
async def test_if_range_is_ignored_without_range(data_file: Path) -> None:
    exchange = await run(FileResponse(data_file), http_scope(headers={"if-range": '"other"'}))
    assert (exchange.status, exchange.body) == (200, CONTENT)


def ranges_header(count: int) -> str:
    return "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(count))


@pytest.mark.anyio
async def test_range_count_is_capped_by_the_default_limit(data_file: Path) -> None:
    at_cap = await ranged(data_file, ranges_header(Limits().max_ranges or 0))
    assert at_cap.status == 206
    assert len(parse_byteranges(at_cap.headers["content-type"], at_cap.body)) == 16
    over = await ranged(data_file, ranges_header((Limits().max_ranges or 0) + 1))
    assert (over.status, over.body) == (200, CONTENT)


def test_range_cap_comes_from_app_and_route_limits(
    client_factory: ClientFactory, data_file: Path
) -> None:
    app = App(limits=Limits(max_ranges=2))

    @app.get("/app-limit")
    async def app_limit(request: Request) -> FileResponse:
        return FileResponse(data_file)

    @app.get("/route-limit", limits=Limits(max_ranges=None))
    async def route_limit(request: Request) -> FileResponse:
        return FileResponse(data_file)

    @app.get("/no-ranges", limits=Limits(max_ranges=0))
    async def no_ranges(request: Request) -> FileResponse:
        return FileResponse(data_file)

    with client_factory(app) as client:
        assert client.get("/app-limit", headers={"range": ranges_header(2)}).status_code == 206
        over = client.get("/app-limit", headers={"range": ranges_header(3)})
        assert (over.status_code, over.content) == (200, CONTENT)
        unlimited = client.get("/route-limit", headers={"range": ranges_header(300)})
        assert unlimited.status_code == 206
        assert client.get("/no-ranges", headers={"range": "bytes=0-1"}).status_code == 200


def test_five_thousand_ranges_get_the_whole_file(
    client_factory: ClientFactory, data_file: Path
) -> None:
    app = App()

    @app.get("/file")
    async def file(request: Request) -> FileResponse:
        return FileResponse(data_file)

    with client_factory(app) as client:
        response = client.get("/file", headers={"range": ranges_header(5000)})
    assert response.status_code == 200
    assert response.content == CONTENT


# --- pathsend ----------------------------------------------------------------------------------


PATHSEND = {"http.response.pathsend": {}}


@pytest.mark.anyio
async def test_pathsend_sends_the_path_for_a_whole_file(data_file: Path) -> None:
    ran: list[str] = []
    response = FileResponse(data_file, background=BackgroundTask(ran.append, "task"))
    exchange = await run(response, http_scope(extensions=PATHSEND))
    assert exchange.status == 200
    assert exchange.headers["content-length"] == str(SIZE)
    assert exchange.messages[1] == {
        "type": "http.response.pathsend",
        "path": os.path.abspath(data_file),
    }
    assert len(exchange.messages) == 2
    assert ran == ["task"]


@pytest.mark.anyio
async def test_pathsend_path_is_absolute(data_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data_file.parent)
    exchange = await run(FileResponse("data.bin"), http_scope(extensions=PATHSEND))
    assert exchange.messages[1]["path"] == str(data_file)


@pytest.mark.anyio
async def test_pathsend_is_not_used_for_parts_heads_and_304s(data_file: Path) -> None:
    etag = (await run(FileResponse(data_file))).headers["etag"]
    cases = [
        http_scope(headers={"range": "bytes=0-9"}, extensions=PATHSEND),
        http_scope("HEAD", extensions=PATHSEND),
        http_scope(headers={"if-none-match": etag}, extensions=PATHSEND),
        http_scope(headers={"range": "bytes=5000-"}, extensions=PATHSEND),
    ]
    for scope in cases:
        exchange = await run(FileResponse(data_file), scope)
        assert [m["type"] for m in exchange.messages] == [
            "http.response.start",
            "http.response.body",
        ]
    page = await run(FileResponse(data_file, status_code=404), http_scope(extensions=PATHSEND))
    assert page.body == CONTENT


# --- background tasks and disconnects ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("size", [10, 3 * FileResponse.chunk_size])
async def test_background_runs_after_the_last_byte(tmp_path: Path, size: int) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * size)
    exchange = Exchange()
    seen: list[int] = []

    async def task() -> None:
        assert exchange.messages[-1].get("more_body", False) is False
        seen.append(len(exchange.body))

    response = FileResponse(path, background=BackgroundTask(task))
    await response(http_scope(), exchange.receive, exchange.send)
    assert seen == [size]


@pytest.mark.anyio
@pytest.mark.parametrize("size", [10, 3 * FileResponse.chunk_size])
@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_disconnect_stops_sending_and_skips_background(
    tmp_path: Path, size: int, spec_version: str
) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * size)
    ran: list[str] = []
    response = FileResponse(path, background=BackgroundTask(ran.append, "task"))
    # ASGI 2.4: `send` raises OSError once the client is gone; before it, `receive` says so.
    if spec_version == "2.4":
        exchange = await run(response, http_scope(spec_version=spec_version), fail_after=1)
    else:
        exchange = await run(response, http_scope(spec_version=spec_version), disconnect_after=1)
    if size > FileResponse.chunk_size or spec_version == "2.4":
        assert ran == []
        assert len(exchange.body) < size
    else:
        assert ran == ["task"]  # small files go out in one message; they were sent whole


@pytest.mark.anyio
async def test_disconnect_before_pathsend_skips_background(data_file: Path) -> None:
    ran: list[str] = []
    response = FileResponse(data_file, background=BackgroundTask(ran.append, "task"))
    await run(response, http_scope(extensions=PATHSEND), fail_after=1)
    assert ran == []


# --- Content-Disposition -----------------------------------------------------------------------


def decode_filename_star(value: str) -> str:
    star = value.split("filename*=", 1)[1]
    charset, _, encoded = star.partition("''")
    assert charset.lower() == "utf-8"
    return unquote(encoded, encoding="utf-8", errors="strict")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ("my report (v2).pdf", 'attachment; filename="my report (v2).pdf"'),
        ("naïve.txt", "attachment; filename=\"na_ve.txt\"; filename*=utf-8''na%C3%AFve.txt"),
        (
            "€ rates.csv",
            "attachment; filename=\"_ rates.csv\"; filename*=utf-8''%E2%82%AC%20rates.csv",
        ),
        (
            'say "hi".txt',
            "attachment; filename=\"say _hi_.txt\"; filename*=utf-8''say%20%22hi%22.txt",
        ),
        ("50%.txt", "attachment; filename=\"50_.txt\"; filename*=utf-8''50%25.txt"),
        ("a\\b.txt", "attachment; filename=\"a_b.txt\"; filename*=utf-8''a%5Cb.txt"),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    value = content_disposition("attachment", filename)
    assert value == expected
    if "filename*" in value:
        assert decode_filename_star(value) == filename


@pytest.mark.parametrize("filename", ["a\r\nSet-Cookie: s=1", "x\x00y", "日本語\n.txt", "\x7f"])
def test_content_disposition_cannot_break_the_header(filename: str) -> None:
    value = content_disposition("attachment", filename)
    assert not any(ch in value for ch in "\r\n\x00\x7f")
    assert value.isascii()
    assert decode_filename_star(value) == filename


def test_content_disposition_type() -> None:
    assert content_disposition("inline", "a.txt") == 'inline; filename="a.txt"'
    for bad in ["in line", "attachment; x=1", "", "inline\r\n"]:
        with pytest.raises(ValueError, match="content_disposition_type"):
            content_disposition(bad, "a.txt")


@pytest.mark.anyio
async def test_filename_adds_content_disposition(text_file: Path) -> None:
    exchange = await run(FileResponse(text_file, filename="ünïcode.txt"))
    assert decode_filename_star(exchange.headers["content-disposition"]) == "ünïcode.txt"
    inline = await run(FileResponse(text_file, filename="a.txt", content_disposition_type="inline"))
    assert inline.headers["content-disposition"] == 'inline; filename="a.txt"'
    given = FileResponse(text_file, filename="a.txt", headers={"content-disposition": "inline"})
    assert given.headers.getlist("content-disposition") == ["inline"]
    without = await run(FileResponse(text_file))
    assert "content-disposition" not in without.headers


@pytest.mark.anyio
async def test_content_disposition_is_dropped_from_304(text_file: Path) -> None:
    response = FileResponse(text_file, filename="a.txt")
    etag = (await run(response)).headers["etag"]
    exchange = await run(response, http_scope(headers={"if-none-match": etag}))
    assert exchange.status == 304
    assert "content-disposition" not in exchange.headers


def test_through_the_app_on_both_backends(client_factory: ClientFactory, data_file: Path) -> None:
    app = App()

    @app.get("/download")
    def download(request: Request) -> FileResponse:
        return FileResponse(data_file, filename="data.bin")

    with client_factory(app) as client:
        response = client.get("/download")
        assert response.status_code == 200
        assert response.content == CONTENT
        assert response.headers["content-disposition"] == 'attachment; filename="data.bin"'
        part = client.get("/download", headers={"range": "bytes=-4"})
        assert (part.status_code, part.content) == (206, CONTENT[-4:])
        cached = client.get("/download", headers={"if-none-match": response.headers["etag"]})
        assert cached.status_code == 304


def test_modification_time_in_last_modified_is_utc(data_file: Path) -> None:
    os.utime(data_file, (0, 1_700_000_000))
    response = FileResponse(data_file, stat_result=data_file.stat())
    assert response.headers["last-modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"


# --- the Range parser, property-tested -----------------------------------------------------------

_range_element = st.one_of(
    st.builds("{}-{}".format, st.integers(0, 1600), st.integers(0, 1600)),
    st.builds("{}-".format, st.integers(0, 1600)),
    st.builds("-{}".format, st.integers(0, 1600)),
    st.builds(" {}-{}\t".format, st.integers(0, 1600), st.integers(0, 1600)),
    st.sampled_from(
        ["", " ", "abc", "-", "1-2-3", "0x1-2", "9" * 30 + "-", "-" + "9" * 30, "1 -2"]
    ),
)
_INT_RANGE = re.compile(r"(\d*)-(\d*)")


def reference_ranges(unit: str, elements: list[str], size: int, cap: int | None) -> Any:
    """RFC 9110 §14.1 spelled out naively: the set of byte positions to send."""
    if unit.strip(" \t").lower() != "bytes" or size == 0:
        return None
    if cap is not None and len(elements) > cap:
        return None
    covered: set[int] = set()
    specs = [element.strip(" \t") for element in elements if element.strip(" \t")]
    if not specs:
        return None
    for spec in specs:
        match = _INT_RANGE.fullmatch(spec)
        if match is None or not (match[1] or match[2]):
            return None
        if not match[1]:
            covered.update(range(max(size - int(match[2]), 0), size))
        elif match[2] and int(match[2]) < int(match[1]):
            return None
        else:
            last = int(match[2]) if match[2] else size - 1
            covered.update(range(int(match[1]), min(last, size - 1) + 1))
    return covered


@settings(max_examples=500, deadline=None, database=None)
@given(
    unit=st.sampled_from(["bytes", "BYTES", " Bytes ", "items", "", "byte"]),
    elements=st.lists(_range_element, min_size=1, max_size=40),
    size=st.integers(0, 1500),
    cap=st.one_of(st.none(), st.integers(0, 30)),
)
def test_parse_range_properties(unit: str, elements: list[str], size: int, cap: int | None) -> None:
    result = parse_range(f"{unit}={','.join(elements)}", size, cap)
    expected = reference_ranges(unit, elements, size, cap)
    if expected is None:
        assert result is None
        return
    assert result is not None
    for start, stop in result:
        assert 0 <= start < stop <= size  # within bounds, never empty
    for (_, stop), (start, _) in itertools.pairwise(result):
        assert stop < start  # sorted, and neither overlapping nor adjacent
    if cap is not None:
        assert len(result) <= cap
    assert {i for start, stop in result for i in range(start, stop)} == expected


@pytest.mark.parametrize("value", ["bytes=0-0", "bytes=-5", "bytes=5-"])
def test_parse_range_cap_of_zero_refuses_every_range(value: str) -> None:
    assert parse_range(value, 100, 0) is None
    assert parse_range(value, 100, 1) is not None


def test_parse_range_is_linear_in_the_number_of_ranges() -> None:
    # NOTE: a ratio of two sizes measured back to back, best of several runs: linear work
    # grows about 10x from 5,000 to 50,000 ranges, quadratic work about 100x.
    def best_time(count: int) -> float:
        header = "bytes=" + ",".join(
            f"{7 * i % count * 3}-{7 * i % count * 3 + 1}" for i in range(count)
        )
        assert len(parse_range(header, 10**9, None) or []) == count
        return min(
            timeit.timeit(lambda: parse_range(header, 10**9, None), number=1) for _ in range(5)
        )

    small, large = best_time(5_000), best_time(50_000)
    assert large < small * 30, (small, large)


@pytest.mark.anyio
async def test_small_file_that_shrinks_while_sent_raises(tmp_path: Path) -> None:
    before = tmp_path / "before.bin"
    before.write_bytes(b"x" * 100)
    after = tmp_path / "after.bin"
    after.write_bytes(b"x" * 10)
    with pytest.raises(RuntimeError, match="became shorter"):
        await run(FileResponse(after, stat_result=before.stat()))


@pytest.mark.anyio
async def test_a_response_without_validators_is_never_304(text_file: Path) -> None:
    response = FileResponse(text_file, stat_result=text_file.stat())
    del response.headers["etag"]
    del response.headers["last-modified"]
    for headers in [
        {"if-none-match": "*"},
        {"if-modified-since": "Fri, 01 Jan 2100 00:00:00 GMT"},
        {"range": "bytes=0-1", "if-range": '"x"'},
        {"range": "bytes=0-1", "if-range": "Fri, 01 Jan 2100 00:00:00 GMT"},
    ]:
        exchange = await run(response, http_scope(headers=headers))
        assert exchange.status == 200, headers


@pytest.mark.anyio
async def test_given_accept_ranges_is_kept(text_file: Path) -> None:
    exchange = await run(FileResponse(text_file, headers={"accept-ranges": "none"}))
    assert exchange.headers["accept-ranges"] == "none"
