"""Starlette, written the way its documentation shows (route list, Response objects)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from benchmarks.workload import (
    IO_DELAY,
    PLAINTEXT,
    ROUTES_BEFORE_USERS,
    routing_template,
    routing_text,
)

NAME = "Starlette"
DISTRIBUTION = "starlette"


def _routing_routes(n: int) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for i in range(n):

        async def handler(request: Request) -> Response:
            params = request.path_params
            return PlainTextResponse(routing_text(params["a"], params["b"]))

        routes.append(Route(routing_template(i), handler, name=f"r{i}"))
    return routes


async def plaintext(request: Request) -> Response:
    return PlainTextResponse(PLAINTEXT)


async def json(request: Request) -> Response:
    return JSONResponse({"message": "Hello, World!"})


async def user(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["user_id"]})


async def echo(request: Request) -> Response:
    return JSONResponse(await request.json())


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


def make_app() -> Starlette:
    routes: list[BaseRoute] = [
        Route("/plaintext", plaintext),
        Route("/json", json),
        Route("/echo", echo, methods=["POST"]),
        WebSocketRoute("/ws", ws),
        *_routing_routes(ROUTES_BEFORE_USERS),
        Route("/users/{user_id:int}", user),
    ]
    return Starlette(routes=routes)


def make_routing_app(n: int) -> Starlette:
    return Starlette(routes=_routing_routes(n))


async def io(request: Request) -> Response:
    await asyncio.sleep(IO_DELAY)
    return PlainTextResponse(PLAINTEXT)


def make_io_app() -> Starlette:
    return Starlette(routes=[Route("/io", io)])


class PassThroughHTTP(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


class PassThrough:
    """A pure ASGI middleware that does nothing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def make_middleware_app(kind: str) -> Starlette:
    middleware = {
        "bare": [],
        "http": [Middleware(PassThroughHTTP)],
        "asgi": [Middleware(PassThrough)],
    }[kind]
    return Starlette(routes=[Route("/plaintext", plaintext)], middleware=middleware)
