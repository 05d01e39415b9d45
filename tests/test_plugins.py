"""Plugins: ``app.install(plugin)`` and what ``plugin.setup(app)`` may add."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from examples import plugin as plugin_example
from microasgi.app import App, Plugin
from microasgi.exceptions import SetupError
from microasgi.middleware import Middleware
from microasgi.middleware.http import CallNext
from microasgi.requests import Request
from microasgi.responses import JSONResponse, Response
from microasgi.routing import Router
from microasgi.testing import TestClient
from microasgi.types import ASGIApp, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]


class Tag:
    """A pure ASGI middleware adding a header."""

    def __init__(self, app: ASGIApp, value: str) -> None:
        self.app = app
        self.value = value.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-tag", self.value)]}
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


class Teapot(Exception):
    pass


class Everything:
    """A plugin that uses every hook setup() may use."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def setup(self, app: App) -> None:
        router = Router()

        @router.get("/status")
        async def status(request: Request) -> dict[str, Any]:
            return {"events": self.events}

        @router.get("/teapot")
        async def teapot(request: Request) -> str:
            raise Teapot

        app.include_router(router, prefix="/plugin")
        app.add_middleware(Tag, "plugin")

        @app.middleware("http")
        async def count(request: Request, call_next: CallNext) -> Response:
            self.events.append(f"request {request.url.path}")
            return await call_next(request)

        @app.exception_handler(Teapot)
        async def teapot_handler(request: Request, exc: Teapot) -> JSONResponse:
            return JSONResponse({"detail": "I'm a teapot"}, status_code=418)

        @app.on_startup
        async def started() -> None:
            self.events.append("startup")

        @app.on_shutdown
        def stopped() -> None:
            self.events.append("shutdown")

        @asynccontextmanager
        async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
            self.events.append("lifespan enter")
            yield {"plugin": "state"}
            self.events.append("lifespan exit")

        app.add_lifespan(lifespan)


def test_a_plugin_adds_routes_middleware_handlers_and_lifespan(
    client_factory: ClientFactory,
) -> None:
    app = App()
    plugin = Everything()
    app.install(plugin)

    @app.get("/state")
    async def state(request: Request) -> str:
        return str(request.state.plugin)

    with client_factory(app) as client:
        response = client.get("/plugin/status")
        assert response.headers["x-tag"] == "plugin"
        assert response.json()["events"] == [
            "lifespan enter",
            "startup",
            "request /plugin/status",
        ]
        response = client.get("/plugin/teapot")
        assert (response.status_code, response.json()) == (418, {"detail": "I'm a teapot"})
        assert response.headers["x-tag"] == "plugin"
        assert client.get("/state").text == "state"
    assert plugin.events[-2:] == ["shutdown", "lifespan exit"]


def test_the_same_plugin_twice_is_an_error() -> None:
    app = App()
    plugin = Everything()
    app.install(plugin)
    with pytest.raises(SetupError, match="already installed"):
        app.install(plugin)
    # NOTE: two instances are two plugins (e.g. the same plugin under two prefixes).
    app.install(plugin_example.Metrics("/other-metrics"))


def test_an_object_without_setup_is_not_a_plugin() -> None:
    app = App()
    with pytest.raises(TypeError, match="no setup"):
        app.install(object())  # type: ignore[arg-type]


def test_installing_after_startup_is_an_error(client_factory: ClientFactory) -> None:
    app = App()
    with client_factory(app):
        with pytest.raises(SetupError, match=r"App\.install\(\) was called after"):
            app.install(Everything())


def test_a_plugin_may_install_another() -> None:
    installed: list[str] = []

    class Inner:
        def setup(self, app: App) -> None:
            installed.append("inner")

    class Outer:
        def setup(self, app: App) -> None:
            app.install(Inner())
            installed.append("outer")

    App().install(Outer())
    assert installed == ["inner", "outer"]


def test_plugin_middleware_order(client_factory: ClientFactory) -> None:
    order: list[str] = []

    def layer(name: str) -> Any:
        async def dispatch(request: Request, call_next: CallNext) -> Response:
            order.append(name)
            return await call_next(request)

        return dispatch

    class Late:
        def setup(self, app: App) -> None:
            app.middleware("http")(layer("plugin"))

    app = App(middleware=[Middleware(Tag, "first")])
    app.middleware("http")(layer("app"))
    app.install(Late())

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok"

    with client_factory(app) as client:
        assert client.get("/").headers["x-tag"] == "first"
    assert order == ["app", "plugin"]


def test_the_plugin_protocol() -> None:
    plugin: Plugin = plugin_example.Metrics()
    assert callable(plugin.setup)


def test_the_example_plugin(client_factory: ClientFactory) -> None:
    app = plugin_example.app
    # NOTE: the example's app is shared by the runs on each backend; its counts add up.
    plugin_example.metrics.statuses.clear()
    with client_factory(app, raise_server_exceptions=False) as client:
        assert plugin_example.metrics.started_at is not None
        assert client.get("/hello").text == "hello"
        response = client.get("/boom")
        assert (response.status_code, response.json()) == (503, {"detail": "Try again later"})
        assert client.get("/nowhere").status_code == 404
        assert client.get("/").status_code == 200
        report = client.get("/metrics").json()
        assert report["requests"] == 4
        assert report["statuses"] == {"200": 2, "503": 1, "404": 1}
        assert report["seconds"] > 0
    assert plugin_example.metrics.started_at is None


def test_a_plugin_whose_setup_failed_can_be_installed_again(
    client_factory: ClientFactory,
) -> None:
    class Configurable:
        def __init__(self) -> None:
            self.configured = False

        def setup(self, app: App) -> None:
            if not self.configured:
                raise RuntimeError("needs configuration")

            @app.get("/p")
            async def p(request: Request) -> str:
                return "p"

    app = App()
    plugin = Configurable()
    with pytest.raises(RuntimeError, match="needs configuration"):
        app.install(plugin)
    plugin.configured = True
    app.install(plugin)
    with pytest.raises(SetupError, match="already installed"):
        app.install(plugin)
    with client_factory(app) as client:
        assert client.get("/p").text == "p"


def test_a_plugin_that_installs_itself_again_is_refused() -> None:
    class Recursive:
        def setup(self, app: App) -> None:
            app.install(self)

    app = App()
    plugin = Recursive()
    with pytest.raises(SetupError, match="already installed"):
        app.install(plugin)
