"""BlackSheep, written the way its documentation shows (its hot path is compiled)."""

from __future__ import annotations

import asyncio

from blacksheep import Application, Request, Response, WebSocket, json, text
from blacksheep.server.routing import Router
from blacksheep.server.websocket import WebSocketDisconnectError

from benchmarks.workload import (
    IO_DELAY,
    PLAINTEXT,
    ROUTES_BEFORE_USERS,
    routing_template,
    routing_text,
)

NAME = "BlackSheep"
DISTRIBUTION = "blacksheep"


def _add_routing_routes(app: Application, n: int) -> None:
    for i in range(n):

        async def handler(a: str, b: str) -> Response:
            return text(routing_text(a, b))

        app.router.add_get(routing_template(i), handler)


def make_app() -> Application:
    # NOTE: a Router of its own, as BlackSheep refuses to share the default one between apps.
    app = Application(router=Router())
    get = app.router.get

    @get("/plaintext")
    async def plaintext() -> Response:
        return text(PLAINTEXT)

    @get("/json")
    async def json_() -> Response:
        return json({"message": "Hello, World!"})

    @app.router.post("/echo")
    async def echo(request: Request) -> Response:
        return json(await request.json())

    @app.router.ws("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnectError:
            pass

    _add_routing_routes(app, ROUTES_BEFORE_USERS)

    @get("/users/{int:user_id}")
    async def user(user_id: int) -> Response:
        return json({"id": user_id})

    return app


def make_routing_app(n: int) -> Application:
    # NOTE: a Router of its own, as BlackSheep refuses to share the default one between apps.
    app = Application(router=Router())
    _add_routing_routes(app, n)
    return app


def make_io_app() -> Application:
    app = Application(router=Router())

    @app.router.get("/io")
    async def io() -> Response:
        await asyncio.sleep(IO_DELAY)
        return text(PLAINTEXT)

    return app
