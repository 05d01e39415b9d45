"""Route records: what was registered, and the ASGI app prepared for it at start-up."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from microasgi._endpoint import HandlerPlan, build_endpoint, check_handler, plan_handler
from microasgi._utils import callable_name
from microasgi.datastructures import _is_valid_host
from microasgi.exceptions import RouteTemplateError
from microasgi.limits import LIMITS_KEY, Limits, limits_for
from microasgi.middleware import Middleware, build_stack, checked_middleware
from microasgi.types import ASGIApp, Receive, Scope, Send
from microasgi.websockets import build_websocket_endpoint

from .converters import NO_MATCH, Converter, _CustomConverter, get_converter, quote_path
from .tree import Template, parse_template

__all__ = ["BaseRoute", "Host", "Mount", "Route", "URLPath", "WebSocketRoute"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


ALLOW_KEY = "microasgi.allow"
"""Scope key of the ``Allow`` value for an automatic OPTIONS answer made inside a route's
middleware (``Route.options_app``)."""


async def answer_options(allow: str, send: Send) -> None:
    """Send the automatic answer to OPTIONS: 204 with ``Allow``."""
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [(b"allow", allow.encode("latin-1"))],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _automatic_options(scope: Scope, receive: Receive, send: Send) -> None:
    await answer_options(scope[ALLOW_KEY], send)


async def _not_built(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("This route was not prepared; routes are prepared when the app starts")


def merge_overrides(outer: Limits | None, inner: Limits | None) -> Limits | None:
    """The override of ``outer`` then ``inner``; None when neither sets a field."""
    if outer is None or not outer.explicit:
        return inner if inner is not None and inner.explicit else None
    return outer.merged(inner)


class LimitsOverride:
    """Limits set over those in force where a route (or mount) is served.

    A router can be served in several places (mounted twice, under routers with different
    limits), so the limits in force are read from the scope (``limits_for``) and the
    override applied to them. ``prepare(base)`` computes that for each base known at
    startup, so that a request only looks its limits up.
    """

    __slots__ = ("_bases", "_by_base", "override")

    def __init__(self, override: Limits) -> None:
        self.override = override
        self._by_base: dict[int, Limits] = {}
        # NOTE: the bases are kept alive, so no other object can take the id of one.
        self._bases: list[Limits] = []

    def prepare(self, base: Limits) -> Limits:
        """Return ``base`` with the override applied, remembered for requests."""
        limits = self._by_base.get(id(base))
        if limits is None:
            limits = self._by_base[id(base)] = base.merged(self.override)
            self._bases.append(base)
        return limits

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Return ``app`` with the limits in force set in the scope before it runs."""
        by_base = self._by_base
        override = self.override
        defaults = limits_for({})

        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            # PERF: limits_for() inlined, and a dict lookup: the limits of every place known
            # at startup are ready.
            base = scope.get(LIMITS_KEY)
            if base is None:
                base = getattr(scope.get("app"), "limits", defaults)
            limits = by_base.get(id(base))
            if limits is None:
                # NOTE: limits not known at startup (set by a middleware, or app.limits
                # replaced later) are still honoured, at the cost of a merge.
                limits = limits_for(scope).merged(override)
            scope[LIMITS_KEY] = limits
            await app(scope, receive, send)

        return limited


def _own_limits(app: ASGIApp) -> ASGIApp:
    """``app`` (an App) entered without the limits of the place that mounts it."""

    async def own_limits(scope: Scope, receive: Receive, send: Send) -> None:
        scope.pop(LIMITS_KEY, None)
        await app(scope, receive, send)

    return own_limits


class URLPath(str):
    """A path built by ``url_path_for``: a ``str`` that also says what it leads to.

    ``protocol`` is ``"http"`` for an HTTP route, ``"websocket"`` for a WebSocket route and
    ``""`` for a path into a mounted app (as in Starlette); ``request.url_for`` picks the
    scheme from it. ``host`` is the host of a route served by a host route (``app.host``),
    with its parameters filled in, else None; ``request.url_for`` then leads to that host.
    """

    __slots__ = ()
    protocol: ClassVar[str] = ""
    host: str | None = None


# PERF: the protocol is a class attribute, so building a path allocates only the str.
class _HTTPPath(URLPath):
    __slots__ = ()
    protocol = "http"


class _WebSocketPath(URLPath):
    __slots__ = ()
    protocol = "websocket"


class _HostedPath(URLPath):
    """A path on another host: the rare case pays for an instance dict."""

    def __new__(cls, path: str, protocol: str, host: str) -> _HostedPath:
        hosted = super().__new__(cls, path)
        hosted.__dict__.update(protocol=protocol, host=host)
        return hosted


def _url_path(path: str, protocol: str, host: str | None = None) -> URLPath:
    """``path`` as a URLPath for ``protocol`` (a path into another app keeps its protocol)."""
    if host is not None:
        return _HostedPath(path, protocol, host)
    if protocol == "http":
        return _HTTPPath(path)
    if protocol == "websocket":
        return _WebSocketPath(path)
    return URLPath(path)


class BaseRoute:
    """What every route record has: a path template, a name and a prepared ASGI app.

    ``owner`` is the router the record is registered with (None before); a router given
    a record that another one owns registers a ``copy()``.
    """

    path: str
    name: str | None
    template: Template
    param_names: tuple[str, ...]
    app: ASGIApp
    owner: Any = None  # Any: the Router, which imports this module
    _override: LimitsOverride | None = None
    _path_type: ClassVar[type[URLPath]] = URLPath

    def copy(self) -> BaseRoute:
        """Return an unregistered copy of this record."""
        raise NotImplementedError

    def build(self, outer: Sequence[Middleware] = (), outer_limits: Limits | None = None) -> None:
        """Prepare the record's ASGI app inside ``outer``, the serving router's middleware.

        ``outer_limits`` are that router's limits, which the record's own override.
        """
        raise NotImplementedError

    def prepare_limits(self, base: Limits) -> Limits:
        """Return the limits the record serves with where ``base`` are those in force.

        Computed at startup for every place the record is served, so requests look them up.
        """
        return base if self._override is None else self._override.prepare(base)

    def url_path(self, name: str, params: Mapping[str, Any]) -> str | None:
        """Return the percent-encoded path for ``name`` and ``params``, or None."""
        if name != self.name or params.keys() != self.template.param_set:
            return None
        return self._path_type(self.template.format(params))


class _Endpoint(BaseRoute):
    """A route whose target is a user handler, with its own middleware and limits."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        name: str | None,
        middleware: Sequence[Middleware] | None,
        limits: Limits | None,
    ) -> None:
        if not callable(endpoint):
            raise TypeError(f"The endpoint for {path!r} must be callable, got {endpoint!r}")
        self.path = path
        self.template = parse_template(path)
        self.param_names = self.template.param_names
        # NOTE: a converter registered in place of a built-in one passes its own type.
        converters = {
            n: c.name
            for n, c in self.template.converters.items()
            if not isinstance(c, _CustomConverter)
        }
        check_handler(endpoint, self.param_names, converters)
        self.endpoint = endpoint
        self.record = self
        """What ``scope["route"]`` shows for this route (the router's HEAD answer differs)."""
        self.name = callable_name(endpoint, qualified=False) if name is None else name
        self.middleware = checked_middleware(middleware)
        self.limits = limits
        self.app = _not_built
        self._plan: HandlerPlan | None = None

    @property
    def _handler_plan(self) -> HandlerPlan:
        """How the handler is called, read from its signature once, when the app starts."""
        # NOTE: not at registration: an annotation may name a class defined further down.
        plan = self._plan
        if plan is None:
            plan = self._plan = plan_handler(self.endpoint, self.param_names)
        return plan

    def _build_endpoint(self) -> ASGIApp:
        raise NotImplementedError

    def build(self, outer: Sequence[Middleware] = (), outer_limits: Limits | None = None) -> None:
        """Prepare the ASGI app: handler, middleware, and limits when they are overridden.

        ``outer`` is the middleware of the router serving the route, around the route's own,
        and ``outer_limits`` that router's limits, which the route's own override.
        """
        app = build_stack(self._build_endpoint(), [*outer, *self.middleware])
        self.app, self._override = _limited(app, merge_overrides(outer_limits, self.limits))

    def _prefixed_options(
        self, middleware: Sequence[Middleware], limits: Limits | None
    ) -> dict[str, Any]:
        merged = self.limits if limits is None else limits.merged(self.limits)
        return {"name": self.name, "middleware": [*middleware, *self.middleware], "limits": merged}


class Route(_Endpoint):
    """An HTTP route: a path template, methods and a handler."""

    _path_type = _HTTPPath

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(path, endpoint, name=name, middleware=middleware, limits=limits)
        self.methods = _check_methods(path, methods)
        self.options_app: ASGIApp | None = None
        """The automatic OPTIONS answer inside the route's middleware (None without any),
        for a CORS preflight that asks about one of the route's methods."""

    def _build_endpoint(self) -> ASGIApp:
        return build_endpoint(self.endpoint, self.param_names, self._handler_plan)

    def build(self, outer: Sequence[Middleware] = (), outer_limits: Limits | None = None) -> None:
        """Prepare the ASGI app, and the OPTIONS answer inside the same middleware."""
        super().build(outer, outer_limits)
        middleware = [*outer, *self.middleware]
        # NOTE: a CORSMiddleware given to a route (or its router) answers the browser's
        # preflight, which no handler of the route would ever see.
        self.options_app = build_stack(_automatic_options, middleware) if middleware else None

    def prefixed(
        self, prefix: str, middleware: Sequence[Middleware] = (), limits: Limits | None = None
    ) -> Route:
        """Return a copy under ``prefix``, with router middleware and limits around it."""
        return Route(
            prefix + self.path,
            self.endpoint,
            methods=self.methods,
            **self._prefixed_options(middleware, limits),
        )

    def copy(self) -> Route:
        """Return an unregistered copy of this route."""
        return self.prefixed("")

    def __repr__(self) -> str:
        methods = sorted(self.methods | ({"HEAD"} if "GET" in self.methods else set()))
        return f"Route(path={self.path!r}, methods={methods!r}, name={self.name!r})"


class WebSocketRoute(_Endpoint):
    """A WebSocket route: a path template and a handler."""

    _path_type = _WebSocketPath

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(path, endpoint, name=name, middleware=middleware, limits=limits)

    def _build_endpoint(self) -> ASGIApp:
        return build_websocket_endpoint(self.endpoint, self._handler_plan)

    def prefixed(
        self, prefix: str, middleware: Sequence[Middleware] = (), limits: Limits | None = None
    ) -> WebSocketRoute:
        """Return a copy under ``prefix``, with router middleware and limits around it."""
        return WebSocketRoute(
            prefix + self.path, self.endpoint, **self._prefixed_options(middleware, limits)
        )

    def copy(self) -> WebSocketRoute:
        """Return an unregistered copy of this route."""
        return self.prefixed("")

    def __repr__(self) -> str:
        return f"WebSocketRoute(path={self.path!r}, name={self.name!r})"


class _Served(BaseRoute):
    """A record serving another ASGI app (a mount, a host) in its own middleware and limits."""

    middleware: list[Middleware]
    limits: Limits | None
    handler: ASGIApp
    """What the router calls: ``app`` inside the middleware (see ``build``)."""

    def _serve(
        self, app: ASGIApp, middleware: Sequence[Middleware] | None, limits: Limits | None
    ) -> None:
        if not callable(app):
            raise TypeError(
                f"{type(self).__name__} serves an ASGI app (a Router, an App or any "
                f"`async def app(scope, receive, send)`), got {app!r}"
            )
        self.app = app
        self.middleware = checked_middleware(middleware)
        self.limits = limits
        # SECURITY: with middleware or limits, nothing is served until the router prepares it.
        self.handler = _not_built if self.middleware or limits is not None else app

    def build(self, outer: Sequence[Middleware] = (), outer_limits: Limits | None = None) -> None:
        """Wrap the app in ``outer`` (the serving router's middleware) and our own.

        ``outer_limits`` are the serving router's; with our own, they are set in the scope
        for the app served (``prepare_limits``).
        """
        self.handler, self._override = _build_target(
            self.app, [*outer, *self.middleware], merge_overrides(outer_limits, self.limits)
        )


class Mount(_Served):
    """Any ASGI app served under a path prefix.

    The mounted app sees the full path in ``scope["path"]`` and the prefix appended to
    ``scope["root_path"]``. ``middleware`` wraps the mounted app, inside the middleware of
    the router that serves the mount.
    """

    def __init__(
        self,
        path: str,
        app: ASGIApp,
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> None:
        if path and not path.startswith("/"):
            raise RouteTemplateError(f"Mount path {path!r} must start with '/'")
        self.path = path.rstrip("/")
        self.template = parse_template(self.path or "/")
        self.param_names = self.template.param_names
        self.name = name
        self._serve(app, middleware, limits)

    def prefixed(
        self, prefix: str, middleware: Sequence[Middleware] = (), limits: Limits | None = None
    ) -> Mount:
        """Return a copy under ``prefix``, with router middleware and limits around it."""
        return Mount(
            prefix + self.path,
            self.app,
            name=self.name,
            middleware=[*middleware, *self.middleware],
            limits=merge_overrides(limits, self.limits),
        )

    def copy(self) -> Mount:
        """Return an unregistered copy of this mount."""
        return self.prefixed("")

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes of the mounted app, when it is a microasgi Router or App."""
        return list(getattr(self.app, "routes", []))

    def url_path(self, name: str, params: Mapping[str, Any]) -> str | None:
        """Resolve ``mount_name:route_name`` into the mounted router, or the mount itself."""
        if self.name is None:
            return None
        if name == self.name:
            if "path" in params and set(params) - {"path"} == set(self.param_names):
                rest = {k: v for k, v in params.items() if k != "path"}
                path = quote_path(str(params["path"]).lstrip("/"))
                return URLPath(self.template.format(rest).rstrip("/") + "/" + path)
            return None
        own, _, child = name.partition(":")
        url_path_for = getattr(self.app, "url_path_for", None)
        if own != self.name or not child or url_path_for is None:
            return None
        mine = {k: v for k, v in params.items() if k in self.param_names}
        if set(mine) != set(self.param_names):
            return None
        rest = {k: v for k, v in params.items() if k not in self.param_names}
        try:
            child_path = url_path_for(child, **rest)
        except LookupError:
            return None
        path = self.template.format(mine).rstrip("/") + str(child_path)
        return _url_path(
            path, getattr(child_path, "protocol", ""), getattr(child_path, "host", None)
        )

    def __repr__(self) -> str:
        return f"Mount(path={self.path or '/'!r}, name={self.name!r}, app={self.app!r})"


class Host(_Served):
    """An ASGI app (usually a Router) served for a host pattern like ``{sub}.example.com``.

    ``middleware`` wraps the app, inside the middleware of the router that serves the host.
    """

    def __init__(
        self,
        host: str,
        app: ASGIApp,
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.path = ""
        self.host = host
        self.name = name
        self._labels = _parse_host(host)
        self.param_names = tuple(label[0] for label in self._labels if label[1] is not None)
        self._serve(app, middleware, limits)

    def copy(self, middleware: Sequence[Middleware] = (), limits: Limits | None = None) -> Host:
        """Return an unregistered copy, with router middleware and limits around it."""
        return Host(
            self.host,
            self.app,
            name=self.name,
            middleware=[*middleware, *self.middleware],
            limits=merge_overrides(limits, self.limits),
        )

    def match(self, host: str) -> dict[str, Any] | None:
        """Return the converted host params when ``host`` (a port is ignored) matches, else None.

        A ``host`` that ``request.url`` would refuse (``evil#.example.com``, a port over
        65535...) never matches.
        """
        if not _is_valid_host(host):
            return None
        return self.match_labels(hostname_of(host).split("."))

    def match_labels(self, labels: list[str]) -> dict[str, Any] | None:
        """``match`` for a host already checked, lower-cased and split at the dots."""
        if len(labels) != len(self._labels):
            return None
        params: dict[str, Any] = {}
        for label, (text, converter) in zip(labels, self._labels):
            if converter is None:
                if label != text:
                    return None
                continue
            value = converter.match(label)
            if value is NO_MATCH:
                return None
            params[text] = value
        return params

    def url_path(self, name: str, params: Mapping[str, Any]) -> str | None:
        """Resolve ``host_name:route_name`` into the host's router.

        With every host parameter given (or none in the template) the path carries the
        host (``.host``); with none of them given it does not, and ``request.url_for`` keeps
        the request's host. Some but not all of them match nothing.
        """
        own, _, child = name.partition(":")
        url_path_for = getattr(self.app, "url_path_for", None)
        if self.name is None or own != self.name or not child or url_path_for is None:
            return None
        mine = {k: v for k, v in params.items() if k in self.param_names}
        if mine and len(mine) != len(self.param_names):
            return None
        rest = {k: v for k, v in params.items() if k not in self.param_names}
        try:
            child_path = url_path_for(child, **rest)
        except LookupError:
            return None
        host = self._format(mine) if len(mine) == len(self.param_names) else None
        return _url_path(str(child_path), getattr(child_path, "protocol", ""), host)

    def _format(self, params: Mapping[str, Any]) -> str:
        """The host for ``params``; ``ValueError`` for a value that is no host label."""
        labels: list[str] = []
        for text, converter in self._labels:
            if converter is None:
                labels.append(text)
                continue
            value = params[text]
            problem = f"Parameter {text!r} of host template {self.host!r} cannot be {value!r}"
            try:
                label = converter.to_string(value).lower()
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{problem}: {exc}") from exc
            # NOTE: stricter than what a request may carry: a URL we write must be one a
            # browser sends back unchanged, and that routes back here.
            if not _HOST_LABEL.fullmatch(label):
                raise ValueError(
                    f"{problem}: a host label is letters, digits, '-' and '_' (punycode for others)"
                )
            labels.append(label)
        return ".".join(labels)

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes of the host's app, when it is a microasgi Router or App."""
        return list(getattr(self.app, "routes", []))

    def __repr__(self) -> str:
        return f"Host(host={self.host!r}, name={self.name!r}, app={self.app!r})"


def _build_target(
    app: ASGIApp, middleware: list[Middleware], override: Limits | None
) -> tuple[ASGIApp, LimitsOverride | None]:
    """The handler of a mount or host: ``app`` in ``middleware``, limits set outside."""
    if _has_own_limits(app):
        # NOTE: an App applies its own limits, as it applies its own exception handlers.
        app = _own_limits(app)
    return _limited(build_stack(app, middleware), override)


def _limited(app: ASGIApp, override: Limits | None) -> tuple[ASGIApp, LimitsOverride | None]:
    """``app`` with ``override`` set over the limits in force, when there is one."""
    # PERF: a record that overrides no limit reads those of the place it is served in.
    if override is None:
        return app, None
    limits = LimitsOverride(override)
    return limits.wrap(app), limits


def _has_own_limits(app: ASGIApp) -> bool:
    from microasgi.app import App  # NOTE: app.py imports the routing package

    return isinstance(app, App)


def _check_methods(path: str, methods: Iterable[str] | None) -> frozenset[str]:
    """The upper-cased methods of a route; ValueError names what is wrong with them."""
    if methods is None:
        return frozenset({"GET"})
    if isinstance(methods, str):
        raise TypeError(f"methods for {path!r} must be a list of strings, not one string")
    upper = frozenset(m.upper() for m in methods)
    if not upper:
        raise ValueError(
            f"methods for {path!r} is empty, so the route would answer nothing; "
            "list at least one method, or leave methods out for GET"
        )
    if "*" in upper:
        raise ValueError(
            f"'*' is not an HTTP method ({path!r}); list the methods the route answers"
        )
    if "WEBSOCKET" in upper:
        raise ValueError(
            f"WEBSOCKET is not an HTTP method ({path!r}); register WebSocket handlers "
            "with @app.websocket() or add_websocket_route()"
        )
    invalid = sorted(m for m in upper if not _TOKEN.match(m))
    if invalid:
        raise ValueError(f"Invalid HTTP methods for {path!r}: {invalid}")
    return upper


_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
"""A host label as url_path_for writes one (RFC 1123, and '_' as DNS allows in practice)."""


def hostname_of(netloc: str) -> str:
    """The host of a valid ``host[:port]``, lower-cased, without the port or a final dot."""
    netloc = netloc.lower()
    if netloc.startswith("["):
        return netloc.partition("]")[0] + "]"
    name = netloc.partition(":")[0]
    # NOTE: "example.com." is the fully qualified spelling of "example.com", the same host
    # (TrustedHostMiddleware allows it as such); only one dot goes, "example.com.." stays.
    return name[:-1] if name.endswith(".") else name


def _parse_host(host: str) -> list[tuple[str, Converter | None]]:
    """Parse a host template into labels: (text, None) static or (name, converter)."""
    labels: list[tuple[str, Converter | None]] = []
    seen: set[str] = set()
    for label in host.split("."):
        if label.startswith("{") and label.endswith("}"):
            name, _, kind = label[1:-1].partition(":")
            if not name.isidentifier() or name in seen:
                raise RouteTemplateError(
                    f"Host template {host!r}: {label!r} must be {{name}} or {{name:converter}} "
                    "with a unique identifier"
                )
            seen.add(name)
            labels.append((name, get_converter(kind or "str")))
        elif not label or "{" in label or "}" in label:
            raise RouteTemplateError(
                f"Host template {host!r}: each label must be text or a whole {{param}}"
            )
        elif ":" in label.rpartition("]")[2]:
            # NOTE: the port of a request is ignored, so a template with one never matches.
            raise RouteTemplateError(
                f"Host template {host!r} has a port; host routes ignore the port, "
                "so write the host alone"
            )
        else:
            labels.append((_ascii_label(host, label).lower(), None))
    return labels


def _ascii_label(host: str, label: str) -> str:
    """``label`` as a Host header carries it: an internationalized one in punycode."""
    if label.isascii():
        return label
    # NOTE: clients send "bücher.example" as "xn--bcher-kva.example"; written as read, the
    # template would never match.
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise RouteTemplateError(
            f"Host template {host!r}: {label!r} is not a valid internationalized label ({exc})"
        ) from None
