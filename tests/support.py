"""Helpers shared by tests: free ports, required programs, a lifespan startup."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from microasgi.types import ASGIApp, Message

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_executable(name: str) -> str:
    """Return the path of a program a test needs; in CI a missing one fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (`make services` installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_startup(app: ASGIApp) -> tuple[list[Message], Exception | None]:
    """Send ``app`` one lifespan startup, as a server does: what it sent back and raised."""
    messages: list[Message] = [{"type": "lifespan.startup"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    try:
        await app(scope, receive, send)
    except Exception as exc:
        return sent, exc
    return sent, None


class RedisServer:
    """One redis-server process; ``stop()``/``start()`` keep the port, like a restart."""

    def __init__(self, executable: str, port: int) -> None:
        self.executable = executable
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                self.process = None
                pytest.fail(f"redis-server exited on port {self.port}:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not answer on port {self.port} within 10 s")
            time.sleep(0.01)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self._signal(process, signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        assert self.process is not None
        self._signal(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self._signal(self.process, signal.SIGCONT)

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
        os.kill(process.pid, signum)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


TrackedSpooledFile = tempfile.SpooledTemporaryFile  # type: ignore[type-arg]
_REAL_SPOOLED_INIT = tempfile.SpooledTemporaryFile.__init__


def track_spooled_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TrackedSpooledFile]]:
    """Record every upload file made meanwhile; on exit, check they and their disk files closed.

    The standard library's ``__init__`` is wrapped, so that every SpooledTemporaryFile,
    subclasses included, is recorded, and every temporary file on disk with them.
    """
    instances: list[TrackedSpooledFile] = []
    on_disk: list[Any] = []
    real_temporary_file = tempfile.TemporaryFile

    def init(self: TrackedSpooledFile, *args: Any, **kwargs: Any) -> None:
        _REAL_SPOOLED_INIT(self, *args, **kwargs)
        instances.append(self)

    def temporary_file(*args: Any, **kwargs: Any) -> Any:
        on_disk.append(real_temporary_file(*args, **kwargs))
        return on_disk[-1]

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "__init__", init)
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    yield instances
    assert all(file.closed for file in instances)
    assert all(file.closed for file in on_disk)
