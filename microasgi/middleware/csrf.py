"""CSRFMiddleware: refuse cross-site requests that would change state."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Literal

import anyio.lowlevel

from microasgi.datastructures import URL
from microasgi.exceptions import ClientDisconnect, HTTPException
from microasgi.formparsers import unquote_plus
from microasgi.limits import limits_for
from microasgi.requests import BODY_KEY, HTTPConnection, Request
from microasgi.responses import JSONResponse, Response
from microasgi.types import ASGIApp, Message, Receive, Scope, Send
from microasgi.websockets import WebSocket

from .sessions import SecretKey, cookie_values, sign, signing_keys, verify

__all__ = ["CSRFMiddleware"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_FORM_TYPE = "application/x-www-form-urlencoded"
_HTTP_ORIGINS = {"ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The longest token is_valid_token accepts; escaped, a token takes at most three times that.
_MAX_TOKEN_LENGTH = 200
_MAX_SENT_TOKEN = 3 * _MAX_TOKEN_LENGTH
# PERF: the form scan lets other tasks run after this many fields (only when max_fields
# is above it or lifted).
_FIELDS_PER_STEP = 1000
_FIELD = re.compile(rb"[^&]+")


class CSRFMiddleware:
    """Refuse state-changing requests that another site made a browser send.

    Requests with unsafe methods (POST, PUT, PATCH, DELETE…) are checked. One passes when
    the browser says it comes from this site (``Sec-Fetch-Site: same-origin``, or an
    ``Origin`` equal to this site's or listed in ``trusted_origins``); a browser that says it
    comes from another site is refused. Without either header (an
    older browser, or a client that is not a browser), the request must carry the token of
    the ``csrftoken`` cookie in the ``X-CSRF-Token`` header or, for an urlencoded form, in the
    ``csrftoken`` field (double submit: another site can neither read the cookie nor forge
    its signature). Refusals are 403 with the reason.

    Only the ``csrftoken`` field of a form is decoded, and only when it is short enough to
    be a token; fields are counted up to ``max_fields`` on the way to it (a 403 past it),
    and the field is held to ``max_part_size`` (a 413, as ``request.form()`` answers).

    The token is on ``request.state.csrf_token`` for templates; the cookie is set on the
    first response that lacks it. WebSocket handshakes from another origin are refused too.

    - ``secret_key``: signs the tokens (a string, or a list of them, newest first).
    - ``exempt_paths``: paths never checked; one ending in ``*`` is a prefix
      (``"/webhooks/*"``).
    - ``trusted_origins``: other origins allowed to send requests (``"https://app.example"``).
    - ``cookie_name``, ``header_name``, ``form_field``; ``cookie_path``, ``cookie_domain``,
      ``cookie_secure``, ``cookie_samesite``, ``cookie_httponly``: the token cookie.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: SecretKey,
        *,
        exempt_paths: Iterable[str] = (),
        trusted_origins: Iterable[str] = (),
        cookie_name: str = "csrftoken",
        header_name: str = "x-csrf-token",
        form_field: str | None = "csrftoken",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_secure: bool = False,
        cookie_samesite: Literal["lax", "strict", "none"] = "lax",
        cookie_httponly: bool = False,
    ) -> None:
        self.app = app
        self.keys = signing_keys(secret_key, b"microasgi.csrf")
        for option, values in (
            ("exempt_paths", exempt_paths),
            ("trusted_origins", trusted_origins),
        ):
            # SECURITY: a string is an iterable of strings too, and the "*" at the end of
            # "/webhooks/*" would then exempt every path.
            if isinstance(values, str):
                raise TypeError(
                    f"{option} takes a list, not the string {values!r}: write [{values!r}]"
                )
        paths = list(exempt_paths)
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(
                    f"Invalid exempt path {path!r}: write it from the root, as '/webhooks' or "
                    "'/webhooks/*'"
                )
        self.exempt_exact = frozenset(path for path in paths if not path.endswith("*"))
        self.exempt_prefixes = tuple(path[:-1] for path in paths if path.endswith("*"))
        self.trusted_origins = frozenset(_browser_origin(origin) for origin in trusted_origins)
        self.cookie_name = cookie_name
        self.header_name = header_name.lower().encode("latin-1")
        self._header_label = header_name
        self.form_field = form_field
        self._form_name = None if form_field is None else form_field.encode()
        # NOTE: built once through Response.set_cookie, which checks every attribute, then
        # cut around the value, so a token is put in its place without searching the text
        # (a cookie name such as "XSRF-TOKEN" may contain any placeholder).
        cookie = Response()
        cookie.raw_headers.clear()
        cookie.set_cookie(
            cookie_name,
            "-",
            path=cookie_path,
            domain=cookie_domain,
            secure=cookie_secure,
            httponly=cookie_httponly,
            samesite=cookie_samesite,
        )
        header = cookie.raw_headers[0][1]
        prefix = f"{cookie_name}=".encode("latin-1")
        self._cookie_prefix = prefix
        self._cookie_suffix = header[len(prefix) + 1 :]

    # -- tokens --------------------------------------------------------------------------

    def new_token(self) -> str:
        """A fresh signed token."""
        nonce = secrets.token_urlsafe(32)
        return f"{nonce}.{sign(self.keys[0], nonce)}"

    def is_valid_token(self, token: str) -> bool:
        """Return whether ``token`` was signed with one of the keys."""
        nonce, _, signature = token.partition(".")
        return (
            bool(nonce) and len(token) <= _MAX_TOKEN_LENGTH and verify(self.keys, nonce, signature)
        )

    # -- requests ------------------------------------------------------------------------

    def is_exempt(self, path: str) -> bool:
        """Return whether requests to ``path`` are never checked."""
        return path in self.exempt_exact or path.startswith(self.exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "websocket":
            await self._check_websocket(scope, receive, send)
            return
        if scope_type != "http":
            await self.app(scope, receive, send)
            return
        # NOTE: the first valid one: "csrftoken" is also the name other frameworks use,
        # and a cookie of theirs for the parent domain comes with ours.
        cookie = next(
            (
                value
                for value in cookie_values(scope["headers"], self.cookie_name)
                if self.is_valid_token(value)
            ),
            None,
        )
        token = cookie if cookie is not None else self.new_token()
        HTTPConnection(scope).state.csrf_token = token
        if scope["method"] not in SAFE_METHODS and not self.is_exempt(scope["path"]):
            had_body = BODY_KEY in scope
            try:
                refusal = await self._refusal(scope, receive, cookie)
            except HTTPException as exc:
                response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
                await response(scope, receive, send)
                return
            except ClientDisconnect:
                return
            if refusal is not None:
                await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
                return
            if not had_body and BODY_KEY in scope:
                receive = _replay(scope[BODY_KEY], receive)
        if cookie is not None:
            await self.app(scope, receive, send)
            return
        # NOTE: tokens are URL-safe base64 and ".", which a cookie value takes unquoted.
        set_cookie = self._cookie_prefix + token.encode("ascii") + self._cookie_suffix

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"set-cookie", set_cookie))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _refusal(self, scope: Scope, receive: Receive, cookie: str | None) -> str | None:
        """Why the unsafe request in ``scope`` is refused, or None when it may pass."""
        fetch_site = origin = submitted = None
        for name, value in scope["headers"]:
            if name == b"sec-fetch-site":
                fetch_site = value.decode("latin-1").lower()
            elif name == b"origin":
                origin = value.decode("latin-1").lower()
            elif name == self.header_name:
                submitted = value.decode("latin-1")
        if fetch_site == "same-origin":
            return None
        if origin is not None and origin != "null":
            if origin == self.own_origin(scope) or origin in self.trusted_origins:
                return None
            return (
                f"Cross-site request refused: origin {origin[:100]!r} is not "
                f"{self.own_origin(scope)!r} (behind a proxy, see ProxyHeadersMiddleware; "
                "for another site of yours, trusted_origins)"
            )
        if fetch_site in ("cross-site", "same-site"):
            return f"Cross-site request refused (Sec-Fetch-Site: {fetch_site})"
        if cookie is None:
            return "CSRF token missing: no valid token cookie"
        if submitted is None:
            submitted = await self._form_token(scope, receive)
        if submitted is None:
            return "CSRF token missing from the request"
        if not secrets.compare_digest(submitted.encode(), cookie.encode()):
            return "CSRF token does not match"
        return None

    @staticmethod
    def own_origin(scope: Scope) -> str:
        """This site's origin as a browser writes it: ``scheme://host[:port]``."""
        url = URL(scope=scope)
        scheme = _HTTP_ORIGINS.get(url.scheme, url.scheme)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        port = url.port
        if port is not None and port != _DEFAULT_PORTS.get(scheme):
            netloc += f":{port}"
        return f"{scheme}://{netloc}"

    async def _form_token(self, scope: Scope, receive: Receive) -> str | None:
        """The token in an urlencoded form body (which is then kept for the app)."""
        request = Request(scope, receive)
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if self._form_name is None or media_type != _FORM_TYPE:
            return None
        body = await request.body()
        limits = limits_for(scope)
        found = await self._find_field(body, self._form_name, limits.max_fields)
        if found is None:
            return None
        start, stop = found
        if limits.max_part_size is not None and stop - start > limits.max_part_size:
            raise HTTPException(
                413,
                f"A form field exceeds the limit of {limits.max_part_size} bytes (max_part_size)",
            )
        if stop - start > _MAX_SENT_TOKEN:
            # SECURITY: longer than any token even with every byte escaped: it cannot
            # match, so it is neither copied nor decoded.
            return ""
        return unquote_plus(body[start:stop]).decode("utf-8", "replace")

    async def _find_field(
        self, body: bytes, name: bytes, max_fields: int | None
    ) -> tuple[int, int] | None:
        """Where the value of the first field called ``name`` in an urlencoded ``body`` is.

        Linear in the body: no other field is decoded, and only names short enough to be
        ``name`` escaped are. Past ``max_fields`` fields the request is refused.
        """
        # NOTE: the same rules as FormParser: only "&" separates fields, empty ones do not
        # count, and the name ends at the first "=".
        shortest, longest = len(name), 3 * len(name)
        for count, field in enumerate(_FIELD.finditer(body), 1):
            if max_fields is not None and count > max_fields:
                raise HTTPException(
                    403,
                    f"CSRF token not found in the first {max_fields} form fields (max_fields): "
                    f"send it in an earlier field or in the {self._header_label} header",
                )
            start, stop = field.span()
            equals = body.find(b"=", start, stop)
            name_end = stop if equals == -1 else equals
            if shortest <= name_end - start <= longest:
                sent = body[start:name_end]
                if sent == name or unquote_plus(sent) == name:
                    return (stop, stop) if equals == -1 else (equals + 1, stop)
            if count % _FIELDS_PER_STEP == 0:
                await anyio.lowlevel.checkpoint()
        return None

    async def _check_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # SECURITY: a page on any site can open a WebSocket to this one with the user's
        # cookies (cross-site WebSocket hijacking); the browser always sends its Origin.
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").lower()
                if origin != self.own_origin(scope) and origin not in self.trusted_origins:
                    response = JSONResponse(
                        {"detail": "Cross-site WebSocket refused"}, status_code=403
                    )
                    await WebSocket(scope, receive, send).send_denial_response(response)
                    return
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` (already read) first."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def _browser_origin(origin: str) -> str:
    """``origin`` as a browser writes it: lower case, no trailing slash, no default port."""
    origin = origin.rstrip("/").lower()
    port = _DEFAULT_PORTS.get(origin.partition(":")[0])
    return origin if port is None else origin.removesuffix(f":{port}")
