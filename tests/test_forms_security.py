"""Hostile form bodies: probes 1-12 and 20-22 of SECURITY.md, each with variations.

Where a probe is about cost (linear time, bounded memory), the tests check what can be
checked deterministically: how much of the body was read before the answer, how much
memory the parse allocated, how many files were left open. The few time bounds are
complexity guards, generous enough that only a quadratic path would cross them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import pytest

from microasgi.app import App
from microasgi.datastructures import UploadFile
from microasgi.exceptions import HTTPException
from microasgi.formparsers import FormParser, parse_options_header
from microasgi.limits import Limits
from microasgi.requests import Request
from microasgi.testing import AsyncTestClient, TestClient
from microasgi.types import Message
from tests.support import TrackedSpooledFile, track_spooled_files
from tests.test_formparsers import field, file_part, make_scope, multipart, part

ClientFactory = Callable[..., TestClient]
MiB = 1024 * 1024
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}
MULTIPART = {"content-type": "multipart/form-data; boundary=x"}
# NOTE: complexity guards, not benchmarks: each input below takes milliseconds on a linear
# path and minutes on a quadratic one.
LINEAR_BOUND_SECONDS = 5.0


class CountingBody:
    """A request body produced on the fly that counts how much the server pulled."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = pieces
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces:
            self.pulled += len(piece)
            yield piece


def repeated(
    head: bytes, unit: bytes, count: int, tail: bytes, batch: int = 1000
) -> Iterator[bytes]:
    """`head`, then `unit` `count` times in batches, then `tail`."""
    yield head
    for start in range(0, count, batch):
        yield unit * min(batch, count - start)
    yield tail


def form_app(**route_limits: Any) -> tuple[App, list[UploadFile]]:
    """POST / answers the fields and (filename, size) of files; uploads are kept."""
    app = App()
    uploads: list[UploadFile] = []
    limits = Limits(**route_limits) if route_limits else None

    @app.post("/", limits=limits)
    async def handler(request: Request) -> dict[str, Any]:
        form = await request.form()
        result: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append(value)
                result.setdefault(key, []).append([value.filename, value.size])
            else:
                result.setdefault(key, []).append(value)
        return result

    return app, uploads


@pytest.fixture
def spooled_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TrackedSpooledFile]]:
    """Every upload file created during the test; all must be closed at its end."""
    yield from track_spooled_files(monkeypatch)


def post(client: TestClient, body: Any, headers: dict[str, str] = MULTIPART) -> Any:
    return client.post("/", content=body, headers=headers)


# --- 1. multipart with 10,000 empty fields -----------------------------------------------------


class TestProbe01FieldFlood:
    def test_ten_thousand_empty_fields_stop_at_max_fields(
        self, client_factory: ClientFactory
    ) -> None:
        app, _ = form_app(max_body_size=None)
        unit = field("a")
        body = CountingBody(repeated(b"", unit, 10_000, b"--x--\r\n"))
        with client_factory(app) as client:
            response = post(client, body)
        assert response.status_code == 400
        assert response.json() == {
            "detail": "Too many fields in the form: the limit is 1000 (max_fields)"
        }
        # Reading stopped at the 1001st field, not at the end of the body.
        assert body.pulled < 10_000 * len(unit) / 4

    def test_the_limit_is_exact_and_counts_fields_and_files_apart(
        self, client_factory: ClientFactory
    ) -> None:
        app, uploads = form_app(max_fields=3, max_files=2)
        at_limit = multipart(
            field("a"), file_part("f", "1"), field("b"), file_part("g", "2"), field("c")
        )
        with client_factory(app) as client:
            assert post(client, at_limit).json() == {
                "a": [""],
                "f": [["1", 0]],
                "b": [""],
                "g": [["2", 0]],
                "c": [""],
            }
            over = multipart(field("a"), field("b"), field("c"), field("d"))
            assert post(client, over).json()["detail"].endswith("limit is 3 (max_fields)")
        assert all(upload.file.closed for upload in uploads)

    @pytest.mark.parametrize("unit", [b"a=&", b"a&", b"=&", b"&a"])
    def test_urlencoded_floods_meet_the_same_limit(
        self, client_factory: ClientFactory, unit: bytes
    ) -> None:
        app, _ = form_app()
        with client_factory(app) as client:
            response = post(client, unit * 10_000, URLENCODED)
        assert response.status_code == 400
        assert response.json()["detail"].endswith("limit is 1000 (max_fields)")

    def test_fields_without_names_or_values_still_count(
        self, client_factory: ClientFactory
    ) -> None:
        app, _ = form_app(max_fields=2)
        nameless = part('Content-Disposition: form-data; name=""')
        with client_factory(app) as client:
            assert post(client, multipart(nameless, nameless)).json() == {"": ["", ""]}
            response = post(client, multipart(nameless, nameless, nameless))
        assert response.json()["detail"].endswith("limit is 2 (max_fields)")


# --- 2. multipart with 10,000 empty file parts -------------------------------------------------


class TestProbe02FileFlood:
    def test_ten_thousand_empty_files_stop_at_max_files(
        self, client_factory: ClientFactory, spooled_files: list[TrackedSpooledFile]
    ) -> None:
        app, uploads = form_app(max_body_size=None)
        unit = file_part("f", "a.txt")
        body = CountingBody(repeated(b"", unit, 10_000, b"--x--\r\n"))
        with client_factory(app) as client:
            response = post(client, body)
        assert response.status_code == 400
        assert response.json() == {
            "detail": "Too many files in the form: the limit is 1000 (max_files)"
        }
        assert body.pulled < 10_000 * len(unit) / 4
        assert len(spooled_files) == 1000  # the 1001st is refused before it is created
        assert uploads == []

    @pytest.mark.parametrize("filename", ["", "..", "a.txt"])
    def test_every_file_part_counts(
        self,
        client_factory: ClientFactory,
        spooled_files: list[TrackedSpooledFile],
        filename: str,
    ) -> None:
        app, _ = form_app(max_files=3)
        body = multipart(*[file_part("f", filename, b"data")] * 4)
        with client_factory(app) as client:
            response = post(client, body)
        assert response.json()["detail"].endswith("limit is 3 (max_files)")
        assert len(spooled_files) == 3

    def test_a_handler_can_only_lower_max_files(self, client_factory: ClientFactory) -> None:
        app = App(max_files=2)

        @app.post("/")
        async def handler(request: Request) -> dict[str, int]:
            return {"files": len((await request.form(max_files=10_000)).getlist("f"))}

        with client_factory(app) as client:
            response = post(client, multipart(*[file_part("f", "a")] * 3))
        assert response.json()["detail"].endswith("limit is 2 (max_files)")


# --- 3. one non-file field of 100 MiB ----------------------------------------------------------


class TestProbe03HugeField:
    def test_a_100_mib_field_is_refused_after_max_part_size(
        self, client_factory: ClientFactory
    ) -> None:
        app, _ = form_app(max_body_size=None)
        head = b'--x\r\nContent-Disposition: form-data; name="big"\r\n\r\n'
        body = CountingBody(repeated(head, os.urandom(64 * 1024), 1600, b"\r\n--x--\r\n", batch=1))
        tracemalloc.start()
        try:
            with client_factory(app) as client:
                response = post(client, body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 413
        assert response.json() == {
            "detail": "A form field exceeds the limit of 1048576 bytes (max_part_size); "
            "send it as a file"
        }
        assert body.pulled < 2 * MiB
        assert peak < 8 * MiB

    def test_the_same_for_urlencoded_values_and_names(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_body_size=None, max_part_size=1000)
        with client_factory(app) as client:
            for body in (b"a=" + b"v" * 1001, b"n" * 1001 + b"=v", b"x=1&" + b"%41" * 334):
                response = post(client, body, URLENCODED)
                assert response.status_code == 413
                assert "limit of 1000 bytes (max_part_size)" in response.json()["detail"]
            ok = post(client, b"a=" + b"v" * 1000 + b"&" + b"n" * 1000, URLENCODED)
            assert ok.json() == {"a": ["v" * 1000], "n" * 1000: [""]}

    def test_files_are_not_bound_by_max_part_size(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_part_size=10)
        body = multipart(file_part("f", "big.bin", b"x" * 100_000), field("small", b"0123456789"))
        with client_factory(app) as client:
            assert post(client, body).json() == {
                "f": [["big.bin", 100_000]],
                "small": ["0123456789"],
            }

    def test_a_huge_part_name_hits_the_header_limit(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_body_size=None)
        body = multipart(part(f'Content-Disposition: form-data; name="{"n" * 100_000}"'))
        with client_factory(app) as client:
            response = post(client, body)
        assert response.status_code == 400
        assert response.json()["detail"].endswith("(max_part_header_size)")


# --- 4. 1 GiB upload: spooled off the loop, /ping keeps answering -----------------------------
# The real thing (a socket, uvicorn, peak RSS) is tests/integration/test_uploads.py; here the
# same path in process, smaller, with what can be checked deterministically.


_REAL_TEMPORARY_FILE = tempfile.TemporaryFile


class RecordingFile:
    """tempfile.TemporaryFile's stand-in: a real temporary file that records writer threads."""

    writer_threads: set[int] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._file = _REAL_TEMPORARY_FILE(*args, **kwargs)

    def write(self, data: bytes) -> int:
        RecordingFile.writer_threads.add(threading.get_ident())
        return int(self._file.write(data))

    def writelines(self, lines: Iterable[bytes]) -> None:
        RecordingFile.writer_threads.add(threading.get_ident())
        self._file.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class TestProbe04LargeUpload:
    @pytest.mark.anyio
    async def test_a_large_upload_spools_off_the_loop_while_pings_are_answered(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        size = 48 * MiB
        block = os.urandom(MiB)
        app = App()
        loop_threads: set[int] = set()
        uploaded: dict[str, Any] = {}

        @app.get("/ping")
        async def ping(request: Request) -> str:
            return "pong"

        @app.post("/upload", limits=Limits(max_body_size=None))
        async def upload(request: Request) -> dict[str, Any]:
            loop_threads.add(threading.get_ident())
            async with request.form() as form:
                file = form["file"]
                assert isinstance(file, UploadFile)
                uploaded["in_memory"] = file._in_memory
                digest = hashlib.sha256()
                while chunk := await file.read(MiB):
                    digest.update(chunk)
                return {"size": file.size, "sha256": digest.hexdigest()}

        RecordingFile.writer_threads = set()
        monkeypatch.setattr(tempfile, "TemporaryFile", RecordingFile)

        expected = hashlib.sha256()
        for _ in range(size // MiB):
            expected.update(block)
        done = anyio.Event()
        pings_during_upload = 0

        async def body() -> AsyncIterator[bytes]:
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
            for _ in range(size // MiB):
                for start in range(0, MiB, 64 * 1024):
                    yield block[start : start + 64 * 1024]
            yield b"\r\n--x--\r\n"

        async with AsyncTestClient(app) as client:

            async def pinger() -> None:
                nonlocal pings_during_upload
                while not done.is_set():
                    assert (await client.get("/ping")).text == "pong"
                    if not done.is_set():
                        pings_during_upload += 1
                    # NOTE: a ping answered in process never suspends: without a pause this
                    # loop would be the one starving the upload.
                    await anyio.sleep(0.005)

            tracemalloc.start()
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(pinger)
                    response = await client.post("/upload", content=body(), headers=MULTIPART)
                    done.set()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()

        assert response.json() == {"size": size, "sha256": expected.hexdigest()}
        assert uploaded["in_memory"] is False
        assert RecordingFile.writer_threads
        assert not RecordingFile.writer_threads & loop_threads
        assert pings_during_upload >= 3
        assert peak < 16 * MiB


# --- 5. Content-Type options built to backtrack ----------------------------------------------


class TestProbe05OptionsBacktracking:
    @pytest.mark.parametrize("count", [10_000, 100_000])
    def test_the_probe_header_is_a_400_in_linear_time(
        self, client_factory: ClientFactory, count: int
    ) -> None:
        app, _ = form_app()
        content_type = 'multipart/form-data; boundary=x; !="' + "\\" * count
        with client_factory(app) as client:
            started = time.perf_counter()
            response = post(client, multipart(field("a")), {"content-type": content_type})
            elapsed = time.perf_counter() - started
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Malformed Content-Type header: unexpected")
        assert elapsed < LINEAR_BOUND_SECONDS

    @pytest.mark.parametrize(
        "value",
        [
            'a/b; x="' + "\\" * 1_000_000,
            'a/b; x="' + "\\" * 999_999 + '"',
            'a/b; x="' + '\\"' * 500_000,
            "a/b" + ";" * 1_000_000,
            'a/b; x="' + ";" * 1_000_000,
            "a/b; " + "".join(f"x{i}=y; " for i in range(200_000)),
            "a/b; x=" + '"' * 1_000_000,
            "a/b; " + " " * 1_000_000 + "=",
            'a/b; x="' + "\\a" * 500_000,
        ],
    )
    def test_parse_options_header_is_linear(self, value: str) -> None:
        started = time.perf_counter()
        try:
            parse_options_header(value)
        except ValueError:
            pass
        assert time.perf_counter() - started < LINEAR_BOUND_SECONDS

    def test_a_hostile_content_disposition_is_a_400(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        disposition = 'Content-Disposition: form-data; name="a"; filename="' + "\\" * 8000
        with client_factory(app) as client:
            response = post(client, multipart(part(disposition)))
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Malformed multipart Content-Disposition")

    def test_escapes_in_a_boundary_are_honoured(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        body = multipart(field("a", b"1")).replace(b"--x", b'--q"b')
        with client_factory(app) as client:
            response = post(client, body, {"content-type": 'multipart/form-data; boundary="q\\"b"'})
        assert response.json() == {"a": ["1"]}


# --- 6. 10 MiB of CRLF before and after ----------------------------------------------------


class TestProbe06PreambleAndEpilogue:
    @pytest.mark.parametrize("blank", [b"\r\n", b"\n", b"\r"])
    def test_blank_preamble_and_epilogue_are_skipped_in_linear_time(
        self, client_factory: ClientFactory, blank: bytes
    ) -> None:
        app, _ = form_app(max_body_size=32 * MiB)
        padding = blank * (10 * MiB // len(blank))
        body = padding + multipart(field("a", b"1"), file_part("f", "f.txt", b"data")) + padding
        with client_factory(app) as client:
            started = time.perf_counter()
            response = post(client, body)
            elapsed = time.perf_counter() - started
        assert response.json() == {"a": ["1"], "f": [["f.txt", 4]]}
        assert elapsed < LINEAR_BOUND_SECONDS

    def test_the_epilogue_is_discarded_whatever_it_holds(
        self, client_factory: ClientFactory
    ) -> None:
        app, _ = form_app()
        epilogue = field("smuggled", b"x") + b"--x--\r\n" + os.urandom(100_000)
        with client_factory(app) as client:
            assert post(client, multipart(field("a")) + epilogue).json() == {"a": [""]}

    def test_a_preamble_that_is_not_blank_is_a_400(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        with client_factory(app) as client:
            response = post(client, b"This is a preamble.\r\n" + multipart(field("a")))
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Malformed multipart body")

    def test_a_body_of_blank_lines_only_is_a_400(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_body_size=None)
        with client_factory(app) as client:
            response = post(client, b"\r\n" * (5 * MiB))
        assert response.status_code == 400
        assert response.json()["detail"] == (
            "Malformed multipart body: it ends before the closing boundary"
        )


# --- 7. part headers: 100,000 lines, or one of 10 MiB ----------------------------------------


class TestProbe07PartHeaders:
    def test_one_hundred_thousand_header_lines(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_body_size=None)
        head = b'--x\r\nContent-Disposition: form-data; name="a"\r\n'
        body = CountingBody(repeated(head, b"X-Filler: 1\r\n", 100_000, b"\r\nv\r\n--x--\r\n"))
        with client_factory(app) as client:
            response = post(client, body)
        assert response.status_code == 400
        assert response.json() == {
            "detail": "A multipart part header exceeds the limit of 32 (max_part_headers)"
        }
        assert body.pulled < 200_000

    @pytest.mark.parametrize("where", ["value", "name"])
    def test_one_header_of_ten_mib(self, client_factory: ClientFactory, where: str) -> None:
        app, _ = form_app(max_body_size=None)
        head = b'--x\r\nContent-Disposition: form-data; name="a"\r\n'
        head += b"X-Big: " if where == "value" else b""
        body = CountingBody(repeated(head, b"h", 10 * MiB, b"\r\n\r\nv\r\n--x--\r\n", batch=65536))
        with client_factory(app) as client:
            response = post(client, body)
        assert response.status_code == 400
        assert response.json() == {
            "detail": "A multipart part header exceeds the limit of 8192 (max_part_header_size)"
        }
        assert body.pulled < MiB

    def test_the_limits_are_exact_and_configurable(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_part_headers=3, max_part_header_size=100)
        disposition = 'Content-Disposition: form-data; name="a"'
        # A header line counts its name, the colon, the spaces and the value.
        longest = "X-L: " + "v" * (100 - len("X-L: "))
        with client_factory(app) as client:
            ok = multipart(part(f"{disposition}\r\nX-A: 1\r\n{longest}", b"1"))
            assert post(client, ok).json() == {"a": ["1"]}
            for headers, limit in [
                (f"{disposition}\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3", "3 (max_part_headers)"),
                (f"{disposition}\r\n{longest}v", "100 (max_part_header_size)"),
            ]:
                response = post(client, multipart(part(headers, b"1")))
                assert response.json()["detail"].endswith(limit)

    def test_the_header_count_restarts_with_each_part(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_part_headers=2)
        headers = 'Content-Disposition: form-data; name="a"\r\nX-A: 1'
        with client_factory(app) as client:
            response = post(client, multipart(*[part(headers, b"1")] * 50))
        assert response.json() == {"a": ["1"] * 50}


# --- 8. a boundary of 10 KiB -----------------------------------------------------------------


class TestProbe08BoundaryLength:
    @pytest.mark.parametrize("length", [257, 1024, 10 * 1024])
    def test_long_boundaries_are_a_400(self, client_factory: ClientFactory, length: int) -> None:
        app, _ = form_app()
        boundary = "b" * length
        body = multipart(field("a")).replace(b"--x", b"--" + boundary.encode())
        with client_factory(app) as client:
            response = post(
                client, body, {"content-type": f"multipart/form-data; boundary={boundary}"}
            )
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"Malformed multipart Content-Type: the boundary is {length} characters long, "
            "the limit is 256"
        )

    @pytest.mark.parametrize("length", [1, 70, 256])
    def test_boundaries_up_to_256_are_accepted(
        self, client_factory: ClientFactory, length: int
    ) -> None:
        app, _ = form_app()
        boundary = "-" * length
        body = multipart(field("a", b"1")).replace(b"--x", b"--" + boundary.encode())
        with client_factory(app) as client:
            response = post(
                client, body, {"content-type": f"multipart/form-data; boundary={boundary}"}
            )
        assert response.json() == {"a": ["1"]}


# --- 9. urlencoded "a;a;a;..." and ";" as data ----------------------------------------------


class TestProbe09Semicolons:
    def test_a_mib_of_semicolons_is_one_field_parsed_in_linear_time(
        self, client_factory: ClientFactory
    ) -> None:
        app, _ = form_app()
        name = b"a;" * (512 * 1024 - 1) + b"a"
        with client_factory(app) as client:
            started = time.perf_counter()
            response = post(client, name, URLENCODED)
            elapsed = time.perf_counter() - started
        assert response.json() == {name.decode(): [""]}
        assert elapsed < LINEAR_BOUND_SECONDS

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b"role=user&x=;role=admin", {"role": ["user"], "x": [";role=admin"]}),
            (b"role=user;role=admin", {"role": ["user;role=admin"]}),
            (b"a=1;b=2&c=3", {"a": ["1;b=2"], "c": ["3"]}),
            (b";=;", {";": [";"]}),
            (b"x=%3Brole%3Dadmin", {"x": [";role=admin"]}),
        ],
    )
    def test_semicolons_are_data(
        self, client_factory: ClientFactory, body: bytes, expected: dict[str, list[str]]
    ) -> None:
        app, _ = form_app()
        with client_factory(app) as client:
            assert post(client, body, URLENCODED).json() == expected

    def test_semicolons_in_a_multipart_value_are_data(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        with client_factory(app) as client:
            response = post(client, multipart(field("role", b"user"), field("x", b";role=admin")))
        assert response.json() == {"role": ["user"], "x": [";role=admin"]}


# --- 10. urlencoded with 100k fields, or a 10 MiB value ---------------------------------------


class TestProbe10UrlencodedLimits:
    def test_one_hundred_thousand_fields(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        body = CountingBody(repeated(b"", b"f=v&", 100_000, b"", batch=5000))
        with client_factory(app) as client:
            response = post(client, body, URLENCODED)
        assert response.status_code == 400
        assert response.json()["detail"].endswith("limit is 1000 (max_fields)")
        assert body.pulled < 100_000

    def test_a_ten_mib_value(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_body_size=None)
        body = CountingBody(repeated(b"a=", b"v" * 65536, 160, b"", batch=1))
        with client_factory(app) as client:
            response = post(client, body, URLENCODED)
        assert response.status_code == 413
        assert response.json()["detail"].startswith("A form field exceeds the limit of 1048576")
        assert body.pulled < 2 * MiB

    def test_a_ten_mib_body_meets_the_body_limit_first(self, client_factory: ClientFactory) -> None:
        app, _ = form_app(max_part_size=None)
        with client_factory(app) as client:
            response = post(client, b"a=" + b"v" * (10 * MiB), URLENCODED)
        assert response.status_code == 413
        assert response.json()["detail"] == "Request body exceeds the limit of 10485760 bytes"

    @pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
    def test_both_encodings_share_the_route_limits(
        self, client_factory: ClientFactory, encoding: str
    ) -> None:
        app, _ = form_app(max_fields=2, max_part_size=3)
        if encoding == "urlencoded":
            ok, too_big, too_many = b"a=123&b=1", b"a=123&b=1234", b"a=1&b=2&c=3"
            headers = URLENCODED
        else:
            ok = multipart(field("a", b"123"), field("b", b"1"))
            too_big = multipart(field("a", b"123"), field("b", b"1234"))
            too_many = multipart(field("a", b"1"), field("b", b"2"), field("c", b"3"))
            headers = MULTIPART
        with client_factory(app) as client:
            assert post(client, ok, headers).json() == {"a": ["123"], "b": ["1"]}
            assert post(client, too_big, headers).status_code == 413
            assert post(client, too_many, headers).status_code == 400


async def parse_peak(body: bytes, limits: Limits) -> tuple[list[tuple[str, Any]], int]:
    """Parse an urlencoded body fed in 64 KiB messages; the form and the peak allocated."""

    async def messages() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    stream = messages()
    tracemalloc.start()
    try:
        form = await FormParser(limits).parse(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return form.multi_items(), peak


class TestProbe10PercentEscapes:
    """Bodies of "%": the standard decoder made an object per "%" and held ~185 bytes each."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("unit", [b"%", b"%4", b"%41", b"%41x", b"%%41", b"%e9", b"+%"])
    async def test_a_mib_field_of_escapes_costs_its_own_size(self, unit: bytes) -> None:
        count = (MiB - 8) // len(unit)
        form, peak = await parse_peak(b"a=" + unit * count, Limits())
        # NOTE: no escape spans two units, so each decodes alone (and cheaply, here).
        decoded = unquote_to_bytes(unit.replace(b"+", b" ")) * count
        assert form == [("a", decoded.decode("utf-8", "replace"))]
        # NOTE: the decoded bytes and the str made of them, and a few slices of the body.
        assert peak < 3 * len(decoded) + MiB

    @pytest.mark.anyio
    async def test_nine_fields_of_a_mib_of_percent_signs(self) -> None:
        body = b"&".join([b"%" * (MiB - 16)] * 9)
        form, peak = await parse_peak(body, Limits(max_body_size=None))
        assert [len(name) + len(value) for name, value in form] == [MiB - 16] * 9
        assert peak < 12 * MiB

    @pytest.mark.anyio
    @pytest.mark.parametrize("unit", [b"%", b"%41"])
    async def test_a_lifted_part_limit_decodes_long_values_as_they_arrive(
        self, unit: bytes
    ) -> None:
        count = 3 * MiB // len(unit)
        limits = Limits(max_part_size=None, max_body_size=None)
        form, peak = await parse_peak(b"a=" + unit * count, limits)
        decoded = unquote_to_bytes(unit) * count
        assert form == [("a", decoded.decode())]
        # NOTE: the raw value is never held whole next to the decoded one.
        assert peak < 3 * len(decoded) + MiB

    def test_through_the_client(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        body = b"a=" + b"%" * (MiB - 8) + b"&b=%41%zz%&" + b"%41" * 1000 + b"=%"
        with client_factory(app) as client:
            response = post(client, body, URLENCODED)
        assert response.json() == {"a": ["%" * (MiB - 8)], "b": ["A%zz%"], "A" * 1000: ["%"]}


# --- 11. extended parameters in Content-Disposition -----------------------------------------


class TestProbe11ExtendedParameters:
    def test_the_probe(self, client_factory: ClientFactory) -> None:
        app, _ = form_app()
        disposition = (
            'Content-Disposition: form-data; name="a"; name*=utf-8\'\'b; filename="s.txt"; '
            "filename*=utf-8''..%2Fevil.php"
        )
        with client_factory(app) as client:
            assert post(client, multipart(part(disposition, b"x"))).json() == {"a": [["s.txt", 1]]}

    @pytest.mark.parametrize(
        ("disposition", "expected"),
        [
            (
                "form-data; filename*=utf-8''evil.php; name*=utf-8''b; "
                'NAME="a"; FILENAME="s.txt"',
                {"a": [["s.txt", 1]]},
            ),
            ("form-data; name=\"a\"; filename*=UTF-8''evil.php", {"a": ["x"]}),
            ('form-data; name="a"; filename*0="evil"; filename*1=".php"', {"a": ["x"]}),
            (
                "form-data; name=\"a\"; Filename*=utf-8''evil.php; filename=s.txt",
                {"a": [["s.txt", 1]]},
            ),
        ],
    )
    def test_plain_parameters_win_and_extended_ones_are_ignored(
        self, client_factory: ClientFactory, disposition: str, expected: dict[str, Any]
    ) -> None:
        app, _ = form_app()
        with client_factory(app) as client:
            response = post(client, multipart(part(f"Content-Disposition: {disposition}", b"x")))
        assert response.json() == expected

    @pytest.mark.parametrize(
        "disposition",
        [
            "form-data; name*=utf-8''a",
            'form-data; name="a"; name="b"',
            'form-data; name="a"; filename="s.txt"; filename="evil.php"',
            'form-data; name="a"; Filename="s.txt"; filename="evil.php"',
        ],
    )
    def test_missing_or_ambiguous_parameters_are_a_400(
        self, client_factory: ClientFactory, disposition: str
    ) -> None:
        app, uploads = form_app()
        with client_factory(app) as client:
            response = post(client, multipart(part(f"Content-Disposition: {disposition}", b"x")))
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Malformed multipart")
        assert uploads == []


# --- 12. hostile file names --------------------------------------------------------------------


class TestProbe12Filenames:
    @pytest.mark.parametrize(
        ("sent", "exposed"),
        [
            ("../../x", "x"),
            ("/etc/passwd", "passwd"),
            ("C:\\\\x", "x"),
            ("C:\\x", "x"),
            ("a\x00b", "ab"),
            ("..", ""),
            ("..\\..\\windows\\win.ini", "win.ini"),
            ("\\\\host\\share\\f.txt", "f.txt"),
            ("./.././", ""),
            ("dir/\x00../..", ""),
            ("a\x1b[31mred.txt\x7f", "a[31mred.txt"),
            ("photo\u202egnp.exe", "photognp.exe"),
            ("%2e%2e%2fescape", "%2e%2e%2fescape"),
        ],
    )
    def test_the_exposed_filename_is_a_safe_base_name(
        self, client_factory: ClientFactory, sent: str, exposed: str
    ) -> None:
        app, _ = form_app()
        disposition = f'Content-Disposition: form-data; name="f"; filename="{sent}"'
        with client_factory(app) as client:
            response = post(client, multipart(part(disposition, b"data")))
        assert response.json() == {"f": [[exposed, 4]]}

    def test_the_filename_is_never_used_as_a_path(
        self, client_factory: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        marker = f"pwned-{uuid.uuid4().hex}"
        app, uploads = form_app()
        sent = f"../../{marker}"
        body = multipart(file_part("f", sent, b"x" * (2 * MiB)))
        with client_factory(app) as client:
            assert post(client, body).json() == {"f": [[marker, 2 * MiB]]}
        spooled: Any = uploads[0].file
        assert spooled._rolled
        assert marker not in str(spooled._file.name)
        assert not any(marker in path.name for path in tmp_path.rglob("*"))


# --- 20. a body over max_body_size ------------------------------------------------------------


class TestProbe20BodySize:
    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "content_type", ["multipart/form-data; boundary=x", URLENCODED["content-type"]]
    )
    async def test_an_announced_length_over_the_limit_is_refused_unread(
        self, content_type: str
    ) -> None:
        async def receive() -> Message:
            raise AssertionError("the body must not be read")

        scope = make_scope(content_type)
        scope["headers"].append((b"content-length", b"%d" % (10 * MiB + 1)))
        with pytest.raises(HTTPException) as caught:
            await Request(scope, receive).form()
        assert caught.value.status_code == 413
        assert caught.value.detail == "Request body exceeds the limit of 10485760 bytes"

    def test_a_chunked_body_is_refused_as_soon_as_it_crosses_the_limit(
        self, client_factory: ClientFactory, spooled_files: list[TrackedSpooledFile]
    ) -> None:
        app, _ = form_app(max_body_size=MiB)
        head = b'--x\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n'
        body = CountingBody(repeated(head, b"z" * 65536, 1000, b"\r\n--x--\r\n", batch=1))
        with client_factory(app) as client:
            response = post(client, body)
        assert response.status_code == 413
        assert response.json()["detail"] == "Request body exceeds the limit of 1048576 bytes"
        assert body.pulled < MiB + 3 * 65536
        assert len(spooled_files) == 1

    def test_files_are_bounded_by_the_body_limit(
        self, client_factory: ClientFactory, spooled_files: list[TrackedSpooledFile]
    ) -> None:
        app, _ = form_app(max_body_size=MiB)
        with client_factory(app) as client:
            response = client.post("/", files={"f": ("f.bin", b"x" * (MiB + 1))})
            assert response.status_code == 413
            ok = client.post("/", files={"f": ("f.bin", b"x" * (MiB - 1000))})
            assert ok.json() == {"f": [["f.bin", MiB - 1000]]}

    def test_without_a_body_limit_the_stream_is_read_to_the_end(
        self, client_factory: ClientFactory
    ) -> None:
        app, _ = form_app(max_body_size=None)
        big = b"y" * (12 * MiB)
        with client_factory(app) as client:
            assert client.post("/", files={"f": ("f", big)}).json() == {"f": [["f", len(big)]]}


# --- 21. 100,000 messages of one byte ----------------------------------------------------------


def one_byte_messages(body: bytes) -> Callable[[], Any]:
    position = 0

    async def receive() -> Message:
        nonlocal position
        chunk = body[position : position + 1]
        position += 1
        return {"type": "http.request", "body": chunk, "more_body": position < len(body)}

    return receive


class TestProbe21OneByteMessages:
    @pytest.mark.anyio
    @pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
    async def test_one_hundred_thousand_one_byte_messages(self, encoding: str) -> None:
        if encoding == "urlencoded":
            body = b"a=" + b"b" * 50_000 + b"&c=" + b"d" * 49_995
            content_type = URLENCODED["content-type"]
        else:
            body = multipart(field("a", b"b" * 50_000), file_part("f", "f", b"d" * 50_000))
            content_type = MULTIPART["content-type"]
        assert len(body) >= 100_000
        request = Request(make_scope(content_type), one_byte_messages(body))
        started = time.perf_counter()
        form = await request.form()
        elapsed = time.perf_counter() - started
        values = [
            value if isinstance(value, str) else await value.read() for value in form.values()
        ]
        assert [len(value) for value in values] in ([50_000, 49_995], [50_000, 50_000])
        assert elapsed < LINEAR_BOUND_SECONDS
        await request.close()


# --- 22. a compressed body that inflates a thousandfold ---------------------------------------


class TestProbe22CompressedBodies:
    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "encoding", ["gzip", "GZIP", "x-gzip", "deflate", "br", "gzip, identity"]
    )
    async def test_compressed_forms_are_refused_unread(self, encoding: str) -> None:
        async def receive() -> Message:
            raise AssertionError("the body must not be read, let alone inflated")

        scope = make_scope(URLENCODED["content-type"])
        scope["headers"].append((b"content-encoding", encoding.encode()))
        with pytest.raises(HTTPException) as caught:
            await Request(scope, receive).form()
        assert caught.value.status_code == 415
        assert caught.value.detail == (
            f"Unsupported Content-Encoding {encoding.lower()!r} for a form body"
        )

    def test_a_gzip_bomb_through_the_client(self, client_factory: ClientFactory) -> None:
        bomb = gzip.compress(b"a=" + b"0" * (16 * MiB), compresslevel=9)
        assert len(bomb) < 20_000
        app, _ = form_app()
        with client_factory(app) as client:
            response = post(client, bomb, {**URLENCODED, "content-encoding": "gzip"})
        assert response.status_code == 415


# --- 20 and 1-3, 10 again: a body or form read first by a middleware ------------------------


def middleware_app(read: str, route_limits: Limits, **form_options: int) -> App:
    """An app whose http middleware reads the body (`read`) before the route POST / runs.

    The route answers what its handler reads: the body's length, the streamed length, or
    the form's field count.
    """
    app = App()

    @app.middleware("http")
    async def reader(request: Request, call_next: Any) -> Any:
        await (request.body() if read == "body" else request.form())
        return await call_next(request)

    @app.post("/body", limits=route_limits)
    async def body(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/stream", limits=route_limits)
    async def stream(request: Request) -> dict[str, int]:
        return {"size": sum([len(chunk) async for chunk in request.stream()])}

    @app.post("/form", limits=route_limits)
    async def form(request: Request) -> dict[str, int]:
        return {"items": len((await request.form(**form_options)).multi_items())}

    return app


class TestLimitsAfterAMiddlewareRead:
    """A middleware reads under the app's limits; the route's lower ones still hold."""

    @pytest.mark.parametrize("path", ["/body", "/stream", "/form"])
    def test_a_cached_body_over_the_route_limit_is_413(
        self, client_factory: ClientFactory, path: str
    ) -> None:
        app = middleware_app("body", Limits(max_body_size=100))
        with client_factory(app) as client:
            response = client.post(path, content=b"a=" + b"x" * 200, headers=URLENCODED)
            assert response.status_code == 413
            assert response.json() == {"detail": "Request body exceeds the limit of 100 bytes"}
            small = client.post(path, content=b"a=" + b"x" * 98, headers=URLENCODED)
            assert small.status_code == 200

    @pytest.mark.parametrize(
        ("route_limits", "files", "status", "detail"),
        [
            (
                Limits(max_fields=2),
                False,
                400,
                "Too many fields in the form: the limit is 2 (max_fields)",
            ),
            (
                Limits(max_part_size=10),
                False,
                413,
                "A form field exceeds the limit of 10 bytes (max_part_size); send it as a file",
            ),
            (
                Limits(max_body_size=100),
                False,
                413,
                "Request body exceeds the limit of 100 bytes",
            ),
            (
                Limits(max_files=2),
                True,
                400,
                "Too many files in the form: the limit is 2 (max_files)",
            ),
        ],
    )
    def test_a_cached_form_is_held_to_the_route_limits(
        self,
        client_factory: ClientFactory,
        route_limits: Limits,
        files: bool,
        status: int,
        detail: str,
    ) -> None:
        app = middleware_app("form", route_limits)
        with client_factory(app) as client:
            if files:
                response = client.post("/form", files=[("f", (f"{i}.txt", b"z")) for i in range(3)])
            else:
                response = client.post("/form", data={f"f{i}": "v" * 20 for i in range(5)})
        assert response.status_code == status
        assert response.json() == {"detail": detail}

    def test_a_cached_form_is_held_to_the_arguments_of_form(
        self, client_factory: ClientFactory
    ) -> None:
        app = middleware_app("form", Limits(), max_fields=1)
        with client_factory(app) as client:
            response = client.post("/form", data={"a": "1", "b": "2"})
            assert response.status_code == 400
            assert response.json() == {
                "detail": "Too many fields in the form: the limit is 1 (max_fields)"
            }
            assert client.post("/form", data={"a": "1"}).json() == {"items": 1}

    def test_a_cached_form_within_the_route_limits_is_the_same_form(
        self, client_factory: ClientFactory
    ) -> None:
        app = middleware_app("form", Limits(max_fields=5, max_part_size=20, max_files=1))
        with client_factory(app) as client:
            response = client.post("/form", data={"a": "x" * 20}, files={"f": ("f", b"z")})
        assert response.json() == {"items": 2}

    @pytest.mark.anyio
    async def test_the_usage_of_a_urlencoded_form_counts_what_was_sent(self) -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"a=%41%41%41&bb=1&&c", "more_body": False}

        from microasgi.formparsers import FormUsage, parse_form

        request = Request(make_scope(URLENCODED["content-type"]), receive)
        usage = FormUsage()
        await parse_form(request.headers, request.stream(), Limits(), usage=usage)
        assert (usage.body, usage.fields, usage.files, usage.largest_part) == (19, 3, 0, 9)
        usage.check(Limits(max_part_size=9, max_fields=3, max_files=0, max_body_size=19))

    @pytest.mark.anyio
    async def test_a_form_cached_by_other_code_is_returned_as_it_is(self) -> None:
        from microasgi.datastructures import FormData

        form = FormData([("a", "1"), ("b", "2")])
        scope = make_scope(URLENCODED["content-type"], **{"microasgi.form": form})
        assert await Request(scope).form(max_fields=1) is form
