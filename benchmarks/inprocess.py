"""In-process benchmark: ``await app(scope, receive, send)`` in a tight loop.

Every app is built, its lifespan started (when it speaks the lifespan protocol), and every
response checked to be exactly right before anything is timed. A timed batch runs N
requests back to back, each with a fresh shallow copy of a prebuilt scope carrying the
headers a browser or curl sends. Rounds are interleaved: each round times every benchmark
of every framework once. The figure is microseconds of process CPU time per request, best
of the rounds and their median; WebSocket figures are per echoed message on one connection.

Run alone for a quick look (``python benchmarks/inprocess.py --quick``); ``run.py`` turns the
results into the published Markdown table and chart.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from benchmarks import apps
from benchmarks.workload import (
    ECHO_BODY,
    ECHO_PAYLOAD,
    PLAINTEXT,
    ROUTING_BODY,
    ROUTING_SIZES,
    USER_ID,
    WS_TEXT,
    routing_target,
)

App = Callable[..., Coroutine[Any, Any, None]]
Message = dict[str, Any]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
ENDPOINTS = ("plaintext", "json", "users", "echo")
WS_BENCH = "ws"
ROUTING_BENCHES = tuple(f"routing-{n}" for n in ROUTING_SIZES)
MIDDLEWARE_BENCHES = tuple(f"mw-{kind}" for kind in apps.MIDDLEWARE_KINDS)
SECTIONS = ("endpoints", "ws", "routing", "middleware")
LOOPS = ("asyncio", "uvloop")

# What a browser's fetch() or curl sends on a keep-alive connection.
BASE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"*/*"),
    (b"accept-language", b"en-US,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"connection", b"keep-alive"),
]
JSON_BODY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ECHO_BODY)).encode()),
]
WS_HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", BASE_HEADERS[1][1]),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"connection", b"keep-alive, Upgrade"),
    (b"upgrade", b"websocket"),
    (b"origin", b"http://127.0.0.1:8000"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
]


class BenchmarkError(Exception):
    """A response was not the expected one, or the app misbehaved under the harness."""


# --------------------------------------------------------------------------- configuration


@dataclass
class Config:
    """What to run and how long."""

    rounds: int = 9
    requests: int = 20_000
    # PERF: a cap on one round's duration keeps slow apps (1000 Starlette routes) from
    # taking minutes; fast apps still run the full --requests.
    max_round_seconds: float = 0.25
    min_requests: int = 200
    loops: tuple[str, ...] = LOOPS
    frameworks: tuple[str, ...] = tuple(apps.FRAMEWORKS)
    sections: tuple[str, ...] = SECTIONS
    clock: str = "cpu"
    verbose: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags shared by inprocess.py and run.py."""
    parser.add_argument("--rounds", type=int, help="timed rounds per benchmark (default 9)")
    parser.add_argument(
        "--requests", type=int, help="requests (or WS messages) per round, at most (default 20000)"
    )
    parser.add_argument(
        "--max-round-seconds",
        type=float,
        help="shorten rounds of slow apps to about this long (default 0.25)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 short rounds, asyncio only: a smoke run"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop", "both"), help="event loop(s) (default both)"
    )
    parser.add_argument(
        "--frameworks",
        nargs="+",
        choices=tuple(apps.FRAMEWORKS),
        metavar="NAME",
        help=f"frameworks to run (default all: {' '.join(apps.FRAMEWORKS)})",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"parts of the suite to run (default all: {' '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        help="cpu: this process's CPU time (default); wall: elapsed time",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def config_from_args(args: argparse.Namespace) -> Config:
    config = Config()
    if args.quick:
        config.rounds, config.requests, config.max_round_seconds = 3, 2_000, 0.05
        config.min_requests = 100
        config.loops = ("asyncio",)
    if args.rounds is not None:
        config.rounds = max(1, args.rounds)
    if args.requests is not None:
        config.requests = max(1, args.requests)
        config.min_requests = min(config.min_requests, config.requests)
    if args.max_round_seconds is not None:
        config.max_round_seconds = args.max_round_seconds
    if args.loop is not None:
        config.loops = LOOPS if args.loop == "both" else (args.loop,)
    if args.frameworks:
        # NOTE: raw ASGI always runs: every ratio is taken to it.
        chosen = {"raw", *args.frameworks}
        config.frameworks = tuple(key for key in apps.FRAMEWORKS if key in chosen)
    if args.sections:
        config.sections = tuple(args.sections)
    if args.clock is not None:
        config.clock = args.clock
    config.verbose = not args.quiet
    return config


# --------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """Microseconds per request (or per WebSocket message)."""

    best: float
    median: float
    rounds: int
    per_round: int


@dataclass
class Cell:
    """One benchmark of one framework: a measurement or the reason there is none."""

    measurement: Measurement | None = None
    error: str | None = None


@dataclass
class FrameworkInfo:
    key: str
    name: str
    version: str
    error: str | None = None  # set when the framework could not be imported


@dataclass
class SuiteResult:
    config: Config
    frameworks: dict[str, FrameworkInfo] = field(default_factory=dict)
    # loop -> framework key -> benchmark name -> cell
    cells: dict[str, dict[str, dict[str, Cell]]] = field(default_factory=dict)
    loops_unavailable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def cell(self, loop: str, framework: str, bench: str) -> Cell | None:
        return self.cells.get(loop, {}).get(framework, {}).get(bench)

    def best(self, loop: str, framework: str, bench: str) -> float | None:
        cell = self.cell(loop, framework, bench)
        if cell is None or cell.measurement is None:
            return None
        return cell.measurement.best


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class HttpCase:
    """One request and the exact response it must get."""

    name: str
    method: str
    path: str
    media_type: str  # the response's Content-Type must start with this
    text: str | None = None  # exact body, for text responses
    json: Any = None  # exact parsed body, for JSON responses
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*BASE_HEADERS, *self.headers],
            "client": ("127.0.0.1", 51234),
            "server": ("127.0.0.1", 8000),
        }


HTTP_CASES: dict[str, HttpCase] = {
    "plaintext": HttpCase("plaintext", "GET", "/plaintext", "text/plain", text=PLAINTEXT),
    "json": HttpCase("json", "GET", "/json", "application/json", json={"message": PLAINTEXT}),
    "users": HttpCase(
        "users", "GET", f"/users/{USER_ID}", "application/json", json={"id": USER_ID}
    ),
    "echo": HttpCase(
        "echo",
        "POST",
        "/echo",
        "application/json",
        json=ECHO_PAYLOAD,
        body=ECHO_BODY,
        headers=tuple(JSON_BODY_HEADERS),
    ),
}


def routing_case(n: int) -> HttpCase:
    return HttpCase(f"routing-{n}", "GET", routing_target(n), "text/plain", text=ROUTING_BODY)


_HTTP_DISCONNECT: Message = {"type": "http.disconnect"}


class HttpChannel:
    """The server side of one request at a time: ``receive`` and ``send`` for the app.

    The request body is handed over on the first ``receive``, in a message built for that
    request as a server builds it. A later ``receive`` (an app listening for a disconnect)
    blocks until the response is complete, as a server would.
    """

    __slots__ = ("body", "done", "pending", "waiter")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pending = True
        self.done = False
        self.waiter: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        if self.pending:
            self.pending = False
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not self.done:
            if self.waiter is None:
                self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return _HTTP_DISCONNECT

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done = True
            waiter = self.waiter
            if waiter is not None:
                self.waiter = None
                if not waiter.done():
                    waiter.set_result(None)


class RecordingChannel(HttpChannel):
    __slots__ = ("messages",)

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        await super().send(message)


def _check_response(case: HttpCase, messages: list[Message]) -> None:
    if not messages or messages[0].get("type") != "http.response.start":
        raise BenchmarkError(f"{case.name}: no http.response.start, got {messages[:1]!r}")
    start, chunks = messages[0], messages[1:]
    status = start.get("status")
    headers = {bytes(k).lower(): bytes(v) for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in chunks if m.get("type") == "http.response.body")
    if status != 200:
        raise BenchmarkError(f"{case.name}: status {status}, body {body[:200]!r}")
    if not chunks or chunks[-1].get("more_body", False):
        raise BenchmarkError(f"{case.name}: the response body never ended")
    media_type = headers.get(b"content-type", b"").decode("latin-1")
    if not media_type.startswith(case.media_type):
        raise BenchmarkError(f"{case.name}: content-type {media_type!r}, not {case.media_type}")
    length = headers.get(b"content-length")
    if length is not None and int(length) != len(body):
        raise BenchmarkError(f"{case.name}: content-length {length!r} for {len(body)} bytes")
    if case.text is not None and body != case.text.encode():
        raise BenchmarkError(f"{case.name}: body {body[:200]!r}, not {case.text!r}")
    if case.json is not None:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BenchmarkError(f"{case.name}: body is not JSON: {body[:200]!r}") from None
        if value != case.json:
            raise BenchmarkError(f"{case.name}: body {value!r}, not {case.json!r}")


async def verify_http(app: App, case: HttpCase, state: dict[str, Any]) -> None:
    """Send the request twice and check both answers exactly (the second: nothing cached)."""
    for _ in range(2):
        channel = RecordingChannel(case.body)
        scope = case.scope()
        scope["state"] = state.copy()
        await asyncio.wait_for(app(scope, channel.receive, channel.send), 30)
        _check_response(case, channel.messages)


Clock = Callable[[], int]
# NOTE: the CPU time of this process by default: on a shared machine, time spent
# descheduled while another process runs is not the framework's. --clock wall for the other.
CLOCKS: dict[str, Clock] = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}
Batch = Callable[[App, dict[str, Any], int, Clock], Coroutine[Any, Any, int]]


async def _http_batch(app: App, case: HttpCase, state: dict[str, Any], n: int, clock: Clock) -> int:
    """Run n requests back to back; nanoseconds taken."""
    base = case.scope()
    channel = HttpChannel(case.body)
    receive, send = channel.receive, channel.send
    copy_scope, copy_state = base.copy, state.copy
    start = clock()
    for _ in range(n):
        channel.pending = True
        channel.done = False
        scope = copy_scope()
        scope["state"] = copy_state()
        await app(scope, receive, send)
    # NOTE: let callbacks the app scheduled run inside the timed region.
    await asyncio.sleep(0)
    elapsed = clock() - start
    if not channel.done:
        raise BenchmarkError(f"{case.name}: the last response never completed")
    return elapsed


@dataclass(frozen=True)
class Bench:
    """One benchmark: how to check an app's answers and how to time n requests."""

    name: str
    verify: Callable[[App, dict[str, Any]], Coroutine[Any, Any, None]]
    batch: Batch


def http_bench(case: HttpCase, name: str | None = None) -> Bench:
    async def verify(app: App, state: dict[str, Any]) -> None:
        await verify_http(app, case, state)

    async def batch(app: App, state: dict[str, Any], n: int, clock: Clock) -> int:
        return await _http_batch(app, case, state, n, clock)

    return Bench(name or case.name, verify, batch)


# --------------------------------------------------------------------------- WebSocket

_WS_CONNECT: Message = {"type": "websocket.connect"}
_WS_DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1000, "reason": ""}


def ws_scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": list(WS_HEADERS),
        "client": ("127.0.0.1", 51234),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
    }


class WsChannel:
    """One client connection that sends ``n`` text messages, then goes away.

    The client pipelines: the next message is always there, so ``receive`` never blocks and
    no task switch is counted. Each message is a new dict, as a server builds one per frame.
    The clock starts when the app takes the first text message and stops when it sends the
    n-th echo. The disconnect comes only after every echo has arrived, as from a real client
    (until then ``receive`` blocks).
    """

    __slots__ = (
        "calls",
        "clock",
        "last",
        "n",
        "other",
        "record",
        "sent",
        "t0",
        "t1",
        "waiter",
    )

    def __init__(self, n: int, clock: Clock, record: bool = False) -> None:
        self.n = n
        self.clock = clock
        self.calls = 0
        self.sent = 0
        self.t0 = self.t1 = 0
        self.last: Message | None = None
        self.other: list[Message] = []  # accept, close
        self.record: list[Message] | None = [] if record else None
        self.waiter: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        calls = self.calls = self.calls + 1
        if calls == 1:
            return _WS_CONNECT
        if calls <= self.n + 1:
            if calls == 2:
                self.t0 = self.clock()
            # NOTE: a new dict per frame, as every server builds one. One cached dict would
            # leave that cost out of raw ASGI's figure: the peers' ratios to raw then come
            # out 13-25% above the performance charter's reference table (BlackSheep 2.6x).
            return {"type": "websocket.receive", "text": WS_TEXT}
        if calls > self.n + 10:
            raise BenchmarkError("ws: the app keeps calling receive() after the disconnect")
        if self.sent < self.n:
            if self.waiter is None:
                self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return _WS_DISCONNECT

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.send":
            self.last = message
            self.sent += 1
            if self.sent == self.n:
                self.t1 = self.clock()
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
            if self.record is not None:
                self.record.append(message)
        else:
            self.other.append(message)


async def _ws_connection(
    app: App, state: dict[str, Any], n: int, clock: Clock, record: bool
) -> WsChannel:
    channel = WsChannel(n, clock, record)
    scope = ws_scope()
    scope["state"] = state.copy()
    await asyncio.wait_for(app(scope, channel.receive, channel.send), 60)
    if not channel.other or channel.other[0].get("type") != "websocket.accept":
        raise BenchmarkError(f"ws: the connection was not accepted: {channel.other[:1]!r}")
    if channel.sent != n or channel.last is None or channel.last.get("text") != WS_TEXT:
        raise BenchmarkError(f"ws: {channel.sent} echoes of {n}, last {channel.last!r}")
    return channel


async def verify_ws(app: App, state: dict[str, Any]) -> None:
    channel = await _ws_connection(app, state, 3, time.perf_counter_ns, record=True)
    texts = [m.get("text") for m in channel.record or ()]
    if texts != [WS_TEXT] * 3:
        raise BenchmarkError(f"ws: echoes {texts!r}, not {[WS_TEXT] * 3!r}")


async def _ws_batch(app: App, state: dict[str, Any], n: int, clock: Clock) -> int:
    channel = await _ws_connection(app, state, n, clock, record=False)
    return channel.t1 - channel.t0


WS = Bench(WS_BENCH, verify_ws, _ws_batch)


# --------------------------------------------------------------------------- lifespan


class Lifespan:
    """Drive the ASGI lifespan protocol for one app, as a server does."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = False
        self.declined: BaseException | None = None  # what the app raised on the lifespan scope
        self._task: asyncio.Task[None] | None = None
        self._startup_sent = False
        self._stop = asyncio.Event()
        self._started: asyncio.Future[str | None] | None = None

    async def _receive(self) -> Message:
        if not self._startup_sent:
            self._startup_sent = True
            return {"type": "lifespan.startup"}
        await self._stop.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        started = self._started
        if started is not None and not started.done():
            if kind == "lifespan.startup.complete":
                started.set_result(None)
            elif kind == "lifespan.startup.failed":
                started.set_result(message.get("message", "") or "lifespan.startup.failed")

    async def startup(self) -> dict[str, Any]:
        """Start the app; returns the lifespan state that request scopes get a copy of."""
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        self._task = loop.create_task(self.app(scope, self._receive, self._send))
        done, _ = await asyncio.wait(
            {self._started, self._task}, timeout=60, return_when=asyncio.FIRST_COMPLETED
        )
        if self._started in done:
            failure = self._started.result()
            if failure is not None:
                raise BenchmarkError(f"lifespan startup failed: {failure}")
            self.supported = True
        elif self._task in done:
            # NOTE: returning or raising on a lifespan scope means "no lifespan" (ASGI spec).
            if not self._task.cancelled():
                self.declined = self._task.exception()
        else:
            raise BenchmarkError("lifespan startup did not finish within 60 s")
        return self.state

    async def shutdown(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        self._stop.set()
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        elif not task.cancelled():
            task.exception()


# --------------------------------------------------------------------------- the suite


def _log(config: Config, text: str) -> None:
    if config.verbose:
        print(text, file=sys.stderr, flush=True)


def framework_info(key: str) -> FrameworkInfo:
    try:
        module = apps.load(key)
    except Exception as exc:  # a framework that does not import is reported, not fatal
        return FrameworkInfo(key, apps.NAMES[key], "", f"unavailable: {describe_error(exc)}")
    distribution = getattr(module, "DISTRIBUTION", None)
    version = ""
    if distribution:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    return FrameworkInfo(key, module.NAME, version)


@dataclass
class Job:
    """One benchmark of one app, prepared (verified, round size chosen) and its figures."""

    framework: str
    bench: Bench
    app: App
    state: dict[str, Any]
    n: int = 0
    figures: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class AppSpec:
    framework: str
    label: str  # for progress lines
    factory: Callable[[], Any]
    benches: list[Bench]


def app_specs(config: Config, key: str) -> list[AppSpec]:
    """The apps to build for one framework and the benchmarks each one runs."""
    module = apps.load(key)
    specs = []
    main = []
    if "endpoints" in config.sections:
        main += [http_bench(HTTP_CASES[name]) for name in ENDPOINTS]
    if "ws" in config.sections:
        main.append(WS)
    if main:
        specs.append(AppSpec(key, module.NAME, module.make_app, main))
    if "routing" in config.sections:
        for n in ROUTING_SIZES:
            factory = functools.partial(module.make_routing_app, n)
            bench = http_bench(routing_case(n))
            specs.append(AppSpec(key, f"{module.NAME} ({n} routes)", factory, [bench]))
    if "middleware" in config.sections and hasattr(module, "make_middleware_app"):
        for kind in apps.MIDDLEWARE_KINDS:
            factory = functools.partial(module.make_middleware_app, kind)
            bench = http_bench(HTTP_CASES["plaintext"], f"mw-{kind}")
            specs.append(AppSpec(key, f"{module.NAME} (middleware {kind})", factory, [bench]))
    return specs


def _round_size(config: Config, seconds_per_item: float) -> int:
    if seconds_per_item <= 0:
        return config.requests
    fit = int(config.max_round_seconds / seconds_per_item)
    return max(config.min_requests, min(config.requests, fit))


async def _prepare(
    config: Config,
    spec: AppSpec,
    clock: Clock,
    cells: dict[str, Cell],
    lifespans: list[Lifespan],
) -> list[Job]:
    """Build and start one app, check each benchmark's answers, choose its round size."""
    try:
        app = spec.factory()
        lifespan = Lifespan(app)
        state = await lifespan.startup()
    except Exception as exc:
        error = f"unavailable: {describe_error(exc)}"
        _log(config, f"  {spec.label}: {error}")
        for bench in spec.benches:
            cells[bench.name] = Cell(error=error)
        return []
    lifespans.append(lifespan)
    if lifespan.declined is not None:
        _log(config, f"  {spec.label}: no lifespan ({describe_error(lifespan.declined)})")
    jobs = []
    calibration = max(20, config.min_requests // 5)
    for bench in spec.benches:
        try:
            await bench.verify(app, state)
            await bench.batch(app, state, calibration, clock)  # warm-up
            elapsed = await bench.batch(app, state, calibration, clock)
        except Exception as exc:
            cells[bench.name] = Cell(error=describe_error(exc))
            _log(config, f"  {spec.label} {bench.name}: FAILED {cells[bench.name].error}")
            continue
        n = _round_size(config, elapsed / 1e9 / calibration)
        jobs.append(Job(spec.framework, bench, app, state, n))
    return jobs


async def _run_rounds(config: Config, jobs: list[Job], clock: Clock, loop_name: str) -> None:
    """Time every job once per round, round after round.

    NOTE: interleaved, so that a busy spell on the shared machine lands on a few rounds
    of many jobs rather than on every round of one job; the order rotates each round.
    """
    for r in range(config.rounds):
        started = time.perf_counter()
        shift = r % max(1, len(jobs))
        for job in jobs[shift:] + jobs[:shift]:
            if job.error is not None:
                continue
            try:
                # NOTE: a short warm-up: the previous job left other code in the caches.
                await job.bench.batch(job.app, job.state, max(1, job.n // 10), clock)
                gc.collect()
                elapsed = await job.bench.batch(job.app, job.state, job.n, clock)
            except Exception as exc:
                job.error = describe_error(exc)
                continue
            job.figures.append(elapsed / 1e3 / job.n)
        took = time.perf_counter() - started
        _log(config, f"[{loop_name}] round {r + 1}/{config.rounds}: {took:.1f} s")


async def _finish(config: Config, job: Job, cells: dict[str, Cell]) -> None:
    """Check the answers once more, then turn the job's figures into a cell."""
    name = job.bench.name
    if job.error is None:
        try:
            await job.bench.verify(job.app, job.state)
        except Exception as exc:
            job.error = describe_error(exc)
    label = f"  {apps.NAMES[job.framework]} {name}"
    if job.error is not None or not job.figures:
        cells[name] = Cell(error=job.error or "no figures")
        _log(config, f"{label}: FAILED {cells[name].error}")
        return
    figures = job.figures
    m = Measurement(min(figures), statistics.median(figures), len(figures), job.n)
    cells[name] = Cell(m)
    _log(config, f"{label}: {m.best:.2f} us best, {m.median:.2f} median ({m.rounds}x{job.n})")


async def _run_loop(config: Config, result: SuiteResult, loop_name: str) -> None:
    clock = CLOCKS[config.clock]
    per_loop = result.cells.setdefault(loop_name, {})
    lifespans: list[Lifespan] = []
    jobs: list[Job] = []
    try:
        for key in config.frameworks:
            info = result.frameworks[key]
            if info.error is not None:
                continue
            _log(config, f"[{loop_name}] preparing {info.name} {info.version}".rstrip())
            cells = per_loop.setdefault(key, {})
            for spec in app_specs(config, key):
                jobs += await _prepare(config, spec, clock, cells, lifespans)
        # PERF: every app stays alive for the whole run; frozen out of the collector so
        # that no app pays, in its collections, for the heap of the others.
        gc.collect()
        gc.freeze()
        await _run_rounds(config, jobs, clock, loop_name)
        for job in jobs:
            await _finish(config, job, per_loop[job.framework])
    finally:
        for lifespan in lifespans:
            try:
                await lifespan.shutdown()
            except Exception as exc:
                _log(config, f"  lifespan shutdown failed: {describe_error(exc)}")
        gc.unfreeze()


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_suite(config: Config) -> SuiteResult:
    """Run the whole in-process suite on every configured loop."""
    started = time.perf_counter()
    result = SuiteResult(config)
    for key in config.frameworks:
        result.frameworks[key] = framework_info(key)
        if result.frameworks[key].error:
            _log(config, f"{key}: {result.frameworks[key].error}")
    for loop_name in config.loops:
        try:
            factory = _loop_factory(loop_name)
        except ImportError as exc:
            result.loops_unavailable[loop_name] = f"unavailable: {describe_error(exc)}"
            _log(config, f"[{loop_name}] {result.loops_unavailable[loop_name]}")
            continue
        loop = factory()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(_run_loop(config, result, loop_name))
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- plain report


def format_plain(result: SuiteResult) -> str:
    """A terse text table (the Markdown report lives in run.py)."""
    lines = []
    benches = (*ENDPOINTS, WS_BENCH, *ROUTING_BENCHES, *MIDDLEWARE_BENCHES)
    for loop_name, per_loop in result.cells.items():
        lines.append(f"[{loop_name}] best us/request (ratio to raw)")
        for key, info in result.frameworks.items():
            if info.error is not None:
                lines.append(f"  {info.name:<12} {info.error}")
                continue
            parts = []
            for bench in benches:
                cell = per_loop.get(key, {}).get(bench)
                if cell is None:
                    continue
                if cell.measurement is None:
                    parts.append(f"{bench}=ERR")
                    continue
                raw = result.best(loop_name, "raw", bench)
                ratio = f" ({cell.measurement.best / raw:.1f}x)" if raw else ""
                parts.append(f"{bench}={cell.measurement.best:.2f}{ratio}")
            lines.append(f"  {info.name:<12} " + "  ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    config = config_from_args(parser.parse_args(argv))
    result = run_suite(config)
    print(format_plain(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
