"""Start-up and idle-connection benchmark: what an import costs, what an open WebSocket holds.

Two measures per framework, microasgi beside the peers of ``benchmarks/apps``:

- import: the wall time of ``python -c "import ..."`` (what a hello-world app imports) minus
  that of ``python -c "pass"``, in fresh interpreters with the bytecode already compiled (as
  ``pip install`` leaves it), rounds interleaved; best and median of the rounds;
- idle WebSocket: ``--connections`` WebSockets to the ``/ws`` echo route of each
  framework's benchmark app, accepted and waiting for a message, in a fresh process, in
  process (no server); the Python memory they hold (``tracemalloc``) and the growth of the
  process's RSS, per connection. The raw ASGI app is the floor: the scope, the harness's
  channel and the task, which every framework pays.

    python benchmarks/startup.py [--rounds 15] [--connections 2000] [--quick]
                                 [--output docs/benchmarks.md] [--readme README.md]

``--output`` rewrites that page's ``startup`` section, ``--readme`` the README's
``startup-summary`` (``benchmarks/sections.py``).

Target (PERFORMANCE.md): ``import microasgi`` under 50 ms; memory per idle WebSocket
connection reported. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.apps import FRAMEWORKS, NAMES, load
from benchmarks.inprocess import Lifespan, ws_scope
from benchmarks.sections import check_section, provenance, write_section

ROOT = Path(__file__).resolve().parent.parent
IMPORT_TARGET_MS = 50.0
# What a hello-world app with one WebSocket route imports, framework by framework.
IMPORTS = {
    "microasgi": "import microasgi",
    "blacksheep": "import blacksheep",
    "falcon": "import falcon.asgi",
    "starlette": (
        "import starlette.applications, starlette.routing, starlette.responses, "
        "starlette.websockets"
    ),
    "litestar": "import litestar",
    "fastapi": "import fastapi",
}
BASELINE = "pass"
Message = dict[str, Any]


@dataclass
class ImportResult:
    best_ms: float
    median_ms: float


@dataclass
class IdleResult:
    connections: int
    heap_kib: float  # tracemalloc, per connection
    rss_kib: float  # RSS growth, per connection


@dataclass
class Result:
    rounds: int
    baseline_ms: float
    imports: dict[str, ImportResult | str] = field(default_factory=dict)
    idle: dict[str, IdleResult | str] = field(default_factory=dict)


# --------------------------------------------------------------------------- import time


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # NOTE: a user's interpreter reads compiled bytecode; never measure compilation.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _time_statement(statement: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], env=env, check=True)
    return (time.perf_counter() - start) * 1000


def measure_imports(keys: list[str], rounds: int) -> tuple[float, dict[str, ImportResult | str]]:
    """Best and median import time per framework, after the interpreter's own start."""
    env = _child_env()
    statements = {BASELINE: BASELINE}
    results: dict[str, ImportResult | str] = {}
    for key in keys:
        try:
            _time_statement(IMPORTS[key], env)  # compiles and caches the bytecode
        except subprocess.CalledProcessError:
            results[key] = "not installed"
            continue
        statements[key] = IMPORTS[key]
    times: dict[str, list[float]] = {key: [] for key in statements}
    for _ in range(rounds):
        for key, statement in statements.items():
            times[key].append(_time_statement(statement, env))
    base = times.pop(BASELINE)
    for key, samples in times.items():
        results[key] = ImportResult(
            best_ms=min(samples) - min(base),
            median_ms=statistics.median(samples) - statistics.median(base),
        )
    return min(base), results


# --------------------------------------------------------------------------- idle WebSockets


class IdleConnections:
    """Clients that connect, are accepted, then stay silent until ``release()``."""

    def __init__(self, expected: int) -> None:
        loop = asyncio.get_running_loop()
        self.expected = expected
        self.accepted = 0
        self.all_accepted = loop.create_future()
        self.released = loop.create_future()

    async def receive(self, connected: list[bool]) -> Message:
        if not connected[0]:
            connected[0] = True
            return {"type": "websocket.connect"}
        await self.released
        return {"type": "websocket.disconnect", "code": 1000, "reason": ""}

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.accept":
            self.accepted += 1
            if self.accepted == self.expected:
                self.all_accepted.set_result(None)

    def release(self) -> None:
        self.released.set_result(None)


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def _open(app: Any, state: dict[str, Any], n: int) -> tuple[IdleConnections, list[Any]]:
    clients = IdleConnections(n)
    tasks = []
    for _ in range(n):
        connected = [False]

        async def receive(connected: list[bool] = connected) -> Message:
            return await clients.receive(connected)

        scope = ws_scope()
        scope["state"] = state.copy()
        tasks.append(asyncio.ensure_future(app(scope, receive, clients.send)))
    await asyncio.wait_for(clients.all_accepted, 120)
    return clients, tasks


async def _close(clients: IdleConnections, tasks: list[Any]) -> None:
    clients.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)


async def idle_memory(key: str, n: int) -> IdleResult:
    """Open ``n`` idle WebSockets to ``key``'s app; the memory they hold, per connection."""
    app = load(key).make_app()
    lifespan = Lifespan(app)
    state = await lifespan.startup()
    await _close(*await _open(app, state, 10))  # warm caches, pools and free lists
    gc.collect()
    rss_before = _rss_kib()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    clients, tasks = await _open(app, state, n)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rss = _rss_kib() - rss_before
    await _close(clients, tasks)
    await lifespan.shutdown()
    return IdleResult(connections=n, heap_kib=heap / 1024 / n, rss_kib=rss / n)


def measure_idle(keys: list[str], n: int) -> dict[str, IdleResult | str]:
    """Each framework in its own process, so no framework pays for another's memory."""
    results: dict[str, IdleResult | str] = {}
    for key in keys:
        done = subprocess.run(
            [sys.executable, __file__, "--idle-child", key, "--connections", str(n)],
            env=_child_env(),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = (done.stderr.strip() or "failed").splitlines()
            results[key] = lines[-1][:120]
            continue
        results[key] = IdleResult(**json.loads(done.stdout))
    return results


# --------------------------------------------------------------------------- report


def render(result: Result) -> str:
    rows = []
    for key in ["raw", *IMPORTS]:
        if key not in result.imports and key not in result.idle:
            continue
        imported = result.imports.get(key)
        idle = result.idle.get(key)
        if isinstance(imported, ImportResult):
            import_cells = [f"{imported.best_ms:.1f}", f"{imported.median_ms:.1f}"]
        else:
            import_cells = [imported or "\u2013"] * 2
        if isinstance(idle, IdleResult):
            idle_cells = [f"{idle.heap_kib:.2f}", f"{idle.rss_kib:.2f}"]
        else:
            idle_cells = [idle or "\u2013"] * 2
        rows.append(f"| {NAMES[key]} | " + " | ".join(import_cells + idle_cells) + " |")
    ours = result.imports.get("microasgi")
    verdict = "not measured"
    if isinstance(ours, ImportResult):
        ok = ours.best_ms < IMPORT_TARGET_MS
        verdict = f"{ours.best_ms:.1f} ms: **{'pass' if ok else 'miss'}**"
    connections = next(
        (r.connections for r in result.idle.values() if isinstance(r, IdleResult)), 0
    )
    lines = [
        "## Start-up and idle WebSockets",
        "",
        f"{provenance('benchmarks/startup.py')}.",
        "",
        'Import: the wall time of `python -c "import ..."` (what a hello-world app with a '
        'WebSocket route imports) minus that of `python -c "pass"` '
        f"({result.baseline_ms:.1f} ms), bytecode compiled as `pip install` leaves it, best "
        f"and median of {result.rounds} interleaved rounds. Idle WebSocket: {connections:,} "
        "connections to each benchmark app's `/ws` echo, accepted and waiting for a message, "
        "in process; Python heap (tracemalloc) and RSS growth per connection. The raw ASGI row "
        "is what the scope, the harness and the task cost anyway.",
        "",
        "| framework | import, ms (best) | import, ms (median) "
        "| idle WebSocket, KiB of Python heap | KiB of RSS |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Target: `import microasgi` under {IMPORT_TARGET_MS:.0f} ms: {verdict}. "
        "microasgi loads forms, files, cookies, server-sent events, the middleware and the "
        "debug page on first use, not at import.",
    ]
    above = {key: _above_raw(result, key) for key in ("microasgi", "starlette")}
    if above["microasgi"] is not None:
        versus = "" if above["starlette"] is None else f", against {above['starlette']:.1f} KiB"
        lines += [
            "",
            f"An idle WebSocket costs microasgi {above['microasgi']:.1f} KiB of Python heap "
            f"above raw ASGI (its `WebSocket`, the handler's frames){versus} for Starlette.",
        ]
    return "\n".join(lines) + "\n"


def _above_raw(result: Result, key: str) -> float | None:
    """Python heap per idle WebSocket beyond the raw ASGI app's, KiB."""
    ours, raw = result.idle.get(key), result.idle.get("raw")
    if not isinstance(ours, IdleResult) or not isinstance(raw, IdleResult):
        return None
    return ours.heap_kib - raw.heap_kib


def render_summary(result: Result) -> str:
    """The README's sentence: import time and idle WebSocket memory beside the peers."""
    parts = []
    ours = result.imports.get("microasgi")
    if isinstance(ours, ImportResult):
        peers = [
            f"{NAMES[key]} {found.best_ms:.0f} ms"
            for key in ("starlette", "fastapi")
            if isinstance(found := result.imports.get(key), ImportResult)
        ]
        versus = f" ({', '.join(peers)})" if peers else ""
        parts.append(f"`import microasgi` takes about {ours.best_ms:.0f} ms{versus}")
    idle = result.idle.get("microasgi")
    if isinstance(idle, IdleResult):
        peer = result.idle.get("starlette")
        versus = f" (Starlette {peer.heap_kib:.1f} KiB)" if isinstance(peer, IdleResult) else ""
        parts.append(f"an idle WebSocket holds {idle.heap_kib:.1f} KiB of Python heap{versus}")
    if not parts:
        return "Start-up and idle WebSockets: not measured.\n"
    text = " and ".join(parts)
    return text[:1].upper() + text[1:] + ".\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    peers = ["microasgi", *(k for k in FRAMEWORKS if k not in ("raw", "microasgi"))]
    parser.add_argument("--frameworks", nargs="+", choices=peers, default=peers)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 200 connections")
    parser.add_argument("--output", type=Path, help="page whose startup section to rewrite")
    parser.add_argument("--readme", type=Path, help="README whose startup-summary to rewrite")
    parser.add_argument("--json", type=Path, help="also dump the raw results there")
    parser.add_argument("--idle-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.idle_child:
        measured = asyncio.run(idle_memory(args.idle_child, args.connections))
        print(json.dumps(asdict(measured)))
        return 0
    if args.quick:
        args.rounds, args.connections = 3, 200
    targets = [(args.output, "startup"), (args.readme, "startup-summary")]
    for path, name in targets:  # a page without its markers fails now, not after the run
        if path is not None:
            check_section(path, name)
    baseline, imports = measure_imports(args.frameworks, args.rounds)
    result = Result(
        rounds=args.rounds,
        baseline_ms=baseline,
        imports=imports,
        idle=measure_idle(["raw", *args.frameworks], args.connections),
    )
    text = render(result)
    print(text)
    if args.output:
        write_section(args.output, "startup", text)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.readme:
        write_section(args.readme, "startup-summary", render_summary(result))
        print(f"wrote {args.readme}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
