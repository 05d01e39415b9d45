"""End to end: each app under granian and uvicorn, loaded by ``wrk``.

One server worker pinned to CPU 0 (``taskset -c 0``), ``wrk`` pinned to CPU 1, 127.0.0.1
only, a free port per server. The figure is the median requests/s of a few runs, with its
ratio to the raw ASGI app on the same server. The I/O-bound scenario (``GET /io`` awaits
50 ms) is compared with Little's law: connections / latency.

    python benchmarks/endtoend.py [--quick] [--frameworks ...] [--servers granian uvicorn]
                                  [--output docs/benchmarks.md]

``--output`` rewrites that page's ``endtoend`` section (``benchmarks/sections.py``);
``run.py --endtoend`` does the same after its in-process run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from benchmarks import apps
from benchmarks.sections import check_section, provenance, write_section
from benchmarks.workload import IO_DELAY, PLAINTEXT, USER_ID

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVERS = ("granian", "uvicorn")
ENDPOINTS = {"plaintext": "/plaintext", "json": "/json", "users": f"/users/{USER_ID}"}
IO_CONNECTIONS = (256, 1024)
SERVER_CPU = "0"
CLIENT_CPU = "1"
SUBJECT = "microasgi"
DASH = "\u2013"
# PERFORMANCE.md: at 256 connections a share of Little's law, at 1024 a floor in req/s.
IO_TARGETS: dict[int, float] = {256: 0.94, 1024: 10_000}

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_REQUESTS = re.compile(r"(\d+) requests in")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class EndToEndConfig:
    frameworks: tuple[str, ...] = tuple(apps.FRAMEWORKS)
    servers: tuple[str, ...] = SERVERS
    runs: int = 3
    duration: int = 5
    connections: int = 64
    io: bool = True
    verbose: bool = True


@dataclass
class Figure:
    """Median requests/s of the runs (and server CPU per request), or why there is none."""

    rps: float | None = None
    runs: list[float] = field(default_factory=list)
    cpu_us: float | None = None  # median server CPU time per request, µs
    cpu_runs: list[float] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None  # non-2xx answers or socket errors seen by wrk


@dataclass
class EndToEndResult:
    config: EndToEndConfig
    names: dict[str, str] = field(default_factory=dict)
    # server -> framework -> benchmark ("plaintext", "io-256", ...) -> figure
    figures: dict[str, dict[str, dict[str, Figure]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # server or tool -> reason
    seconds: float = 0.0


class EndToEndError(Exception):
    """The server did not start, or did not answer as expected."""


def _log(config: EndToEndConfig, text: str) -> None:
    if config.verbose:
        print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _python_tool(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise EndToEndError(f"{name} is not installed")
    return found


def server_command(server: str, key: str, factory: str, port: int) -> list[str]:
    target = f"{apps.FRAMEWORKS[key]}:{factory}"
    pin = ["taskset", "-c", SERVER_CPU]
    if server == "uvicorn":
        return [
            *pin,
            _python_tool("uvicorn"),
            "--factory",
            target,
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return [
        *pin,
        _python_tool("granian"),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        target,
    ]


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def running_server(
    server: str, key: str, factory: str, check_path: str
) -> Iterator[tuple[int, int]]:
    """Start a server on a free port, wait until it answers check_path; stop it by PID.

    Yields the port and the server's process group id.
    """
    port = free_port()
    command = server_command(server, key, factory, port)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as log:
        # NOTE: a session of its own, so the server and its workers are stopped together,
        # by this process group id and nothing else.
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            _wait_ready(process, port, check_path, log)
            yield port, process.pid
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], port: int, path: str, log: Any) -> None:
    deadline = time.monotonic() + 60
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read()[-600:].decode(errors="replace").strip().replace("\n", " ")
            raise EndToEndError(f"server exited with {process.returncode}: {tail}")
        try:
            status, body = _get(port, path)
        except OSError as exc:
            last_error = str(exc)
            time.sleep(0.2)
            continue
        if status != 200:
            raise EndToEndError(f"GET {path} answered {status}: {body[:200]!r}")
        return
    raise EndToEndError(f"server not answering on port {port} after 60 s: {last_error}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    else:
        # NOTE: the leader is gone; workers it left behind share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def group_processes(pgid: int) -> Iterator[tuple[Path, list[str]]]:
    """Each live process of the process group: its ``/proc`` directory and its stat fields.

    The fields are those after the parenthesised command name: state ppid pgrp ... utime
    stime (``utime`` is ``fields[11]``).
    """
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            yield Path(entry.path), fields


def server_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in the server's process group."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in group_processes(pgid))
    return ticks / CLOCK_TICKS


def wrk(port: int, path: str, connections: int, duration: int) -> tuple[float, int, str | None]:
    """One wrk run: requests/s, requests completed, and a warning when wrk saw errors."""
    command = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        f"http://{HOST}:{port}{path}",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    match = _RPS.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise EndToEndError(f"wrk failed: {(completed.stderr or completed.stdout)[-300:]}")
    warnings = []
    non_2xx = _NON_2XX.search(completed.stdout)
    if non_2xx:
        warnings.append(f"{non_2xx.group(1)} non-2xx")
    errors = _SOCKET_ERRORS.search(completed.stdout)
    if errors and any(int(n) for n in errors.groups()):
        warnings.append(errors.group(0))
    done = _REQUESTS.search(completed.stdout)
    requests = int(done.group(1)) if done else 0
    return float(match.group(1)), requests, "; ".join(warnings) or None


def _check_bodies(port: int) -> None:
    """The served app answers the workload exactly (JSON compared as parsed values)."""
    expected: dict[str, Any] = {
        "/plaintext": PLAINTEXT,
        "/json": {"message": PLAINTEXT},
        f"/users/{USER_ID}": {"id": USER_ID},
    }
    for path, want in expected.items():
        status, body = _get(port, path)
        try:
            got = body.decode() if isinstance(want, str) else orjson.loads(body)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            got = body
        if status != 200 or got != want:
            raise EndToEndError(f"GET {path}: {status} {body[:200]!r}")


@dataclass(frozen=True)
class Scenario:
    """One column of the tables: a path loaded with a number of connections."""

    bench: str
    factory: str
    path: str
    connections: int


def scenarios(config: EndToEndConfig) -> list[Scenario]:
    found = [Scenario(b, "make_app", p, config.connections) for b, p in ENDPOINTS.items()]
    if config.io:
        found += [Scenario(f"io-{c}", "make_io_app", "/io", c) for c in IO_CONNECTIONS]
    return found


def _run_factory(
    config: EndToEndConfig,
    server: str,
    keys: list[str],
    factory: str,
    todo: list[Scenario],
    figures: dict[str, dict[str, Figure]],
) -> None:
    """Start one server per framework, then interleave the wrk runs across them.

    NOTE: round-robin (run 1 of every app, then run 2, ...) so that drift on the shared
    machine hits every framework alike instead of whichever ran during a slow spell.
    """
    check_path = todo[0].path
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        groups: dict[str, int] = {}
        for key in keys:
            try:
                port, groups[key] = stack.enter_context(
                    running_server(server, key, factory, check_path)
                )
                if factory == "make_app":
                    _check_bodies(port)
            except EndToEndError as exc:
                _log(config, f"  {server} {apps.NAMES[key]} {factory}: {exc}")
                for scenario in todo:
                    figures[key][scenario.bench] = Figure(error=f"unavailable: {exc}")
                continue
            ports[key] = port
        for port in ports.values():  # warm-up, not counted
            with contextlib.suppress(EndToEndError, subprocess.TimeoutExpired):
                wrk(port, check_path, config.connections, 1)
        for run in range(config.runs):
            for scenario in todo:
                for key, port in ports.items():
                    figure = figures[key].setdefault(scenario.bench, Figure())
                    if figure.error is not None:
                        continue
                    try:
                        cpu_before = server_cpu_seconds(groups[key])
                        rps, requests, warning = wrk(
                            port, scenario.path, scenario.connections, config.duration
                        )
                        cpu = server_cpu_seconds(groups[key]) - cpu_before
                    except (EndToEndError, subprocess.TimeoutExpired) as exc:
                        figure.error = f"{type(exc).__name__}: {exc}"
                        _log(config, f"  {server} {apps.NAMES[key]} {scenario.bench}: {exc}")
                        continue
                    figure.runs.append(rps)
                    if requests:
                        figure.cpu_runs.append(cpu / requests * 1e6)
                    if warning:
                        figure.warning = "; ".join(dict.fromkeys([figure.warning or "", warning]))
                        figure.warning = figure.warning.strip("; ")
                    _log(
                        config,
                        f"  {server} run {run + 1}/{config.runs} {scenario.bench} "
                        f"{apps.NAMES[key]}: {rps:,.0f} req/s, server CPU "
                        f"{cpu / max(1, requests) * 1e6:.1f} us/request {warning or ''}".rstrip(),
                    )


def _importable(key: str) -> str | None:
    try:
        apps.load(key)
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    return None


def run_endtoend(config: EndToEndConfig) -> EndToEndResult:
    started = time.perf_counter()
    result = EndToEndResult(config, names={k: apps.NAMES[k] for k in config.frameworks})
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            result.unavailable[tool] = f"{tool} is not installed (Debian package {package})"
    if result.unavailable:
        return result
    broken = {key: error for key in config.frameworks if (error := _importable(key))}
    keys = [key for key in config.frameworks if key not in broken]
    todo = scenarios(config)
    for server in config.servers:
        try:
            _python_tool(server)
        except EndToEndError as exc:
            result.unavailable[server] = str(exc)
            continue
        figures: dict[str, dict[str, Figure]] = {key: {} for key in config.frameworks}
        for key, error in broken.items():
            figures[key] = {scenario.bench: Figure(error=error) for scenario in todo}
        for factory in dict.fromkeys(scenario.factory for scenario in todo):
            _log(config, f"[{server}] {factory}: {', '.join(apps.NAMES[k] for k in keys)}")
            subset = [scenario for scenario in todo if scenario.factory == factory]
            _run_factory(config, server, keys, factory, subset, figures)
        for per_key in figures.values():
            for figure in per_key.values():
                if figure.error is None and figure.runs:
                    figure.rps = statistics.median(figure.runs)
                if figure.error is None and figure.cpu_runs:
                    figure.cpu_us = statistics.median(figure.cpu_runs)
        result.figures[server] = figures
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- report


def _figure(result: EndToEndResult, server: str, key: str, bench: str) -> Figure | None:
    return result.figures.get(server, {}).get(key, {}).get(bench)


class _Notes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def _cell(
    result: EndToEndResult,
    server: str,
    key: str,
    bench: str,
    notes: _Notes,
    value: Callable[[Figure], float | None],
    fmt: Callable[[float, float | None], str],
) -> str:
    figure = _figure(result, server, key, bench)
    if figure is None:
        return DASH
    if figure.error is not None or value(figure) is None:
        why = figure.error or "no figure"
        return "error " + notes.ref(f"{result.names[key]} on {server}, {bench}: {why}")
    raw = _figure(result, server, "raw", bench)
    raw_value = value(raw) if raw is not None and key != "raw" else None
    text = fmt(value(figure) or 0.0, raw_value)
    if figure.warning:
        text += " " + notes.ref(
            f"{result.names[key]} on {server}, {bench}: wrk saw {figure.warning}"
        )
    return text


def _rps_text(value: float, raw: float | None) -> str:
    return f"{value:,.0f}" + (f" ({value / raw:.2f})" if raw else "")


def _cpu_text(value: float, raw: float | None) -> str:
    return f"{value:.1f}" + (f" ({value / raw:.2f}\u00d7)" if raw else "")


def _io_text(bench: str) -> Callable[[float, float | None], str]:
    bound = int(bench.split("-")[1]) / IO_DELAY
    return lambda value, raw: f"{value:,.0f} ({value / bound:.0%})"


def _table(
    result: EndToEndResult,
    servers: list[str],
    benches: list[str],
    notes: _Notes,
    value: Callable[[Figure], float | None],
    fmt: Callable[[str], Callable[[float, float | None], str]],
) -> list[str]:
    header = ["framework"] + [f"{s} {b}" for s in servers for b in benches]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for key in result.config.frameworks:
        cells = [_cell(result, s, key, b, notes, value, fmt(b)) for s in servers for b in benches]
        lines.append("| " + " | ".join([result.names[key], *cells]) + " |")
    return lines


def _rps(result: EndToEndResult, server: str, key: str, bench: str) -> float | None:
    figure = _figure(result, server, key, bench)
    return None if figure is None else figure.rps


def _spread(result: EndToEndResult) -> float | None:
    """The largest max/min ratio between the runs of one cell."""
    spreads = [
        max(f.runs) / min(f.runs)
        for per_server in result.figures.values()
        for per_key in per_server.values()
        for f in per_key.values()
        if len(f.runs) > 1 and min(f.runs) > 0
    ]
    return max(spreads, default=None)


def _targets(result: EndToEndResult, servers: list[str]) -> list[str]:
    """PERFORMANCE.md's end-to-end targets, computed from this run's medians."""
    rows = ["| target | goal | measured | result |", "|---|---:|---:|---:|"]

    def add(label: str, goal: str, measured: str | None, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("**pass**" if ok else "**miss**")
        rows.append(f"| {label} | {goal} | {measured or DASH} | {verdict} |")

    for server in servers:
        for bench in ENDPOINTS:
            ours, raw = _rps(result, server, SUBJECT, bench), _rps(result, server, "raw", bench)
            ratio = None if ours is None or not raw else ours / raw
            shown = None if ratio is None else f"{ratio:.0%}"
            add(f"{server} {bench}", "≥ 90% of raw", shown, None if ratio is None else ratio >= 0.9)
        if not result.config.io:
            continue
        for connections, goal in IO_TARGETS.items():
            rps = _rps(result, server, SUBJECT, f"io-{connections}")
            label = f"{server} I/O-bound, {connections} connections"
            if goal < 1:  # a share of Little's law
                share = None if rps is None else rps / (connections / IO_DELAY)
                shown = None if share is None else f"{share:.0%}"
                add(
                    label,
                    f"≥ {goal:.0%} of Little's law",
                    shown,
                    None if share is None else share >= goal,
                )
            else:  # a floor in requests/s
                shown = None if rps is None else f"{rps:,.0f} req/s"
                add(label, f"≥ {goal:,.0f} req/s", shown, None if rps is None else rps >= goal)
    return rows


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"{count} runs"


def render(result: EndToEndResult) -> list[str]:
    """Markdown lines: the end-to-end tables."""
    config = result.config
    lines = [
        "## End to end",
        "",
        f"{provenance('benchmarks/endtoend.py')}; the suite took {result.seconds:.0f} s.",
        "",
        f"One worker pinned to CPU {SERVER_CPU}, `wrk -t1 -c{config.connections} "
        f"-d{config.duration}s` pinned to CPU {CLIENT_CPU}, 127.0.0.1, {_runs(config.runs)} "
        "per figure, interleaved across the frameworks. granian `--interface asgi --loop "
        "uvloop`, uvicorn `--loop uvloop --http httptools`.",
        "",
    ]
    for tool, reason in result.unavailable.items():
        lines.append(f"- {tool}: {reason}")
    servers = [s for s in config.servers if s in result.figures]
    if not servers:
        return lines
    spread = _spread(result)
    if spread is not None:
        lines += [
            f"On this machine the runs of one cell differed by up to {spread:.2f}\u00d7 "
            "(fastest / slowest): read requests/s with that in mind. Server CPU time per "
            "request does not count time the server spent waiting for the CPU and is the "
            "steadier comparison.",
            "",
        ]
    notes = _Notes()
    endpoints = list(ENDPOINTS)
    lines += ["### Requests/s, median of runs (ratio to raw ASGI)", ""]
    lines += _table(result, servers, endpoints, notes, lambda f: f.rps, lambda b: _rps_text)
    lines += ["", "### Requests/s, best of runs (ratio to raw ASGI)", ""]
    lines += _table(
        result, servers, endpoints, notes, lambda f: max(f.runs, default=None), lambda b: _rps_text
    )
    lines += ["", "### Server CPU time per request, µs, median of runs (ratio to raw ASGI)", ""]
    lines += _table(result, servers, endpoints, notes, lambda f: f.cpu_us, lambda b: _cpu_text)
    if config.io:
        bounds = ", ".join(f"{c / IO_DELAY:,.0f} req/s at {c}" for c in IO_CONNECTIONS)
        io_benches = [f"io-{c}" for c in IO_CONNECTIONS]
        lines += [
            "",
            f"### I/O-bound: `GET /io` awaits {IO_DELAY * 1000:.0f} ms",
            "",
            "Requests/s, median of runs, and the share of Little's law (connections / "
            f"latency: {bounds}); then server CPU time per request.",
            "",
        ]
        lines += _table(result, servers, io_benches, notes, lambda f: f.rps, _io_text)
        lines.append("")
        lines += _table(result, servers, io_benches, notes, lambda f: f.cpu_us, lambda b: _cpu_text)
    if SUBJECT in config.frameworks:
        lines += ["", f"### End-to-end targets for {SUBJECT}", "", *_targets(result, servers)]
    if notes.items:
        lines += ["", "Notes:", ""]
        lines += [f"{i}. {text.replace('|', '/')}" for i, text in enumerate(notes.items, 1)]
    return lines


def run_and_render(inprocess_config: Any, quick: bool = False) -> list[str]:
    """Entry point for run.py: same frameworks and verbosity as the in-process run."""
    config = EndToEndConfig(
        frameworks=inprocess_config.frameworks, verbose=inprocess_config.verbose
    )
    if quick:
        config.runs, config.duration = 1, 2
    return render(run_endtoend(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apps under granian and uvicorn, with wrk.")
    parser.add_argument("--frameworks", nargs="+", choices=tuple(apps.FRAMEWORKS))
    parser.add_argument("--servers", nargs="+", choices=SERVERS)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s per figure")
    parser.add_argument("--no-io", action="store_true", help="skip the I/O-bound scenario")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--output", type=Path, help="page whose endtoend section to rewrite")
    args = parser.parse_args(argv)
    if args.output is not None:  # a page without its markers fails now, not after the run
        check_section(args.output, "endtoend")
    config = EndToEndConfig(runs=args.runs, duration=args.duration, io=not args.no_io)
    if args.quick:
        config.runs, config.duration = 1, 2
    if args.frameworks:
        chosen = {"raw", *args.frameworks}
        config.frameworks = tuple(k for k in apps.FRAMEWORKS if k in chosen)
    if args.servers:
        config.servers = tuple(args.servers)
    config.verbose = not args.quiet
    markdown = "\n".join(render(run_endtoend(config))) + "\n"
    print(markdown)
    if args.output is not None:
        write_section(args.output, "endtoend", markdown)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
