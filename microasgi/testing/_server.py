"""The in-process server: the app, its settings and the scopes built for it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import anyio.from_thread
import httpx
from anyio.from_thread import BlockingPortal

from microasgi._errors import TESTING_EXTENSION
from microasgi.types import ASGIApp, RawHeaders, Scope

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class Target:
    """The app and the server-side settings that a client and its transport share."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        raise_server_exceptions: bool,
        root_path: str,
        client: tuple[str, int] | None,
    ) -> None:
        self.app = app
        self.raise_server_exceptions = raise_server_exceptions
        self.root_path = root_path
        self.client = client
        self.state: dict[str, Any] = {}


def raw_headers(value: Any, message_type: str) -> RawHeaders:
    headers = [(name, val) for name, val in value]
    for name, val in headers:
        if not (isinstance(name, bytes) and isinstance(val, bytes)):
            raise TypeError(
                f'Headers in ASGI message "{message_type}" must be (bytes, bytes) pairs.'
            )
    return headers


def _scope(target: Target, request: httpx.Request, scheme: str) -> Scope:
    url = request.url
    raw_path = url.raw_path.split(b"?", 1)[0]
    root = target.root_path
    path = unquote(raw_path.decode("ascii"))
    # NOTE: like `uvicorn --root-path`, the prefix a proxy stripped is put back in front of
    # the path, so `path` is the full path and `root_path` says which part is the mount. A
    # path that already starts with the prefix is kept as it is, as Starlette's client does.
    prefix = root.rstrip("/")
    if prefix and path != prefix and not path.startswith(prefix + "/"):
        path = root + path
        raw_path = quote(root).encode("ascii") + raw_path
    return {
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": url.query,
        "root_path": root,
        "headers": [(name.lower(), value) for name, value in request.headers.raw],
        "client": target.client,
        "server": (url.host, url.port or _DEFAULT_PORTS.get(scheme, 80)),
        "state": dict(target.state),
        "extensions": {TESTING_EXTENSION: {}} if target.raise_server_exceptions else {},
    }


def http_scope(target: Target, request: httpx.Request) -> Scope:
    scope = _scope(target, request, request.url.scheme)
    scope.update(type="http", method=request.method)
    return scope


def websocket_scope(target: Target, request: httpx.Request) -> Scope:
    scheme = {"http": "ws", "https": "wss"}.get(request.url.scheme, request.url.scheme)
    offered = request.headers.get("sec-websocket-protocol", "")
    scope = _scope(target, request, scheme)
    scope.update(
        type="websocket",
        subprotocols=[name.strip() for name in offered.split(",") if name.strip()],
    )
    scope["extensions"]["websocket.http.response"] = {}
    return scope


class PortalFactory:
    """Yields the client's portal inside ``with client:``, else a portal per use."""

    def __init__(self, backend: str, backend_options: dict[str, Any] | None) -> None:
        self.backend = backend
        self.backend_options = backend_options
        self.portal: BlockingPortal | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[BlockingPortal]:
        if self.portal is not None:
            yield self.portal
        else:
            with anyio.from_thread.start_blocking_portal(
                self.backend, self.backend_options
            ) as portal:
                yield portal
