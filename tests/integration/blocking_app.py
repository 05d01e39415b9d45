"""A debug app whose handler blocks the event loop, for the blocking-call warning."""

from __future__ import annotations

import time

from microasgi import App, Request

app = App(debug=True)


@app.get("/fine")
async def fine(request: Request) -> str:
    return "fine"


@app.get("/blocking")
async def blocking_handler(request: Request) -> str:
    time.sleep(0.4)
    return "done"
