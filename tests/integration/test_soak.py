"""Soak runs under uvicorn: misbehaving clients leave nothing behind, memory stays flat.

SECURITY.md ("Also"): a slow client, a client that disconnects mid-body or mid-stream, and
a handler that is cancelled leave no task, file or subscription behind; under load memory
stays flat over hundreds of thousands of requests; every unhandled exception is logged
once, with its traceback.

The server is ``tests/integration/soak_app.py`` in a uvicorn subprocess on a free loopback
port, stopped by its process id. The app measures itself (``/_stats``): asyncio tasks,
open file descriptors, spooled temporary files, RSS, live broadcast subscriptions, handlers
in flight and the ERROR records of the ``microasgi`` logger by request id. Only counts and
memory bounds are asserted, never timings; the load phase prints its rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import HOST, ServerProcess, require_module, serve, server_argv
from tests.support import free_port

pytestmark = pytest.mark.integration

APP = "tests.integration.soak_app:app"
KiB = 1024
MiB = 1024 * KiB
IO_TIMEOUT = 15.0  # a guard against a hang, never reached when the server answers
SETTLE_TIMEOUT = 20.0  # how long the server may take to let go of what clients left

# The misbehaving-client phase: one warm-up round, then ROUNDS more, each with this many
# clients of every kind, all at once.
ROUNDS = 5
BODY_SIZE = 256 * KiB  # /body: Content-Length announced; half of it is sent, then we leave
UPLOAD_SENT = 3 * MiB // 2  # /upload: file bytes sent before leaving (it spools past 1 MiB)
TRICKLE_SIZE = 64  # /trickle: a slow client sends half of it a byte at a time, then the rest
TRICKLE_PAUSE = 0.01
CLIENTS = {"body": 8, "upload": 4, "stream": 8, "slow": 8, "sub": 8, "trickle": 4, "error": 6}
ERROR_PATHS = ("/error?id={}", "/error/sync?id={}", "/stream?fail={}")

# The load phase: keep-alive connections, each sending BATCH pipelined requests at a time.
LOAD_REQUESTS = 400_000
LOAD_WARM = 20_000  # RSS is read once this many have been answered, and again at the end
LOAD_CONNECTIONS = 4
LOAD_BATCH = 64
LOAD_ERROR_EVERY = 2_000  # one /error among this many requests: errors under load, too
LOAD_DEADLINE = 120.0  # a guard against a stalled run, far beyond the expected duration
# NOTE: 8 MiB over the 380,000 requests after the warm mark is 22 bytes a request: keeping
# one small object per request (a bytes(16), 57 bytes with its list slot) adds 21 MiB, and
# a leak of 100 bytes a request would add 36 MiB.
RSS_GROWTH_LIMIT_KIB = 8 * 1024
# NOTE: one gc-tracked object kept per 400 requests would already exceed this.
GC_GROWTH_LIMIT = 950
# NOTE: the count is the same after every round when nothing leaks; one object kept per
# misbehaving client (46 a round) would exceed this within the rounds.
GC_ROUNDS_LIMIT = 100


@dataclass
class Soak:
    server: ServerProcess
    spool: Path

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def soak(tmp_path: Path) -> Iterator[Soak]:
    require_module("uvicorn")
    require_module("websockets")
    if not Path("/proc/self/statm").exists():
        pytest.skip("the soak app measures itself through /proc")
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    argv = [*server_argv("uvicorn", APP, port), "--no-access-log"]
    # NOTE: the server's TMPDIR is a directory of its own, so the spooled upload files are
    # recognisable among its descriptors, and a file left on disk would show there.
    with serve(argv, tmp_path / "server.log", port=port, env={"TMPDIR": str(spool)}) as running:
        yield Soak(running, spool)


# --- a minimal HTTP/1.1 client over asyncio streams -------------------------------------


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)


async def close(writer: asyncio.StreamWriter, *, abort: bool = False) -> None:
    """Leave: a FIN after what was written, or with ``abort`` a reset, at once."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(OSError):
        await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: soak", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(data: bytes) -> tuple[int, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), body


async def exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send a whole request with ``Connection: close``; return the status and raw body."""
    reader, writer = await connect(port)
    try:
        writer.write(head + body)
        data = await asyncio.wait_for(reader.read(), IO_TIMEOUT)
    finally:
        await close(writer)
    return parse_response(data)


async def get_json(port: int, path: str) -> Any:
    status, body = await exchange(port, request_head("GET", path))
    assert status == 200, (path, status, body)
    return json.loads(body)


async def stats(port: int, *, gc: bool = False) -> Any:
    return await get_json(port, "/_stats?gc=1" if gc else "/_stats")


async def wait_for_stats(
    port: int, condition: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll /_stats until ``condition`` holds; fail with the last reading after a while."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        current = await stats(port)
        if condition(current):
            return current
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not so after {SETTLE_TIMEOUT} s; last /_stats: {current}")
        await asyncio.sleep(0.05)


async def settle(port: int, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /_stats until ``condition`` holds, for a while at most; return the last reading."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    current = await stats(port)
    while not condition(current) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        current = await stats(port)
    return current


def brief(current: dict[str, Any]) -> dict[str, Any]:
    """A reading without the list of error ids, to print."""
    errors = {**current["errors"], "by_id": len(current["errors"]["by_id"])}
    return {**current, "errors": errors, "server_lines": len(current["server_lines"])}


def in_flight(name: str, count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda current: current["in_flight"].get(name, 0) >= count


def quiet(current: dict[str, Any]) -> bool:
    """No handler running, no subscription, no spooled file: nothing left to settle."""
    return not current["in_flight"] and not current["subscriptions"] and not current["temp_fds"]


# --- the misbehaving clients --------------------------------------------------------------


async def leave_mid_body(port: int, n: int) -> None:
    """POST /body announcing BODY_SIZE bytes, send half, and leave while it is being read."""
    head = request_head(
        "POST",
        "/body",
        {"Content-Type": "application/octet-stream", "Content-Length": str(BODY_SIZE)},
    )
    clients = [await connect(port) for _ in range(n)]
    for _, writer in clients:
        writer.write(head + b"b" * (BODY_SIZE // 2))
        await writer.drain()
    await wait_for_stats(port, in_flight("body", n), "every /body handler reading")
    for number, (_, writer) in enumerate(clients):
        await close(writer, abort=bool(number % 2))


BOUNDARY = "soak-boundary-5e1f"
UPLOAD_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()
UPLOAD_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


async def leave_mid_upload(port: int, n: int) -> None:
    """Upload a 3 MiB file; leave once 1.5 MiB are in and the server has spooled them."""
    file_size = 2 * UPLOAD_SENT
    head = request_head(
        "POST",
        "/upload",
        {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(UPLOAD_HEAD) + file_size + len(UPLOAD_TAIL)),
        },
    )
    clients = [await connect(port) for _ in range(n)]
    for _, writer in clients:
        writer.write(head + UPLOAD_HEAD + b"u" * UPLOAD_SENT)
        await writer.drain()
    await wait_for_stats(
        port,
        lambda current: in_flight("upload", n)(current) and current["temp_fds"] >= n,
        "every /upload spooled to a temporary file",
    )
    for number, (_, writer) in enumerate(clients):
        await close(writer, abort=bool(number % 2))


async def leave_mid_stream(port: int, n: int) -> None:
    """GET /stream, read its first chunk, and leave."""
    clients = [await connect(port) for _ in range(n)]
    for reader, writer in clients:
        writer.write(request_head("GET", "/stream"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
        assert await asyncio.wait_for(reader.read(256), IO_TIMEOUT)
    for number, (_, writer) in enumerate(clients):
        await close(writer, abort=bool(number % 2))


async def leave_slow_handler(port: int, n: int) -> None:
    """GET /slow, whose handler sleeps holding a subscription; leave so it is cancelled."""
    clients = [await connect(port) for _ in range(n)]
    for _, writer in clients:
        writer.write(request_head("GET", "/slow"))
        await writer.drain()
    await wait_for_stats(port, in_flight("slow", n), "every /slow handler sleeping")
    for number, (_, writer) in enumerate(clients):
        await close(writer, abort=bool(number % 2))


async def drop_subscribers(port: int, n: int, label: str) -> None:
    """Open n /sub WebSockets, get one event, then drop their TCP connections abruptly."""
    from websockets.asyncio.client import connect as ws_connect

    sockets = [
        await asyncio.wait_for(ws_connect(f"ws://{HOST}:{port}/sub"), IO_TIMEOUT) for _ in range(n)
    ]
    try:
        for ws in sockets:
            assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == "ready"
        answer = await get_json(port, f"/publish?message={label}")
        assert answer["subscriptions"] >= n
        for ws in sockets:
            assert await asyncio.wait_for(ws.recv(), IO_TIMEOUT) == label
    finally:
        for number, ws in enumerate(sockets):
            # NOTE: no closing handshake: a reset, or a FIN without a close frame.
            if number % 2:
                ws.transport.abort()
            else:
                ws.transport.close()
    # An event published right away meets handlers whose clients are gone.
    await get_json(port, f"/publish?message={label}-after")
    for ws in sockets:
        with contextlib.suppress(OSError):
            await asyncio.wait_for(ws.wait_closed(), IO_TIMEOUT)


async def trickle(port: int) -> None:
    """A slow client: half the body a byte at a time, then the rest; it gets its answer."""
    reader, writer = await connect(port)
    try:
        writer.write(
            request_head(
                "POST",
                "/trickle",
                {"Content-Type": "application/octet-stream", "Content-Length": str(TRICKLE_SIZE)},
            )
        )
        for _ in range(TRICKLE_SIZE // 2):
            writer.write(b"t")
            await writer.drain()
            await asyncio.sleep(TRICKLE_PAUSE)
        writer.write(b"t" * (TRICKLE_SIZE - TRICKLE_SIZE // 2))
        status, body = parse_response(await asyncio.wait_for(reader.read(), IO_TIMEOUT))
    finally:
        await close(writer)
    assert (status, json.loads(body)) == (200, {"size": TRICKLE_SIZE})


async def fail(port: int, path: str) -> None:
    """An unhandled error: a 500, or a stream cut short once its response had started."""
    status, body = await exchange(port, request_head("GET", path))
    if path.startswith("/stream"):
        assert status == 200
        assert not body.endswith(b"0\r\n\r\n")  # the chunked body never ends properly
    else:
        assert (status, body) == (500, b"Internal Server Error")


async def misbehave(port: int, label: str, error_ids: list[str]) -> None:
    """One round: every kind of misbehaving client at once, plus failing requests."""
    errors = []
    for number in range(CLIENTS["error"]):
        error_id = f"{label}-{number}"
        error_ids.append(error_id)
        errors.append(fail(port, ERROR_PATHS[number % len(ERROR_PATHS)].format(error_id)))
    await asyncio.gather(
        leave_mid_body(port, CLIENTS["body"]),
        leave_mid_upload(port, CLIENTS["upload"]),
        leave_mid_stream(port, CLIENTS["stream"]),
        leave_slow_handler(port, CLIENTS["slow"]),
        drop_subscribers(port, CLIENTS["sub"], label),
        *(trickle(port) for _ in range(CLIENTS["trickle"])),
        *errors,
    )


def left_nothing(baseline: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    def check(current: dict[str, Any]) -> bool:
        return (
            quiet(current)
            and current["tasks"] <= baseline["tasks"]
            and current["fds"] <= baseline["fds"]
        )

    return check


def assert_errors_logged_once(current: dict[str, Any], error_ids: list[str]) -> None:
    errors = current["errors"]
    assert errors["by_id"] == dict.fromkeys(error_ids, 1), "each error logged exactly once"
    assert errors["other"] == [], "no ERROR record but the failing requests'"
    assert errors["with_traceback"] == len(error_ids), "each one with its traceback"
    assert current["server_tracebacks"] == 0, "no exception reached the server"
    assert current["loop_errors"] == 0, current["loop_lines"]


def assert_server_log_clean(soak: Soak) -> None:
    """Nothing printed a traceback: no thread, task or callback failed unseen."""
    log = soak.server.log_text()
    assert "Traceback" not in log, log[-5000:]


def test_misbehaving_clients_leave_nothing_behind(soak: Soak) -> None:
    async def run() -> dict[str, Any]:
        error_ids: list[str] = []
        fresh = await stats(soak.port, gc=True)
        await misbehave(soak.port, "warm", error_ids)
        await settle(soak.port, quiet)
        baseline = await stats(soak.port, gc=True)
        for number in range(ROUNDS):
            await misbehave(soak.port, f"r{number}", error_ids)
        await settle(soak.port, left_nothing(baseline))
        after = await stats(soak.port, gc=True)
        print(f"\nsoak: fresh {brief(fresh)}\nsoak: baseline {brief(baseline)}")
        print(f"soak: after {ROUNDS} rounds {brief(after)}")
        assert after["in_flight"] == {}, "every handler has ended"
        assert after["subscriptions"] == 0, "no subscription left"
        assert after["temp_fds"] == 0, "no spooled file left open"
        assert after["tasks"] <= baseline["tasks"], "no task left"
        assert after["fds"] <= baseline["fds"], "no descriptor left"
        assert after["gc_objects"] - baseline["gc_objects"] < GC_ROUNDS_LIMIT
        assert_errors_logged_once(after, error_ids)
        return after

    asyncio.run(run())
    assert list(soak.spool.iterdir()) == [], "no temporary file left on disk"
    assert_server_log_clean(soak)


# --- the load phase ------------------------------------------------------------------------

OK_REQUEST = b"GET /ok HTTP/1.1\r\nHost: soak\r\n\r\n"


class Load:
    """Requests handed out in batches to the connections, with an /error now and then."""

    def __init__(self) -> None:
        self.issued = 0
        self.statuses: Counter[int] = Counter()
        self.error_ids: list[str] = []

    def batch(self, limit: int) -> tuple[bytes, int]:
        count = min(LOAD_BATCH, limit - self.issued)
        first, self.issued = self.issued, self.issued + count
        parts = []
        for number in range(first, first + count):
            if number % LOAD_ERROR_EVERY == LOAD_ERROR_EVERY - 1:
                self.error_ids.append(f"load-{number}")
                parts.append(b"GET /error?id=load-%d HTTP/1.1\r\nHost: soak\r\n\r\n" % number)
            else:
                parts.append(OK_REQUEST)
        return b"".join(parts), count

    async def pump(self, connection: Connection, limit: int, deadline: float) -> None:
        while self.issued < limit:
            if time.monotonic() > deadline:
                pytest.fail(f"load: only {self.issued} requests within {LOAD_DEADLINE} s")
            data, count = self.batch(limit)
            connection.writer.write(data)
            await connection.read_responses(count, self.statuses)


class Connection:
    """One keep-alive connection reading pipelined responses by their Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""

    async def read_responses(self, count: int, statuses: Counter[int]) -> None:
        buffer, position = self.buffer, 0
        while count:
            end = buffer.find(b"\r\n\r\n", position)
            if end >= 0:
                head = buffer[position:end].lower()
                start = head.find(b"\r\ncontent-length:")
                assert start > 0, head
                start += 17
                line_end = head.find(b"\r\n", start)
                length = int(head[start:] if line_end < 0 else head[start:line_end])
                if len(buffer) >= end + 4 + length:
                    statuses[int(head[9:12])] += 1
                    position = end + 4 + length
                    count -= 1
                    continue
            data = await asyncio.wait_for(self.reader.read(256 * KiB), IO_TIMEOUT)
            if not data:
                raise ConnectionError("the server closed a keep-alive connection")
            buffer = buffer[position:] + data
            position = 0
        self.buffer = buffer[position:]


def test_memory_stays_flat_under_load(soak: Soak) -> None:
    async def run() -> None:
        baseline = await stats(soak.port, gc=True)
        connections = [Connection(*await connect(soak.port)) for _ in range(LOAD_CONNECTIONS)]
        load = Load()
        started = time.monotonic()
        deadline = started + LOAD_DEADLINE
        try:
            await asyncio.gather(*(load.pump(c, LOAD_WARM, deadline) for c in connections))
            warm = await stats(soak.port, gc=True)
            warm_at = time.monotonic()
            await asyncio.gather(*(load.pump(c, LOAD_REQUESTS, deadline) for c in connections))
            elapsed = time.monotonic() - warm_at
            end = await stats(soak.port, gc=True)
        finally:
            for connection in connections:
                await close(connection.writer)
        total = time.monotonic() - started
        after = await settle(soak.port, left_nothing(baseline))
        rate = (LOAD_REQUESTS - LOAD_WARM) / elapsed
        print(
            f"\nload: {LOAD_REQUESTS} requests in {total:.1f} s ({rate:,.0f} req/s after the"
            f" warm mark); statuses {dict(load.statuses)}\nload: baseline {brief(baseline)}\n"
            f"load: warm {brief(warm)}\nload: end {brief(end)}\nload: after {brief(after)}"
        )
        assert load.statuses == {200: LOAD_REQUESTS - len(load.error_ids), 500: len(load.error_ids)}
        growth = end["rss_kib"] - warm["rss_kib"]
        assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew {growth} KiB over the load"
        assert end["gc_objects"] - warm["gc_objects"] < GC_GROWTH_LIMIT
        assert after["tasks"] <= baseline["tasks"], "no task left"
        assert after["fds"] <= baseline["fds"], "no descriptor left"
        assert_errors_logged_once(after, load.error_ids)

    asyncio.run(run())
    assert_server_log_clean(soak)
