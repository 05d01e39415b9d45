"""An app whose handler takes a name its route does not supply (``user_idd``)."""

from __future__ import annotations

from typing import Any

from microasgi import App, Request

app = App()


@app.get("/users/{user_id:int}")
async def get_user(request: Request, user_idd: int) -> dict[str, Any]:
    return {"id": user_idd}


@app.get("/plaintext")
async def plaintext(request: Request) -> str:
    return "Hello, World!"
