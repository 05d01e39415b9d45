"""The blocking-call warning of ``App(debug=True)`` under real servers, with and without
a lifespan (Daphne has none; uvicorn can be told to send none)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.servers import require_module, serve, server_argv
from tests.support import free_port

pytestmark = pytest.mark.integration

APP = "tests.integration.blocking_app:app"


@pytest.mark.parametrize(
    ("server", "options"),
    [
        ("uvicorn", []),
        ("uvicorn", ["--lifespan", "off"]),
        ("hypercorn", []),
        ("daphne", []),
    ],
    ids=["uvicorn", "uvicorn-lifespan-off", "hypercorn", "daphne"],
)
def test_a_blocking_handler_is_reported_once(
    server: str, options: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    require_module(server)
    log = tmp_path_factory.mktemp(server) / "server.log"
    port = free_port()
    with serve([*server_argv(server, APP, port), *options], log, port=port) as running:
        with httpx.Client(base_url=running.url, trust_env=False, timeout=10) as client:
            assert client.get("/fine").text == "fine"
            assert client.get("/blocking").text == "done"
            assert client.get("/fine").text == "fine"
        deadline = time.monotonic() + 5
        while "has been blocked" not in running.log_text():
            assert time.monotonic() < deadline, running.log_text()
            time.sleep(0.05)
        text = running.log_text()
    assert text.count("The event loop has been blocked") == 1, text
    assert "blocking_handler" in text
    assert "time.sleep(0.4)" in text
