"""The same app under uvicorn, hypercorn and granian, spoken to by httpx over loopback."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.servers import HOST, ServerProcess, require_module, serve, server_argv
from tests.support import free_port

pytestmark = pytest.mark.integration

SERVERS = ["uvicorn", "hypercorn", "granian"]
APP = "tests.integration.http_app:app"


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    require_module(request.param)
    log = tmp_path_factory.mktemp(request.param) / "server.log"
    port = free_port()
    with serve(server_argv(request.param, APP, port), log, port=port) as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        yield client


def test_plaintext_json_and_params(client: httpx.Client, server: ServerProcess) -> None:
    response = client.get("/plaintext")
    assert (response.status_code, response.text) == (200, "Hello, World!")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert client.get("/users/7").json() == {"id": 7, "url": f"{server.url}/users/7"}


def test_errors_and_methods(client: httpx.Client) -> None:
    assert client.get("/users/x").status_code == 404
    response = client.post("/plaintext")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.get("/teapot").json() == {"detail": "short and stout"}
    head = client.head("/plaintext")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "13")
    response = client.get("/plaintext/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (308, "/plaintext")
    response = client.get("//evil.com/", follow_redirects=False)
    assert response.status_code == 404


def test_unhandled_error_is_a_500_logged_once(client: httpx.Client, server: ServerProcess) -> None:
    response = client.get("/boom")
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert "integration failure" not in response.text
    assert client.get("/plaintext").status_code == 200  # the server keeps serving
    log = server.log_text()
    assert log.count("RuntimeError: integration failure") == 1


def test_a_stream_failing_midway_is_cut_short_never_answered_twice(
    client: httpx.Client, server: ServerProcess
) -> None:
    # NOTE: the 200 and a first chunk are out when the stream fails: the error answer (a
    # second http.response.start) must be refused, and the client must see the body end
    # early, never a 500 page appended to it.
    body = b""
    with client.stream("GET", "/stream-fails") as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                body += chunk
    assert body == b"part one\n"
    assert client.get("/plaintext").status_code == 200  # the server keeps serving
    deadline = time.monotonic() + 5
    while "RuntimeError: stream failure" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log_text().count("RuntimeError: stream failure") == 1


@pytest.mark.parametrize("path", ["/not-modified", "/no-content"])
def test_bodiless_responses_keep_the_connection(server: ServerProcess, path: str) -> None:
    # A Content-Length on a 204/304 made uvicorn wait for a body, log an error and drop
    # the connection: the request pipelined behind it went unanswered.
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        sock.sendall(request + b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"Hello, World!"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.split(b" ")[1] in (b"204", b"304")
    assert b"content-length" not in first.lower()
    assert rest.startswith(b"HTTP/1.1 200")
    assert f"Unhandled RuntimeError in GET {path}" not in server.log_text()


def test_bodies_json_and_limits(client: httpx.Client) -> None:
    assert client.post("/echo", json={"a": [1, 2]}).json() == {"a": [1, 2]}
    assert (
        client.post("/echo", content=b"{}", headers={"content-type": "text/plain"}).status_code
        == 415
    )
    malformed = client.post("/echo", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    too_big = client.post(
        "/echo", content=b"[" + b"1," * 1000 + b"1]", headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413

    def chunked() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    streamed = client.post("/echo", content=chunked(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_lifespan_state_and_streaming(client: httpx.Client) -> None:
    assert client.get("/state").json() == {"started": True}
    with client.stream("GET", "/stream") as response:
        lines = list(response.iter_lines())
    assert lines == [f"chunk {i}" for i in range(5)]


def test_concurrent_blocking_def_handlers(server: ServerProcess) -> None:
    def get(path: str) -> str:
        return httpx.get(server.url + path, trust_env=False, timeout=10).text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(get, ["/blocking"] * 8))
    assert results == ["done"] * 8


def read_until_closed(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection (10 s at most)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def assert_stream_ends_and_background_runs(port: int, client: httpx.Client, run: str) -> None:
    request = (
        f"GET /stream-then-background?id={run} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        data = read_until_closed(port, request)
    except TimeoutError:
        pytest.fail("the server did not close the connection after the streamed response")
    assert data.startswith(b"HTTP/1.1 200")
    assert b"streamed" in data
    # NOTE: the background runs after the response, so maybe after the connection closed.
    deadline = time.monotonic() + 10
    while run not in client.get("/background-runs").json():
        if time.monotonic() > deadline:
            pytest.fail(f"the background task of run {run!r} did not run")
        time.sleep(0.01)


def test_a_stream_ends_and_its_background_runs(client: httpx.Client, server: ServerProcess) -> None:
    assert_stream_ends_and_background_runs(server.port, client, "first")


def wait_for_run(client: httpx.Client, key: str, run: str, what: str) -> None:
    deadline = time.monotonic() + 10
    while run not in client.get("/disconnects").json()[key]:
        if time.monotonic() > deadline:
            pytest.fail(f"run {run!r}: {what} within 10 s")
        time.sleep(0.01)


def assert_is_disconnected_sees_the_client_leave(port: int, client: httpx.Client, run: str) -> None:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(f"GET /poll-until-gone?id={run} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        wait_for_run(client, "polling", run, "the handler did not start polling")
    wait_for_run(client, "gone", run, "is_disconnected() did not report the client leaving")


def test_is_disconnected_sees_the_client_leave(client: httpx.Client, server: ServerProcess) -> None:
    assert_is_disconnected_sees_the_client_leave(server.port, client, "first")


def test_streams_and_disconnects_on_hypercorn_trio(tmp_path: Path) -> None:
    # NOTE: hypercorn's trio worker answers http.disconnect as soon as it has the last body,
    # while its send is still closing the connection; that send must not be cut. Its
    # receive is a trio memory channel, which raises on a cancelled scope before it looks
    # for a ready message, so is_disconnected() must not poll under one.
    require_module("hypercorn")
    require_module("trio")
    port = free_port()
    argv = [*server_argv("hypercorn", APP, port), "--worker-class", "trio"]
    with (
        serve(argv, tmp_path / "server.log", port=port) as running,
        httpx.Client(base_url=running.url, trust_env=False, timeout=10) as client,
    ):
        for run in ("trio-1", "trio-2"):
            assert_stream_ends_and_background_runs(port, client, run)
            assert_is_disconnected_sees_the_client_leave(port, client, run)
