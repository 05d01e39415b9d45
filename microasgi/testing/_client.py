"""The test clients: httpx clients whose transport calls the app in process."""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import anyio.from_thread
import httpx
from anyio.from_thread import BlockingPortal

from microasgi.testing._http import AsyncTransport, Transport
from microasgi.testing._lifespan import Lifespan
from microasgi.testing._server import PortalFactory, Target, websocket_scope
from microasgi.testing._websocket import AsyncWebSocketTestSession, WebSocketTestSession
from microasgi.types import ASGIApp

HeaderInput: TypeAlias = (
    httpx.Headers
    | Mapping[str, str]
    | Mapping[bytes, bytes]
    | Sequence[tuple[str, str]]
    | Sequence[tuple[bytes, bytes]]
)
CookieInput: TypeAlias = (
    httpx.Cookies | http.cookiejar.CookieJar | dict[str, str] | list[tuple[str, str]]
)

_ClientT = TypeVar("_ClientT", bound="TestClient")
_AsyncClientT = TypeVar("_AsyncClientT", bound="AsyncTestClient")


def _handshake_request(
    client: httpx.Client | httpx.AsyncClient,
    url: httpx.URL | str,
    subprotocols: Sequence[str] | None,
    headers: HeaderInput | None,
) -> httpx.Request:
    handshake = httpx.Headers(
        {
            "connection": "upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": base64.b64encode(os.urandom(16)).decode("ascii"),
        }
    )
    if subprotocols:
        handshake["sec-websocket-protocol"] = ", ".join(subprotocols)
    handshake.update(httpx.Headers(headers))
    return client.build_request("GET", url, headers=handshake)


def _default_headers(headers: HeaderInput | None) -> httpx.Headers:
    merged = httpx.Headers({"user-agent": "testclient"})
    merged.update(httpx.Headers(headers))
    return merged


class TestClient(httpx.Client):
    """An ``httpx.Client`` that calls an ASGI app in process.

    The app runs in an event loop on a helper thread (``backend`` is ``"asyncio"`` or
    ``"trio"``, ``backend_options`` go to ``anyio.run``). ``with TestClient(app) as client:``
    runs the lifespan protocol and keeps one event loop for the whole block; without
    ``with``, each request gets its own. ``raise_server_exceptions`` re-raises the app's
    exceptions in the test instead of answering 500. ``root_path`` is the prefix a proxy
    stripped: it is put in front of a request path that lacks it, as ``uvicorn --root-path``
    does.
    ``client`` is the ``(host, port)`` the app sees as its peer. ``base_url``, ``cookies``,
    ``headers``, ``follow_redirects`` and ``timeout`` are those of ``httpx.Client``; the user
    agent is ``testclient``. The read timeout bounds every wait for the app (a response, its
    next chunk, a WebSocket message, the app's end after a disconnect), so an app that never
    answers fails the test instead of hanging it; ``timeout=None`` waits forever.
    """

    __test__ = False  # NOTE: not a pytest test class despite the name

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        root_path: str = "",
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        cookies: CookieInput | None = None,
        headers: HeaderInput | None = None,
        follow_redirects: bool = True,
        client: tuple[str, int] | None = ("testclient", 50000),
        timeout: httpx.Timeout | float | None = 5.0,
    ) -> None:
        self.app = app
        self._target = Target(
            app, raise_server_exceptions=raise_server_exceptions, root_path=root_path, client=client
        )
        self._portals = PortalFactory(backend, backend_options)
        self._exit_stack: contextlib.ExitStack | None = None
        self._app_transport = Transport(self._target, self._portals)
        super().__init__(
            base_url=base_url,
            headers=_default_headers(headers),
            cookies=cookies,
            follow_redirects=follow_redirects,
            timeout=timeout,
            transport=self._app_transport,
        )

    @property
    def portal(self) -> BlockingPortal | None:
        """The portal of the running event loop inside ``with client:``, else None."""
        return self._portals.portal

    def __enter__(self: _ClientT) -> _ClientT:
        # NOTE: httpx's own __enter__/__exit__ are not called: they would close the client
        # for good, while a test client is entered once per test, as in Starlette.
        if self._exit_stack is not None:
            raise RuntimeError("The client is already running: `with client:` does not nest.")
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(
                anyio.from_thread.start_blocking_portal(
                    self._portals.backend, self._portals.backend_options
                )
            )
            stack.enter_context(portal.wrap_async_context_manager(Lifespan(self._target)))
            # NOTE: as a server closes its connections before the lifespan shutdown, the
            # responses the test left open end first.
            stack.callback(self._app_transport.close)
            self._exit_stack = stack.pop_all()
        self._portals.portal = portal
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        stack, self._exit_stack, self._portals.portal = self._exit_stack, None, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def websocket_connect(
        self,
        url: httpx.URL | str,
        subprotocols: Sequence[str] | None = None,
        headers: HeaderInput | None = None,
    ) -> WebSocketTestSession:
        """Open a WebSocket to the app; use the session with ``with``."""
        request = _handshake_request(self, url, subprotocols, headers)
        scope = websocket_scope(self._target, request)
        session = AsyncWebSocketTestSession(self._target, scope, self.timeout.read)
        return WebSocketTestSession(session, self._portals)


class AsyncTestClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that awaits an ASGI app in the current event loop.

    ``async with AsyncTestClient(app) as client:`` runs the lifespan protocol in a task
    group around the block. The parameters are those of ``TestClient`` without the event
    loop settings.
    """

    __test__ = False

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        root_path: str = "",
        cookies: CookieInput | None = None,
        headers: HeaderInput | None = None,
        follow_redirects: bool = True,
        client: tuple[str, int] | None = ("testclient", 50000),
        timeout: httpx.Timeout | float | None = 5.0,
    ) -> None:
        self.app = app
        self._target = Target(
            app, raise_server_exceptions=raise_server_exceptions, root_path=root_path, client=client
        )
        self._lifespan: Lifespan | None = None
        self._app_transport = AsyncTransport(self._target)
        super().__init__(
            base_url=base_url,
            headers=_default_headers(headers),
            cookies=cookies,
            follow_redirects=follow_redirects,
            timeout=timeout,
            transport=self._app_transport,
        )

    async def __aenter__(self: _AsyncClientT) -> _AsyncClientT:
        # NOTE: as in TestClient, httpx's own enter/exit are skipped so the client can be
        # entered again.
        if self._lifespan is not None:
            raise RuntimeError("The client is already running: `async with client:` does not nest.")
        lifespan = Lifespan(self._target)
        await lifespan.__aenter__()
        self._lifespan = lifespan
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            try:
                # NOTE: the responses left open end before the lifespan shutdown, as in
                # TestClient; their task groups sit inside the lifespan's.
                await self._app_transport.aclose()
            finally:
                await lifespan.__aexit__(exc_type, exc, tb)

    def websocket_connect(
        self,
        url: httpx.URL | str,
        subprotocols: Sequence[str] | None = None,
        headers: HeaderInput | None = None,
    ) -> AsyncWebSocketTestSession:
        """Open a WebSocket to the app; use the session with ``async with``."""
        request = _handshake_request(self, url, subprotocols, headers)
        scope = websocket_scope(self._target, request)
        return AsyncWebSocketTestSession(self._target, scope, self.timeout.read)
