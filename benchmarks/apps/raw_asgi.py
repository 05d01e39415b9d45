"""Hand-written ASGI: the physical limit every other figure is compared to.

The main app routes with a chain of ``if path == ...`` and parses the user id by hand.
Routing-scale apps look the handler up in a dict keyed by the first path segment: a raw app
has no route table to scale, so this is the cheapest honest stand-in for one (O(1) in the
number of routes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from benchmarks.workload import IO_DELAY, PLAINTEXT, ROUTES_BEFORE_USERS, routing_text

NAME = "raw ASGI"
DISTRIBUTION = None

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"
_PLAIN_BODY = PLAINTEXT.encode()


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _ws_echo(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": message.get("text")})


def _split_route(path: str) -> tuple[str, str, str] | None:
    """Match ``/r{i}/{a}/items/{b}``: returns (first segment, a, b) or None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[3] == "items":
        return parts[1], parts[2], parts[4]
    return None


def _route_table(n: int) -> set[str]:
    return {f"r{i}" for i in range(n)}


def make_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    routes = _route_table(ROUTES_BEFORE_USERS)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/plaintext":
                await _respond(send, 200, _PLAIN_BODY, _TEXT)
            elif path == "/json":
                await _respond(send, 200, orjson.dumps({"message": "Hello, World!"}), _JSON)
            elif path == "/echo" and scope["method"] == "POST":
                data = orjson.loads(await _read_body(receive))
                await _respond(send, 200, orjson.dumps(data), _JSON)
            elif (match := _split_route(path)) is not None and match[0] in routes:
                await _respond(send, 200, routing_text(match[1], match[2]).encode(), _TEXT)
            elif path.startswith("/users/") and path[7:].isdigit():
                await _respond(send, 200, orjson.dumps({"id": int(path[7:])}), _JSON)
            else:
                await _respond(send, 404, b"Not Found", _TEXT)
        elif kind == "websocket" and scope["path"] == "/ws":
            await _ws_echo(receive, send)

    return app


def make_routing_app(n: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def handler(send: Send, a: str, b: str) -> None:
        await _respond(send, 200, routing_text(a, b).encode(), _TEXT)

    table = {f"r{i}": handler for i in range(n)}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # NOTE: no lifespan, no WebSocket
        match = _split_route(scope["path"])
        if match is not None and match[0] in table:
            await table[match[0]](send, match[1], match[2])
        else:
            await _respond(send, 404, b"Not Found", _TEXT)

    return app


def make_io_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/io":
            await asyncio.sleep(IO_DELAY)
            await _respond(send, 200, _PLAIN_BODY, _TEXT)
        elif scope["type"] == "http":
            await _respond(send, 404, b"Not Found", _TEXT)

    return app
