"""Upload benchmark: a large multipart file through uvicorn, microasgi beside Starlette.

Each framework's app runs under uvicorn (one worker, pinned to CPU 0 with ``taskset``
when there is one) on a free loopback port; this process, pinned to CPU 1, streams a
multipart body of one file, generated on the fly, while a second client (another
process) asks ``/ping`` every 10 ms. The frameworks take turns, round by round. Reported
per framework and size: throughput (MiB/s, median of the rounds), the server's CPU time
per GiB (all threads; steadier than MiB/s on a shared machine), its peak RSS growth
during the upload (VmHWM after resetting it, minus the RSS before; the largest of the
rounds), and the /ping latencies seen meanwhile; an uncounted round at each size warms
up first. Both apps parse the form with their own ``request.form()`` and answer the
file's size.

    python benchmarks/uploads.py [--sizes 100 1024] [--rounds 3] [--tmpdir DIR] [--quick]
                                 [--output docs/benchmarks.md] [--json FILE]

``--output`` rewrites that page's ``uploads`` section (``benchmarks/sections.py``).

Targets (PERFORMANCE.md): throughput at least Starlette's, peak RSS growth under 32 MiB
for 1 GiB, /ping answered within 50 ms meanwhile. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: uvicorn imports `benchmarks.uploads`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sections import check_section, provenance, write_section

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MiB = 1024 * 1024
FRAMEWORKS = ("microasgi", "starlette")
SIZES_MIB = (100, 1024)
SERVER_CPU = "0"
CLIENT_CPU = 1
BOUNDARY = "microasgi-upload-benchmark"
RSS_TARGET_MIB = 32  # for 1 GiB
PING_TARGET_MS = 50
PING_INTERVAL = 0.01
SEND_CHUNK = 256 * 1024
TIMES = "\u00d7"


# --------------------------------------------------------------------------- the apps


def make_microasgi_app() -> Any:
    """The microasgi app: /ping, and /upload answering the size of the file sent."""
    from microasgi import App, Limits, Request, UploadFile

    app = App()

    @app.get("/ping")
    async def ping(request: Request) -> str:
        return "pong"

    @app.post("/upload", limits=Limits(max_body_size=None))
    async def upload(request: Request) -> dict[str, Any]:
        async with request.form() as form:
            file = form["file"]
            assert isinstance(file, UploadFile)
            return {"size": file.size}

    return app


def make_starlette_app() -> Any:
    """The same app in Starlette, written as its documentation shows."""
    from starlette.applications import Starlette
    from starlette.datastructures import UploadFile
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def ping(request: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    async def upload(request: Request) -> JSONResponse:
        async with request.form() as form:
            file = form["file"]
            assert isinstance(file, UploadFile)
            return JSONResponse({"size": file.size})

    return Starlette(routes=[Route("/ping", ping), Route("/upload", upload, methods=["POST"])])


FACTORIES = {
    "microasgi": "benchmarks.uploads:make_microasgi_app",
    "starlette": "benchmarks.uploads:make_starlette_app",
}


# --------------------------------------------------------------------------- measuring


@dataclass
class Round:
    seconds: float
    cpu_seconds: float  # the server process's CPU time (all threads) during the upload
    rss_growth: int
    latencies_ms: list[float]


@dataclass
class Result:
    framework: str
    size_mib: int
    rounds: list[Round] = field(default_factory=list)
    error: str | None = None

    @property
    def throughput(self) -> float:
        """MiB/s, median of the rounds."""
        return statistics.median(self.size_mib / r.seconds for r in self.rounds)

    @property
    def cpu_per_gib(self) -> float:
        """Server CPU seconds per GiB uploaded, median of the rounds."""
        return statistics.median(r.cpu_seconds * 1024 / self.size_mib for r in self.rounds)

    @property
    def rss_growth_mib(self) -> float:
        """The largest peak RSS growth of the rounds, MiB."""
        return max(r.rss_growth for r in self.rounds) / MiB

    @property
    def latencies_ms(self) -> list[float]:
        return sorted(latency for r in self.rounds for latency in r.latencies_ms)


class Server:
    """uvicorn serving one app factory, on a free port, stopped by its process id."""

    def __init__(self, framework: str, tmpdir: str | None = None) -> None:
        self.port = _free_port()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            FACTORIES[framework],
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        if shutil.which("taskset"):
            command = ["taskset", "-c", SERVER_CPU, *command]
        self.log = open(os.devnull, "wb")  # noqa: SIM115
        env = {**os.environ, "TMPDIR": tmpdir} if tmpdir else None
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=self.log, env=env
        )
        self.url = f"http://{HOST}:{self.port}"
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ping", timeout=1).text == "pong":
                    return
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not answer within 30 s")

    def memory(self, name: str) -> int:
        """VmRSS or VmHWM of the server, in bytes."""
        return _memory(self.process.pid, name)

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server so far, every thread included."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _memory(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(name)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def multipart_body(size: int) -> Iterator[bytes]:
    """One file of `size` bytes as a multipart body, generated as it is sent."""
    yield (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = os.urandom(SEND_CHUNK)
    for _ in range(size // SEND_CHUNK):
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def body_length(size: int) -> int:
    return sum(len(piece) for piece in multipart_body(0)) + size


def _ping(url: str, pid: int, stop: Any, results: Any) -> None:
    """In its own process (its own GIL): GET /ping every 10 ms, sample the server's RSS."""
    latencies: list[float] = []
    peak_rss = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        stopped = False
        while not stopped:  # at least one ping, however short the upload
            started = time.perf_counter()
            client.get("/ping").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            peak_rss = max(peak_rss, _memory(pid, "VmRSS"))
            stopped = stop.wait(PING_INTERVAL)
    results.send((latencies, peak_rss))


def upload_once(server: Server, client: httpx.Client, size: int) -> Round:
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    pinger = context.Process(target=_ping, args=(server.url, server.process.pid, stop, sender))
    reset = server.reset_peak()
    baseline = server.memory("VmRSS")
    pinger.start()
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    try:
        response = client.post(
            "/upload",
            content=multipart_body(size),
            headers={
                "content-type": f"multipart/form-data; boundary={BOUNDARY}",
                "content-length": str(body_length(size)),
            },
        )
        seconds = time.perf_counter() - started
        cpu_seconds = server.cpu_seconds() - cpu_before
    finally:
        stop.set()
        latencies, peak_rss = receiver.recv()
        pinger.join()
    response.raise_for_status()
    if response.json() != {"size": size}:
        raise RuntimeError(f"unexpected answer {response.text[:200]!r}")
    peak = max(server.memory("VmHWM") if reset else 0, peak_rss)
    return Round(seconds, cpu_seconds, peak - baseline, latencies)


def run(
    frameworks: tuple[str, ...], sizes: tuple[int, ...], rounds: int, tmpdir: str | None = None
) -> list[Result]:
    """Measure every framework at every size, the frameworks taking turns round by round.

    A framework whose server fails to start reports its error; the others carry on.
    """
    results: list[Result] = []
    servers: dict[str, Server] = {}
    try:
        for framework in frameworks:
            try:
                servers[framework] = Server(framework, tmpdir)
            except Exception as exc:  # one failing framework must not stop the rest
                results.append(Result(framework, 0, error=f"{type(exc).__name__}: {exc}"))
        clients = {
            name: httpx.Client(base_url=server.url, timeout=600) for name, server in servers.items()
        }
        by_key = {(name, size): Result(name, size) for size in sizes for name in servers}
        results += by_key.values()
        for size in sizes:
            # NOTE: a round at each size first, not counted: the first large file a process
            # writes pays the file system's and page cache's warm-up, whoever writes it.
            for name, server in servers.items():
                upload_once(server, clients[name], size * MiB)
            for index in range(rounds):
                # NOTE: turns rotate, so a noisy spell on the shared machine spreads over both.
                order = (
                    list(servers)[index % len(servers) :] + list(servers)[: index % len(servers)]
                )
                for name in order:
                    outcome = upload_once(servers[name], clients[name], size * MiB)
                    by_key[name, size].rounds.append(outcome)
                    print(
                        f"  {name} {_size(size)}: {outcome.seconds:.2f} s, "
                        f"server CPU {outcome.cpu_seconds:.2f} s",
                        file=sys.stderr,
                    )
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    return results


# --------------------------------------------------------------------------- reporting


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def to_markdown(results: list[Result], rounds: int, tmpdir: str | None = None) -> str:
    """The results as a Markdown section: one table, the targets, then any errors."""
    spool = tmpdir or tempfile.gettempdir()
    lines = [
        "## Uploads",
        "",
        f"{provenance('benchmarks/uploads.py')}.",
        "",
        f"One multipart file streamed to uvicorn (1 worker, files spooled to `{spool}`), "
        f"{'1 round' if rounds == 1 else f'median of {rounds} rounds'}; "
        "server CPU is the server process's user and system time, every thread included "
        "(steadier than MiB/s on a shared machine); peak RSS growth is the largest of the "
        "rounds; `/ping` every 10 ms from another process meanwhile.",
        "",
        "| framework | upload | MiB/s | server CPU per GiB | peak RSS growth "
        "| /ping median | /ping p99 | /ping max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if result.error or not result.rounds:
            continue
        latencies = result.latencies_ms
        lines.append(
            f"| {result.framework} | {_size(result.size_mib)} | {result.throughput:,.0f} | "
            f"{result.cpu_per_gib:.2f} s | {result.rss_growth_mib:.1f} MiB | "
            f"{statistics.median(latencies):.1f} ms | "
            f"{_percentile(latencies, 0.99):.1f} ms | {latencies[-1]:.1f} ms |"
        )
    lines += ["", *_targets(results)]
    errors = [f"- {r.framework}: unavailable: {r.error}" for r in results if r.error]
    if errors:
        lines += ["", *errors]
    return "\n".join(lines) + "\n"


def _size(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def _targets(results: list[Result]) -> list[str]:
    ours = {r.size_mib: r for r in results if r.framework == "microasgi" and r.rounds}
    peers = {r.size_mib: r for r in results if r.framework == "starlette" and r.rounds}
    lines = ["Targets for microasgi:", ""]
    for size, result in sorted(ours.items()):
        peer = peers.get(size)
        if peer is not None:
            ratio = result.throughput / peer.throughput
            mark = "met" if ratio >= 1 else "missed"
            cpu_ratio = result.cpu_per_gib / peer.cpu_per_gib
            lines.append(
                f"- {_size(size)}: throughput {ratio:.2f}{TIMES} Starlette's "
                f"(target at least 1{TIMES}): {mark}; server CPU per GiB "
                f"{cpu_ratio:.2f}{TIMES} Starlette's"
            )
        worst = result.latencies_ms[-1]
        mark = "met" if worst < PING_TARGET_MS else "missed"
        lines.append(f"- {_size(size)}: slowest /ping {worst:.1f} ms (target < 50 ms): {mark}")
    if 1024 in ours:
        growth = ours[1024].rss_growth_mib
        mark = "met" if growth < RSS_TARGET_MIB else "missed"
        lines.append(f"- 1 GiB: peak RSS growth {growth:.1f} MiB (target < 32 MiB): {mark}")
    return lines


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES_MIB), metavar="MIB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 MiB, one round")
    parser.add_argument("--output", type=Path, help="page whose uploads section to rewrite")
    parser.add_argument("--json", type=Path, help="also dump the raw results there")
    parser.add_argument("--tmpdir", help="where the servers spool uploads (TMPDIR)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = [10], 1
    if args.output is not None:  # a page without its markers fails now, not after the run
        check_section(args.output, "uploads")
    if hasattr(os, "sched_setaffinity") and shutil.which("taskset"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {CLIENT_CPU})
    results = run(tuple(args.frameworks), tuple(args.sizes), args.rounds, args.tmpdir)
    markdown = to_markdown(results, args.rounds, args.tmpdir)
    print(markdown)
    if args.output:
        write_section(args.output, "uploads", markdown)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
