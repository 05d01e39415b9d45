"""The WebSocket app that tests/integration/test_websocket_servers.py serves on real servers.

Module-level dicts record what the client cannot see from its side (the close code the
app received, how many messages a send loop got through); plain HTTP routes report them.
"""

from __future__ import annotations

from typing import Any

from microasgi.app import App
from microasgi.exceptions import WebSocketDisconnect
from microasgi.limits import Limits
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse
from microasgi.websockets import WebSocket

SUBPROTOCOLS = ("chat.v2", "chat.v1")
SMALL_LIMIT = 1024
IDLE_TIMEOUT = 0.3
MAX_RATE = 5
FLOOD_CHUNK = 16 * 1024
FLOOD_CAP = 4096  # 64 MiB at most, even on a server that never pushes back

app = App()
closes: dict[str, dict[str, Any]] = {}
flooded: dict[str, int] = {}


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    chosen = next((p for p in ws.subprotocols if p in SUBPROTOCOLS), None)
    await ws.accept(subprotocol=chosen, headers={"x-microasgi": "accept-headers"})
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await ws.send_bytes(message["bytes"])
        elif text.startswith("close:"):
            _, code, reason = text.split(":", 2)
            await ws.close(int(code), reason)
            return
        else:
            await ws.send_text(text)


@app.websocket("/record/{key}")
async def record(ws: WebSocket, key: str) -> None:
    await ws.accept()
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect as exc:
        closes[key] = {"code": exc.code, "reason": exc.reason}
        raise


@app.websocket("/late-send/{key}")
async def late_send(ws: WebSocket, key: str) -> None:
    await ws.accept()
    async for _ in ws.iter_text():
        pass
    try:
        await ws.send_text("after the client left")
    except WebSocketDisconnect as exc:
        closes[key] = {"late_send": exc.code}
        raise
    closes[key] = {"late_send": "sent"}


@app.get("/closes/{key}")
async def get_close(request: Request, key: str) -> Any:
    return closes.get(key, {})


@app.websocket("/deny")
async def deny(ws: WebSocket) -> None:
    await ws.send_denial_response(
        PlainTextResponse(
            "Not authenticated",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="integration"'},
        )
    )


@app.websocket("/refuse")
async def refuse(ws: WebSocket) -> None:
    await ws.close(4403, "refused")


@app.websocket("/boom-early")
async def boom_early(ws: WebSocket) -> None:
    raise RuntimeError("integration: failure before accept")


@app.websocket("/boom")
async def boom(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    raise RuntimeError("integration: failure after accept")


async def _echo_text(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


app.add_websocket_route("/small", _echo_text, limits=Limits(max_message_size=SMALL_LIMIT))
app.add_websocket_route("/idle", _echo_text, limits=Limits(websocket_idle_timeout=IDLE_TIMEOUT))
app.add_websocket_route("/rate", _echo_text, limits=Limits(websocket_max_rate=MAX_RATE))


@app.websocket("/flood/{key}")
async def flood(ws: WebSocket, key: str) -> None:
    await ws.accept()
    chunk = b"x" * FLOOD_CHUNK
    for sent in range(1, FLOOD_CAP + 1):
        await ws.send_bytes(chunk)
        flooded[key] = sent


@app.get("/flooded/{key}")
async def get_flooded(request: Request, key: str) -> Any:
    return {"sent": flooded.get(key, 0)}
