"""HTTPSRedirectMiddleware: send http and ws requests to https and wss; optional HSTS."""

from __future__ import annotations

from microasgi.datastructures import URL
from microasgi.responses import RedirectResponse
from microasgi.types import ASGIApp, Message, Receive, Scope, Send
from microasgi.websockets import WebSocket

__all__ = ["HTTPSRedirectMiddleware"]

_SECURE = {"http": "https", "ws": "wss"}


class HTTPSRedirectMiddleware:
    """Redirect (307) ``http`` and ``ws`` requests to ``https`` and ``wss``.

    The URL stays the same but for the scheme (and a port 80, dropped).

    With ``hsts_max_age`` (seconds), responses to secure requests carry a
    ``Strict-Transport-Security`` header, with ``includeSubDomains`` and ``preload`` when
    asked. Behind a proxy that terminates TLS, put ``ProxyHeadersMiddleware`` outside this
    one so that the scheme the client used is known. Put ``TrustedHostMiddleware`` outside
    it too: the redirect goes to the host the request named.
    """

    def __init__(
        self,
        app: ASGIApp,
        hsts_max_age: int | None = None,
        hsts_include_subdomains: bool = False,
        hsts_preload: bool = False,
    ) -> None:
        self.app = app
        self.hsts: tuple[bytes, bytes] | None = None
        if hsts_max_age is None and (hsts_include_subdomains or hsts_preload):
            raise ValueError("hsts_include_subdomains and hsts_preload need hsts_max_age too")
        if hsts_max_age is not None and not hsts_max_age >= 0:
            raise ValueError(f"hsts_max_age must be 0 or more seconds, not {hsts_max_age!r}")
        if hsts_max_age is not None:
            value = f"max-age={int(hsts_max_age)}"
            if hsts_include_subdomains:
                value += "; includeSubDomains"
            if hsts_preload:
                value += "; preload"
            self.hsts = (b"strict-transport-security", value.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        url = URL(scope=scope)
        secure = _SECURE.get(url.scheme)
        if secure is not None:
            # NOTE: the default port of the old scheme (80) is dropped, not carried over.
            netloc = url.netloc
            if url.port in (80, 443):
                host = url.hostname or ""
                netloc = f"[{host}]" if ":" in host else host
            response = RedirectResponse(url.replace(scheme=secure, netloc=netloc), 307)
            if scope["type"] == "websocket":
                await WebSocket(scope, receive, send).send_denial_response(response)
            else:
                await response(scope, receive, send)
            return
        if self.hsts is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hsts = self.hsts

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [item for item in message.get("headers", ()) if item[0] != hsts[0]]
                headers.append(hsts)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
