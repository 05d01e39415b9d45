"""Router: registration (one primitive, decorators on top) and per-request dispatch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex
from urllib.parse import quote

from microasgi._errors import ExceptionHandlers
from microasgi._utils import callable_name
from microasgi.datastructures import _scope_netloc, first_value
from microasgi.exceptions import HTTPException, NoMatchFound, RouteConflictError, SetupError
from microasgi.lifespan import acknowledge_lifespan
from microasgi.limits import Limits, limits_for
from microasgi.middleware import Middleware, checked_middleware
from microasgi.requests import APP_ROOT_KEY
from microasgi.types import ASGIApp, HandlerT, Message, Receive, Scope, Send
from microasgi.websockets import WEBSOCKET_KEY, websocket_not_found

from .routes import (
    ALLOW_KEY,
    BaseRoute,
    Host,
    Mount,
    Route,
    WebSocketRoute,
    answer_options,
    hostname_of,
    merge_overrides,
)
from .tree import Leaf, RouteTree, parse_template

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RouteTable", "Router", "check_routes_assignment"]

ErrorHandler = Callable[[Exception, Scope, Receive, Send], Awaitable[None]]

WEBSOCKET = "<websocket>"
"""The method key of WebSocket routes in a leaf's handlers.

# SECURITY: not a valid HTTP token, so no HTTP request (``WEBSOCKET /ws``) can reach a
WebSocket route, whatever method it sends.
"""

_STANDALONE_ERRORS = ExceptionHandlers({})
"""How a Router served without an App answers what its routes raise: as an App would."""

# The query characters a slash redirect keeps as sent: RFC 3986's sub-delims, ":", "@", "/",
# "?" and "%" (escapes stay escapes); anything else is percent-encoded.
_QUERY_SAFE = "/?:@!$&'()*+,;=%"


_READ_ONLY = (
    "{call} cannot remove, replace or reorder routes: routes are matched by a tree built at "
    "registration. Add routes with append(), extend(), add_route() or the decorators."
)


class RouteTable(list[BaseRoute]):
    """The registered routes; ``print(app.routes)`` shows them as a table.

    ``append``, ``extend``, ``insert`` and ``+=`` register routes through ``Router.add``,
    as if they were added there; removing, replacing or reordering routes raises TypeError.
    ``copy.copy()`` gives a plain list of the records, ``copy.deepcopy()`` a list of
    unregistered copies of them.
    """

    def __init__(self, router: Router) -> None:
        super().__init__()
        self._router = router

    def append(self, route: BaseRoute) -> None:
        """Register ``route`` with the router (``Router.add``)."""
        self._router.add(route)

    def extend(self, routes: Iterable[BaseRoute]) -> None:
        """Register each of ``routes`` with the router."""
        for route in list(routes):
            self._router.add(route)

    def __iadd__(self, routes: Iterable[BaseRoute]) -> Self:  # type: ignore[override,misc]
        self.extend(routes)
        return self

    def insert(self, index: SupportsIndex, route: BaseRoute) -> None:
        """Register ``route`` and list it at ``index`` (matching never depends on order)."""
        self._router._add(route, index)

    def _refuse(self, call: str) -> NoReturn:
        raise TypeError(_READ_ONLY.format(call=f"app.routes.{call}"))

    def __setitem__(self, index: Any, value: Any) -> NoReturn:
        self._refuse("__setitem__()")

    def __delitem__(self, index: Any) -> NoReturn:
        self._refuse("__delitem__()")

    def __imul__(self, count: Any) -> NoReturn:  # type: ignore[misc]
        self._refuse("__imul__()")

    def pop(self, index: Any = -1) -> NoReturn:
        """Refused: routes cannot be removed."""
        self._refuse("pop()")

    def remove(self, value: Any) -> NoReturn:
        """Refused: routes cannot be removed."""
        self._refuse("remove()")

    def clear(self) -> NoReturn:
        """Refused: routes cannot be removed."""
        self._refuse("clear()")

    def sort(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: the order of routes is their registration order."""
        self._refuse("sort()")

    def reverse(self) -> NoReturn:
        """Refused: the order of routes is their registration order."""
        self._refuse("reverse()")

    def __copy__(self) -> list[BaseRoute]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[BaseRoute]:
        # NOTE: a record holds its prepared app and its router, which cannot be copied
        # deeply; an unregistered copy of each is what another router can take.
        return [route.copy() for route in self]

    def __str__(self) -> str:
        rows = [("METHODS", "PATH", "NAME", "ENDPOINT"), *(_describe(route) for route in self)]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[3]]).rstrip()
            for row in rows
        )


def _describe(route: BaseRoute) -> tuple[str, str, str, str]:
    name = route.name or ""
    if isinstance(route, Route):
        methods = sorted(route.methods | ({"HEAD"} if "GET" in route.methods else set()))
        return ",".join(methods), route.path, name, _qualname(route.endpoint)
    if isinstance(route, WebSocketRoute):
        return "WS", route.path, name, _qualname(route.endpoint)
    if isinstance(route, Host):
        return "HOST", route.host, name, repr(route.app)
    return "MOUNT", route.path or "/", name, repr(route.app)


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{name}" if module else str(name)


class _HeadRoute:
    """The HEAD answer of a GET route: the same handler, the body dropped.

    ``record`` is the GET route, which ``scope["route"]`` shows.
    """

    __slots__ = ("app", "endpoint", "param_names", "record")

    def __init__(self, route: Route) -> None:
        self.record = route
        self.endpoint = route.endpoint
        self.param_names = route.param_names
        self.app: ASGIApp = route.app

    def build(self) -> None:
        inner = self.record.app

        async def head(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_headers_only(message: Message) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    message = {**message, "body": b""}
                await send(message)

            await inner(scope, receive, send_headers_only)

        self.app = head


class Router:
    """Routes requests to handlers by path, method and host.

    ``Router(routes=None, *, middleware=None, limits=None, redirect_slashes=True)``:
    ``middleware`` wraps every route of this router (in the order given, first outermost),
    ``limits`` overrides the app's limits for them, ``redirect_slashes`` answers ``/a/``
    with a 308 to ``/a`` (and the reverse) when only the other form exists.
    A Router is an ASGI app, and can be included in another (``include_router``) or mounted.
    """

    def __init__(
        self,
        routes: Iterable[BaseRoute] | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
        redirect_slashes: bool = True,
    ) -> None:
        self.middleware = checked_middleware(middleware)
        self.limits = limits
        self.redirect_slashes = redirect_slashes
        self._tree = RouteTree()
        self._routes = RouteTable(self)
        self._hosts: list[Host] = []
        self._heads: list[_HeadRoute] = []
        self._names: dict[str, list[tuple[int, BaseRoute]]] | None = None
        self._frozen = False
        self.lifespan_handler: ASGIApp | None = None
        """Answers the lifespan scope; the App sets its own."""
        self.error_handler: ErrorHandler | None = None
        """Answers exceptions raised by routes; the App sets its exception handlers."""
        for route in routes or ():
            self.add(route)

    # -- registration -------------------------------------------------------------------

    def add(self, route: BaseRoute) -> None:
        """Register a route record (Route, WebSocketRoute, Mount or Host).

        A record already registered with another router is copied, so that each router
        prepares its own with its own middleware and limits.
        """
        self._add(route)

    def _add(self, route: BaseRoute, index: SupportsIndex | None = None) -> None:
        self._check_setup("add()")
        if not isinstance(route, BaseRoute):
            raise TypeError(f"Router.add() takes a route record, got {route!r}")
        owner = route.owner
        if owner is not None and owner is not self:
            route = route.copy()
        if isinstance(route, Route):
            self._add_methods(route, route.methods)
        elif isinstance(route, WebSocketRoute):
            self._add_methods(route, (WEBSOCKET,))
        elif isinstance(route, Mount):
            leaf = self._tree.insert_prefix(route.template)
            existing = leaf.handlers.get("*")
            if existing is not None:
                raise RouteConflictError(existing, route, "both mount the same prefix")
            leaf.handlers["*"] = route
        elif isinstance(route, Host):
            self._hosts.append(route)
        else:
            raise TypeError(f"Router.add() takes a route record, got {route!r}")
        route.owner = self
        if index is None:
            list.append(self._routes, route)
        else:
            list.insert(self._routes, index, route)
        self._names = None

    def _add_methods(self, route: Route | WebSocketRoute, methods: Iterable[str]) -> None:
        leaf = self._tree.insert(route.template)
        methods = set(methods)
        for method in sorted(methods):
            existing = leaf.handlers.get(method)
            if existing is None or isinstance(existing, _HeadRoute):
                continue
            raise RouteConflictError(
                existing,
                route,
                f"both answer {'WebSocket' if method == WEBSOCKET else method} on the same "
                "pattern, so the second could never be reached",
            )
        for method in methods:
            leaf.handlers[method] = route
        if isinstance(route, Route) and "GET" in methods and "HEAD" not in leaf.handlers:
            head = _HeadRoute(route)
            self._heads.append(head)
            leaf.handlers["HEAD"] = head

    def add_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> Route:
        """Register an HTTP handler; the primitive under every method decorator."""
        self._check_setup("add_route()")
        route = Route(
            path, endpoint, methods=methods, name=name, middleware=middleware, limits=limits
        )
        self.add(route)
        return route

    def add_websocket_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> WebSocketRoute:
        """Register a WebSocket handler."""
        self._check_setup("add_websocket_route()")
        route = WebSocketRoute(path, endpoint, name=name, middleware=middleware, limits=limits)
        self.add(route)
        return route

    def route(
        self,
        path: str,
        *,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for ``methods`` (GET by default)."""

        def decorator(func: HandlerT) -> HandlerT:
            self.add_route(
                path, func, methods=methods, name=name, middleware=middleware, limits=limits
            )
            return func

        return decorator

    def get(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for GET (and so HEAD)."""
        return self.route(path, methods=["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for POST."""
        return self.route(path, methods=["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for PUT."""
        return self.route(path, methods=["PUT"], **options)

    def patch(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for PATCH."""
        return self.route(path, methods=["PATCH"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for DELETE."""
        return self.route(path, methods=["DELETE"], **options)

    def head(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for HEAD."""
        return self.route(path, methods=["HEAD"], **options)

    def options(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for OPTIONS."""
        return self.route(path, methods=["OPTIONS"], **options)

    def websocket(
        self,
        path: str,
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function as a WebSocket handler."""

        def decorator(func: HandlerT) -> HandlerT:
            self.add_websocket_route(path, func, name=name, middleware=middleware, limits=limits)
            return func

        return decorator

    def include_router(
        self,
        router: Router,
        *,
        prefix: str = "",
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> None:
        """Copy ``router``'s routes into this one under ``prefix``.

        The included router's middleware and limits (and the ones given here, outside them)
        apply to its routes only, and to the apps it mounts or serves by host: the copies
        carry them, so they wrap each route once.
        """
        self._check_setup("include_router()")
        if not isinstance(router, Router):
            raise TypeError(
                f"include_router() takes a Router, got {router!r}; serve an App or another "
                "ASGI app under a prefix with mount()"
            )
        if prefix:
            parse_template(prefix)  # a malformed prefix fails here, naming itself
            prefix = prefix.rstrip("/")
        hosts = [route for route in router._routes if isinstance(route, Host)]
        if prefix and hosts:
            # NOTE: a host route answers every path of its host; copied as is, it would
            # serve outside the prefix and hide the app's own routes for that host.
            raise ValueError(
                f"include_router(prefix={prefix!r}) cannot put the host route {hosts[0]!r} "
                f"under a prefix; mount the router instead (mount({prefix!r}, router)), "
                "or include it without a prefix"
            )
        layers = [*checked_middleware(middleware), *router.middleware]
        # SECURITY: mounts and hosts carry the limits too, so that a body limit reaches
        # the routers they serve, as it does when the router is mounted.
        merged = merge_overrides(limits, router.limits)
        for route in router._routes:
            if isinstance(route, (Route, WebSocketRoute, Mount)):
                self.add(route.prefixed(prefix, layers, merged))
            elif isinstance(route, Host):
                self.add(route.copy(layers, merged))

    def mount(self, path: str, app: ASGIApp, *, name: str | None = None) -> None:
        """Serve any ASGI app under ``path``."""
        self._check_setup("mount()")
        self.add(Mount(path, app, name=name))

    def host(self, host: str, app: ASGIApp, *, name: str | None = None) -> None:
        """Serve ``app`` for requests whose Host matches ``host`` (e.g. ``{sub}.example.com``)."""
        self._check_setup("host()")
        self.add(Host(host, app, name=name))

    @property
    def routes(self) -> RouteTable:
        """Every registered route, in registration order."""
        return self._routes

    @routes.setter
    def routes(self, value: RouteTable) -> None:
        # NOTE: `router.routes += [...]` assigns the same table back once it has added them.
        check_routes_assignment(value, self._routes, "Router")

    def url_path_for(self, name: str, /, **path_params: Any) -> str:
        """Return the path of the route called ``name`` with ``path_params`` filled in.

        The path is percent-encoded: requested, it routes back to the same route with the
        same parameter values.
        """
        # PERF: an index by name, so the cost does not grow with the number of routes.
        names = self._names
        if names is None:
            names = self._names = self._index_names()
        candidates = names.get(name, ())
        own, colon, _ = name.partition(":")
        if colon:
            nested = names.get(own + ":")
            if nested:
                # NOTE: a route literally named "a:b" and a mount named "a" both answer
                # "a:b"; the first registered wins, as everywhere else.
                candidates = sorted([*candidates, *nested], key=lambda item: item[0])
        for _, route in candidates:
            path = route.url_path(name, path_params)
            if path is not None:
                return path
        raise NoMatchFound(name, path_params)

    def _index_names(self) -> dict[str, list[tuple[int, BaseRoute]]]:
        """Routes by the names they answer; a mount or host named ``a`` also under ``a:``."""
        names: dict[str, list[tuple[int, BaseRoute]]] = {}
        for position, route in enumerate(self._routes):
            if route.name is None:
                continue
            keys = [route.name]
            if isinstance(route, (Mount, Host)):
                keys.append(route.name + ":")
            for key in keys:
                names.setdefault(key, []).append((position, route))
        return names

    def _check_setup(self, call: str) -> None:
        if self._frozen:
            raise SetupError(
                f"Router.{call} was called after the app started serving; register routes, "
                "routers and mounts before startup (at import time or in a plugin's setup())."
            )

    def freeze(self, app_limits: Limits | None = None, inherited: Limits | None = None) -> None:
        """Prepare every route's ASGI app; after this, registration raises SetupError.

        ``app_limits`` are the app's limits, ``inherited`` those in force where the router
        is served (an enclosing router's). A router served in several places is frozen
        once and prepared for the limits of each.
        """
        if not self._frozen:
            self._build()
        self._prepare_limits(inherited or app_limits or limits_for({}), set())

    def _build(self) -> None:
        # SECURITY: the router's middleware and limits wrap each of its routes here, however
        # the router is served (included routers hand copies that already carry them).
        # The limits are applied over those in force where a request arrives, so a router
        # mounted in two places gets the limits of each.
        for route in self._routes:
            route.build(self.middleware, self.limits)
        for head in self._heads:
            head.build()
        self._frozen = True

    def _prepare_limits(self, base: Limits, preparing: set[int]) -> None:
        """Compute the limits of every route for requests arriving with ``base`` in force."""
        if id(self) in preparing:
            return  # NOTE: a router mounted inside itself
        preparing.add(id(self))
        for route in self._routes:
            inner = route.prepare_limits(base)
            if isinstance(route, (Mount, Host)) and isinstance(route.app, Router):
                if not route.app._frozen:
                    route.app._build()
                route.app._prepare_limits(inner, preparing)
        preparing.discard(id(self))

    def _check_supplied(
        self, supplied: frozenset[str], checked: set[tuple[int, frozenset[str]]] | None = None
    ) -> None:
        """Refuse a handler that takes a name which no path parameter around it supplies.

        ``supplied`` are the names in ``path_params`` where the router is served (an
        enclosing mount's or host's). Such a handler (a typo, most often) would fail every
        request; this names it when the app starts.
        """
        if checked is None:
            checked = set()
        if (id(self), supplied) in checked:
            return  # NOTE: a router mounted inside itself, or in two places alike
        checked.add((id(self), supplied))
        for route in self._routes:
            if isinstance(route, (Route, WebSocketRoute)):
                for name in route._handler_plan.required:
                    if name not in supplied:
                        raise TypeError(
                            f"Handler {callable_name(route.endpoint)} of {route.path!r} takes "
                            f"{name!r}, which no path parameter of the route, or of a mount "
                            "or host around it, supplies, so every request to it would fail; "
                            "correct the name, give it a default, or read it from the "
                            "connection's path_params"
                        )
            else:  # a Mount or a Host; a mounted App is checked through its router
                served = getattr(route.app, "router", route.app)
                if isinstance(served, Router):
                    served._check_supplied(supplied.union(route.param_names), checked)

    # -- dispatch -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch a request or WebSocket to its route."""
        # PERF: the whole lookup is inlined here because it runs for every request.
        scope_type = scope["type"]
        if scope_type == "http":
            method = scope["method"]
        elif scope_type == "websocket":
            method = WEBSOCKET
            if WEBSOCKET_KEY not in scope:
                # NOTE: shared by every copy of the scope below, so that the error handling
                # here finds the WebSocket a handler under a mount or a middleware was given.
                scope[WEBSOCKET_KEY] = [None]
        else:
            await (self.lifespan_handler or self._lifespan)(scope, receive, send)
            return
        if not self._frozen:
            self.freeze()
        # NOTE: the app's exception handlers answer here, in the router's own frame, so
        # that no extra layer sits between user middleware and the routes (a try costs
        # nothing until something is raised).
        try:
            path = scope["path"]
            root_path = scope.get("root_path")
            if root_path:
                path = route_path(path, root_path)
            if self._hosts and await self._dispatch_host(scope, receive, send):
                return
            found = self._tree.match(path, method)
            if found is not None:
                leaf, route, values, end = found
                if route is not None:
                    if values:
                        params = dict(zip(route.param_names, values))
                        outer = scope.get("path_params")
                        scope["path_params"] = {**outer, **params} if outer else params
                    if leaf.is_prefix:
                        await self._call_mount(route, scope, receive, send, path[:end])
                        return
                    # PERF: a HEAD answer shows its GET route; an attribute, not a branch.
                    scope["route"] = route.record
                    scope["endpoint"] = route.endpoint
                    await route.app(scope, receive, send)
                    return
            await self._no_route(found, path, method, scope, receive, send)
        except Exception as exc:
            error_handler = self.error_handler
            if error_handler is None:
                if _answered_outside(scope):
                    raise
                error_handler = _STANDALONE_ERRORS.handle
            await error_handler(exc, scope, receive, send)

    async def _call_mount(
        self, mount: Mount, scope: Scope, receive: Receive, send: Send, prefix: str
    ) -> None:
        child = dict(scope)
        root_path = scope.get("root_path", "")
        # NOTE: request.url_for() prefixes the app's paths with the root path the app was
        # served at, not with this mount's: the first mount under an app records it.
        app = scope.get("app")
        recorded = scope.get(APP_ROOT_KEY)
        if recorded is None or recorded[0] is not app:
            child[APP_ROOT_KEY] = (app, root_path, recorded)
        child["root_path"] = root_path + prefix.rstrip("/")
        await mount.handler(child, receive, send)

    async def _dispatch_host(self, scope: Scope, receive: Receive, send: Send) -> bool:
        labels = _host_name(scope).split(".")
        for route in self._hosts:
            params = route.match_labels(labels)
            if params is not None:
                outer = scope.get("path_params")
                scope["path_params"] = {**outer, **params} if outer else params
                await route.handler(scope, receive, send)
                return True
        return False

    async def _no_route(
        self,
        found: tuple[Leaf, Any, list[Any], int] | None,
        path: str,
        method: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if method == WEBSOCKET:
            await websocket_not_found(scope, receive, send)
            return
        allow = None if found is None else self._allow(path)
        if allow is not None:
            if method == "OPTIONS":
                route = self._preflight_route(path, scope)
                if route is None or route.options_app is None:
                    await answer_options(allow, send)
                else:
                    scope[ALLOW_KEY] = allow
                    await route.options_app(scope, receive, send)
                return
            raise HTTPException(405, headers={"Allow": allow})
        if self.redirect_slashes:
            location = self._slash_redirect(path, method, scope)
            if location is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 308,
                        "headers": [
                            (b"location", location.encode("latin-1")),
                            (b"content-length", b"0"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
        raise HTTPException(404)

    def _preflight_route(self, path: str, scope: Scope) -> Route | None:
        """The route a CORS preflight to ``path`` asks about (its requested method), if any."""
        requested = first_value(scope["headers"], b"access-control-request-method")
        if requested is None:
            return None
        found = self._tree.match(path, requested.strip())
        if found is None or found[1] is None:
            return None
        # NOTE: a HEAD answer's record is its GET route; a mount would have taken the
        # OPTIONS request, but a WebSocket route is found for "<websocket>".
        record = found[1].record
        if not isinstance(record, Route):
            return None
        values = found[2]
        if values:
            params = dict(zip(record.param_names, values))
            outer = scope.get("path_params")
            scope["path_params"] = {**outer, **params} if outer else params
        return record

    def _allow(self, path: str) -> str | None:
        """Return the `Allow` value for ``path``; None if only WebSocket routes serve it."""
        methods = self._tree.allowed_methods(path) - {WEBSOCKET, "*"}
        if not methods:
            # NOTE: HTTP has nothing at this path, so it is a 404, as in Starlette.
            return None
        return ", ".join(sorted(methods | {"OPTIONS"}))

    def _slash_redirect(self, path: str, method: str, scope: Scope) -> str | None:
        # SECURITY: "//evil.com/" or "/\evil.com" would become a scheme-relative Location
        # that browsers follow off-site; such paths are never redirected.
        if path.startswith(("//", "/\\")) or path == "/":
            return None
        # NOTE: "/a//" goes to "/a" as in Starlette, else to "/a/" if only that is served.
        candidates = (path.rstrip("/"), path[:-1]) if path.endswith("/") else (path + "/",)
        # NOTE: only toward a path that HTTP reaches: one served by WebSocket routes
        # alone would answer the redirected request with a 404.
        for other in candidates:
            if self._tree.allowed_methods(other) - {WEBSOCKET}:
                break
        else:
            return None
        location = quote(scope.get("root_path", "").rstrip("/") + other, safe="/:@!$&'()*+,;=-._~")
        query = scope.get("query_string", b"")
        if query:
            # SECURITY: HTTP/2 clients may send a query holding spaces, control characters,
            # "#" or non-ASCII bytes, none of which belongs raw in a header (nor "#" in a
            # query); escapes already in it are kept as sent.
            location += "?" + quote(query, safe=_QUERY_SAFE)
        return location

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # NOTE: a Router served on its own has no lifespan work; it only acknowledges.
        await acknowledge_lifespan(receive, send)

    def __repr__(self) -> str:
        return f"<Router with {len(self._routes)} routes>"


def check_routes_assignment(value: object, routes: RouteTable, owner: str) -> None:
    """Accept ``owner.routes = value`` only for ``routes`` itself (what ``+=`` assigns)."""
    if value is not routes:
        raise TypeError(
            f"{owner}.routes cannot be replaced: routes are matched by a tree built at "
            "registration. Add routes with routes.append(), routes.extend(), routes += [...], "
            "add_route() or the decorators."
        )


def route_path(path: str, root_path: str) -> str:
    """Return the part of ``path`` that routing sees below ``root_path``."""
    if not path.startswith(root_path):
        return path
    if path == root_path:
        return "/"
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


def _host_name(scope: Scope) -> str:
    """The host that host routes see: ``request.url``'s, lower-cased, without the port."""
    # SECURITY: the Host header is used only when request.url would use it (a bare
    # host[:port]); otherwise the server's address stands in, as it does in the URL, so that
    # `evil#.example.com` or `a@b.example.com` never fills a host parameter.
    return hostname_of(_scope_netloc(scope, scope.get("scheme") or "http"))


def _answered_outside(scope: Scope) -> bool:
    """Whether an App around this router answers what it raises (its exception handlers)."""
    router = getattr(scope.get("app"), "router", None)
    return isinstance(router, Router) and router.error_handler is not None
