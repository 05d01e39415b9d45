"""A handler's misnamed parameter, on real servers: refused at startup, where there is one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.servers import (
    HOST,
    require_module,
    server_argv,
    spawn,
    stop,
    wait_until_listening,
)
from tests.support import free_port

pytestmark = pytest.mark.integration

APP = "tests.integration.typo_app:app"
MESSAGE = "Handler get_user of '/users/{user_id:int}' takes 'user_idd'"


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_a_server_running_the_lifespan_refuses_to_start(server: str, tmp_path: Path) -> None:
    require_module(server)
    log = tmp_path / "server.log"
    process = spawn(server_argv(server, APP, free_port()), log)
    try:
        process.wait(timeout=30)
    finally:
        stop(process)
    assert MESSAGE in log.read_text(errors="replace")


def test_without_a_lifespan_each_request_is_a_500_naming_the_handler(tmp_path: Path) -> None:
    # NOTE: daphne runs no lifespan: the app is checked on its first request, and again on
    # each one until the mistake is fixed.
    require_module("daphne")
    log = tmp_path / "server.log"
    port = free_port()
    process = spawn(server_argv("daphne", APP, port), log)
    try:
        wait_until_listening(process, port, log)
        with httpx.Client(base_url=f"http://{HOST}:{port}", trust_env=False, timeout=10) as client:
            for _ in range(2):
                response = client.get("/plaintext")
                assert (response.status_code, response.text) == (500, "Internal Server Error")
    finally:
        stop(process)
    assert log.read_text(errors="replace").count(MESSAGE) == 2
