"""Files, static files, server-sent events and background tasks on real servers.

The app below (``create_app``) runs under uvicorn (and granian, which offers the ASGI
``http.response.pathsend`` extension) in a subprocess on a free loopback port, started
once for the module and stopped by its PID. Clients are httpx and ``http.client`` (which
sends a request path exactly as given, so encoded traversal probes reach the server).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response
from microasgi.sse import EventSourceResponse, ServerSentEvent
from microasgi.staticfiles import FileResponse, StaticFiles
from tests.integration import servers
from tests.support import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
FACTORY = "tests.integration.test_files_servers:create_app"
FILES_ENV = "MICROASGI_TEST_FILES_DIR"
BIG_SIZE = 3 * 1024 * 1024 + 7
SECRET = b"TOP-SECRET"


# --- the app the servers run -----------------------------------------------------------------


class TaskFailed(Exception):
    """Raised by the /boom-task background task."""


def create_app() -> App:
    """Build the app served in the subprocess; files come from $MICROASGI_TEST_FILES_DIR."""
    files = Path(os.environ[FILES_ENV])
    state: dict[str, Any] = {"sse": {}, "tasks": {}, "pathsend": []}
    releases: dict[str, anyio.Event] = {}
    app = App()
    app.mount("/static", StaticFiles(directory=files / "static"))

    @app.get("/health")
    async def health(request: Request) -> str:
        return "ok"

    @app.get("/state")
    async def get_state(request: Request) -> dict[str, Any]:
        return state

    @app.get("/download")
    async def download(request: Request) -> FileResponse:
        state["pathsend"].append("http.response.pathsend" in request.scope.get("extensions", {}))
        return FileResponse(files / "static" / "big.bin", filename="big.bin")

    @app.get("/sse")
    async def sse(request: Request) -> EventSourceResponse:
        params = request.query_params
        key, count, gap = params["key"], int(params["count"]), float(params.get("gap", "0"))
        last = request.headers.get("last-event-id")
        start = int(last) + 1 if last is not None else 0

        async def events() -> AsyncIterator[ServerSentEvent]:
            state["sse"][key] = "open"
            try:
                for n in range(start, start + count):
                    yield ServerSentEvent(f"event {n}\nsecond line", event="tick", id=n)
                    await anyio.sleep(gap)
                state["sse"][key] = "finished"
            finally:
                if state["sse"][key] == "open":
                    state["sse"][key] = "closed"

        return EventSourceResponse(events(), ping=float(params.get("ping", "15")))

    @app.get("/slow-task")
    async def slow_task(request: Request) -> Response:
        key = request.query_params["key"]
        releases[key] = anyio.Event()

        async def task() -> None:
            state["tasks"][key] = "running"
            await releases[key].wait()
            state["tasks"][key] = "done"

        return PlainTextResponse("x" * 100_000, background=BackgroundTask(task))

    @app.get("/release")
    async def release(request: Request) -> str:
        releases[request.query_params["key"]].set()
        return "released"

    @app.get("/boom-task")
    async def boom_task(request: Request) -> Response:
        async def boom() -> None:
            raise TaskFailed("integration: the background task failed")

        return PlainTextResponse("whole body", background=BackgroundTask(boom))

    return app


# --- the servers -------------------------------------------------------------------------------


class FilesServer:
    """A running server of ``create_app``, with its state and output at hand."""

    def __init__(self, running: servers.ServerProcess) -> None:
        self.port = running.port
        self.base_url = running.url
        self.output = running.log_text

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.base_url}/state", timeout=5).json()
        return result


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: [
        *("-m", "uvicorn", FACTORY, "--factory", "--host", HOST, "--port", str(port)),
        *("--log-level", "warning"),
    ],
    "granian": lambda port: [
        *("-m", "granian", "--interface", "asgi", "--factory", FACTORY),
        *("--host", HOST, "--port", str(port), "--log-level", "warning"),
    ],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("files")
    static = base / "static"
    static.mkdir()
    (static / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    (static / "hello.txt").write_text("0123456789")
    (base / "secret.txt").write_bytes(SECRET)
    if os.name == "posix":
        (static / "link-out").symlink_to("../secret.txt")
    return base


@pytest.fixture(scope="module")
def started(files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    running: dict[str, FilesServer] = {}
    with contextlib.ExitStack() as stack:

        def get(name: str) -> FilesServer:
            if name not in running:
                servers.require_module(name)
                log = tmp_path_factory.mktemp("logs") / f"{name}.log"
                port = free_port()
                server = servers.serve(
                    SERVERS[name](port), log, port=port, env={FILES_ENV: str(files)}
                )
                running[name] = FilesServer(stack.enter_context(server))
            return running[name]

        yield {"get": get}


@pytest.fixture
def uvicorn(started: dict[str, Any]) -> FilesServer:
    server: FilesServer = started["get"]("uvicorn")
    return server


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- ranged downloads --------------------------------------------------------------------------


@pytest.mark.parametrize("server_name", ["uvicorn", "granian"])
@pytest.mark.parametrize("path", ["/static/big.bin", "/download"])
def test_a_download_resumed_in_two_halves_matches_the_hash(
    started: dict[str, Any], files: Path, server_name: str, path: str
) -> None:
    server: FilesServer = started["get"](server_name)
    expected = hashlib.sha256((files / "static" / "big.bin").read_bytes()).hexdigest()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        # The first attempt is cut off once about half the file has arrived.
        received = bytearray()
        with client.stream("GET", path) as first:
            assert first.status_code == 200
            assert first.headers["content-length"] == str(BIG_SIZE)
            etag = first.headers["etag"]
            for chunk in first.iter_raw():
                received += chunk
                if len(received) >= BIG_SIZE // 2:
                    break
        assert len(received) < BIG_SIZE
        # The resumption asks for the rest, valid only if the file is still the same.
        headers = {"range": f"bytes={len(received)}-", "if-range": etag}
        rest = client.get(path, headers=headers)
        assert rest.status_code == 206
        assert rest.headers["content-range"] == f"bytes {len(received)}-{BIG_SIZE - 1}/{BIG_SIZE}"
        assert hashlib.sha256(bytes(received) + rest.content).hexdigest() == expected
        # And two explicit halves.
        half = BIG_SIZE // 2
        one = client.get(path, headers={"range": f"bytes=0-{half - 1}"})
        two = client.get(path, headers={"range": f"bytes={half}-"})
        assert (one.status_code, two.status_code) == (206, 206)
        assert hashlib.sha256(one.content + two.content).hexdigest() == expected
    if path == "/download":
        offered = server.state()["pathsend"]
        assert offered and all(offered) == (server_name == "granian")


def test_conditional_requests_and_ranges_over_the_wire(uvicorn: FilesServer) -> None:
    with httpx.Client(base_url=uvicorn.base_url, timeout=30) as client:
        full = client.get("/static/hello.txt")
        cached = client.get("/static/hello.txt", headers={"if-none-match": full.headers["etag"]})
        head = client.head("/static/hello.txt")
        unsatisfiable = client.get("/static/hello.txt", headers={"range": "bytes=100-"})
        parts = client.get("/static/hello.txt", headers={"range": "bytes=0-1,8-"})
        many = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 10_000, 2))
        flood = client.get("/static/hello.txt", headers={"range": many})
    assert (cached.status_code, cached.content) == (304, b"")
    assert cached.headers["etag"] == full.headers["etag"]
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == "10"
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == "bytes */10"
    assert parts.status_code == 206
    boundary = parts.headers["content-type"].split("boundary=")[1]
    assert parts.content.count(b"--" + boundary.encode()) == 3
    assert b"Content-Range: bytes 0-1/10\r\n\r\n01\r\n" in parts.content
    assert b"Content-Range: bytes 8-9/10\r\n\r\n89\r\n" in parts.content
    # 5,000 ranges: either the whole file, or the server's own header-size refusal.
    assert (flood.status_code, flood.content) == (200, b"0123456789") or flood.status_code in (
        400,
        431,
    )


PROBES = [
    "/static/%2e%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/../secret.txt",
    "/static/%5c..%5csecret.txt",
    "/static/%2e%2e%5csecret.txt",
    "/static//etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/hello.txt%00.png",
    "/static/link-out",
    "/static/missing.txt",
]


@pytest.mark.parametrize("probe", PROBES)
def test_traversal_probes_sent_verbatim_get_the_same_404(uvicorn: FilesServer, probe: str) -> None:
    def get(path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(HOST, uvicorn.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    assert get("/static/hello.txt") == (200, b"0123456789")
    status, body = get(probe)
    if status != 400:  # NOTE: a server may refuse some raw forms itself.
        assert (status, body) == get("/static/missing.txt")
    assert SECRET not in body


# --- server-sent events --------------------------------------------------------------------------


def read_events(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    """Parse ``count`` events from an event stream, line by line."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if current:
                events.append(current)
                current = {}
                if len(events) == count:
                    break
            continue
        if line.startswith(":"):
            continue  # a comment: the keep-alive pings
        field, _, value = line.partition(": ")
        if field == "data":
            current["data"] = current["data"] + "\n" + value if "data" in current else value
        else:
            current[field] = value
    return events


def test_an_event_stream_read_line_by_line(uvicorn: FilesServer) -> None:
    with httpx.Client(base_url=uvicorn.base_url, timeout=30) as client:
        with client.stream(
            "GET", "/sse?key=lines&count=3&gap=0.3", headers={"last-event-id": "41"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.iter_lines()
            [first] = read_events(lines, 1)
            # The first event is here while the generator is still producing the rest.
            assert uvicorn.state()["sse"]["lines"] == "open"
            rest = read_events(lines, 2)
            assert list(lines) == []  # then the stream ends
    assert [first, *rest] == [
        {"id": str(n), "event": "tick", "data": f"event {n}\nsecond line"} for n in (42, 43, 44)
    ]
    assert wait_for(lambda: uvicorn.state()["sse"]["lines"] == "finished")


def test_pings_reach_the_client(uvicorn: FilesServer) -> None:
    with httpx.Client(base_url=uvicorn.base_url, timeout=30) as client:
        with client.stream("GET", "/sse?key=pings&count=2&gap=0.5&ping=0.1") as response:
            lines = list(response.iter_lines())
    assert lines.count(": ping") >= 2
    assert read_events(iter(lines), 2)[1]["id"] == "1"


def test_a_client_that_leaves_stops_the_generator(uvicorn: FilesServer) -> None:
    with httpx.Client(base_url=uvicorn.base_url, timeout=30) as client:
        with client.stream("GET", "/sse?key=leaver&count=100000&gap=0.05&ping=0") as response:
            assert len(read_events(response.iter_lines(), 2)) == 2
    assert wait_for(lambda: uvicorn.state()["sse"]["leaver"] == "closed")


# --- background tasks ---------------------------------------------------------------------------


def test_the_client_has_the_response_before_the_task_ends(uvicorn: FilesServer) -> None:
    with httpx.Client(base_url=uvicorn.base_url, timeout=30) as client:
        response = client.get("/slow-task?key=one")
        assert response.content == b"x" * 100_000
        assert wait_for(lambda: uvicorn.state()["tasks"].get("one") == "running")
        assert client.get("/release?key=one").text == "released"
    assert wait_for(lambda: uvicorn.state()["tasks"]["one"] == "done")


def test_a_failing_task_is_logged_once_by_microasgi(uvicorn: FilesServer) -> None:
    response = httpx.get(f"{uvicorn.base_url}/boom-task", timeout=10)
    assert (response.status_code, response.text) == (200, "whole body")
    marker = "Unhandled TaskFailed in GET /boom-task"
    assert wait_for(lambda: marker in uvicorn.output())
    time.sleep(0.3)  # NOTE: room for a second report, were there one
    output = uvicorn.output()
    assert output.count(marker) == 1
    assert output.count("Traceback (most recent call last)") == 1
    assert output.count("TaskFailed: integration: the background task failed") == 1
    assert "Exception in ASGI application" not in output
    # The connection still serves requests.
    assert httpx.get(f"{uvicorn.base_url}/health", timeout=10).text == "ok"


def test_no_unexpected_server_errors(uvicorn: FilesServer) -> None:
    httpx.get(f"{uvicorn.base_url}/static/hello.txt", timeout=10)
    assert not re.search(r"Exception in ASGI application|RuntimeError", uvicorn.output())
