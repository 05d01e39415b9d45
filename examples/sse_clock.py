"""A clock over server-sent events, resumable with Last-Event-ID.

Run it with `microasgi run examples.sse_clock:app` and open http://127.0.0.1:8000. Stop
the server for a few seconds and start it again: the page reconnects on its own, sends the
id of the last tick it saw, and the count carries on from there. `curl -N
localhost:8000/clock?ticks=5` shows the raw stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone

import anyio

from microasgi import App, HTMLResponse, Request
from microasgi.sse import EventSourceResponse, ServerSentEvent

TICK_SECONDS = 1.0
"""Seconds between two ticks."""

app = App()


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


# --8<-- [start:resume]
def next_tick(last_event_id: str | None) -> int:
    """Return the tick after the last one the client saw: 0 for a new client."""
    try:
        return max(int(last_event_id or "-1") + 1, 0)
    except ValueError:
        return 0  # not a tick of ours: start again


# --8<-- [end:resume]
# --8<-- [start:clock]
@app.get("/clock")
async def clock(request: Request) -> EventSourceResponse:
    # A browser that reconnects sends the id of the last event it received.
    first = next_tick(request.headers.get("last-event-id"))
    ticks = request.query_params.get("ticks")  # stop after this many, for curl and tests
    last = first + int(ticks) if ticks and ticks.isdecimal() and len(ticks) < 10 else None

    async def tick_events() -> AsyncIterator[ServerSentEvent]:
        tick = first
        while last is None or tick < last:
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            # `retry` tells the browser to reconnect 2 s after losing the connection.
            yield ServerSentEvent(now, event="tick", id=tick, retry=2000)
            tick += 1
            await anyio.sleep(TICK_SECONDS)

    # A comment line goes out after 15 s without a tick, so proxies keep the connection.
    return EventSourceResponse(tick_events(), ping=15)


# --8<-- [end:clock]
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>microasgi clock</title>
<style>
  body { font: 16px/1.6 system-ui, sans-serif; max-width: 32rem; margin: 4rem auto;
         padding: 0 1rem; color: #1f2933; background: #fbfbfd; text-align: center; }
  #time { font: 600 4rem ui-monospace, monospace; margin: 1rem 0; }
  #status { color: #616e7c; }
  .offline #time { color: #9aa5b1; }
</style></head>
<body>
<h1>Server clock</h1>
<div id="time">--:--:--</div>
<p>tick <strong id="tick">-</strong> · <span id="status">connecting…</span></p>
<script>
  // EventSource reconnects by itself and sends Last-Event-ID: the server resumes from it.
  const source = new EventSource("clock");
  const time = document.getElementById("time");
  const tick = document.getElementById("tick");
  const status = document.getElementById("status");
  source.addEventListener("tick", (event) => {
    time.textContent = new Date(event.data).toLocaleTimeString();
    tick.textContent = event.lastEventId;
  });
  source.addEventListener("open", () => {
    document.body.classList.remove("offline");
    status.textContent = "connected";
  });
  source.addEventListener("error", () => {
    document.body.classList.add("offline");
    status.textContent = "reconnecting, to resume after tick " + tick.textContent + "…";
  });
</script>
</body></html>
"""
