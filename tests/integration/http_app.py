"""The app the HTTP integration tests serve on real ASGI servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from microasgi import App, BackgroundTask, HTTPException, Request, StreamingResponse
from microasgi.responses import PlainTextResponse, Response


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
    yield {"started": True}


app = App(lifespan=lifespan, max_body_size=1024)


@app.get("/plaintext")
async def plaintext(request: Request) -> str:
    return "Hello, World!"


@app.get("/users/{user_id:int}", name="user")
async def user(request: Request, user_id: int) -> dict[str, Any]:
    return {"id": user_id, "url": str(request.url_for("user", user_id=user_id))}


@app.post("/echo")
async def echo(request: Request) -> Any:
    return await request.json()


@app.get("/state")
async def state(request: Request) -> dict[str, Any]:
    return {"started": request.state.started}


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"chunk %d\n" % i
            await anyio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/stream-fails")
async def stream_fails(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"part one\n"
        await anyio.sleep(0.01)
        raise RuntimeError("stream failure")

    return StreamingResponse(chunks(), media_type="text/plain")


background_runs: list[str] = []


@app.get("/stream-then-background")
async def stream_then_background(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"streamed"

    task = BackgroundTask(background_runs.append, request.query_params["id"])
    return StreamingResponse(chunks(), media_type="text/plain", background=task)


@app.get("/background-runs")
async def background_runs_so_far(request: Request) -> list[str]:
    return background_runs


polling: list[str] = []
saw_disconnect: list[str] = []


@app.get("/poll-until-gone")
async def poll_until_gone(request: Request) -> str:
    """Poll is_disconnected() as a handler that stops when its client leaves does."""
    run = request.query_params["id"]
    polling.append(run)
    with anyio.move_on_after(30):
        while not await request.is_disconnected():
            await anyio.sleep(0.01)
        saw_disconnect.append(run)
    return "done"


@app.get("/disconnects")
async def disconnects(request: Request) -> dict[str, list[str]]:
    return {"polling": polling, "gone": saw_disconnect}


@app.get("/teapot")
async def teapot(request: Request) -> None:
    raise HTTPException(418, "short and stout")


@app.get("/not-modified")
async def not_modified(request: Request) -> Response:
    # The headers of the full response, Content-Length included, as a cache might copy them.
    return Response(status_code=304, headers={"etag": '"v1"', "content-length": "5"})


@app.get("/no-content")
async def no_content(request: Request) -> Response:
    response = PlainTextResponse("gone")
    response.status_code = 204
    return response


@app.get("/boom")
def boom(request: Request) -> None:
    raise RuntimeError("integration failure")


@app.get("/blocking")
def blocking(request: Request) -> str:
    import time

    time.sleep(0.2)
    return "done"
