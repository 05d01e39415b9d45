"""A WebSocket echo: `python -m microasgi run examples.echo:app`, then open http://127.0.0.1:8000."""

from __future__ import annotations

import hmac

from microasgi import App, HTMLResponse, JSONResponse, Limits, Request, WebSocket

app = App()


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


# --8<-- [start:echo]
@app.websocket("/ws", limits=Limits(max_message_size=64 * 1024, websocket_idle_timeout=300))
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():  # ends when the browser goes away
        await ws.send_text(text)


# --8<-- [end:echo]
# --8<-- [start:auth]
TOKEN = "let-me-in"  # in real code: a signed token checked against a secret


@app.websocket("/private")
async def private(ws: WebSocket) -> None:
    token = ws.query_params.get("token", "")
    if not hmac.compare_digest(token, TOKEN):
        # Refuse the handshake with a real HTTP answer the client can act on.
        await ws.send_denial_response(
            JSONResponse(
                {"detail": "A valid token is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="echo"'},
            )
        )
        return
    await ws.accept()
    await ws.send_json({"hello": "you are in"})


# --8<-- [end:auth]
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>microasgi echo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 3rem auto;
         padding: 0 1rem; color: #1f2933; }
  form { display: flex; gap: .5rem; }  input { flex: 1; padding: .4rem; }
  #log { list-style: none; padding: 0; font: 14px ui-monospace, monospace; }
  .out { color: #2754c5; }  .in { color: #0b7a3b; }  .note { color: #8a4b08; }
</style></head>
<body>
<h1>WebSocket echo</h1>
<form id="form"><input id="text" autocomplete="off" placeholder="Say something">
<button>Send</button></form>
<ul id="log"></ul>
<script>
  const log = document.getElementById("log");
  const note = (text, kind) => {
    const item = document.createElement("li");
    item.textContent = text;
    item.className = kind;
    log.prepend(item);
  };
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.onopen = () => note("connected", "note");
  socket.onmessage = (event) => note("< " + event.data, "in");
  socket.onclose = (event) => note(`closed: ${event.code} ${event.reason}`, "note");
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    if (input.value && socket.readyState === WebSocket.OPEN) {
      socket.send(input.value);
      note("> " + input.value, "out");
      input.value = "";
    }
  };
</script>
</body></html>
"""
