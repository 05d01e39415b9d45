"""HTTPConnection, shared by Request and WebSocket, and the HTTP Request."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import orjson

from ._json import load_json
from ._utils import unfinalized
from .datastructures import (
    _PATH_SAFE,
    URL,
    Address,
    FormData,
    Headers,
    QueryParams,
    State,
    first_value,
    request_cookies,
    scope_headers,
)
from .exceptions import ClientDisconnect, HTTPException, NoMatchFound
from .limits import announces_more, body_too_large, limits_for
from .types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from .app import App
    from .formparsers import FormReader

__all__ = ["HTTPConnection", "Request"]

BODY_KEY = "microasgi.body"
"""Scope key of the cached request body, so every Request over one scope sees it."""

FORM_KEY = "microasgi.form"
"""Scope key of the parsed form, so every Request over one scope sees the same one."""

BODY_LIMITS_KEY = "microasgi.body_limits"
"""Scope key of a callable that a Request hands its ``Limits`` as it starts reading the body:
a middleware that transforms the body (``RequestDecompressionMiddleware``) enforces those of
the route that reads it, which a mount's copy of the scope would otherwise hide from it."""

FORM_USAGE_KEY = "microasgi.form_usage"
"""Scope key of the ``FormUsage`` of the parsed form, to hold it to a later reader's limits."""

READER_KEY = "microasgi.body_reader"
"""Scope key of the ``receive`` a body was taken from without being cached (streamed, or a
read that failed), so that another Request over the same channel (an exception handler's)
raises instead of waiting for a body that is gone."""

APP_ROOT_KEY = "microasgi.app_root"
"""Scope key of ``(app, root_path, outer)``: the root path an app is served at, recorded by
the first mount below it (mounts extend ``scope["root_path"]``); ``outer`` is the record of
the app it is mounted in, or None."""


_UNPARSED: Any = object()
"""What ``Request._json`` holds until ``json()`` parses the body."""


async def _empty_receive() -> Message:
    raise RuntimeError("This Request was built without a receive channel")


async def _empty_send(message: Message) -> None:
    raise RuntimeError("This Request was built without a send channel")


class HTTPConnection(Mapping[str, Any]):
    """What HTTP requests and WebSockets share: URL, headers, params, cookies, state.

    Everything is parsed lazily from the ASGI scope, on first access.
    """

    # PERF: what is parsed from the scope is None until first used, when a property fills
    # its slot. (A slot left unset would cost a caught AttributeError, about 0.4 us, to
    # find empty; None costs a store.)
    __slots__ = ("_cookies", "_headers", "_query_params", "_receive", "_url", "scope")

    _url: URL | None
    _headers: Headers | None
    _query_params: QueryParams | None
    _cookies: dict[str, str] | None

    def __init__(self, scope: Scope, receive: Receive | None = None) -> None:
        self.scope = scope
        self._receive = receive or _empty_receive
        self._url = self._headers = self._query_params = self._cookies = None

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scope)

    def __len__(self) -> int:
        return len(self.scope)

    # Mapping would otherwise compare scopes item by item; identity is what callers mean.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def app(self) -> App:
        """The application that received this connection."""
        return self.scope["app"]  # type: ignore[no-any-return]

    @property
    def url(self) -> URL:
        """The full URL; ``url.path`` is always the routed ``scope["path"]``."""
        url = self._url
        if url is None:
            url = self._url = URL(scope=self.scope)
        return url

    @property
    def base_url(self) -> URL:
        """The URL of the application root: where ``request.app`` is served.

        Inside a mounted Router this is the app's root, not the mount's.
        """
        root_path = _app_roots(self.scope)[0][1]
        base = self.url.replace(path=_quote_root(root_path) + "/", query="", fragment="")
        # NOTE: like request.url.path, base_url.path is decoded (the string stays encoded).
        base._path = root_path.rstrip("/") + "/"
        return base

    @property
    def headers(self) -> Headers:
        """The request headers: case-insensitive, multi-valued, read-only."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(scope=self.scope)
        return headers

    @property
    def query_params(self) -> QueryParams:
        """The query string parameters, multi-valued."""
        params = self._query_params
        if params is None:
            params = self._query_params = QueryParams(self.scope.get("query_string", b""))
        return params

    @property
    def path_params(self) -> dict[str, Any]:
        """The converted path parameters of the matched route."""
        return self.scope.get("path_params", {})  # type: ignore[no-any-return]

    @property
    def cookies(self) -> dict[str, str]:
        """The request cookies, by name."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = request_cookies(self.scope["headers"])
        return cookies

    @property
    def client(self) -> Address | None:
        """The client's ``(host, port)``, or None when the server does not say."""
        client = self.scope.get("client")
        return Address(*client) if client else None

    @property
    def state(self) -> State:
        """Per-connection state, starting from what the lifespan yielded."""
        state = self.scope.get("state")
        if state is None:
            app = self.scope.get("app")
            defaults = getattr(app, "lifespan_state", None) or {}
            state = self.scope["state"] = dict(defaults)
        return State(state)

    @property
    def session(self) -> dict[str, Any]:
        """The session of SessionMiddleware."""
        if "session" not in self.scope:
            raise RuntimeError("request.session needs SessionMiddleware installed")
        return self.scope["session"]  # type: ignore[no-any-return]

    def url_for(self, name: str, /, **path_params: Any) -> URL:
        """Return the absolute URL of the route called ``name``.

        The name is looked up in ``request.app``, then in the apps it is mounted in, from
        the inside out. The scheme is ``http(s)`` for an HTTP route and ``ws(s)`` for a
        WebSocket route, whichever kind of connection asks. A route behind a host route
        (``app.host(..., name=...)``) leads to its host when every host parameter is given.
        """
        path, root_path = _url_path_for(_app_roots(self.scope), name, path_params)
        url = self.url
        scheme = _SCHEMES.get(getattr(path, "protocol", ""), {}).get(url.is_secure, url.scheme)
        url = url.replace(scheme=scheme, path=_quote_root(root_path) + path, query="", fragment="")
        host = getattr(path, "host", None)
        # NOTE: the port stays: the hosts an app serves share its server.
        return url if host is None else url.replace(hostname=host)


class Request(HTTPConnection):
    """An HTTP request: the connection plus method and body."""

    __slots__ = (
        "_buffered",
        "_buffered_size",
        "_form",
        "_is_disconnected",
        "_json",
        "_received",
        "_send",
        "_stream_consumed",
    )

    def __init__(
        self, scope: Scope, receive: Receive = _empty_receive, send: Send = _empty_send
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self._url = self._headers = self._query_params = self._cookies = None
        # PERF: set, not left unset, for the reason given in HTTPConnection: reading the
        # body checks these first.
        self._stream_consumed = False
        self._buffered: list[Message] | None = None
        self._json: Any = _UNPARSED

    @property
    def method(self) -> str:
        """The request method, upper case."""
        return self.scope["method"]  # type: ignore[no-any-return]

    @property
    def receive(self) -> Receive:
        """The ASGI receive channel."""
        return self._receive

    def stream(self) -> AsyncGenerator[bytes, None]:
        """Yield the body in chunks as they arrive, enforcing ``max_body_size``.

        Leaving ``async for`` early needs no clean-up (nor does trio warn about it).
        """
        return unfinalized(self._stream())

    async def _stream(self) -> AsyncGenerator[bytes, None]:
        yield b""  # NOTE: the step unfinalized() takes; the caller never sees it.
        body = self.scope.get(BODY_KEY)
        if body is not None:
            _check_cached(body, self.scope)
            if body:
                yield body
            return
        limit = self._start_reading()
        # NOTE: a streamed body is not cached: another Request on this channel must not wait.
        self.scope[READER_KEY] = self._receive
        pending = self._pending()
        more = True
        backlog: list[Message] = []
        while more:
            if not backlog and pending:
                # PERF: polled messages are taken in one go, oldest last, so each costs O(1)
                # (pop(0) would move the rest every time); later polls queue behind them.
                backlog = pending[::-1]
                pending.clear()
            message = backlog.pop() if backlog else await self._receive()
            chunk, more = self._take(message, limit)
            if chunk:
                yield chunk

    async def body(self) -> bytes:
        """Return the whole body; cached, so middleware and handler can both read it."""
        body: bytes | None = self.scope.get(BODY_KEY)
        if body is not None:
            _check_cached(body, self.scope)
            return body
        # PERF: read here rather than through stream(): no async generator to set up,
        # and a body that arrives in one message is not copied.
        limit = self._start_reading()
        pending = self._pending()
        chunks: list[bytes] = []
        more = True
        backlog: list[Message] = []
        try:
            while more:
                if not backlog and pending:
                    # PERF: polled messages are taken in one go, oldest last, so each costs
                    # O(1) (pop(0) would move the rest every time); later polls queue behind.
                    backlog = pending[::-1]
                    pending.clear()
                message = backlog.pop() if backlog else await self._receive()
                chunk, more = self._take(message, limit)
                if chunk:
                    chunks.append(chunk)
        except BaseException:
            # NOTE: what was taken is gone; another Request on this channel must not wait.
            self.scope[READER_KEY] = self._receive
            raise
        # NOTE: chunks are joined once at the end: appending to bytes would be quadratic.
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.scope[BODY_KEY] = body
        return body

    def _start_reading(self) -> int | None:
        """Mark the body as being read (once only) and return the size limit."""
        if self._stream_consumed:
            raise RuntimeError("The request body was already streamed; read it only once")
        scope = self.scope
        reader = scope.get(READER_KEY)
        # NOTE: `==`, as a server's receive is often a bound method, a new object each time.
        if reader is not None and reader == self._receive:
            raise RuntimeError(
                "The request body was already taken by another Request of this request "
                "(streamed with stream() or form(), or a read that failed); use body() where "
                "it is read first to share it"
            )
        self._stream_consumed = True
        self._received = 0
        limits = limits_for(scope)
        tell = scope.get(BODY_LIMITS_KEY)
        if tell is not None:
            tell(limits)
        return self._body_limit(limits.max_body_size)

    def _take(self, message: Message, limit: int | None) -> tuple[bytes, bool]:
        """Return a received message's body chunk and whether more follow."""
        message_type = message["type"]
        if message_type == "http.request":
            chunk: bytes = message.get("body", b"")
            if chunk:
                self._received += len(chunk)
                if limit is not None and self._received > limit:
                    raise body_too_large(limit)
            return chunk, message.get("more_body", False)
        if message_type == "http.disconnect":
            self._is_disconnected = True
            raise ClientDisconnect()
        return b"", True

    async def json(self) -> Any:
        """Parse the body as JSON: 415 for another media type, 400 when malformed."""
        if self._json is not _UNPARSED:
            return self._json
        if getattr(self.scope.get("app"), "strict_content_type", True):
            self._check_json_media_type()
        body = await self.body()
        try:
            self._json = load_json(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"Malformed JSON body: {exc.args[0]}") from None
        return self._json

    def form(
        self,
        *,
        max_files: int | None = None,
        max_fields: int | None = None,
        max_part_size: int | None = None,
    ) -> FormReader:
        """Parse an urlencoded or multipart body into a ``FormData`` of str and UploadFile.

        ``await request.form()``, or ``async with request.form() as form:`` to close the
        files on exit (they are closed when the request ends anyway). The arguments lower
        the route's limits for this call, never raise them. The form is cached: later
        calls, from any Request over the same scope, return the same one.
        """

        # PERF: the form parser (and python-multipart) loads on the first form.
        from .formparsers import FormReader, FormUsage, parse_form, tightened

        async def load() -> FormData:
            form: FormData | None = self.scope.get(FORM_KEY)
            limits = tightened(
                limits_for(self.scope),
                max_files=max_files,
                max_fields=max_fields,
                max_part_size=max_part_size,
            )
            if form is None:
                strict = getattr(self.scope.get("app"), "strict_content_type", True)
                usage = FormUsage()
                form = await parse_form(
                    self.headers, self.stream(), limits, strict=strict, usage=usage
                )
                self.scope[FORM_KEY] = form
                self.scope[FORM_USAGE_KEY] = usage
                return form
            # SECURITY: a form parsed further out (a middleware, under the app's limits) is
            # held to this route's limits and this call's, as a parse here would have been.
            cached: FormUsage | None = self.scope.get(FORM_USAGE_KEY)
            if cached is not None:
                cached.check(limits)
            return form

        return FormReader(load, self.close)

    async def close(self) -> None:
        """Close the files of the parsed form, if any; safe to call more than once."""
        form: FormData | None = self.scope.get(FORM_KEY)
        if form is not None:
            # NOTE: shielded, so a cancelled request still releases its spooled files.
            with anyio.CancelScope(shield=True):
                await form.close()

    async def is_disconnected(self) -> bool:
        """Return True once the client has gone away; never blocks."""
        if getattr(self, "_is_disconnected", False):
            return True
        message: Message = {}
        error: Exception | None = None

        async def poll(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal message, error
            task_status.started()
            try:
                message = await self._receive()
            except Exception as exc:
                error = exc  # NOTE: re-raised below, not wrapped in an ExceptionGroup.

        # NOTE: receive() runs uncancelled until it first waits, then is cancelled: it returns
        # what is ready and nothing else. Called under a scope cancelled beforehand, a receive
        # that checks for cancellation before it looks for a message (a trio memory channel,
        # as in hypercorn's trio worker) would never report the disconnect.
        async with anyio.create_task_group() as task_group:
            await task_group.start(poll)
            task_group.cancel_scope.cancel()
        if error is not None:
            raise error
        if message.get("type") == "http.disconnect":
            self._is_disconnected = True
        elif message.get("type") == "http.request":
            self._buffer(message)
        return getattr(self, "_is_disconnected", False)

    def _buffer(self, message: Message) -> None:
        """Keep a body message read by a poll, so stream() still yields it."""
        self._pending().append(message)
        # PERF: a running total, so that polling n times costs O(n), not O(n²). Every polled
        # byte is a body byte, so a total over the limit means the body is over it too.
        size: int = getattr(self, "_buffered_size", 0) + len(message.get("body", b""))
        self._buffered_size = size
        limit = limits_for(self.scope).max_body_size
        if limit is not None and size > limit:
            raise body_too_large(limit)

    def _pending(self) -> list[Message]:
        """The list of polled body messages, which the reading loop takes from.

        The loop keeps this very list, so a message that is_disconnected() polls between two
        chunks of stream() is still read, in order.
        """
        buffered = self._buffered
        if buffered is None:
            buffered = self._buffered = []
        return buffered

    def _body_limit(self, limit: int | None) -> int | None:
        if limit is not None:
            # PERF: the raw list is scanned; no Headers object is built for this.
            length = first_value(scope_headers(self.scope), b"content-length")
            # SECURITY: refuse before reading anything when the client announces too much.
            if length is not None and announces_more(length, limit):
                raise body_too_large(limit)
        return limit

    def _check_json_media_type(self) -> None:
        content_type = first_value(scope_headers(self.scope), b"content-type") or ""
        if content_type == "application/json":
            return  # PERF: the usual value, accepted without taking it apart (70 ns).
        media_type = content_type.partition(";")[0].strip().lower()
        # SECURITY: only JSON media types are parsed, so a cross-site form post (which
        # cannot send application/json without a preflight) never reaches the handler.
        if media_type != "application/json" and not (
            media_type.endswith("+json") and "/" in media_type
        ):
            raise HTTPException(
                415,
                "Expected a JSON body with Content-Type: application/json, "
                f"got {content_type or 'no Content-Type'!r}",
            )


_SCHEMES: dict[str, dict[bool, str]] = {
    "http": {False: "http", True: "https"},
    "websocket": {False: "ws", True: "wss"},
}
"""The scheme of a URL to a route, by the route's protocol and whether the request's is secure."""


def _app_roots(scope: Scope) -> list[tuple[Any, str]]:
    """``(app, root_path)`` for ``scope["app"]`` and then each app it is mounted in."""
    app = scope.get("app")
    recorded = scope.get(APP_ROOT_KEY)
    if recorded is not None and recorded[0] is app:
        app, root_path, recorded = recorded
    else:
        # NOTE: no mount recorded this app, so none extended root_path since it was entered.
        root_path = scope.get("root_path", "")
    roots = [(app, root_path)]
    while recorded is not None:
        app, root_path, recorded = recorded
        roots.append((app, root_path))
    return roots


def _url_path_for(
    roots: list[tuple[Any, str]], name: str, path_params: dict[str, Any]
) -> tuple[str, str]:
    """The path of ``name`` and the root path it is under, from the innermost app that has it."""
    first: NoMatchFound | None = None
    for app, root_path in roots:
        url_path_for = getattr(app, "url_path_for", None)
        if url_path_for is None:
            continue
        try:
            return url_path_for(name, **path_params), root_path
        except NoMatchFound as exc:
            first = first or exc
    if first is None:
        raise RuntimeError(
            "url_for() needs an App in scope['app']: serve the router through an App "
            "(app.include_router() or app.mount())"
        )
    raise first


def _quote_root(root_path: str) -> str:
    """``root_path`` percent-encoded (it is decoded in the scope), without a trailing slash."""
    return quote(root_path.rstrip("/"), safe=_PATH_SAFE) if root_path else ""


def _check_cached(body: bytes, scope: Scope) -> None:
    """Refuse a body cached further out (a middleware read it) that is over this limit."""
    # SECURITY: a middleware reads the body under the app's limits, before routing; a route
    # with a lower max_body_size must not get a larger body through the cache.
    limit = limits_for(scope).max_body_size
    if limit is not None and len(body) > limit:
        raise body_too_large(limit)
