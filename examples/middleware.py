"""Middleware: the built-in layers, and request/response functions with @app.middleware.

Run it with `microasgi run examples.middleware:app` and try:

    curl -i localhost:8000/                       # x-process-time, x-request-id, a session
    curl -i --compressed localhost:8000/stream    # streamed and compressed line by line
    curl -i -H 'origin: https://shop.example' localhost:8000/
    curl -i -H 'host: evil.example' localhost:8000/   # 400
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import AsyncIterator

import anyio

from microasgi import App, Middleware, Request, Response, StreamingResponse
from microasgi.middleware import (
    CompressionMiddleware,
    CORSMiddleware,
    CSRFMiddleware,
    RequestIDFilter,
    RequestIDMiddleware,
    SessionMiddleware,
    TimeoutMiddleware,
    TrustedHostMiddleware,
)
from microasgi.middleware.http import CallNext

# --8<-- [start:stack]
app = App(
    middleware=[
        # The first is the outermost: it sees the request first and the response last.
        Middleware(TrustedHostMiddleware, allowed_hosts=["localhost", "127.0.0.1", "testserver"]),
        Middleware(RequestIDMiddleware),
        Middleware(CORSMiddleware, allow_origins=["https://shop.example"], allow_credentials=True),
        Middleware(CompressionMiddleware, minimum_size=100),
        Middleware(SessionMiddleware, secret_key="change me: a long random string"),
        Middleware(CSRFMiddleware, secret_key="change me too", exempt_paths=["/webhooks/*"]),
        Middleware(TimeoutMiddleware, timeout=10),
    ]
)
# --8<-- [end:stack]

# --8<-- [start:logging]
handler = logging.StreamHandler()
handler.addFilter(RequestIDFilter())
handler.setFormatter(logging.Formatter("%(asctime)s %(request_id)s %(levelname)s %(message)s"))
logger = logging.getLogger("shop")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
# --8<-- [end:logging]

# --8<-- [start:timing]
current_user: contextvars.ContextVar[str] = contextvars.ContextVar("current_user", default="-")


@app.middleware("http")
async def timing(request: Request, call_next: CallNext) -> Response:
    # Runs after the layers above, for every HTTP request, in the request's own task.
    current_user.set(request.headers.get("x-user", "anonymous"))
    started = time.perf_counter()
    response = await call_next(request)  # the handler has sent its status and headers
    response.headers["x-process-time"] = f"{(time.perf_counter() - started) * 1000:.2f}ms"
    return response  # its body now streams from the handler, chunk by chunk


# --8<-- [end:timing]


@app.get("/")
async def index(request: Request) -> dict[str, object]:
    request.session["visits"] = request.session.get("visits", 0) + 1
    logger.info("visit %d by %s", request.session["visits"], current_user.get())
    return {
        "visits": request.session["visits"],
        "user": current_user.get(),
        "request_id": request.state.request_id,
        "csrf_token": request.state.csrf_token,
    }


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for number in range(1, 6):
            yield f"line {number}: " + "the same words compress well. " * 4 + "\n"
            await anyio.sleep(0.2)

    return StreamingResponse(lines(), media_type="text/plain")


@app.post("/webhooks/{source}")
async def webhook(request: Request, source: str) -> dict[str, str]:
    # Exempt from the CSRF check: the sender is a server, not a browser.
    return {"received from": source}
