"""FastAPI, written the way its documentation shows (typed parameters, dicts returned)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

from benchmarks.workload import (
    IO_DELAY,
    PLAINTEXT,
    ROUTES_BEFORE_USERS,
    routing_template,
    routing_text,
)

NAME = "FastAPI"
DISTRIBUTION = "fastapi"


def _add_routing_routes(app: FastAPI, n: int) -> None:
    for i in range(n):

        async def handler(a: str, b: str) -> str:
            return routing_text(a, b)

        handler.__name__ = f"r{i}"
        app.get(routing_template(i), response_class=PlainTextResponse)(handler)


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/plaintext", response_class=PlainTextResponse)
    async def plaintext() -> str:
        return PLAINTEXT

    @app.get("/json")
    async def json() -> dict[str, Any]:
        return {"message": "Hello, World!"}

    @app.post("/echo")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    _add_routing_routes(app, ROUTES_BEFORE_USERS)

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, Any]:
        return {"id": user_id}

    return app


def make_routing_app(n: int) -> FastAPI:
    app = FastAPI()
    _add_routing_routes(app, n)
    return app


def make_io_app() -> FastAPI:
    app = FastAPI()

    @app.get("/io", response_class=PlainTextResponse)
    async def io() -> str:
        await asyncio.sleep(IO_DELAY)
        return PLAINTEXT

    return app
