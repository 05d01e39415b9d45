"""TrustedHostMiddleware: refuse requests whose Host header is not one of yours."""

from __future__ import annotations

import re
from collections.abc import Iterable

from microasgi.datastructures import URL, first_value
from microasgi.responses import JSONResponse, RedirectResponse, Response
from microasgi.types import ASGIApp, Receive, Scope, Send
from microasgi.websockets import WebSocket

__all__ = ["TrustedHostMiddleware"]

# SECURITY: the host part of a Host header: a DNS name (letters, digits, hyphens, dots,
# and underscores, which docker-compose service names and some internal names carry)
# ending with at most one dot (the DNS root), or a bracketed IPv6 literal, then an optional
# port from 0 to 65535. Anything else is refused before any comparison, so no character
# can make a pattern match something it should not, and "example.com.." or ":99999", which
# are no address of this server (request.url gives up on them), do not pass as allowed.
_PORT = r"6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[0-5]?[0-9]{1,4}"
_HOST = re.compile(
    rf"(?P<host>[a-z0-9_.-]*[a-z0-9_-]\.?|\[[0-9a-f:.]+\])(?::(?:{_PORT}))?", re.ASCII
)
_PATTERN = re.compile(r"(\*\.)?([a-z0-9_-]+\.)*[a-z0-9_-]+\.?|\[[0-9a-f:.]+\]", re.ASCII)


class TrustedHostMiddleware:
    """Answer 400 unless the ``Host`` header names one of ``allowed_hosts``.

    Patterns are exact names (``"example.com"``) or ``"*.example.com"`` for any subdomain
    (not the domain itself); ``"*"`` allows every host. Names are compared as strings,
    never as regular expressions. ``X-Forwarded-Host`` is never read: put
    ``ProxyHeadersMiddleware`` outside this one to use it from a trusted proxy. With
    ``www_redirect``, a request for ``example.com`` is redirected (307) to
    ``www.example.com`` when that name is listed. WebSocket handshakes are checked too.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str] = ("*",),
        www_redirect: bool = True,
    ) -> None:
        self.app = app
        if isinstance(allowed_hosts, str) and allowed_hosts != "*":
            # NOTE: a string is an iterable of strings too: "localhost" would allow "l", "o"...
            raise TypeError(
                f"allowed_hosts takes a list, not the string {allowed_hosts!r}: "
                f"write [{allowed_hosts!r}]"
            )
        hosts = [host.lower() for host in allowed_hosts]
        for host in hosts:
            if host != "*" and _PATTERN.fullmatch(host) is None:
                raise ValueError(
                    f"Invalid allowed host {host!r}: use a host name such as 'example.com', "
                    "'*.example.com' for its subdomains, or '*' for any host"
                )
        self.allow_any = "*" in hosts
        self.exact = frozenset(host.rstrip(".") for host in hosts if not host.startswith("*"))
        self.suffixes = tuple(host[1:].rstrip(".") for host in hosts if host.startswith("*."))
        self.www_redirect = www_redirect

    def is_allowed(self, host: str) -> bool:
        """Return whether the host name ``host`` (lower case, no port) is allowed."""
        return host in self.exact or (
            host.endswith(self.suffixes) and host[0] != "." and ".." not in host
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = first_value(scope["headers"], b"host")
        match = _HOST.fullmatch(header.lower()) if header is not None else None
        if match is not None:
            host = match["host"].rstrip(".")
            if self.is_allowed(host):
                await self.app(scope, receive, send)
                return
            if self.www_redirect and "www." + host in self.exact:
                await _refuse(self._www_redirect(scope, str(header)), scope, receive, send)
                return
        await _refuse(
            JSONResponse({"detail": "Invalid host header"}, status_code=400), scope, receive, send
        )

    @staticmethod
    def _www_redirect(scope: Scope, header: str) -> Response:
        # NOTE: built from the scope's URL, so the path stays as sent (raw_path, with
        # root_path already in it) and ws stays ws.
        url = URL(scope=scope).replace(netloc=f"www.{header}")
        return RedirectResponse(url, status_code=307)


async def _refuse(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await WebSocket(scope, receive, send).send_denial_response(response)
    else:
        await response(scope, receive, send)
