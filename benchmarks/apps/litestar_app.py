"""Litestar, written the way its documentation shows (typed handlers, msgspec JSON)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar, MediaType, WebSocket, get, post, websocket
from litestar.handlers import HTTPRouteHandler

from benchmarks.workload import IO_DELAY, PLAINTEXT, ROUTES_BEFORE_USERS, routing_text

NAME = "Litestar"
DISTRIBUTION = "litestar"


def _routing_handlers(n: int) -> list[HTTPRouteHandler]:
    handlers = []
    for i in range(n):

        async def handler(a: str, b: str) -> str:
            return routing_text(a, b)

        handler.__name__ = f"r{i}"
        path = f"/r{i}/{{a:str}}/items/{{b:str}}"
        handlers.append(get(path, media_type=MediaType.TEXT, name=f"r{i}")(handler))
    return handlers


@get("/plaintext", media_type=MediaType.TEXT)
async def plaintext() -> str:
    return PLAINTEXT


@get("/json")
async def json() -> dict[str, Any]:
    return {"message": "Hello, World!"}


@get("/users/{user_id:int}")
async def user(user_id: int) -> dict[str, Any]:
    return {"id": user_id}


# NOTE: Litestar answers POST with 201 unless told otherwise; the workload wants 200.
@post("/echo", status_code=200)
async def echo(data: dict[str, Any]) -> dict[str, Any]:
    return data


@websocket("/ws")
async def ws(socket: WebSocket) -> None:
    await socket.accept()
    async for text in socket.iter_data(mode="text"):
        await socket.send_text(text)


def make_app() -> Litestar:
    return Litestar(
        route_handlers=[plaintext, json, echo, ws, *_routing_handlers(ROUTES_BEFORE_USERS), user],
    )


def make_routing_app(n: int) -> Litestar:
    return Litestar(route_handlers=_routing_handlers(n))


@get("/io", media_type=MediaType.TEXT)
async def io() -> str:
    await asyncio.sleep(IO_DELAY)
    return PLAINTEXT


def make_io_app() -> Litestar:
    return Litestar(route_handlers=[io])
