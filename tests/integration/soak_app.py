"""The app tests/integration/test_soak.py serves under uvicorn, with its own resource gauges.

Every route a client can leave half-way or crawl through (``/body``, ``/trickle``,
``/upload``, ``/stream``, ``/slow``, ``/sub``) counts itself in ``in_flight`` while it runs,
so the test knows the server is in the middle of it before the client walks away.
``/_stats`` reports what a leak would leave behind: asyncio tasks, open file descriptors
(spooled upload files apart too), resident memory, live broadcast subscriptions, and every
record the ``microasgi`` logger wrote at ERROR, keyed by the id the failing request
carried, so "logged once, with its traceback" is a count, not a grep.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from microasgi.app import App
from microasgi.broadcast import Broadcast
from microasgi.exceptions import HTTPException, WebSocketDisconnect
from microasgi.requests import Request
from microasgi.responses import StreamingResponse
from microasgi.websockets import WebSocket

CHANNEL = "soak"
STREAM_CHUNKS = 200
STREAM_CHUNK = b"s" * 63 + b"\n"
STREAM_PAUSE = 0.01  # 200 chunks: about 2 s, long enough to be left mid-stream
STREAM_FAIL_AFTER = 3  # chunks sent before /stream?fail=<id> raises
SLOW_SECONDS = 60.0  # far longer than any client waits: /slow ends by being cancelled
DISCONNECT_POLL = 0.02
ERROR_PREFIX = "soak failure "

broadcast = Broadcast("memory://")
app = App(lifespan=broadcast.lifespan)
in_flight: Counter[str] = Counter()


class ErrorCounter(logging.Handler):
    """Count the ERROR records of a logger, by the id in the logged exception's message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.by_id: Counter[str] = Counter()
        self.with_traceback = 0
        self.without_traceback = 0
        self.other: list[str] = []  # the first lines of records that carry no soak id

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or exc.__traceback__ is None:
            self.without_traceback += 1
        else:
            self.with_traceback += 1
        text = str(exc) if exc is not None else ""
        if text.startswith(ERROR_PREFIX):
            self.by_id[text.removeprefix(ERROR_PREFIX)] += 1
        elif len(self.other) < 20:
            self.other.append(f"{record.getMessage()} ({type(exc).__name__})"[:300])


# NOTE: installed at import time, after uvicorn configured logging and before any request.
app_errors = ErrorCounter()
logging.getLogger("microasgi").addHandler(app_errors)
# An exception that reached the server would be logged (a second time) by uvicorn, and
# one that escaped into a task nobody awaits by asyncio.
server_errors = ErrorCounter()
logging.getLogger("uvicorn.error").addHandler(server_errors)
loop_errors = ErrorCounter()
logging.getLogger("asyncio").addHandler(loop_errors)


@contextmanager
def tracked(name: str) -> Iterator[None]:
    in_flight[name] += 1
    try:
        yield
    finally:
        in_flight[name] -= 1


@app.get("/ok")
async def ok(request: Request) -> str:
    return "ok"


@app.post("/body")
async def body(request: Request) -> dict[str, int]:
    with tracked("body"):
        return {"size": len(await request.body())}


@app.post("/trickle")
async def trickle(request: Request) -> dict[str, int]:
    # NOTE: /body under its own name, so slow clients that finish are counted apart from
    # the clients that leave mid-body.
    with tracked("trickle"):
        return {"size": len(await request.body())}


@app.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    with tracked("upload"):
        form = await request.form()
        file = form["file"]
        if isinstance(file, str):
            raise HTTPException(400, "expected a file")
        return {"size": file.size}


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    fail = request.query_params.get("fail")

    async def chunks() -> AsyncIterator[bytes]:
        with tracked("stream"):
            for number in range(STREAM_CHUNKS):
                if fail is not None and number == STREAM_FAIL_AFTER:
                    raise RuntimeError(ERROR_PREFIX + fail)
                yield STREAM_CHUNK
                await anyio.sleep(STREAM_PAUSE)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/slow")
async def slow(request: Request) -> str:
    # NOTE: uvicorn never cancels a handler whose client left (it turns `send` into a
    # no-op), so the handler cancels its own work when is_disconnected() says so. The
    # subscription is what a cancelled handler must give back.
    async with anyio.create_task_group() as task_group:

        async def cancel_on_disconnect() -> None:
            while not await request.is_disconnected():
                await anyio.sleep(DISCONNECT_POLL)
            task_group.cancel_scope.cancel()

        task_group.start_soon(cancel_on_disconnect)
        with tracked("slow"):
            async with broadcast.subscribe("slow"):
                await anyio.sleep(SLOW_SECONDS)
        task_group.cancel_scope.cancel()
    return "slept"


@app.get("/error")
async def error(request: Request) -> None:
    raise RuntimeError(ERROR_PREFIX + request.query_params["id"])


@app.get("/error/sync")
def error_sync(request: Request) -> None:
    raise RuntimeError(ERROR_PREFIX + request.query_params["id"])


@app.get("/publish")
async def publish(request: Request) -> dict[str, int]:
    await broadcast.publish(CHANNEL, request.query_params["message"])
    return {"subscriptions": live_subscriptions()}


@app.websocket("/sub")
async def sub(ws: WebSocket) -> None:
    await ws.accept()
    with tracked("sub"):
        async with broadcast.subscribe(CHANNEL) as subscription:
            await ws.send_text("ready")
            async with anyio.create_task_group() as task_group:

                async def forward() -> None:
                    async for event in subscription:
                        await ws.send_text(str(event.message))

                task_group.start_soon(forward)
                try:
                    async for _ in ws.iter_text():
                        pass
                except WebSocketDisconnect:
                    pass
                task_group.cancel_scope.cancel()


def live_subscriptions() -> int:
    """The subscriptions the broadcast still delivers to (each counted once)."""
    return len({sub for group in broadcast._subscribers.values() for sub in group})


def _fds() -> tuple[int, int]:
    """Open file descriptors, and how many of them are files in the temporary directory."""
    spool = tempfile.gettempdir()
    fds = temp = 0
    for name in os.listdir("/proc/self/fd"):
        fds += 1
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory listing's own descriptor, closed by now
        temp += target.startswith(spool)
    return fds, temp


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


@app.get("/_stats")
async def stats(request: Request) -> dict[str, Any]:
    fds, temp_fds = _fds()
    result: dict[str, Any] = {
        "tasks": len(asyncio.all_tasks()),
        "fds": fds,
        "temp_fds": temp_fds,
        "rss_kib": _rss_kib(),
        "threads": threading.active_count(),
        "subscriptions": live_subscriptions(),
        "in_flight": {name: count for name, count in in_flight.items() if count},
        "errors": {
            "by_id": dict(app_errors.by_id),
            "with_traceback": app_errors.with_traceback,
            "without_traceback": app_errors.without_traceback,
            "other": app_errors.other,
        },
        # NOTE: only tracebacks count: uvicorn also logs, without one, each response an
        # app had to leave unfinished (the /stream?fail= ones).
        "server_tracebacks": server_errors.with_traceback,
        "server_lines": server_errors.other,
        "loop_errors": loop_errors.with_traceback + loop_errors.without_traceback,
        "loop_lines": loop_errors.other,
    }
    if "gc" in request.query_params:
        gc.collect()
        result["gc_objects"] = len(gc.get_objects())
    return result
