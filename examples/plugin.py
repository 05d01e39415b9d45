"""A plugin: one object that adds routes, middleware, an error handler and lifespan hooks.

Run it with `microasgi run examples.plugin:app`, then:

    curl localhost:8000/hello
    curl localhost:8000/boom          # 503 from the plugin's exception handler
    curl localhost:8000/metrics       # what the plugin counted
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from microasgi import App, JSONResponse, Request, Response
from microasgi.middleware.http import CallNext


# --8<-- [start:plugin]
class Unavailable(Exception):
    """A dependency is down; the plugin answers 503."""


class Metrics:
    """Count requests by status and time them; serve the figures at ``path``."""

    def __init__(self, path: str = "/metrics") -> None:
        self.path = path
        self.statuses: Counter[int] = Counter()
        self.seconds = 0.0
        self.started_at: float | None = None

    def setup(self, app: App) -> None:
        # Routes (a plugin with many would include a Router of its own).
        app.add_route(self.path, self.report, name="metrics")
        # Middleware: a request/response function, added after the app's own.
        app.middleware("http")(self.measure)
        # An exception handler, and a lifespan.
        app.add_exception_handler(Unavailable, self.unavailable)
        app.add_lifespan(self.lifespan)

    @asynccontextmanager
    async def lifespan(self, app: App) -> AsyncIterator[None]:
        self.started_at = time.time()
        yield
        self.started_at = None

    async def measure(self, request: Request, call_next: CallNext) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        self.seconds += time.perf_counter() - started
        self.statuses[response.status_code] += 1
        return response

    async def unavailable(self, request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": "Try again later"}, status_code=503)

    async def report(self, request: Request) -> dict[str, Any]:
        return {
            "requests": sum(self.statuses.values()),
            "statuses": {str(status): count for status, count in self.statuses.items()},
            "seconds": round(self.seconds, 6),
            "up_since": self.started_at,
        }


# --8<-- [end:plugin]

# --8<-- [start:app]
app = App()
metrics = Metrics()
app.install(metrics)


@app.get("/")
async def index(request: Request) -> dict[str, str]:
    return {"try": "/hello, /boom, then /metrics"}


@app.get("/hello")
async def hello(request: Request) -> str:
    return "hello"


@app.get("/boom")
async def boom(request: Request) -> str:
    raise Unavailable


# --8<-- [end:app]
