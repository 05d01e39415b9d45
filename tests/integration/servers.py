"""Start ASGI servers as subprocesses on free loopback ports, and stop them by PID."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import IN_CI, free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def require_module(name: str) -> None:
    """Import a module the suite needs: in CI a missing one fails instead of skipping."""
    if IN_CI:
        importlib.import_module(name)
    else:
        pytest.importorskip(name)


def server_argv(server: str, app: str, port: int) -> list[str]:
    """The command line that serves ``app`` (module:attribute) with ``server``."""
    if server == "uvicorn":
        return ["-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--log-level", "warning"]
    if server == "hypercorn":
        return ["-m", "hypercorn", app, "--bind", f"{HOST}:{port}"]
    if server == "granian":
        return [
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            app,
        ]
    if server == "daphne":
        return ["-m", "daphne", "-b", HOST, "-p", str(port), app]
    raise ValueError(f"unknown server {server!r}")


@dataclass
class ServerProcess:
    """A server subprocess: its process, port and the file its output goes to."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def spawn(
    argv: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python <argv>`` from the project root in a session of its own, output to ``log``."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def serve(
    argv: list[str], log: Path, *, port: int | None = None, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run ``python <argv>`` until it listens on ``port``; stop it by PID on exit."""
    port = free_port() if port is None else port
    process = spawn(argv, log, env)
    try:
        wait_until_listening(process, port, log)
        yield ServerProcess(process, port, log)
    finally:
        stop(process)


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait (30 s at most) until something accepts connections on ``port``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    stop(process)
    pytest.fail(f"the server did not listen on {HOST}:{port} within 30 s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started in its own session: SIGTERM, then SIGKILL for the group."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
