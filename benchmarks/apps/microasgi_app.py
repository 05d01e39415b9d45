"""microasgi, written against the public API (``from microasgi import ...``)."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.workload import (
    IO_DELAY,
    PLAINTEXT,
    ROUTES_BEFORE_USERS,
    routing_template,
    routing_text,
)
from microasgi import App, Request, WebSocket

NAME = "microasgi"
DISTRIBUTION = "microasgi"


def _add_routing_routes(app: App, n: int) -> None:
    for i in range(n):

        async def handler(request: Request, a: str, b: str) -> str:
            return routing_text(a, b)

        app.get(routing_template(i), name=f"r{i}")(handler)


def make_app() -> App:
    app = App()

    @app.get("/plaintext")
    async def plaintext(request: Request) -> str:
        return PLAINTEXT

    @app.get("/json")
    async def json(request: Request) -> dict[str, Any]:
        return {"message": "Hello, World!"}

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    _add_routing_routes(app, ROUTES_BEFORE_USERS)

    @app.get("/users/{user_id:int}")
    async def user(request: Request, user_id: int) -> dict[str, Any]:
        return {"id": user_id}

    return app


def make_routing_app(n: int) -> App:
    app = App()
    _add_routing_routes(app, n)
    return app


def make_io_app() -> App:
    app = App()

    @app.get("/io")
    async def io(request: Request) -> str:
        await asyncio.sleep(IO_DELAY)
        return PLAINTEXT

    return app


class PassThrough:
    """A pure ASGI middleware that does nothing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def make_middleware_app(kind: str) -> App:
    app = App()

    @app.get("/plaintext")
    async def plaintext(request: Request) -> str:
        return PLAINTEXT

    if kind == "http":

        @app.middleware("http")
        async def pass_through(request: Request, call_next: Any) -> Any:
            return await call_next(request)

    elif kind == "asgi":
        app.add_middleware(PassThrough)
    return app
