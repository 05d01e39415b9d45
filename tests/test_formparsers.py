from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote_to_bytes

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microasgi.formparsers
from microasgi._spool import SharedSpool, SpoolRegion
from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.datastructures import FormData, Headers, UploadFile
from microasgi.exceptions import ClientDisconnect, HTTPException
from microasgi.formparsers import (
    _FLUSH_SIZE,
    MAX_BOUNDARY_LENGTH,
    FormParser,
    MultiPartParser,
    parse_form,
    parse_options_header,
    safe_filename,
    tightened,
)
from microasgi.limits import Limits
from microasgi.requests import FORM_KEY, Request
from microasgi.responses import StreamingResponse
from microasgi.testing import TestClient
from microasgi.types import Message
from tests.support import TrackedSpooledFile, track_spooled_files

ClientFactory = Callable[..., TestClient]
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}
MULTIPART = {"content-type": "multipart/form-data; boundary=x"}
MiB = 1024 * 1024


def part(headers: str, body: bytes = b"", encoding: str = "utf-8") -> bytes:
    """One multipart part, boundary `x`: its header lines and its content."""
    return b"--x\r\n" + headers.encode(encoding) + b"\r\n\r\n" + body + b"\r\n"


def field(name: str, value: bytes = b"") -> bytes:
    return part(f'Content-Disposition: form-data; name="{name}"', value)


def file_part(name: str, filename: str, body: bytes = b"", content_type: str = "") -> bytes:
    headers = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
    if content_type:
        headers += f"\r\nContent-Type: {content_type}"
    return part(headers, body)


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--x--\r\n"


def make_scope(content_type: str | None, **extra: Any) -> dict[str, Any]:
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    return {"type": "http", "method": "POST", "path": "/", "headers": headers, **extra}


def receiver(*chunks: bytes) -> Callable[[], Any]:
    """A receive channel that hands out `chunks` as body messages, then the end."""
    queue = list(chunks)

    async def receive() -> Message:
        if queue:
            return {"type": "http.request", "body": queue.pop(0), "more_body": True}
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def is_closed(upload: UploadFile) -> bool:
    return upload.file.closed


def describe(form: FormData) -> list[tuple[str, Any]]:
    """The form as plain values: str, or (filename, content type, size) for files."""
    return [
        (key, value if isinstance(value, str) else (value.filename, value.content_type, value.size))
        for key, value in form.multi_items()
    ]


def form_app(**app_options: Any) -> tuple[App, list[UploadFile]]:
    """An app whose POST / answers the parsed form; the uploads it saw are kept."""
    app = App(**app_options)
    uploads: list[UploadFile] = []

    @app.post("/")
    async def handler(request: Request) -> dict[str, Any]:
        form = await request.form()
        result: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                result.setdefault(key, []).append(value)
                continue
            uploads.append(value)
            described = {
                "filename": value.filename,
                "content_type": value.content_type,
                "size": value.size,
                "data": (await value.read()).decode("latin-1"),
            }
            result.setdefault(key, []).append(described)
        return result

    return app, uploads


# --- parse_options_header --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("text/plain", ("text/plain", {})),
        ("  Multipart/Form-Data ; Boundary=abc ", ("multipart/form-data", {"boundary": "abc"})),
        ("a/b;", ("a/b", {})),
        ("a/b; ;; x=1", ("a/b", {"x": "1"})),
        (
            'form-data; name="a b"; filename="c;d.txt"',
            ("form-data", {"name": "a b", "filename": "c;d.txt"}),
        ),
        (r'form-data; name="q\"uote\\d"', ("form-data", {"name": 'q"uote\\d'})),
        (
            r'form-data; filename="C:\path\file.txt"',
            ("form-data", {"filename": r"C:\path\file.txt"}),
        ),
        (
            'form-data; name="x"; filename="ends\\"',
            ("form-data", {"name": "x", "filename": "ends\\"}),
        ),
        ("form-data; name=bare value ; x = y", ("form-data", {"name": "bare value", "x": "y"})),
        ("form-data; flag; name=a", ("form-data", {"flag": "", "name": "a"})),
        ("form-data; name=", ("form-data", {"name": ""})),
        ('form-data; name=""', ("form-data", {"name": ""})),
        (
            "form-data; name=\"a\"; name*=utf-8''b; filename=\"s.txt\"; filename*=utf-8''..%2Fevil",
            ("form-data", {"name": "a", "filename": "s.txt"}),
        ),
        ("form-data; filename*0=a; filename*1*=b", ("form-data", {})),
        ("", ("", {})),
    ],
)
def test_parse_options_header(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_options_header(header) == expected


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ('form-data; name="unterminated', "unexpected '\"'"),
        ('form-data; name="a" junk', "unexpected ' ' at offset 19"),
        ('form-data; name="a"; NAME="b"', "parameter 'name' given twice"),
        ('a/b; x"y', "unexpected '\"'"),
        ("a/b; =x", "unexpected '='"),
    ],
)
def test_parse_options_header_refuses_malformed_values(header: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_options_header(header)


# --- safe_filename ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        ("C:\\x", "x"),
        ("C:x.txt", "x.txt"),
        ("a\x00b", "ab"),
        ("dir\\sub/..\\name.txt", "name.txt"),
        ("..", ""),
        ("...", ""),
        ("a/..", ""),
        ("", ""),
        ("   ", ""),
        (" spaced name.txt ", "spaced name.txt"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
        ("tab\tnew\nline\r\x7f\x85.txt", "tabnewline.txt"),
        ("résumé ✓.txt", "résumé ✓.txt"),
        (".bashrc", ".bashrc"),
        ("a:b", "b"),
        ("ab:c", "ab:c"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


# --- tightened -------------------------------------------------------------------------------


def test_tightened_lowers_limits_and_never_raises_them() -> None:
    limits = Limits(max_files=10, max_fields=None, max_body_size=5)
    assert tightened(limits) is limits
    assert tightened(limits, max_files=20) is limits
    lowered = tightened(limits, max_files=3, max_fields=7, max_part_size=100)
    assert (lowered.max_files, lowered.max_fields, lowered.max_part_size) == (3, 7, 100)
    assert lowered.max_body_size == 5


# --- urlencoded ------------------------------------------------------------------------------


def test_urlencoded_form(client_factory: ClientFactory) -> None:
    app, _ = form_app()
    with client_factory(app) as client:
        response = client.post("/", data={"a": "1", "b": ["x", "y"], "space name": "é+&="})
        assert response.json() == {"a": ["1"], "b": ["x", "y"], "space name": ["é+&="]}
        body = b"role=user&x=;role=admin&&flag&=nameless&a+b=%41%2B%zz&last="
        response = client.post("/", content=body, headers=URLENCODED)
        assert response.json() == {
            "role": ["user"],
            "x": [";role=admin"],
            "flag": [""],
            "": ["nameless"],
            "a b": ["A+%zz"],
            "last": [""],
        }
        assert client.post("/", content=b"", headers=URLENCODED).json() == {}


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("utf-8", "name=%C3%A9", "é"),
        ("UTF8", "name=\xc3\xa9", "é"),
        ("iso-8859-1", "name=%E9", "é"),
        ("latin1", "name=\xe9", "é"),
        ("us-ascii", "name=%E9", "\ufffd"),
        ("utf-8", "name=%FF", "\ufffd"),
    ],
)
def test_urlencoded_charsets(
    client_factory: ClientFactory, charset: str, body: str, expected: str
) -> None:
    app, _ = form_app()
    content_type = f"application/x-www-form-urlencoded; charset={charset}"
    with client_factory(app) as client:
        response = client.post(
            "/", content=body.encode("latin-1"), headers={"content-type": content_type}
        )
    assert response.json() == {"name": [expected]}


def test_unknown_charsets_are_refused(client_factory: ClientFactory) -> None:
    app, _ = form_app()
    with client_factory(app) as client:
        for charset in ("punycode", "utf-7", "rot13", "nope"):
            content_type = f"application/x-www-form-urlencoded; charset={charset}"
            response = client.post("/", content=b"a=b", headers={"content-type": content_type})
            assert response.status_code == 415
            assert response.json()["detail"] == f"Unsupported form charset {charset!r}: send UTF-8"


@pytest.mark.anyio
async def test_urlencoded_parser_across_chunk_boundaries() -> None:
    body = b"a=1&&bb=22&c&d=4%20&&&e=5&"
    expected = [("a", "1"), ("bb", "22"), ("c", ""), ("d", "4 "), ("e", "5")]
    for size in range(1, len(body) + 1):
        form = await FormParser(Limits()).parse(chunks_of(body, size))
        assert form.multi_items() == expected


# --- hypothesis: the urlencoded parser and its limits ----------------------------------------

_ASCII_FORM = st.text(alphabet="ab=&;+%2F0 ", max_size=60)
_PAIRS = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=12)
_CHUNK_SIZE = st.integers(min_value=1, max_value=64)
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_sync(body: bytes, limits: Limits, chunk_size: int) -> list[tuple[str, Any]]:
    """Feed the body straight to the parser in chunks of `chunk_size`, outside any loop."""

    async def run() -> list[tuple[str, Any]]:
        parser = FormParser(limits)
        for start in range(0, len(body), chunk_size):
            parser.write(body[start : start + chunk_size])
        return (await parser.finish()).multi_items()

    return anyio.run(run)


@_FAST
@given(body=_ASCII_FORM, chunk_size=_CHUNK_SIZE)
def test_urlencoded_matches_the_standard_library(body: str, chunk_size: int) -> None:
    limits = Limits(max_fields=None, max_part_size=None)
    expected = parse_qsl(body, keep_blank_values=True, separator="&")
    assert parse_sync(body.encode(), limits, chunk_size) == expected


@_FAST
@given(pairs=_PAIRS, chunk_size=_CHUNK_SIZE)
def test_urlencoded_round_trips_any_text(pairs: list[tuple[str, str]], chunk_size: int) -> None:
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    assert parse_sync(body, Limits(), chunk_size) == pairs


@_FAST
@given(pairs=_PAIRS, max_fields=st.integers(0, 12), chunk_size=_CHUNK_SIZE)
def test_urlencoded_max_fields(
    pairs: list[tuple[str, str]], max_fields: int, chunk_size: int
) -> None:
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    limits = Limits(max_fields=max_fields)
    if len(pairs) <= max_fields:
        assert parse_sync(body, limits, chunk_size) == pairs
        return
    with pytest.raises(HTTPException) as caught:
        parse_sync(body, limits, chunk_size)
    assert caught.value.status_code == 400
    assert caught.value.detail == (
        f"Too many fields in the form: the limit is {max_fields} (max_fields)"
    )


@_FAST
@given(pairs=_PAIRS, max_part_size=st.integers(0, 40), chunk_size=_CHUNK_SIZE)
def test_urlencoded_max_part_size_bounds_names_and_values_as_sent(
    pairs: list[tuple[str, str]], max_part_size: int, chunk_size: int
) -> None:
    encoded = [(quote_plus(k), quote_plus(v)) for k, v in pairs]
    body = "&".join(f"{k}={v}" for k, v in encoded).encode()
    limits = Limits(max_part_size=max_part_size)
    largest = max((len(piece.encode()) for pair in encoded for piece in pair), default=0)
    if largest <= max_part_size:
        assert parse_sync(body, limits, chunk_size) == pairs
        return
    with pytest.raises(HTTPException) as caught:
        parse_sync(body, limits, chunk_size)
    assert caught.value.status_code == 413
    assert f"limit of {max_part_size} bytes (max_part_size)" in str(caught.value.detail)


# --- percent-decoding ------------------------------------------------------------------------

_ESCAPES_FORM = st.text(alphabet="%%%4e1F+=&az", max_size=80)


@_FAST
@given(body=_ESCAPES_FORM, chunk_size=_CHUNK_SIZE, decode_slice=st.integers(3, 9))
def test_long_values_decode_piece_by_piece_as_the_standard_library_does(
    body: str, chunk_size: int, decode_slice: int
) -> None:
    # NOTE: a small slice makes every name and value "long": decoded as the pieces arrive,
    # and in slices, with escapes cut at every offset.
    limits = Limits(max_fields=None, max_part_size=None)
    expected = parse_qsl(body, keep_blank_values=True, separator="&")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(microasgi.formparsers, "_DECODE_SLICE", decode_slice)
        assert parse_sync(body.encode(), limits, chunk_size) == expected


@pytest.mark.parametrize("chunk_size", [1000, 4093, 16384, 65537, 1 << 20])
def test_long_names_and_values_across_writes_and_slices(chunk_size: int) -> None:
    unit = b"%41%e9+%%4%zz%2B%C3%A9%4"
    value = unit * 9000
    name = b"n%C3%A9" + unit * 1000
    body = b"short=%41&" + name + b"=" + value + b"&" + name + b"&last=%"
    limits = Limits(max_part_size=None)
    decoded_value = unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")
    decoded_name = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
    assert parse_sync(body, limits, chunk_size) == [
        ("short", "A"),
        (decoded_name, decoded_value),
        (decoded_name, ""),
        ("last", "%"),
    ]


# --- multipart -------------------------------------------------------------------------------


def test_multipart_fields_and_files(client_factory: ClientFactory) -> None:
    app, uploads = form_app()
    with client_factory(app) as client:
        response = client.post(
            "/",
            data={"title": "Hello", "tag": ["a", "b"]},
            files=[
                ("doc", ("notes.txt", b"some text", "text/plain")),
                ("doc", ("../../etc/passwd", b"\x00\x01binary", "application/octet-stream")),
            ],
        )
    assert response.json() == {
        "title": ["Hello"],
        "tag": ["a", "b"],
        "doc": [
            {"filename": "notes.txt", "content_type": "text/plain", "size": 9, "data": "some text"},
            {
                "filename": "passwd",
                "content_type": "application/octet-stream",
                "size": 8,
                "data": "\x00\x01binary",
            },
        ],
    }
    assert len(uploads) == 2
    assert all(upload.file.closed for upload in uploads)


def test_multipart_part_headers_reach_the_upload(client_factory: ClientFactory) -> None:
    app = App()

    @app.post("/")
    async def handler(request: Request) -> dict[str, Any]:
        async with request.form() as form:
            upload = form["f"]
            assert isinstance(upload, UploadFile)
            return {"headers": upload.headers.items(), "repr": repr(upload)}

    body = multipart(
        part(
            'content-disposition: form-data; name="f"; filename="a.csv"\r\n'
            "Content-Type: text/csv\r\nX-Custom:   spaced",
            b"1,2",
        )
    )
    with client_factory(app) as client:
        response = client.post("/", content=body, headers=MULTIPART)
    assert response.json()["headers"] == [
        ["content-disposition", 'form-data; name="f"; filename="a.csv"'],
        ["content-type", "text/csv"],
        ["x-custom", "spaced"],
    ]
    assert response.json()["repr"].startswith("UploadFile(filename='a.csv', size=3, headers=")


def test_multipart_names_are_utf8_and_values_keep_their_bytes(
    client_factory: ClientFactory,
) -> None:
    app, _ = form_app()
    body = multipart(
        field("naïve", "café ;role=admin\r\n--not-a-boundary".encode()),
        field("bad", b"\xff"),
        file_part("f", "ünï.txt"),
        field("empty"),
    )
    with client_factory(app) as client:
        response = client.post("/", content=body, headers=MULTIPART)
    assert response.json() == {
        "naïve": ["café ;role=admin\r\n--not-a-boundary"],
        "bad": ["\ufffd"],
        "f": [
            {"filename": "ünï.txt", "content_type": None, "size": 0, "data": ""},
        ],
        "empty": [""],
    }


def test_multipart_with_a_latin1_charset(client_factory: ClientFactory) -> None:
    app, _ = form_app()
    body = multipart(
        part('Content-Disposition: form-data; name="caf\xe9"', b"\xe9t\xe9", "latin-1")
    )
    headers = {"content-type": "multipart/form-data; boundary=x; charset=iso-8859-1"}
    with client_factory(app) as client:
        assert client.post("/", content=body, headers=headers).json() == {"café": ["été"]}


@pytest.mark.parametrize(
    ("request_charset", "content_type", "value", "expected"),
    [
        ("", "text/plain; charset=latin-1", b"\xe9", "é"),
        ("", "text/plain; charset=ISO-8859-1", b"caf\xe9", "café"),
        ("", 'text/plain; charset="iso-8859-1"', b"\xe9", "é"),
        ("latin-1", "text/plain; charset=utf-8", "é".encode(), "é"),
        ("latin-1", "text/plain", b"\xe9", "é"),
        ("", "text/plain", "é".encode(), "é"),
        ("", "application/json; charset=us-ascii", b"\xe9", "\ufffd"),
        ("", "text/plain; charset=utf-8", b"\xe9", "\ufffd"),
    ],
)
def test_a_field_decodes_with_its_own_charset(
    client_factory: ClientFactory,
    request_charset: str,
    content_type: str,
    value: bytes,
    expected: str,
) -> None:
    app, _ = form_app()
    headers = f'Content-Disposition: form-data; name="a"\r\nContent-Type: {content_type}'
    body = multipart(part(headers, value), field("b", "é".encode(request_charset or "utf-8")))
    content_type = "multipart/form-data; boundary=x"
    if request_charset:
        content_type += f"; charset={request_charset}"
    with client_factory(app) as client:
        response = client.post("/", content=body, headers={"content-type": content_type})
    assert response.json() == {"a": [expected], "b": ["é"]}


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        (
            "text/plain; charset=utf-7",
            "Unsupported charset 'utf-7' in a multipart part: send UTF-8",
        ),
        ("text/plain; charset=punycode", "Unsupported charset 'punycode' in a multipart part"),
        ("text/plain; charset=" + "x" * 100, "Unsupported charset '" + "x" * 40 + "' in a"),
        (
            "text/plain; charset=a; charset=b",
            "Malformed multipart part Content-Type: parameter 'charset' given twice",
        ),
    ],
)
def test_a_field_in_an_unknown_charset_is_refused(
    client_factory: ClientFactory, content_type: str, detail: str
) -> None:
    app, _ = form_app()
    headers = f'Content-Disposition: form-data; name="a"\r\nContent-Type: {content_type}'
    body = multipart(part(headers, b"+AOk-"))
    with client_factory(app) as client:
        response = client.post("/", content=body, headers=MULTIPART)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


def test_the_charset_of_a_file_part_is_not_read(client_factory: ClientFactory) -> None:
    app, _ = form_app()
    content_type = "text/plain; charset=utf-7; charset=twice"
    body = multipart(file_part("f", "a.txt", b"+AOk-", content_type=content_type))
    with client_factory(app) as client:
        response = client.post("/", content=body, headers=MULTIPART)
    assert response.json() == {
        "f": [{"filename": "a.txt", "content_type": content_type, "size": 5, "data": "+AOk-"}]
    }


def test_multipart_with_an_empty_file_input(client_factory: ClientFactory) -> None:
    # Browsers send a file input left empty as filename="" with no content.
    app, _ = form_app()
    body = multipart(file_part("f", "", content_type="application/octet-stream"))
    with client_factory(app) as client:
        response = client.post("/", content=body, headers=MULTIPART)
    assert response.json() == {
        "f": [{"filename": "", "content_type": "application/octet-stream", "size": 0, "data": ""}]
    }


@pytest.mark.anyio
async def test_multipart_parser_across_chunk_boundaries() -> None:
    body = multipart(
        field("a", b"1\r\n--"),
        file_part("f", "f.bin", b"\r\n--x\r-\r\n--y" * 3),
        field("b", b""),
    )
    expected = [("a", "1\r\n--"), ("f", ("f.bin", None, 36)), ("b", "")]
    for size in (1, 2, 3, 5, 7, 64, len(body)):
        form = await MultiPartParser(b"x", Limits()).parse(chunks_of(body, size))
        assert describe(form) == expected
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        assert await upload.read() == b"\r\n--x\r-\r\n--y" * 3
        await form.close()


@pytest.mark.anyio
async def test_multipart_epilogue_and_blank_preamble_are_ignored() -> None:
    body = b"\r\n\r\n" + multipart(field("a", b"1")) + b"epilogue \r\n--x\r\n garbage"
    form = await MultiPartParser(b"x", Limits()).parse(chunks_of(body, 3))
    assert form.multi_items() == [("a", "1")]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "Malformed multipart body: it is empty"),
        (b"--x\r\n", "Malformed multipart body: it ends before the closing boundary"),
        (field("a", b"1"), "Malformed multipart body: it ends before the closing boundary"),
        (b"preamble\r\n" + multipart(field("a")), "Malformed multipart body: Expected boundary"),
        (b"--y\r\n" + multipart(field("a")), "Malformed multipart body: Expected boundary"),
        (b"--xZ\r\n", "Malformed multipart body: Did not find CR at end of boundary"),
        (b"--x\rZ", "Malformed multipart body: Did not find LF at end of boundary"),
        (b"--x\r\nNo colon here\r\n\r\n", "Malformed multipart body: Found invalid character"),
        (b"--x\r\n: empty\r\n\r\n", "Malformed multipart body: Found 0-length header"),
        (b"--x\r\nA: b\rZ", "Malformed multipart body: Did not find LF character at end of head"),
        (
            multipart(part("Content-Type: text/plain", b"1")),
            "Malformed multipart part: no Content-Disposition header",
        ),
        (
            multipart(part('Content-Disposition: attachment; name="a"')),
            'Malformed multipart part: expected Content-Disposition: form-data; name="..."',
        ),
        (
            multipart(part('Content-Disposition: form-data; filename="a"')),
            'Malformed multipart part: expected Content-Disposition: form-data; name="..."',
        ),
        (
            multipart(part('Content-Disposition: form-data; name="a"; name="b"')),
            "Malformed multipart Content-Disposition: parameter 'name' given twice",
        ),
        (
            multipart(part('Content-Disposition: form-data; name="a')),
            "Malformed multipart Content-Disposition: unexpected",
        ),
        # Parsers disagree on which of two copies wins, so neither is chosen.
        (
            multipart(
                part(
                    'Content-Disposition: form-data; name="a"\r\n'
                    'Content-Disposition: form-data; name="b"; filename="evil.php"',
                    b"1",
                )
            ),
            "Malformed multipart part: Content-Disposition given twice",
        ),
        (
            multipart(
                part(
                    'content-disposition: form-data; name="a"\r\n'
                    'CONTENT-DISPOSITION: form-data; name="a"',
                    b"1",
                )
            ),
            "Malformed multipart part: Content-Disposition given twice",
        ),
        (
            multipart(
                part(
                    'Content-Disposition: form-data; name="f"; filename="x"\r\n'
                    "Content-Type: image/png\r\nContent-Type: text/html",
                    b"1",
                )
            ),
            "Malformed multipart part: Content-Type given twice",
        ),
        (
            multipart(
                part(
                    'Content-Disposition: form-data; name="a"\r\n'
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Type: text/plain; charset=iso-8859-1",
                    b"\xe9",
                )
            ),
            "Malformed multipart part: Content-Type given twice",
        ),
    ],
)
def test_malformed_multipart_is_a_400(
    client_factory: ClientFactory, body: bytes, detail: str
) -> None:
    app, uploads = form_app()
    with client_factory(app) as client:
        response = client.post("/", content=body, headers=MULTIPART)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)
    assert uploads == []


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("multipart/form-data", "Malformed multipart Content-Type: no boundary parameter"),
        (
            "multipart/form-data; boundary=",
            "Malformed multipart Content-Type: no boundary parameter",
        ),
        ('multipart/form-data; boundary="', "Malformed Content-Type header: unexpected '\"'"),
        (
            "multipart/form-data; boundary=" + "b" * (MAX_BOUNDARY_LENGTH + 1),
            "Malformed multipart Content-Type: the boundary is 257 characters long, "
            "the limit is 256",
        ),
    ],
)
def test_malformed_multipart_content_type_is_a_400(
    client_factory: ClientFactory, content_type: str, detail: str
) -> None:
    app, _ = form_app()
    with client_factory(app) as client:
        response = client.post("/", content=b"--x--\r\n", headers={"content-type": content_type})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


def test_a_quoted_boundary_of_the_longest_length(client_factory: ClientFactory) -> None:
    boundary = "'()+_,-./:=? " * 19 + "abcdefghi"
    assert len(boundary) == MAX_BOUNDARY_LENGTH
    body = multipart(field("a", b"1")).replace(b"--x", b"--" + boundary.encode())
    app, _ = form_app()
    with client_factory(app) as client:
        content_type = f'multipart/form-data; boundary="{boundary}"'
        response = client.post("/", content=body, headers={"content-type": content_type})
    assert response.json() == {"a": ["1"]}


# --- media types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/plain", "multipart/mixed; boundary=x"]
)
def test_other_media_types_are_a_415(
    client_factory: ClientFactory, content_type: str | None
) -> None:
    app, _ = form_app()
    headers = {} if content_type is None else {"content-type": content_type}
    with client_factory(app) as client:
        response = client.post("/", content=b"a=1", headers=headers)
    assert response.status_code == 415
    assert response.json()["detail"] == (
        "Expected a form body with Content-Type: application/x-www-form-urlencoded or "
        f"multipart/form-data, got {content_type or 'no Content-Type'!r}"
    )


def test_without_strict_content_type_other_media_types_give_an_empty_form(
    client_factory: ClientFactory,
) -> None:
    app = App(strict_content_type=False)

    @app.post("/")
    async def handler(request: Request) -> dict[str, Any]:
        form = await request.form()
        return {"form": len(form), "body": (await request.body()).decode()}

    with client_factory(app) as client:
        response = client.post("/", content=b"a=1", headers={"content-type": "text/plain"})
    assert response.json() == {"form": 0, "body": "a=1"}


def test_compressed_forms_are_refused(client_factory: ClientFactory) -> None:
    app, _ = form_app()
    with client_factory(app) as client:
        headers = {**URLENCODED, "content-encoding": "identity"}
        assert client.post("/", content=b"a=1", headers=headers).json() == {"a": ["1"]}
        for encoding in ("gzip", "br", "Deflate"):
            headers = {**URLENCODED, "content-encoding": encoding}
            response = client.post("/", content=b"a=1", headers=headers)
            assert response.status_code == 415
            assert response.json()["detail"] == (
                f"Unsupported Content-Encoding {encoding.lower()!r} for a form body"
            )


# --- Request.form: caching, closing, limits --------------------------------------------------


@pytest.mark.anyio
async def test_the_form_is_cached_on_the_scope() -> None:
    scope = make_scope("application/x-www-form-urlencoded")
    request = Request(scope, receiver(b"a=1&", b"b=2"))
    form = await request.form()
    assert form.multi_items() == [("a", "1"), ("b", "2")]
    assert await request.form() is form
    # A second Request over the same scope (a middleware's, then the handler's).
    assert await Request(scope, receiver()).form() is form
    assert scope[FORM_KEY] is form


@pytest.mark.anyio
async def test_the_form_reads_a_body_already_read() -> None:
    scope = make_scope("multipart/form-data; boundary=x")
    body = multipart(field("a", b"1"))
    request = Request(scope, receiver(body[:10], body[10:]))
    assert await request.body() == body
    form = await Request(scope, receiver()).form()
    assert form.multi_items() == [("a", "1")]


@pytest.mark.anyio
async def test_form_as_a_context_manager_closes_the_files() -> None:
    body = multipart(file_part("f", "a.txt", b"data"), field("x", b"1"))
    request = Request(make_scope("multipart/form-data; boundary=x"), receiver(body))
    async with request.form() as form:
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        assert await upload.read() == b"data"
        assert not upload.file.closed
    assert is_closed(upload)
    await request.close()  # closing again is harmless
    assert is_closed(upload)


@pytest.mark.anyio
async def test_close_without_a_form_does_nothing() -> None:
    request = Request(make_scope(None), receiver())
    await request.close()
    assert FORM_KEY not in request.scope


@pytest.mark.anyio
async def test_form_arguments_tighten_the_route_limits() -> None:
    body = multipart(file_part("a", "1"), file_part("b", "2"), field("c"), field("d", b"12345"))
    limits = Limits(max_files=1)
    request = Request(
        make_scope("multipart/form-data; boundary=x", **{"microasgi.limits": limits}),
        receiver(body),
    )
    with pytest.raises(HTTPException, match=r"limit is 1 \(max_files\)"):
        await request.form(max_files=5)
    for kwargs, detail in [
        ({"max_files": 1}, r"Too many files in the form: the limit is 1 \(max_files\)"),
        ({"max_fields": 1}, r"Too many fields in the form: the limit is 1 \(max_fields\)"),
        ({"max_part_size": 4}, r"limit of 4 bytes \(max_part_size\)"),
    ]:
        request = Request(make_scope("multipart/form-data; boundary=x"), receiver(body))
        with pytest.raises(HTTPException, match=detail):
            await request.form(**kwargs)
    request = Request(make_scope("multipart/form-data; boundary=x"), receiver(body))
    form = await request.form(max_files=2, max_fields=2, max_part_size=5)
    assert describe(form) == [
        ("a", ("1", None, 0)),
        ("b", ("2", None, 0)),
        ("c", ""),
        ("d", "12345"),
    ]
    await request.close()


def test_route_limits_apply_to_forms(client_factory: ClientFactory) -> None:
    app = App(max_fields=2)

    @app.post("/strict", limits=Limits(max_fields=1))
    async def strict(request: Request) -> dict[str, int]:
        return {"fields": len(await request.form())}

    @app.post("/loose", limits=Limits(max_fields=3))
    async def loose(request: Request) -> dict[str, int]:
        return {"fields": len(await request.form())}

    with client_factory(app) as client:
        body = b"a=1&b=2&c=3"
        assert client.post("/loose", content=body, headers=URLENCODED).json() == {"fields": 3}
        response = client.post("/strict", content=body, headers=URLENCODED)
        assert response.status_code == 400
        assert (
            response.json()["detail"] == "Too many fields in the form: the limit is 1 (max_fields)"
        )


def test_files_are_closed_when_the_request_ends(client_factory: ClientFactory) -> None:
    app = App()
    seen: list[tuple[str, bool]] = []

    async def report(upload: UploadFile) -> None:
        seen.append(("background", upload.file.closed))

    @app.post("/stream")
    async def stream(request: Request) -> StreamingResponse:
        upload = (await request.form())["f"]
        assert isinstance(upload, UploadFile)

        async def chunks() -> AsyncIterator[bytes]:
            seen.append(("streaming", upload.file.closed))
            yield await upload.read()

        return StreamingResponse(chunks(), background=BackgroundTask(report, upload))

    failed: list[UploadFile] = []

    @app.post("/fail")
    async def fail(request: Request) -> None:
        upload = (await request.form())["f"]
        assert isinstance(upload, UploadFile)
        seen.append(("failing", upload.file.closed))
        failed.append(upload)
        raise HTTPException(418)

    body = multipart(file_part("f", "a.txt", b"payload"))
    with client_factory(app) as client:
        assert client.post("/stream", content=body, headers=MULTIPART).content == b"payload"
        assert client.post("/fail", content=body, headers=MULTIPART).status_code == 418
    assert seen == [("streaming", False), ("background", False), ("failing", False)]
    assert failed[0].file.closed


def test_handlers_with_path_params_close_files_too(client_factory: ClientFactory) -> None:
    app = App()
    uploads: list[UploadFile] = []

    @app.post("/{kind}")
    async def handler(request: Request, kind: str) -> list[str]:
        form = await request.form()
        uploads.extend(v for v in form.values() if isinstance(v, UploadFile))
        return [kind, *form]

    with client_factory(app) as client:
        response = client.post("/k", files={"f": ("a", b"1")}, data={"x": "y"})
    assert response.json() == ["k", "x", "f"]
    assert uploads[0].file.closed


# --- spooling --------------------------------------------------------------------------------


class RecordingFile:
    """A stand-in for tempfile.TemporaryFile that records the thread of every write."""

    instances: list[RecordingFile] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._file = io.BytesIO()
        self.write_threads: list[int] = []
        RecordingFile.instances.append(self)

    def write(self, data: bytes) -> int:
        self.write_threads.append(threading.get_ident())
        return self._file.write(data)

    def writelines(self, lines: Iterable[bytes]) -> None:
        self.write_threads.append(threading.get_ident())
        self._file.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@pytest.fixture
def recording_files(monkeypatch: pytest.MonkeyPatch) -> list[RecordingFile]:
    """Every file that a SpooledTemporaryFile rolls over to, as a RecordingFile."""
    RecordingFile.instances = []
    monkeypatch.setattr(tempfile, "TemporaryFile", RecordingFile)
    return RecordingFile.instances


@pytest.mark.anyio
async def test_large_files_spool_to_disk_in_worker_threads(
    recording_files: list[RecordingFile],
) -> None:
    small, large = b"s" * 1000, bytes(range(256)) * 20_000  # 5 MB
    body = multipart(
        file_part("small", "s"), file_part("large", "l", large), file_part("s2", "s", small)
    )
    limits = Limits(spool_max_size=64 * 1024, max_body_size=None)
    loop_thread = threading.get_ident()
    form = await MultiPartParser(b"x", limits).parse(chunks_of(body, 16 * 1024))
    uploads = [form["small"], form["large"], form["s2"]]
    assert all(isinstance(upload, UploadFile) for upload in uploads)
    assert [u.size for u in uploads] == [0, len(large), len(small)]  # type: ignore[union-attr]
    assert [u._in_memory for u in uploads] == [True, False, True]  # type: ignore[union-attr]
    assert len(recording_files) == 1
    threads = recording_files[0].write_threads
    # NOTE: one write for the rollover, then one call per 256 KiB gathered, not per chunk.
    assert len(large) // _FLUSH_SIZE <= len(threads) <= len(large) // _FLUSH_SIZE + 3
    assert loop_thread not in threads
    large_upload = form["large"]
    assert isinstance(large_upload, UploadFile)
    assert hashlib.sha256(await large_upload.read()).digest() == hashlib.sha256(large).digest()
    await form.close()


@pytest.mark.anyio
async def test_spool_max_size_zero_puts_every_file_on_disk(
    recording_files: list[RecordingFile],
) -> None:
    body = multipart(file_part("a", "a", b"1"), file_part("b", "b"), file_part("c", "c", b"22"))
    form = await MultiPartParser(b"x", Limits(spool_max_size=0)).parse(chunks_of(body, 7))
    assert [u._in_memory for u in form.values()] == [False, True, False]  # type: ignore[union-attr]
    # The two files on disk share one temporary file.
    assert len(recording_files) == 1
    assert threading.get_ident() not in recording_files[0].write_threads
    assert [await u.read() for u in form.values()] == [b"1", b"", b"22"]  # type: ignore[union-attr]
    await form.close()


@pytest.mark.anyio
async def test_the_files_of_a_form_share_a_memory_budget(
    recording_files: list[RecordingFile],
) -> None:
    # 20 files of 900 bytes, each under spool_max_size, but 8 x 1000 bytes in memory at most.
    files = [file_part(f"f{i}", f"{i}.txt", b"%03d" % i * 300) for i in range(20)]
    limits = Limits(spool_max_size=1000)
    form = await MultiPartParser(b"x", limits).parse(chunks_of(multipart(*files), 4096))
    uploads = [u for u in form.values() if isinstance(u, UploadFile)]
    assert [u._in_memory for u in uploads] == [True] * 8 + [False] * 12
    # The twelve files on disk share one temporary file, so one descriptor.
    assert len(recording_files) == 1
    for i, upload in enumerate(uploads):
        assert await upload.read() == b"%03d" % i * 300
    await form.close()


def test_limits_refuse_an_unbounded_spool() -> None:
    with pytest.raises(ValueError, match="spool_max_size cannot be None"):
        Limits(spool_max_size=None)
    assert Limits(spool_max_size=0).spool_max_size == 0
    with pytest.raises(ValueError, match="spool_max_size cannot be None"):
        Limits().merged(Limits(spool_max_size=None))


@pytest.mark.parametrize("value", [True, False, float("nan"), -1, "10"])
def test_limits_refuse_values_that_are_not_sizes(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a non-negative number or None"):
        Limits(max_part_size=value)


async def spooled_form(*contents: bytes) -> FormData:
    """A form of one file per content, every one of them on disk (spool_max_size=0)."""
    files = [file_part(f"f{i}", f"{i}.bin", data) for i, data in enumerate(contents)]
    limits = Limits(spool_max_size=0, max_body_size=None)
    return await MultiPartParser(b"x", limits).parse(chunks_of(multipart(*files), 1000))


def uploads_of(form: FormData) -> list[UploadFile]:
    return [value for _, value in form.multi_items() if isinstance(value, UploadFile)]


@pytest.mark.anyio
async def test_files_on_disk_share_one_temporary_file_and_keep_their_own_data(
    recording_files: list[RecordingFile],
) -> None:
    contents = [bytes([65 + i]) * (i * 37 + 1) for i in range(50)]
    form = await spooled_form(*contents)
    uploads = uploads_of(form)
    assert not any(upload._in_memory for upload in uploads)
    assert len(recording_files) == 1
    # Read out of order, in part, and again after a seek.
    for index in (49, 0, 25, 1):
        upload = uploads[index]
        assert upload.size == len(contents[index])
        assert await upload.read(3) == contents[index][:3]
        await upload.seek(0)
        assert await upload.read() == contents[index]
        assert await upload.read() == b""
    await form.close()
    assert all(upload.file.closed for upload in uploads)


@pytest.mark.anyio
async def test_concurrent_reads_of_files_sharing_a_spool() -> None:
    contents = [bytes(range(256)) * 400 * (i + 1) for i in range(6)]
    form = await spooled_form(*contents)
    uploads = uploads_of(form)
    results: dict[int, bytes] = {}

    async def read_all(index: int) -> None:
        pieces = []
        while piece := await uploads[index].read(1000):
            pieces.append(piece)
        results[index] = b"".join(pieces)

    async with anyio.create_task_group() as group:
        for index in range(len(uploads)):
            group.start_soon(read_all, index)
    assert [results[index] for index in range(len(uploads))] == contents
    await form.close()


@pytest.mark.anyio
async def test_writing_to_a_file_on_disk_never_touches_the_next_one() -> None:
    form = await spooled_form(b"first", b"second", b"third")
    first, second, third = uploads_of(form)
    await first.seek(5)
    await first.write(b" grown past its region")
    await first.seek(0)
    await first.write(b"FIRST")
    await third.seek(0)
    await third.write(b"THIRD and more")
    for upload, expected in (
        (first, b"FIRST grown past its region"),
        (second, b"second"),
        (third, b"THIRD and more"),
    ):
        await upload.seek(0)
        assert await upload.read() == expected
    await form.close()


@pytest.mark.anyio
async def test_a_file_on_disk_works_as_a_file_object() -> None:
    form = await spooled_form(b"line one\nline two\nlast", b"next")
    upload = uploads_of(form)[0]
    file: Any = upload.file
    assert file.readable() and file.writable() and file.seekable()
    assert file.mode == "rb+"
    assert file.name is not None
    assert file.tell() == 0
    assert file.readline() == b"line one\n"
    assert file.readline(4) == b"line"
    assert file.readline() == b" two\n"
    assert file.readline() == b"last"
    assert file.readline() == b""
    file.seek(0)
    assert list(file) == [b"line one\n", b"line two\n", b"last"]
    assert file.seek(-4, io.SEEK_END) == 18
    buffer = bytearray(10)
    assert file.readinto(buffer) == 4
    assert bytes(buffer[:4]) == b"last"
    assert file.seek(-8, io.SEEK_CUR) == 14
    assert file.read1(3) == b"two"
    with pytest.raises(ValueError, match="negative seek position"):
        file.seek(-1)
    with pytest.raises(ValueError, match="invalid whence"):
        file.seek(0, 3)
    # A region of the shared spool has no descriptor; fileno() of the upload makes one.
    with pytest.raises(io.UnsupportedOperation, match="read it with read"):
        file._file.fileno()
    file.seek(0)
    file.writelines([b"LINE", memoryview(b" ONE")])
    assert file.truncate() == 8
    file.seek(0)
    assert file.read() == b"LINE ONE"
    assert file.truncate(12) == 12
    file.seek(0)
    assert file.read() == b"LINE ONE\0\0\0\0"
    with pytest.raises(ValueError, match="negative size"):
        file.truncate(-1)
    # The next file is intact after all that.
    assert await uploads_of(form)[1].read() == b"next"
    await form.close()
    with pytest.raises(ValueError, match="closed file"):
        file.read()


@pytest.mark.anyio
async def test_the_shared_file_closes_with_the_last_file_on_disk_and_reopens(
    recording_files: list[RecordingFile],
) -> None:
    files = [file_part("a", "a", b"A" * 100), file_part("b", "b", b"B" * 100)]
    limits = Limits(spool_max_size=150, max_body_size=None)
    form = await MultiPartParser(b"x", limits).parse(chunks_of(multipart(*files), 1000))
    first, second = uploads_of(form)
    assert first._in_memory and second._in_memory
    assert recording_files == []
    await first.seek(100)
    await first.write(b"a" * 100)  # past spool_max_size: it rolls over
    assert not first._in_memory
    assert len(recording_files) == 1
    await first.close()
    assert recording_files[0].closed
    await second.seek(100)
    await second.write(b"b" * 100)
    assert len(recording_files) == 2
    await second.seek(0)
    assert await second.read() == b"B" * 100 + b"b" * 100
    await form.close()
    assert recording_files[1].closed


@pytest.mark.anyio
async def test_a_form_of_a_thousand_files_holds_at_most_one_descriptor() -> None:
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("no way to count open descriptors here")
    # The default limits: 8 files of 1 MiB spend the memory budget, 992 tiny files follow.
    files = [file_part(f"big{i}", "b", b"a" * MiB) for i in range(8)]
    files += [file_part("s", "s", b"x") for _ in range(992)]
    before = len(os.listdir(fd_dir))
    form = await MultiPartParser(b"x", Limits()).parse(chunks_of(multipart(*files), 65536))
    uploads = uploads_of(form)
    assert len(uploads) == 1000
    assert sum(not upload._in_memory for upload in uploads) == 992
    assert len(os.listdir(fd_dir)) - before <= 1
    assert await uploads[-1].read() == b"x"
    await form.close()
    assert len(os.listdir(fd_dir)) == before


# --- regions of the shared spool behave as files of their own ------------------------------


def test_a_write_past_the_end_of_a_region_leaves_zeros_not_old_bytes() -> None:
    spool = SharedSpool()
    tail = SpoolRegion(spool)
    tail.write(b"abcdef")
    tail.truncate(2)
    tail.seek(5)
    tail.write(b"X")
    tail.seek(0)
    assert tail.read() == b"ab\0\0\0X"
    # An empty write past the end does not grow the file, as in a real file.
    tail.seek(20)
    assert tail.write(b"") == 0
    tail.writelines([])
    assert tail.seek(0, io.SEEK_END) == 6
    # A region that is not the last one moves to the end to grow, with zeros in the gap too.
    middle = tail
    last = SpoolRegion(spool)
    last.write(b"zzzzzzzz")
    middle.truncate(1)
    middle.seek(4)
    middle.write(b"Y")
    middle.seek(0)
    assert middle.read() == b"a\0\0\0Y"
    middle.truncate(0)
    assert middle.truncate(3) == 3
    middle.seek(0)
    assert middle.read() == b"\0\0\0"
    last.seek(0)
    assert last.read() == b"zzzzzzzz"
    middle.close()
    last.close()


def test_closing_the_last_region_gives_its_disk_space_back() -> None:
    spool = SharedSpool()
    first = SpoolRegion(spool)
    first.write(b"1" * 100)
    second = SpoolRegion(spool)
    second.write(b"2" * 50)
    assert spool.end == 150
    second.close()
    assert spool.end == 100
    third = SpoolRegion(spool)
    assert third.write(b"3" * 10) == 10
    first.seek(0)
    third.seek(0)
    assert (first.read(), third.read()) == (b"1" * 100, b"3" * 10)
    first.close()
    third.close()
    assert spool.name is None


def region_and_real_file(spool: SharedSpool) -> tuple[Any, Any]:
    # NOTE: both are closed by random_file_operations.
    return SpoolRegion(spool), tempfile.TemporaryFile()


def random_file_operations(seed: int, steps: int = 80, files: int = 4) -> None:
    """Run the same random operations on regions of one spool and on real temporary files."""
    rng = random.Random(seed)
    spool = SharedSpool()
    pairs = [region_and_real_file(spool) for _ in range(files)]
    try:
        for step in range(steps):
            index = rng.randrange(files)
            region, real = pairs[index]
            operation = rng.choice("wwwlsseerrtto")
            where = (seed, step, operation)
            if operation == "w":
                data = rng.randbytes(rng.randint(0, 40))
                assert region.write(data) == real.write(data), where
            elif operation == "l":
                lines = [
                    rng.randbytes(rng.randint(0, 10)) + b"\n" for _ in range(rng.randint(0, 3))
                ]
                region.writelines(lines)
                real.writelines(lines)
            elif operation == "s":
                offset = rng.randint(0, 120)
                assert region.seek(offset) == real.seek(offset), where
            elif operation == "e":
                whence = rng.choice((io.SEEK_CUR, io.SEEK_END))
                offset = rng.randint(0, 20)
                assert region.seek(offset, whence) == real.seek(offset, whence), where
            elif operation == "r":
                size = rng.randint(-1, 50)
                assert region.read(size) == real.read(size), where
            elif operation == "t":
                size = rng.choice((None, rng.randint(0, 120)))
                assert region.truncate(size) == real.truncate(size), where
            else:
                # Close one and open another: the spool reuses the space of a closed tail.
                region.close()
                real.close()
                pairs[index] = region_and_real_file(spool)
                region, real = pairs[index]
            assert region.tell() == real.tell(), where
        for region, real in pairs:
            region.seek(0)
            real.seek(0)
            assert region.read() == real.read(), seed
    finally:
        for region, real in pairs:
            region.close()
            real.close()
    assert spool.name is None


def test_regions_of_one_spool_behave_as_real_files_under_random_operations() -> None:
    for seed in range(200):
        random_file_operations(seed)


class GatedLock:
    """A lock whose next acquisition by one chosen thread first waits for the test's signal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gated_thread: int | None = None
        self.waiting = threading.Event()
        self.go = threading.Event()

    def __enter__(self) -> None:
        if threading.get_ident() == self.gated_thread:
            self.gated_thread = None
            self.waiting.set()
            assert self.go.wait(10)
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


class GatedSpool(SharedSpool):
    """A SharedSpool whose lock lets the test decide which thread takes it first."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = GatedLock()
        self._lock = self.gate  # type: ignore[assignment]


def test_a_write_cannot_land_in_a_region_that_moved_to_the_end_meanwhile() -> None:
    spool = GatedSpool()
    moving, tail = SpoolRegion(spool), SpoolRegion(spool)
    moving.write(b"m" * 100)  # moves past tail, to the end
    tail.write(b"t" * 100)  # now tail is the last region, and grows in place
    moving.seek(0, io.SEEK_END)
    tail.seek(0, io.SEEK_END)

    def write_tail() -> None:
        spool.gate.gated_thread = threading.get_ident()
        tail.write(b"T" * 50)

    thread = threading.Thread(target=write_tail)
    thread.start()
    try:
        # The write to tail is about to take the spool's lock: the other region grows first,
        # so it moves to the end, where tail would have grown.
        assert spool.gate.waiting.wait(10)
        moving.write(b"M" * 50)
    finally:
        spool.gate.go.set()
        thread.join(10)
    moving.seek(0)
    tail.seek(0)
    assert moving.read() == b"m" * 100 + b"M" * 50
    assert tail.read() == b"t" * 100 + b"T" * 50
    moving.close()
    tail.close()


# --- fileno() gives an upload a descriptor of its own -----------------------------------------


def open_descriptors() -> int:
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("no way to count open descriptors here")
    return len(os.listdir(fd_dir))


@pytest.mark.anyio
async def test_fileno_gives_an_upload_in_memory_a_file_of_its_own() -> None:
    before = open_descriptors()
    body = multipart(file_part("f", "f.txt", b"hello world"), file_part("g", "g", b"other"))
    form = await MultiPartParser(b"x", Limits()).parse(chunks_of(body, 7))
    upload, other = uploads_of(form)
    assert upload._in_memory and open_descriptors() == before
    await upload.seek(6)
    fd = upload.file.fileno()
    assert upload.file.fileno() == fd
    assert open_descriptors() == before + 1
    assert not upload._in_memory
    assert os.fstat(fd).st_size == 11
    assert os.lseek(fd, 0, os.SEEK_CUR) == 6
    assert os.pread(fd, 100, 0) == b"hello world"
    assert upload.file.tell() == 6
    assert await upload.read() == b"world"
    await upload.write(b"!")
    await upload.seek(0)
    assert await upload.read() == b"hello world!"
    assert other._in_memory and await other.read() == b"other"
    await form.close()
    assert upload.file.closed
    for closed in (upload, other):
        with pytest.raises(ValueError, match="closed file"):
            closed.file.fileno()
    assert open_descriptors() == before


@pytest.mark.anyio
async def test_fileno_moves_an_upload_on_disk_out_of_the_shared_spool() -> None:
    before = open_descriptors()
    contents = [b"first" * 1000, b"second" * 1000, b"third" * 1000]
    form = await spooled_form(*contents)
    uploads = uploads_of(form)
    assert not any(upload._in_memory for upload in uploads)
    assert open_descriptors() == before + 1
    middle = uploads[1]
    assert await middle.read(6) == b"second"
    fd = middle.file.fileno()
    assert middle.file.fileno() == fd
    # Only this upload holds a descriptor of its own; the others still share one.
    assert open_descriptors() == before + 2
    assert os.fstat(fd).st_size == len(contents[1])
    assert os.lseek(fd, 0, os.SEEK_CUR) == 6
    assert os.pread(fd, len(contents[1]) + 1, 0) == contents[1]
    assert await middle.read(6) == b"second"
    await middle.seek(len(contents[1]))
    await middle.write(b"grown")
    for upload, expected in zip(uploads, [contents[0], contents[1] + b"grown", contents[2]]):
        await upload.seek(0)
        assert await upload.read() == expected
    await uploads[0].close()
    await uploads[2].close()
    assert open_descriptors() == before + 1  # the shared file went with its last region
    await middle.seek(0)
    assert await middle.read() == contents[1] + b"grown"
    await form.close()
    assert open_descriptors() == before


COUNT_STDIN = "import sys; sys.stdout.write(str(len(sys.stdin.buffer.read())))"


def test_an_upload_can_be_the_stdin_of_a_subprocess(client_factory: ClientFactory) -> None:
    app = App()

    @app.post("/count")
    async def count(request: Request) -> dict[str, Any]:
        form = await request.form()
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        result = subprocess.run(
            [sys.executable, "-c", COUNT_STDIN], stdin=upload.file, capture_output=True, check=True
        )
        return {"size": int(result.stdout), "rest": len(await upload.read())}

    with client_factory(app) as client:
        for size in (50, 3 * MiB):  # in memory, and on disk
            files = {"f": ("a.bin", b"x" * size), "g": ("b.bin", b"y")}
            assert client.post("/count", files=files).json() == {"size": size, "rest": 0}


# --- failures release what they hold ---------------------------------------------------------


@pytest.fixture
def tracked_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TrackedSpooledFile]]:
    yield from track_spooled_files(monkeypatch)


@pytest.mark.anyio
async def test_a_failed_parse_closes_its_files(tracked_files: list[TrackedSpooledFile]) -> None:
    big = b"z" * (3 * 1024 * 1024)
    body = multipart(file_part("a", "a", big), file_part("b", "b", b"1"), field("c", b"x" * 100))
    request = Request(
        make_scope(
            "multipart/form-data; boundary=x",
            **{"microasgi.limits": Limits(max_part_size=10, max_body_size=None)},
        ),
        receiver(*[body[i : i + 65536] for i in range(0, len(body), 65536)]),
    )
    with pytest.raises(HTTPException, match="max_part_size"):
        await request.form()
    assert len(tracked_files) == 2
    assert tracked_files[0]._rolled  # type: ignore[attr-defined]
    assert FORM_KEY not in request.scope


@pytest.mark.anyio
async def test_a_client_disconnect_mid_upload_closes_the_files(
    tracked_files: list[TrackedSpooledFile],
) -> None:
    chunks = [
        b"--x\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n",
        b"x" * 2_000_000,
    ]

    async def receive() -> Message:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
        return {"type": "http.disconnect"}

    request = Request(
        make_scope(
            "multipart/form-data; boundary=x", **{"microasgi.limits": Limits(max_body_size=None)}
        ),
        receive,
    )
    with pytest.raises(ClientDisconnect):
        await request.form()
    assert len(tracked_files) == 1


@pytest.mark.anyio
async def test_a_cancelled_parse_closes_the_files(tracked_files: list[TrackedSpooledFile]) -> None:
    first = b"--x\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n" + b"x" * 3_000_000
    sent = False
    stalled = anyio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": True}
        stalled.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    request = Request(
        make_scope(
            "multipart/form-data; boundary=x", **{"microasgi.limits": Limits(max_body_size=None)}
        ),
        receive,
    )

    async def load() -> None:
        await request.form()

    async with anyio.create_task_group() as group:
        group.start_soon(load)
        await stalled.wait()
        group.cancel_scope.cancel()
    assert len(tracked_files) == 1
    assert tracked_files[0]._rolled  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_parse_form_closes_the_stream_it_stops_reading() -> None:
    closed = []

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"a=1&b=2&c=3"
            yield b"never read"
        finally:
            closed.append(True)

    headers = Headers({"content-type": "application/x-www-form-urlencoded"})
    with pytest.raises(HTTPException, match="max_fields"):
        await parse_form(headers, stream(), Limits(max_fields=2))
    assert closed == [True]


@pytest.mark.anyio
async def test_parse_form_takes_any_async_iterator() -> None:
    class Chunks:
        def __init__(self) -> None:
            self.items = [b"a=1", b"&b=2"]

        def __aiter__(self) -> Chunks:
            return self

        async def __anext__(self) -> bytes:
            if not self.items:
                raise StopAsyncIteration
            return self.items.pop(0)

    headers = Headers({"content-type": "application/x-www-form-urlencoded"})
    form = await parse_form(headers, Chunks(), Limits())
    assert form.multi_items() == [("a", "1"), ("b", "2")]


# --- examples/upload.py ----------------------------------------------------------------------


def test_the_upload_example(client_factory: ClientFactory) -> None:
    from examples.upload import app

    data = bytes(range(256)) * 8000  # 2 MB: spooled to disk on the way
    with client_factory(app) as client:
        page = client.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert "xhr.upload.onprogress" in page.text
        assert client.get("/ping").text == "pong"
        response = client.post("/upload", files={"file": ("../photo.jpg", data, "image/jpeg")})
        assert response.json() == {
            "filename": "photo.jpg",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        missing = client.post("/upload", data={"other": "x"})
        assert missing.status_code == 400
        assert missing.json() == {"detail": 'Send the file in a form field named "file"'}
        two = client.post("/upload", files=[("file", ("a", b"1")), ("file", ("b", b"2"))])
        assert two.json() == {"detail": "Too many files in the form: the limit is 1 (max_files)"}
