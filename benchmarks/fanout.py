"""Fan-out benchmark: one publish reaching 1,000 WebSocket subscribers through ``Broadcast``.

Everything runs in one process and speaks ASGI directly: each WebSocket is a pair of
``receive``/``send`` coroutines handed to the app, with no network and no server. Two apps:

- ``broadcast``: the smallest app that forwards a channel to its WebSockets (the pattern of
  ``docs/broadcast.md``): each handler subscribes and sends every event on;
- ``chat``: ``examples/chat`` with all subscribers members of one room; one of them says
  something (a ``websocket.receive`` into its handler: validation, JSON, publish) and
  every member gets it.

For each app and backend (``memory://``, and ``redis://`` when a ``redis-server`` can be
started or ``--redis-url`` is given) it reports the time from the publish (for the chat,
from the message reaching the sender's handler) until the first, the median and the last
subscriber has it, and the messages per second one publisher gets through to all
subscribers (publishing back to back, until every subscriber has every message), beside
its rate with nobody subscribed. Medians over the rounds; the last subscriber's best round
too. Nothing here asserts a timing.

    python benchmarks/fanout.py                      # 1,000 subscribers, asyncio
    python benchmarks/fanout.py --loop uvloop --subscribers 10000 --apps broadcast
    python benchmarks/fanout.py --output docs/benchmarks.md   # rewrites its ``fanout`` section
    python benchmarks/fanout.py --quick                       # a smoke run: 100 subscribers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from benchmarks.sections import check_section, provenance, write_section
from microasgi import App, WebSocket
from microasgi.broadcast import Broadcast

Message = dict[str, Any]
ASGIApp = Callable[..., Awaitable[None]]
CHANNEL = "fanout"
ROOM = "bench"


# -- the apps ----------------------------------------------------------------------------


def broadcast_app(url: str) -> tuple[App, Callable[[str], Awaitable[object]]]:
    """The smallest fan-out app, and how to publish one message to its subscribers."""
    broadcast = Broadcast(url)
    app = App(lifespan=broadcast.lifespan)

    @app.websocket("/ws")
    async def subscriber(ws: WebSocket) -> None:
        await ws.accept()
        async with broadcast.subscribe(CHANNEL) as subscription:
            await ws.send_text("ready")
            async for event in subscription:
                await ws.send_text(event.message)  # type: ignore[arg-type]

    async def publish(text: str) -> object:
        return await broadcast.publish(CHANNEL, text)

    return app, publish


def chat_app(url: str) -> App:
    from examples.chat.app import create_app

    return create_app(url)


# -- WebSockets over plain ASGI ------------------------------------------------------------


@dataclass
class Arrivals:
    """When each connection received the current marker."""

    marker: str = ""
    times: list[float] = field(default_factory=list)
    expected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_activity: float = 0.0

    def expect(self, marker: str, count: int) -> None:
        self.marker, self.times, self.expected = marker, [], count
        self.done = asyncio.Event()


class Connection:
    """One WebSocket client, talking ASGI to the app in this process."""

    def __init__(self, app: ASGIApp, path: str, arrivals: Arrivals) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.accepted = asyncio.Event()
        self.arrivals = arrivals
        path, _, query = path.partition("?")
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"bench"), (b"origin", b"http://bench")],
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
            "subprotocols": [],
            "state": {},
        }
        self.task = asyncio.ensure_future(app(scope, self.inbox.get, self._send))

    async def _send(self, message: Message) -> None:
        arrivals = self.arrivals
        arrivals.last_activity = time.perf_counter()
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None and arrivals.marker and arrivals.marker in text:
                arrivals.times.append(time.perf_counter())
                if len(arrivals.times) >= arrivals.expected:
                    arrivals.done.set()
        elif kind == "websocket.accept":
            self.accepted.set()

    def say(self, text: str) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": text})

    def leave(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})


@contextlib.asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[None]:
    """Run the app's lifespan around the block, as a server would."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    stopped: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def send(message: Message) -> None:
        future = started if message["type"].startswith("lifespan.startup") else stopped
        future.set_result(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.4"}, "state": {}}
    inbox.put_nowait({"type": "lifespan.startup"})
    task = asyncio.ensure_future(app(scope, inbox.get, send))
    reply = await started
    if reply["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {reply.get('message')}")
    try:
        yield
    finally:
        inbox.put_nowait({"type": "lifespan.shutdown"})
        await stopped
        await task


async def quiet(arrivals: Arrivals, seconds: float, timeout: float = 120) -> None:
    """Wait until no connection received anything for ``seconds``."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() - arrivals.last_activity < seconds:
        if time.perf_counter() > deadline:
            raise TimeoutError("the connections never went quiet")
        await asyncio.sleep(seconds / 4)


async def open_connections(app: ASGIApp, paths: list[str], arrivals: Arrivals) -> list[Connection]:
    connections = []
    for path in paths:
        connection = Connection(app, path, arrivals)
        connections.append(connection)
        await asyncio.wait_for(connection.accepted.wait(), 30)
    return connections


async def close_connections(connections: list[Connection]) -> None:
    for connection in connections:
        connection.leave()
    await asyncio.wait_for(asyncio.gather(*(c.task for c in connections)), 120)


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Result:
    app: str
    backend: str
    subscribers: int
    first: list[float] = field(default_factory=list)
    median: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    rate: float = 0.0
    rate_alone: float = 0.0
    setup: float = 0.0


async def one_round(
    arrivals: Arrivals, count: int, marker: str, start: Callable[[], Awaitable[object]]
) -> tuple[float, float, float]:
    arrivals.expect(marker, count)
    gc.collect()
    began = time.perf_counter()
    await start()
    await asyncio.wait_for(arrivals.done.wait(), 60)
    times = arrivals.times
    return times[0] - began, statistics.median(times) - began, times[-1] - began


async def throughput(
    arrivals: Arrivals, count: int, messages: int, publish: Callable[[str], Awaitable[object]]
) -> float:
    """Messages per second one publisher gets through to ``count`` subscribers."""
    arrivals.expect("#last-of-burst#", count)
    began = time.perf_counter()
    for n in range(messages - 1):
        await publish(f"burst {n}")
    await publish("#last-of-burst#")
    await asyncio.wait_for(arrivals.done.wait(), 120)
    return messages / (time.perf_counter() - began)


async def rate_alone(messages: int, publish: Callable[[str], Awaitable[object]]) -> float:
    # NOTE: one publish first: the first may import anyio's event-loop backend.
    await publish("warm-up")
    began = time.perf_counter()
    for n in range(messages):
        await publish(f"alone {n}")
    return messages / (time.perf_counter() - began)


async def bench_broadcast(url: str, backend: str, args: argparse.Namespace) -> Result:
    result = Result("broadcast", backend, args.subscribers)
    app, publish = broadcast_app(url)
    # Nobody subscribed: the publisher's own pace.
    alone_app, publish_alone = broadcast_app(url)
    async with running(alone_app):
        result.rate_alone = await rate_alone(args.messages * 5, publish_alone)
    async with running(app):
        arrivals = Arrivals()
        began = time.perf_counter()
        connections = await open_connections(app, ["/ws"] * args.subscribers, arrivals)
        await quiet(arrivals, 0.2)
        result.setup = time.perf_counter() - began
        for n in range(args.rounds):
            marker = f"#round {n}#"
            first, median, last = await one_round(
                arrivals, args.subscribers, marker, lambda m=marker: publish(m)
            )
            result.first.append(first)
            result.median.append(median)
            result.last.append(last)
        result.rate = await throughput(arrivals, args.subscribers, args.messages, publish)
    await close_connections(connections)
    return result


async def bench_chat(url: str, backend: str, args: argparse.Namespace) -> Result:
    result = Result("chat", backend, args.subscribers)
    app = chat_app(url)
    chat = app.state.chat
    async with running(app):
        arrivals = Arrivals()
        began = time.perf_counter()
        paths = [f"/ws/{ROOM}?nick=u{n}" for n in range(args.subscribers)]
        connections = await open_connections(app, paths, arrivals)
        # Every join reaches every member already there; let that, and the member lists,
        # settle before timing.
        await quiet(arrivals, chat.members_interval + 0.3)
        result.setup = time.perf_counter() - began
        for n in range(args.rounds):
            marker = f"#round {n}#"
            # NOTE: a different speaker each round: one client may say 5 messages a second.
            speaker = connections[n % len(connections)]
            said = orjson.dumps({"type": "message", "text": marker}).decode()

            async def speak(speaker: Connection = speaker, said: str = said) -> None:
                speaker.say(said)

            first, median, last = await one_round(arrivals, args.subscribers, marker, speak)
            result.first.append(first)
            result.median.append(median)
            result.last.append(last)

        def publisher(room: str) -> Callable[[str], Awaitable[object]]:
            async def publish(text: str) -> object:
                event = {"type": "message", "nick": "bench", "text": text, "time": "-"}
                return await chat.broadcast.publish_json(f"chat:{room}", event)

            return publish

        result.rate = await throughput(arrivals, args.subscribers, args.messages, publisher(ROOM))
        result.rate_alone = await rate_alone(args.messages * 5, publisher("empty"))
    await close_connections(connections)
    return result


# -- Redis -----------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    """Yield a Redis URL: ``url``, or a throwaway redis-server's, or None if there is none."""
    if url is not None:
        yield url
        return
    executable = shutil.which("redis-server")
    if executable is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen([*argv, "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


# -- reporting -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        "## Fan-out",
        "",
        f"{provenance('benchmarks/fanout.py')}.",
        "",
        f"One publish to {args.subscribers:,} WebSocket subscribers, in process on {args.loop}; "
        f"median of {args.rounds} rounds.",
        "",
        "| app | backend | first (ms) | median (ms) | last (ms) | last, best (ms) "
        "| msgs/s to all | msgs/s, nobody subscribed | setup (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.app} | {r.backend} | {ms(statistics.median(r.first))} "
            f"| {ms(statistics.median(r.median))} | {ms(statistics.median(r.last))} "
            f"| {ms(min(r.last))} | {r.rate:,.0f} | {r.rate_alone:,.0f} | {r.setup:.1f} |"
        )
    lines += [
        "",
        "first / median / last: from the publish (chat: from the message reaching the "
        "speaker's handler) until the first, the median and the last subscriber's "
        "`websocket.send`. msgs/s to all: one publisher, back to back, until every "
        "subscriber has every message.",
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> str:
    results = []
    skipped = ""
    with redis_server(args.redis_url) as redis_url:
        backends = [("memory", "memory://")]
        if redis_url is not None and not args.memory_only:
            backends.append(("redis", redis_url))
        elif not args.memory_only:
            skipped = "No redis-server on PATH and no `--redis-url`: the Redis backend was skipped."
            print(skipped, file=sys.stderr)
        for name, url in backends:
            if "broadcast" in args.apps:
                results.append(await bench_broadcast(url, name, args))
            if "chat" in args.apps:
                results.append(await bench_chat(url, name, args))
    return table(results, args) + (f"\n\n{skipped}" if skipped else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--messages", type=int, default=200, help="per throughput burst")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--apps", nargs="+", choices=("broadcast", "chat"), default=["broadcast", "chat"]
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting a redis-server")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="100 subscribers, 3 short rounds")
    parser.add_argument("--output", type=Path, help="page whose fanout section to rewrite")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.rounds, args.messages = 100, 3, 20
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.output is not None:  # a page without its markers fails now, not after the run
        check_section(arguments.output, "fanout")
    os.environ.pop("REDIS_URL", None)  # NOTE: the chat app's default; each run names its own
    if arguments.loop == "uvloop":
        import uvloop

        uvloop.install()
    report = asyncio.run(main(arguments))
    print(report)
    if arguments.output is not None:
        write_section(arguments.output, "fanout", report)
        print(f"wrote {arguments.output}", file=sys.stderr)
