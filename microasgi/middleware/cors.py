"""CORSMiddleware: Cross-Origin Resource Sharing headers, and answers to preflights."""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

from microasgi.datastructures import MutableHeaders
from microasgi.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

__all__ = ["CORSMiddleware"]

ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# NOTE: methods and header names are tokens (RFC 9110); anything else is refused, never echoed.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# NOTE: the CORS-safelisted request headers, always allowed (Fetch standard).
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


class CORSMiddleware:
    """Add CORS headers for the origins allowed, and answer preflight requests.

    - ``allow_origins``: exact origins (``"https://example.com"``), or ``["*"]`` for any.
      They are compared as strings, never as patterns.
    - ``allow_origin_regex``: a regular expression an origin must match in full.
    - ``allow_methods`` / ``allow_headers``: what a preflight may ask for (``"*"``: any;
      the preflight's answer then names the method and headers it asked for).
    - ``allow_credentials``: allow cookies; the exact origin is then echoed, never ``*``.
    - ``expose_headers``: response headers the browser lets scripts read.
    - ``max_age``: seconds a browser may cache a preflight answer.

    A preflight from an origin, method or header not allowed is answered 400 with the
    reason; a simple request from an origin not allowed gets no CORS headers.
    """

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Iterable[str] = (),
        allow_methods: Iterable[str] = ("GET",),
        allow_headers: Iterable[str] = (),
        allow_credentials: bool = False,
        allow_origin_regex: str | None = None,
        expose_headers: Iterable[str] = (),
        max_age: int = 600,
    ) -> None:
        self.app = app
        origins = [_checked_origin(origin) for origin in _listed("allow_origins", allow_origins)]
        methods = [method.upper() for method in _tokens("allow_methods", allow_methods)]
        headers = [header.lower() for header in _tokens("allow_headers", allow_headers)]
        expose_headers = _tokens("expose_headers", expose_headers)
        self.allow_all_origins = "*" in origins
        self.allow_origins = frozenset(origins) - {"*"}
        self.allow_origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        self.allow_all_methods = "*" in methods
        self.allow_methods = ALL_METHODS if self.allow_all_methods else tuple(methods)
        self.allow_all_headers = "*" in headers
        self.allow_headers = SAFELISTED_HEADERS | frozenset(headers) - {"*"}
        self.allow_credentials = allow_credentials
        # PERF: the headers that do not depend on the request are encoded once, here.
        simple: RawHeaders = []
        if allow_credentials:
            simple.append((b"access-control-allow-credentials", b"true"))
        if expose_headers:
            simple.append(
                (b"access-control-expose-headers", ", ".join(expose_headers).encode("latin-1"))
            )
        self.simple_headers = simple
        preflight: RawHeaders = [(b"access-control-max-age", str(int(max_age)).encode("latin-1"))]
        if not self.allow_all_methods:
            methods_value = ", ".join(self.allow_methods).encode("latin-1")
            preflight.append((b"access-control-allow-methods", methods_value))
        if allow_credentials:
            preflight.append((b"access-control-allow-credentials", b"true"))
        if headers and not self.allow_all_headers:
            preflight.append(
                (
                    b"access-control-allow-headers",
                    ", ".join(sorted(self.allow_headers)).encode("latin-1"),
                )
            )
        self.preflight_headers = preflight
        # NOTE: with credentials (or a list of origins) the answer depends on the Origin.
        self.echo_origin = allow_credentials or not self.allow_all_origins
        # NOTE: a preflight's answer depends on the method and headers it asks for too.
        vary = b"Access-Control-Request-Method, Access-Control-Request-Headers"
        self.preflight_vary = (b"vary", b"Origin, " + vary if self.echo_origin else vary)

    def is_allowed_origin(self, origin: str) -> bool:
        """Return whether ``origin`` may read responses."""
        if self.allow_all_origins or origin in self.allow_origins:
            return True
        regex = self.allow_origin_regex
        return regex is not None and regex.fullmatch(origin) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = request_method = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                request_method = value.decode("latin-1")
        if origin is not None and request_method is not None and scope["method"] == "OPTIONS":
            await self.preflight(scope, send, origin, request_method)
        else:
            await self.app(scope, receive, self._with_headers(send, origin))

    async def preflight(self, scope: Scope, send: Send, origin: str, method: str) -> None:
        """Answer a preflight: 200 with the CORS headers, or 400 and the reason."""
        # NOTE: a field sent on several lines is one list (RFC 9110, 5.3).
        requested = ", ".join(
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"access-control-request-headers"
        )
        failures = []
        if not self.is_allowed_origin(origin):
            failures.append("origin")
        if self.allow_all_methods:
            if _TOKEN.fullmatch(method) is None:
                failures.append("method")
        elif method.upper() not in self.allow_methods:
            failures.append("method")
        if not self.allow_all_headers and any(
            header.strip().lower() not in self.allow_headers
            for header in requested.split(",")
            if header.strip()
        ):
            failures.append("headers")
        if failures:
            status = 400
            body = orjson.dumps({"detail": f"Disallowed CORS {', '.join(failures)}"})
            headers: RawHeaders = [(b"content-type", b"application/json")]
        else:
            status = 200
            body = b"OK"
            headers = [
                *self._origin_headers(origin),
                *self.preflight_headers,
                (b"content-type", b"text/plain; charset=utf-8"),
            ]
            if self.allow_all_methods:
                # NOTE: "*" is the wildcard only without credentials (Fetch standard); the
                # method asked for is right in both cases.
                headers.append((b"access-control-allow-methods", method.encode("latin-1")))
            if self.allow_all_headers and requested:
                headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
        headers.append(self.preflight_vary)
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _origin_headers(self, origin: str) -> RawHeaders:
        if self.echo_origin:
            return [(b"access-control-allow-origin", origin.encode("latin-1"))]
        return [(b"access-control-allow-origin", b"*")]

    def _with_headers(self, send: Send, origin: str | None) -> Send:
        if origin is None or not self.is_allowed_origin(origin):
            # NOTE: when the answer depends on the Origin, every response varies on it,
            # those to requests without one included, or a cache could hand one of them to
            # a cross-origin request (Fetch standard, "CORS protocol and HTTP caches").
            return _varying_on_origin(send) if self.echo_origin else send
        added = [*self._origin_headers(origin), *self.simple_headers]
        replaced = {name for name, _ in added}

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                # NOTE: a new list: the response's own may be shared by other requests.
                raw = [item for item in message.get("headers", ()) if item[0] not in replaced]
                raw.extend(added)
                if self.echo_origin:
                    _vary_on_origin(raw)
                message = {**message, "headers": raw}
            await send(message)

        return send_with_cors


def _varying_on_origin(send: Send) -> Send:
    async def send_with_vary(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = list(message.get("headers", ()))  # NOTE: the response's own may be shared
            _vary_on_origin(raw)
            message = {**message, "headers": raw}
        await send(message)

    return send_with_vary


def _vary_on_origin(raw: RawHeaders) -> None:
    # PERF: most responses have no Vary yet; only a list that has one is parsed.
    for name, _ in raw:
        if name == b"vary":
            MutableHeaders(raw=raw).add_vary_header("Origin")
            return
    raw.append((b"vary", b"Origin"))


def _listed(option: str, values: Iterable[str]) -> list[str]:
    # NOTE: a string is an iterable of strings too, which would allow "G", "E" and "T";
    # "*" alone is taken, as it means what it did by accident in Starlette.
    if values == "*":
        return ["*"]
    if isinstance(values, str):
        raise TypeError(f"{option} takes a list, not the string {values!r}: write [{values!r}]")
    # NOTE: stripped, as the items of a comma-separated setting come with spaces.
    return [value.strip() for value in values]


def _tokens(option: str, values: Iterable[str]) -> list[str]:
    names = _listed(option, values)
    for name in names:
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(
                f"Invalid {option} entry {name!r}: a method or header name, or '*', one per item"
            )
    return names


def _checked_origin(origin: str) -> str:
    if origin == "*":
        return origin
    scheme, separator, rest = origin.partition("://")
    if not separator or not scheme or not rest or "/" in rest or "*" in rest:
        raise ValueError(
            f"Invalid CORS origin {origin!r}: write scheme://host[:port] with no path or "
            "trailing slash, or use allow_origin_regex for patterns"
        )
    # NOTE: as a browser writes its Origin (Fetch standard, "serializing an origin"):
    # scheme and host in lower case, no default port; anything else would never match.
    origin = origin.lower()
    default_port = _DEFAULT_PORTS.get(scheme.lower())
    if default_port is not None and origin.endswith(default_port):
        return origin[: -len(default_port)]
    return origin
