"""The same app under uvicorn, hypercorn and granian, spoken to by httpx over loopback."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.servers import ServerProcess, require_module, serve, server_argv
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
