"""WebSocket echo end to end: server CPU time per message under uvicorn and granian.

Each framework's main app is served on one core; a client on the other core (this
process, the ``websockets`` library) opens one connection to ``/ws`` and pipelines
``--messages`` text messages while it reads the echoes. The figure is the server's CPU time
(nanoseconds from ``/proc/<pid>/task/*/schedstat``, every process of the server's group) per
echoed message: what a real server and the framework together spend on one message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets

from benchmarks import apps
from benchmarks.endtoend import (
    CLIENT_CPU,
    HOST,
    SUBJECT,
    EndToEndError,
    group_processes,
    running_server,
)
from benchmarks.sections import check_section, provenance, write_section
from benchmarks.workload import WS_TEXT

SERVERS = ("uvicorn", "granian")
SECTION = "wsecho"


@dataclass
class Cell:
    """One framework on one server: server CPU µs per message and messages/s, per round."""

    cpu_us: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    error: str | None = None


def server_cpu_ns(pgid: int) -> int:
    """CPU time, in ns, of every thread of every live process in the server's group."""
    total = 0
    for process, _ in group_processes(pgid):
        try:
            for task in os.scandir(process / "task"):
                total += int(Path(task.path, "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue  # NOTE: a process or thread that ended while it was read
    return total


async def echo(port: int, messages: int) -> float:
    """Pipeline ``messages`` texts over one connection, check every echo; seconds taken."""
    async with websockets.connect(f"ws://{HOST}:{port}/ws", max_queue=None) as ws:
        await ws.send(WS_TEXT)
        if await ws.recv() != WS_TEXT:
            raise EndToEndError("the first echo is wrong")

        async def send_all() -> None:
            for _ in range(messages):
                await ws.send(WS_TEXT)

        async def receive_all() -> None:
            for _ in range(messages):
                if await ws.recv() != WS_TEXT:
                    raise EndToEndError("an echo is wrong")

        started = time.perf_counter()
        await asyncio.gather(send_all(), receive_all())
        return time.perf_counter() - started


def run(
    servers: list[str], keys: list[str], rounds: int, messages: int
) -> dict[str, dict[str, Cell]]:
    """Every framework on every server, rounds interleaved across the frameworks."""
    results: dict[str, dict[str, Cell]] = {}
    for server in servers:
        cells = results[server] = {key: Cell() for key in keys}
        with contextlib.ExitStack() as stack:
            ports: dict[str, tuple[int, int]] = {}
            for key in keys:
                try:
                    apps.load(key)
                    ports[key] = stack.enter_context(
                        running_server(server, key, "make_app", "/plaintext")
                    )
                except Exception as exc:
                    cells[key].error = f"{type(exc).__name__}: {exc}"
            for _ in range(rounds):
                for key, (port, pgid) in ports.items():
                    if cells[key].error is not None:
                        continue
                    before = server_cpu_ns(pgid)
                    try:
                        seconds = asyncio.run(echo(port, messages))
                    except Exception as exc:
                        cells[key].error = f"{type(exc).__name__}: {exc}"
                        continue
                    cpu = server_cpu_ns(pgid) - before
                    cells[key].cpu_us.append(cpu / messages / 1000)
                    cells[key].rate.append(messages / seconds)
    return results


def render(results: dict[str, dict[str, Cell]], rounds: int, messages: int) -> str:
    lines = [
        "## WebSocket echo end to end",
        "",
        provenance("benchmarks/wsecho.py") + ".",
        "",
        f"One connection to `/ws`; the client pipelines {messages:,} text messages while it "
        f"reads the echoes; median of {rounds} rounds interleaved across the frameworks. One "
        "worker pinned to CPU 0, the client (the `websockets` library) on CPU 1. uvicorn "
        "`--loop uvloop` (its default WebSocket protocol, on the `websockets` sans-I/O "
        "layer), granian `--interface asgi --loop uvloop`. Server CPU time per message "
        "counts every thread of the server.",
        "",
        "| framework | "
        + " | ".join(f"{s}: server CPU µs per message" for s in results)
        + " | "
        + " | ".join(f"{s}: messages/s" for s in results)
        + " |",
        "|---|" + "---:|" * (2 * len(results)),
    ]
    keys = list(next(iter(results.values()), {}))
    for key in keys:
        cpu_cells, rate_cells = [], []
        for cells in results.values():
            cell, raw = cells[key], cells.get("raw")
            if cell.error is not None or not cell.cpu_us:
                cpu_cells.append(f"n/a ({cell.error})" if cell.error else "n/a")
                rate_cells.append("n/a")
                continue
            cpu = statistics.median(cell.cpu_us)
            text = f"{cpu:.2f}"
            if raw is not None and raw.cpu_us and key != "raw":
                text += f" ({cpu / statistics.median(raw.cpu_us):.2f}\u00d7)"
            cpu_cells.append(text)
            rate_cells.append(f"{statistics.median(cell.rate):,.0f}")
        lines.append(f"| {apps.NAMES[key]} | " + " | ".join(cpu_cells + rate_cells) + " |")
    lines += ["", *_verdicts(results)]
    return "\n".join(lines)


def _verdicts(results: dict[str, dict[str, Cell]]) -> list[str]:
    """Where microasgi stands against raw ASGI and the peers, per server."""
    out = []
    for server, cells in results.items():
        ours, raw = cells.get(SUBJECT), cells.get("raw")
        if ours is None or not ours.cpu_us:
            continue
        mine = statistics.median(ours.cpu_us)
        parts = []
        if raw is not None and raw.cpu_us:
            parts.append(
                f"{mine - statistics.median(raw.cpu_us):+.2f} µs per message against raw ASGI"
            )
        peers = {
            apps.NAMES[key]: statistics.median(cell.cpu_us)
            for key, cell in cells.items()
            if key not in ("raw", SUBJECT) and cell.cpu_us
        }
        if peers:
            beaten = [name for name, cpu in peers.items() if cpu > mine]
            parts.append(
                f"less server CPU per message than {len(beaten)} of {len(peers)} peers"
                + (f" ({', '.join(beaten)})" if beaten else "")
            )
        if parts:
            out.append(f"- {server}: microasgi " + "; ".join(parts) + ".")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--frameworks", nargs="+", choices=list(apps.FRAMEWORKS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2,000 messages")
    parser.add_argument("--output", type=Path, help="page whose wsecho section to rewrite")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages = 2, 2_000
    if args.output is not None:  # a page without its markers fails now, not after the run
        check_section(args.output, SECTION)
    keys = args.frameworks or list(apps.FRAMEWORKS)
    if "raw" not in keys:
        keys.insert(0, "raw")
    # NOTE: the client on its own core, as wrk is for the HTTP figures.
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    markdown = render(
        run(args.servers, keys, args.rounds, args.messages), args.rounds, args.messages
    )
    print(markdown)
    if args.output is not None:
        write_section(args.output, SECTION, markdown)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
