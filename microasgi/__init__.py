"""microasgi: a fast, pure-Python ASGI microframework."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._utils import lazy_attributes
from .app import App
from .background import BackgroundTask, BackgroundTasks
from .datastructures import URL, FormData, Headers, MutableHeaders, QueryParams, State, UploadFile
from .exceptions import (
    ClientDisconnect,
    HTTPException,
    NoMatchFound,
    RouteConflictError,
    RouteTemplateError,
    SetupError,
    WebSocketDisconnect,
    WebSocketException,
)
from .limits import Limits
from .middleware import Middleware
from .requests import HTTPConnection, Request
from .responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from .routing import Host, Mount, Route, Router, WebSocketRoute
from .websockets import WebSocket, WebSocketState

if TYPE_CHECKING:
    from .sse import EventSourceResponse, ServerSentEvent
    from .staticfiles import FileResponse, StaticFiles

__version__ = "0.1.0"

# PERF: file serving and server-sent events load on first use, keeping `import microasgi`
# fast for apps that need neither.
_LAZY = {
    "EventSourceResponse": ".sse",
    "ServerSentEvent": ".sse",
    "FileResponse": ".staticfiles",
    "StaticFiles": ".staticfiles",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "URL",
    "App",
    "BackgroundTask",
    "BackgroundTasks",
    "ClientDisconnect",
    "EventSourceResponse",
    "FileResponse",
    "FormData",
    "HTMLResponse",
    "HTTPConnection",
    "HTTPException",
    "Headers",
    "Host",
    "JSONResponse",
    "Limits",
    "Middleware",
    "Mount",
    "MutableHeaders",
    "NoMatchFound",
    "PlainTextResponse",
    "QueryParams",
    "RedirectResponse",
    "Request",
    "Response",
    "Route",
    "RouteConflictError",
    "RouteTemplateError",
    "Router",
    "ServerSentEvent",
    "SetupError",
    "State",
    "StaticFiles",
    "StreamingResponse",
    "UploadFile",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketException",
    "WebSocketRoute",
    "WebSocketState",
    "__version__",
]
