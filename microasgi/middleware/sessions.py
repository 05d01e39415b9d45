"""SessionMiddleware: a session dict kept in a signed cookie (HMAC-SHA256, JSON)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from microasgi._json import dump_json, load_json
from microasgi.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

__all__ = ["SessionMiddleware"]

logger = logging.getLogger("microasgi")

SecretKey = str | bytes | Sequence[str | bytes]
"""One key, or several newest first: the first signs, any of them verifies."""

# NOTE: browsers drop a Set-Cookie longer than this (name, value and attributes).
_COOKIE_LIMIT = 4096
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII).fullmatch
_UNSAFE_ATTRIBUTE = re.compile(r"[;,\s\x00-\x1f\x7f]").search
_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
# NOTE: a browser sends every cookie of a name that its domain and path match; a handful
# is what happens, more is a client sending junk that each costs an HMAC.
_MAX_SAME_NAME = 16
# NOTE: an unchanged session is signed again once its cookie is older than this, so that
# max_age counts from the last request (give or take this) without a Set-Cookie on each.
_RESIGN_AFTER = 60


def signing_keys(secret_key: SecretKey, purpose: bytes) -> list[bytes]:
    """Derive one HMAC key per secret for ``purpose``, in the order given.

    Each use (sessions, CSRF tokens) gets its own derived key, so a value signed for one
    can never pass as the other even with the same secret.
    """
    secrets = [secret_key] if isinstance(secret_key, (str, bytes)) else list(secret_key)
    if not secrets or not all(secrets):
        raise ValueError("secret_key must be a non-empty string, or a list of them (newest first)")
    return [
        hmac.new(
            secret.encode() if isinstance(secret, str) else secret, purpose, hashlib.sha256
        ).digest()
        for secret in secrets
    ]


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode URL-safe base64 without padding; ValueError when malformed."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("malformed base64") from None


def cookie_values(raw_headers: RawHeaders, name: str) -> list[str]:
    """Every value of the cookie ``name`` in a request, in the order sent (at most 16).

    A browser sends all the cookies of one name whose domain and path match, for
    example ``session`` from this host and one that an app on the parent domain set, so
    that the last one (``request.cookies``) need not be ours.
    """
    values: list[str] = []
    for header, value in raw_headers:
        if header != b"cookie":
            continue
        for chunk in value.decode("latin-1").split(";"):
            key, separator, rest = chunk.partition("=")
            if separator and key.strip() == name:
                values.append(rest.strip())
                if len(values) == _MAX_SAME_NAME:
                    return values
    return values


def sign(key: bytes, message: str) -> str:
    """The HMAC-SHA256 of ``message``, base64url."""
    return b64encode(hmac.new(key, message.encode(), hashlib.sha256).digest())


def verify(keys: list[bytes], message: str, signature: str) -> bool:
    """Return whether ``signature`` signs ``message`` under one of ``keys``."""
    return signed_by(keys, message, signature) is not None


def signed_by(keys: list[bytes], message: str, signature: str) -> int | None:
    """The index in ``keys`` of the key whose ``signature`` signs ``message``, or None."""
    # SECURITY: compare_digest takes the same time wherever the values differ; bytes,
    # because a client may send characters it refuses in strings.
    given = signature.encode()
    for index, key in enumerate(keys):
        if hmac.compare_digest(sign(key, message).encode(), given):
            return index
    return None


class SessionMiddleware:
    """Keep ``request.session`` (a JSON-serialisable dict) in a signed cookie.

    The cookie holds the session as base64url JSON, the time it was signed and an
    HMAC-SHA256 signature; it is readable by the client but cannot be changed. A cookie that
    was tampered with, signed with an unknown key, or is older than ``max_age`` seconds
    gives an empty session, never an error. ``Set-Cookie`` is sent when the session
    changed, and for an unchanged one to sign it again once its cookie is a minute old or
    was signed with an older key: ``max_age`` counts from the last request. The cookie is
    deleted when the session is emptied.

    - ``secret_key``: a string, or a list of them, newest first: the first signs, any
      verifies, so a key can be rotated without logging everyone out.
    - ``session_cookie``: the cookie name. ``max_age``: seconds, or None for a browser
      session cookie (signatures then never expire).
    - ``path``, ``domain``, ``same_site`` (``"lax"``, ``"strict"``, ``"none"``),
      ``https_only`` (the ``Secure`` flag), ``http_only``: the cookie's attributes.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: SecretKey,
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 60 * 60,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        http_only: bool = True,
    ) -> None:
        self.app = app
        self.keys = signing_keys(secret_key, b"microasgi.sessions")
        if _TOKEN(session_cookie) is None:
            raise ValueError(f"Invalid session_cookie {session_cookie!r}: use a cookie name token")
        if same_site.lower() not in _SAME_SITE:
            raise ValueError(f"Invalid same_site {same_site!r}: use 'lax', 'strict' or 'none'")
        if same_site.lower() == "none" and not https_only:
            raise ValueError("same_site='none' needs https_only=True: browsers refuse it otherwise")
        for name, value in (("path", path), ("domain", domain or "")):
            if _UNSAFE_ATTRIBUTE(value):
                raise ValueError(f"Invalid cookie {name} {value!r}: no ';', space or control")
        if max_age is not None and not max_age > 0:
            # NOTE: 0 or less would delete every session cookie as it is set.
            raise ValueError(
                f"max_age must be a positive number of seconds or None, not {max_age!r}"
            )
        _check_prefix(session_cookie, path, domain, https_only)
        self.session_cookie = session_cookie
        self.max_age = max_age
        # PERF: the attributes never change, so the tail of Set-Cookie is built once.
        self.attributes = _attributes(max_age, path, domain, same_site, https_only, http_only)
        self.delete_attributes = _attributes(0, path, domain, same_site, https_only, http_only)

    def _open(self, cookie: str) -> tuple[dict[str, Any], bool] | None:
        """The session in a cookie value and whether to sign it again; None when the cookie
        is invalid or expired."""
        payload, _, rest = cookie.partition(".")
        timestamp, _, signature = rest.partition(".")
        if not signature or not timestamp.isdigit() or len(timestamp) > 12:
            return None
        key = signed_by(self.keys, f"{self.session_cookie}.{payload}.{timestamp}", signature)
        if key is None:
            return None
        age = time.time() - int(timestamp)
        if self.max_age is not None and age > self.max_age:
            return None
        try:
            session = load_json(b64decode(payload))
        except ValueError:  # NOTE: orjson.JSONDecodeError is a ValueError
            return None
        if not isinstance(session, dict):
            return None
        # NOTE: without max_age the signature never expires, so only a key being rotated
        # out is a reason to sign again.
        return session, key > 0 or (self.max_age is not None and age > _RESIGN_AFTER)

    def _signed(self, dumped: bytes) -> str:
        """The signed cookie value for a session dumped by ``_dump()``."""
        payload = b64encode(dumped)
        timestamp = str(int(time.time()))
        signature = sign(self.keys[0], f"{self.session_cookie}.{payload}.{timestamp}")
        return f"{payload}.{timestamp}.{signature}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loaded = None
        resign = False
        for cookie in cookie_values(scope["headers"], self.session_cookie):
            opened = self._open(cookie)
            if opened is not None:
                loaded, resign = opened
                break
        scope["session"] = dict(loaded) if loaded else {}
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        before = _dump(loaded) if loaded else None

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                # SECURITY: a response that a shared cache may keep never carries a session
                # just to sign it again: the cache would hand it to everyone.
                refresh = resign and not _shared_cacheable(message.get("headers", ()))
                header = self._set_cookie(scope.get("session"), before, refresh)
                if header is not None:
                    headers = list(message.get("headers", ()))
                    headers.append((b"set-cookie", header.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _set_cookie(self, session: Any, before: bytes | None, resign: bool) -> str | None:
        """The Set-Cookie value the response needs, or None."""
        if not session:
            if before is None:
                return None
            return f"{self.session_cookie}=; {self.delete_attributes}"
        try:
            dumped = _dump(session)
        except TypeError as exc:
            raise TypeError(f"request.session must hold JSON data only: {exc}") from None
        if dumped == before and not resign:
            return None
        header = f"{self.session_cookie}={self._signed(dumped)}; {self.attributes}"
        if len(header) > _COOKIE_LIMIT:
            logger.warning(
                "The session cookie is %d bytes, past the %d that browsers keep; it will be "
                "lost. Keep less in the session (an id, with the data on the server).",
                len(header),
                _COOKIE_LIMIT,
            )
        return header


def _shared_cacheable(headers: Any) -> bool:
    """Whether response headers let a shared cache keep it (``public``, ``s-maxage``)."""
    for name, value in headers:
        if name.lower() == b"cache-control":
            directives = value.lower()
            if b"public" in directives or b"s-maxage" in directives:
                return True
    return False


def _dump(session: dict[str, Any]) -> bytes:
    # NOTE: as the standard library's `json` (and JSONResponse) writes it: int keys, big
    # ints and named tuples are JSON data too. Sorted, so equal sessions compare equal.
    return dump_json(session, option=orjson.OPT_SORT_KEYS)


def _check_prefix(name: str, path: str, domain: str | None, secure: bool) -> None:
    """Refuse a cookie name prefix whose rules browsers would silently enforce."""
    lowered = name.lower()
    # NOTE: browsers drop a __Secure- cookie without Secure, and a __Host- one without
    # Secure, with a Domain or with a Path other than "/" (RFC 6265bis §4.1.3).
    if lowered.startswith(("__secure-", "__host-")) and not secure:
        raise ValueError(f"The session cookie {name!r} needs https_only=True (its prefix says so)")
    if lowered.startswith("__host-") and (domain or path != "/"):
        raise ValueError(
            f"The session cookie {name!r} needs path='/' and no domain (its prefix says so)"
        )


def _attributes(
    max_age: int | None,
    path: str,
    domain: str | None,
    same_site: str,
    secure: bool,
    http_only: bool,
) -> str:
    attributes = [f"Path={path}"]
    if domain:
        attributes.append(f"Domain={domain}")
    if max_age == 0:
        attributes.append("Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    elif max_age is not None:
        attributes.append(f"Max-Age={int(max_age)}")
    if http_only:
        attributes.append("HttpOnly")
    attributes.append(f"SameSite={_SAME_SITE[same_site.lower()]}")
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)
