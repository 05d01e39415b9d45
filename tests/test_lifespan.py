from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi import App, Request
from microasgi.testing import TestClient
from microasgi.types import Message, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("lifespan not supported")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"plain"})


async def ends_after_startup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        return
    await no_lifespan(scope, receive, send)


def make_counting_app(events: list[str]) -> Callable[[Scope, Receive, Send], Any]:
    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        assert scope["state"] is not None
        message: Message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})

    return counting


def test_mounted_apps_without_lifespan_are_served(client_factory: ClientFactory) -> None:
    events: list[str] = []
    app = App()
    app.mount("/none", no_lifespan)
    app.mount("/short", ends_after_startup)
    app.mount("/counting", make_counting_app(events))

    @app.get("/")
    async def home(request: Request) -> str:
        return "home"

    with client_factory(app) as client:
        assert client.get("/none/x").text == "plain"
        assert client.get("/short/x").text == "plain"
        assert client.get("/").text == "home"
        assert events == ["lifespan.startup"]
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_router_alone_acknowledges_lifespan(client_factory: ClientFactory) -> None:
    from microasgi import Router

    router = Router()
    with client_factory(router):
        pass


@pytest.mark.anyio
async def test_app_without_state_support_still_starts() -> None:
    from microasgi.lifespan import combine, serve_lifespan

    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []
    states: list[dict[str, Any]] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    factory = combine([], [], [])
    await serve_lifespan(None, factory, {"type": "lifespan"}, receive, send, states.append)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert states == [{}]
