"""A 200 MiB streamed upload through uvicorn, while another client keeps pinging.

The server is ``examples/upload.py`` in a uvicorn subprocess on a free loopback port,
stopped by its process id. Asserted: the server's SHA-256 of the file matches the
client's, and its peak RSS grew by less than 64 MiB (a bound on memory, not a timing).
The /ping latencies during the upload are printed, never asserted.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.servers import require_module, serve, server_argv
from tests.support import free_port

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
UPLOAD_MIB = 200
RSS_GROWTH_LIMIT = 64 * MiB
BOUNDARY = "microasgi-integration-7f3a"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def status(self, field_name: str) -> int:
        """A memory figure of the server process, in bytes (from /proc/<pid>/status)."""
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in text.splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise LookupError(field_name)

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    require_module("uvicorn")
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the server's memory")
    port = free_port()
    argv = [*server_argv("uvicorn", "examples.upload:app", port), "--no-access-log"]
    with serve(argv, tmp_path / "server.log", port=port) as running:
        yield Server(running.process, running.url, running.log)


class Upload:
    """A multipart body generated on the fly: one file of `mib` MiB, hashed as it goes."""

    def __init__(self, mib: int) -> None:
        self.head = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.mib = mib
        self.block = os.urandom(MiB)
        self.sha256 = hashlib.sha256()
        self.length = len(self.head) + mib * MiB + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        for index in range(self.mib):
            # Every MiB differs, so a block lost, repeated or reordered changes the hash.
            block = index.to_bytes(8, "big") + self.block[8:]
            self.sha256.update(block)
            for start in range(0, MiB, 256 * 1024):
                yield block[start : start + 256 * 1024]
        yield self.tail


@dataclass
class Pinger:
    """Another client: GET /ping every 10 ms, noting latencies and the server's RSS."""

    server: Server
    latencies: list[float] = field(default_factory=list)
    peak_rss: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.get("/ping")
                    if response.text != "pong":
                        self.errors.append(f"{response.status_code}: {response.text[:100]}")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self.latencies.append(time.perf_counter() - started)
                self.peak_rss = max(self.peak_rss, self.server.status("VmRSS"))
                self.stop.wait(0.01)


def test_a_200_mib_upload_through_uvicorn(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # Warm up: the first form imports and allocates what every later one reuses.
        warm = client.post("/upload", files={"file": ("warm.bin", os.urandom(2 * MiB))})
        assert warm.status_code == 200, warm.text
        hwm_reset = server.reset_peak_rss()
        baseline = server.status("VmRSS")

        upload = Upload(UPLOAD_MIB)
        pinger = Pinger(server)
        thread = threading.Thread(target=pinger.run, daemon=True)
        thread.start()
        started = time.perf_counter()
        try:
            response = client.post(
                "/upload",
                content=iter(upload),
                headers={
                    "content-type": f"multipart/form-data; boundary={BOUNDARY}",
                    "content-length": str(upload.length),
                },
            )
        finally:
            elapsed = time.perf_counter() - started
            pinger.stop.set()
            thread.join(timeout=15)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "filename": "big.bin",
        "size": UPLOAD_MIB * MiB,
        "sha256": upload.sha256.hexdigest(),
    }
    peak = max(server.status("VmHWM") if hwm_reset else 0, pinger.peak_rss)
    growth = peak - baseline
    latencies = sorted(pinger.latencies)
    print(
        f"\n{UPLOAD_MIB} MiB upload through uvicorn: {elapsed:.2f} s "
        f"({UPLOAD_MIB / elapsed:.0f} MiB/s, upload and server-side hash); "
        f"peak RSS growth {growth / MiB:.1f} MiB "
        f"({'VmHWM' if hwm_reset else 'sampled VmRSS'}); "
        f"/ping during it: {len(latencies)} answers, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    assert pinger.errors == []
    assert growth < RSS_GROWTH_LIMIT, f"peak RSS grew by {growth / MiB:.1f} MiB"
