"""Falcon (``falcon.asgi``), written the way its documentation shows (resource classes)."""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi
from falcon.errors import WebSocketDisconnected

from benchmarks.workload import (
    IO_DELAY,
    PLAINTEXT,
    ROUTES_BEFORE_USERS,
    routing_template,
    routing_text,
)

NAME = "Falcon"
DISTRIBUTION = "falcon"


class Plaintext:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = PLAINTEXT


class Json:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"message": "Hello, World!"}


class User:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user_id: int
    ) -> None:
        resp.media = {"id": user_id}


class Echo:
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = await req.get_media()


class Ws:
    async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnected:
            pass


class Item:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, a: str, b: str
    ) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = routing_text(a, b)


class Io:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await asyncio.sleep(IO_DELAY)
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = PLAINTEXT


def _add_routing_routes(app: Any, n: int) -> None:
    for i in range(n):
        app.add_route(routing_template(i), Item())


def make_app() -> falcon.asgi.App:
    app = falcon.asgi.App()
    app.add_route("/plaintext", Plaintext())
    app.add_route("/json", Json())
    app.add_route("/echo", Echo())
    app.add_route("/ws", Ws())
    _add_routing_routes(app, ROUTES_BEFORE_USERS)
    app.add_route("/users/{user_id:int}", User())
    return app


def make_routing_app(n: int) -> falcon.asgi.App:
    app = falcon.asgi.App()
    _add_routing_routes(app, n)
    return app


def make_io_app() -> falcon.asgi.App:
    app = falcon.asgi.App()
    app.add_route("/io", Io())
    return app
