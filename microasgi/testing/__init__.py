"""In-process test clients: call an ASGI app without a server or a socket.

``TestClient`` is an ``httpx.Client`` that runs the app in an event loop on a helper thread
(asyncio or trio, through an anyio blocking portal); ``AsyncTestClient`` is an
``httpx.AsyncClient`` that awaits the app in the caller's event loop. Both build scopes the
way a server does, run the lifespan protocol when used as context managers and open
WebSocket sessions with ``websocket_connect``. The sync side drives the async machinery
(HTTP exchange, lifespan, WebSocket connection) through the portal, so the two behave alike.
"""

from __future__ import annotations

from microasgi.testing._client import AsyncTestClient, TestClient
from microasgi.testing._lifespan import LifespanFailed
from microasgi.testing._websocket import (
    AsyncWebSocketTestSession,
    WebSocketDenied,
    WebSocketTestSession,
)

__all__ = [
    "AsyncTestClient",
    "AsyncWebSocketTestSession",
    "LifespanFailed",
    "TestClient",
    "WebSocketDenied",
    "WebSocketTestSession",
]

# NOTE: errors and reprs name the public module, not the private one that defines the class.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
