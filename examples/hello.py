"""A tour of the basics: `microasgi run examples.hello:app` serves it on http://127.0.0.1:8000."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import anyio

from microasgi import App, HTMLResponse, HTTPException, JSONResponse, Request, StreamingResponse


# --8<-- [start:lifespan]
@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
    # Open pools and clients here; the dict yielded becomes every request's `request.state`.
    yield {"greeting": "Hello", "catalogue": {1: "keyboard", 2: "mouse", 3: "monitor"}}
    # Close them here, once the server has stopped taking requests.


app = App(lifespan=lifespan)
# --8<-- [end:lifespan]


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


# --8<-- [start:hello]
@app.get("/hello/{name}")
async def hello(request: Request, name: str) -> dict[str, str]:
    return {"message": f"{request.state.greeting}, {name}!"}


# --8<-- [end:hello]
# --8<-- [start:items]
@app.get("/items/{item_id:int}", name="item")
async def read_item(request: Request, item_id: int) -> dict[str, Any]:
    catalogue = request.state.catalogue
    if item_id not in catalogue:
        raise HTTPException(404, f"There is no item {item_id}")
    return {
        "id": item_id,
        "name": catalogue[item_id],
        "q": request.query_params.get("q"),
        "tags": request.query_params.getlist("tag"),
    }


# --8<-- [end:items]
# --8<-- [start:echo]
@app.post("/echo")
async def echo(request: Request) -> JSONResponse:
    # 415 unless the Content-Type is JSON, 400 if the body is malformed.
    return JSONResponse(await request.json())


# --8<-- [end:echo]
# --8<-- [start:stream]
async def count_to(limit: int) -> AsyncIterator[str]:
    for number in range(1, limit + 1):
        yield f"{number}\n"
        await anyio.sleep(0.1)


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    return StreamingResponse(count_to(10), media_type="text/plain")


# --8<-- [end:stream]
# --8<-- [start:sync]
@app.get("/time")
def server_time(request: Request) -> dict[str, datetime]:
    # A plain `def` runs in a worker thread: blocking calls here do not stall the event loop.
    return {"utc": datetime.now(timezone.utc)}


# --8<-- [end:sync]
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>microasgi</title>
<style>
  body { font: 16px/1.6 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto;
         padding: 0 1rem; color: #1f2933; background: #fbfbfd; }
  h1 { font-size: 2.2rem; margin: 0; }  h1 + p { margin-top: .2rem; color: #52606d; }
  ul { list-style: none; padding: 0; }
  li { margin: .5rem 0; padding: .6rem .9rem; background: #fff; border: 1px solid #e4e7eb;
       border-radius: .5rem; }
  a { color: #2754c5; font-weight: 600; text-decoration: none; }
  a:hover { text-decoration: underline; }
  code { font: 14px ui-monospace, monospace; background: #eef1f6; padding: 0 .3rem; }
  small { display: block; color: #616e7c; }
</style></head>
<body>
<h1>microasgi</h1>
<p>A fast, pure-Python ASGI microframework. This page is <code>examples/hello.py</code>.</p>
<ul>
  <li><a href="/hello/world">GET /hello/world</a>
    <small>A path parameter and lifespan state, answered as JSON.</small></li>
  <li><a href="/items/1?q=shiny&amp;tag=new&amp;tag=sale">GET /items/1?q=shiny&amp;tag=new…</a>
    <small>An <code>int</code> converter and multi-valued query parameters.</small></li>
  <li><a href="/items/42">GET /items/42</a>
    <small>An <code>HTTPException</code>: 404 with a JSON detail.</small></li>
  <li><a href="/stream">GET /stream</a>
    <small>A <code>StreamingResponse</code> counting to ten, a line every 100 ms.</small></li>
  <li><a href="/time">GET /time</a>
    <small>A plain <code>def</code> handler, run in a worker thread.</small></li>
  <li><code>curl -d '{"hi": 1}' -H 'content-type: application/json' localhost:8000/echo</code>
    <small>POST /echo answers with the JSON body it was sent.</small></li>
</ul>
</body></html>
"""
