"""App: the ASGI application — settings, routes, middleware, error handlers, lifespan."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

from ._errors import ExceptionHandler, ExceptionHandlers, handle_server_error
from ._utils import check_arity
from .concurrency import watch_until_the_loop_stops, while_serving
from .datastructures import State
from .exceptions import SetupError
from .lifespan import (
    RUNNING_KEY,
    Hook,
    LifespanFactory,
    check_hook,
    check_lifespan,
    child_lifespan,
    combine,
    refuse_startup,
    running_lifespans,
    serve_lifespan,
)
from .limits import Limits
from .middleware import Middleware, build_stack, checked_middleware
from .routing.router import Router, RouteTable, check_routes_assignment
from .routing.routes import BaseRoute, Host, Mount, Route, WebSocketRoute
from .types import ASGIApp, HandlerT, Receive, Scope, Send

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["App", "LimitOptions", "Plugin"]

HookT = TypeVar("HookT", bound=Hook)
ExceptionHandlerT = TypeVar("ExceptionHandlerT", bound=ExceptionHandler)


class Plugin(Protocol):
    """A plugin: ``setup(app)`` may add routes, middleware, handlers and lifespan hooks."""

    def setup(self, app: App) -> None: ...


class LimitOptions(TypedDict, total=False):
    """The fields of ``Limits``, accepted as keywords of ``App``."""

    max_body_size: int | None
    max_fields: int | None
    max_files: int | None
    max_part_size: int | None
    max_part_headers: int | None
    max_part_header_size: int | None
    spool_max_size: int
    max_ranges: int | None
    max_decompressed_size: int | None
    max_message_size: int | None
    websocket_idle_timeout: float | None
    websocket_max_rate: float | None


class App:
    """An ASGI application.

    - ``debug``: HTML traceback pages for errors and warnings when the event loop blocks.
    - ``routes``: route records to start with; ``@app.get(...)`` and friends add more.
    - ``middleware``: ``Middleware`` specs; the first is the outermost.
    - ``exception_handlers``: ``{status_code or exception class: handler}``.
    - ``lifespan``: ``lifespan(app)`` async context manager; a dict it yields becomes the
      default ``request.state``. ``on_startup`` / ``on_shutdown``: lists of hooks.
    - ``limits`` (and each ``Limits`` field as a keyword): resource limits for every route.
    - ``redirect_slashes``: 308 between ``/a/`` and ``/a`` when only the other exists.
    - ``strict_content_type``: ``request.json()`` answers 415 unless the body is JSON.
    """

    def __init__(
        self,
        *,
        debug: bool = False,
        routes: Iterable[BaseRoute] | None = None,
        middleware: Sequence[Middleware] | None = None,
        exception_handlers: Mapping[int | type[BaseException], ExceptionHandler] | None = None,
        lifespan: LifespanFactory | None = None,
        on_startup: Sequence[Hook] | None = None,
        on_shutdown: Sequence[Hook] | None = None,
        limits: Limits | None = None,
        redirect_slashes: bool = True,
        strict_content_type: bool = True,
        **limit_options: Unpack[LimitOptions],
    ) -> None:
        self.debug = debug
        self.strict_content_type = strict_content_type
        self.limits = (limits or Limits()).merged(Limits(**limit_options))
        self.router = Router(routes, redirect_slashes=redirect_slashes)
        self.router.lifespan_handler = self._lifespan
        self.user_middleware: list[Middleware] = checked_middleware(middleware)
        self.exception_handlers: dict[int | type[BaseException], ExceptionHandler] = {}
        for key, handler in (exception_handlers or {}).items():
            _check_exception_handler(key, handler)
            self.exception_handlers[key] = handler
        self.state = State()
        self.lifespan_state: dict[str, Any] = {}
        self._lifespans: list[LifespanFactory] = [check_lifespan(lifespan)] if lifespan else []
        self._on_startup: list[Hook] = [check_hook(hook) for hook in on_startup or ()]
        self._on_shutdown: list[Hook] = [check_hook(hook) for hook in on_shutdown or ()]
        self._plugins: list[Any] = []
        self._built = False
        self._app: ASGIApp = self._first_call
        self._on_error: Callable[[Exception, Scope, Receive, Send], Awaitable[None]] = (
            functools.partial(handle_server_error, debug=debug)
        )

    # -- the ASGI entry point -----------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        # PERF: the outermost error handling is this try, not one more layer; exception
        # handlers answer inside the router, so a request crosses no layer of ours
        # between the user's middleware and the routes.
        try:
            await self._app(scope, receive, send)
        except Exception as exc:
            await self._on_error(exc, scope, receive, send)

    async def _first_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # NOTE: the handlers may take the names in the first scope's path_params (a
            # mount's around this app). An app whose lifespan a parent app runs is mounted
            # there, and checked with the parent's routes.
            if RUNNING_KEY not in scope:
                self.router._check_supplied(frozenset(scope.get("path_params") or ()))
            self._build()
        except Exception as exc:
            # NOTE: a middleware that refuses its options fails here. On the lifespan it
            # is a failed startup, so the server refuses to start; without a lifespan it
            # is raised again on every request, each answered 500 and logged.
            if scope["type"] == "lifespan":
                await refuse_startup(exc, receive, send)
            raise
        await self._app(scope, receive, send)

    def _build(self) -> None:
        """Freeze the routes and build the middleware stack, once."""
        if self._built:
            return
        self.router.freeze(self.limits)
        handlers = ExceptionHandlers(self.exception_handlers, debug=self.debug)
        self.router.error_handler = handlers.handle
        app = build_stack(self.router, self.user_middleware)
        self._app = _watched_without_lifespan(app) if self.debug else app
        # NOTE: what middleware raises is answered the same way: a body limit or malformed
        # JSON met by a middleware reading the request is the client's 4xx, not a 500.
        self._on_error = handlers.handle
        self._built = True

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        running = running_lifespans(scope, self)
        children = [
            child_lifespan(app, state if isinstance(state, dict) else {}, running)
            for app in _mounted_apps(self.router.routes, running)
        ]
        factory = combine([*self._lifespans, *children], self._on_startup, self._on_shutdown)

        def lifespan(app: App) -> AbstractAsyncContextManager[Any]:
            # NOTE: debug=True watches the loop only while requests are served: a blocking
            # startup or shutdown hook (loading a model) stalls no connection.
            return while_serving(factory(app), watch=self.debug)

        await serve_lifespan(self, lifespan, scope, receive, send, self._set_lifespan_state)

    def _set_lifespan_state(self, state: dict[str, Any]) -> None:
        self.lifespan_state = dict(state)

    def _check_setup(self, call: str) -> None:
        if self._built:
            raise SetupError(
                f"App.{call} was called after the app started serving; call it before "
                "startup (at import time, or in a plugin's setup())."
            )

    # -- routes (the decorators delegate to the app's Router) -----------------------------

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
        return self.router.add_route(
            path, endpoint, methods=methods, name=name, middleware=middleware, limits=limits
        )

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
        return self.router.add_websocket_route(
            path, endpoint, name=name, middleware=middleware, limits=limits
        )

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
        return self.router.route(
            path, methods=methods, name=name, middleware=middleware, limits=limits
        )

    def get(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for GET (and so HEAD)."""
        return self.router.get(path, **options)

    def post(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for POST."""
        return self.router.post(path, **options)

    def put(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for PUT."""
        return self.router.put(path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for PATCH."""
        return self.router.patch(path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for DELETE."""
        return self.router.delete(path, **options)

    def head(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for HEAD."""
        return self.router.head(path, **options)

    def options(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function for OPTIONS."""
        return self.router.options(path, **options)

    def websocket(self, path: str, **options: Any) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function as a WebSocket handler."""
        return self.router.websocket(path, **options)

    def include_router(
        self,
        router: Router,
        *,
        prefix: str = "",
        middleware: Sequence[Middleware] | None = None,
        limits: Limits | None = None,
    ) -> None:
        """Copy ``router``'s routes into the app under ``prefix``."""
        self.router.include_router(router, prefix=prefix, middleware=middleware, limits=limits)

    def mount(self, path: str, app: ASGIApp, *, name: str | None = None) -> None:
        """Serve any ASGI app under ``path``; its lifespan runs with the app's."""
        self.router.mount(path, app, name=name)

    def host(self, host: str, app: ASGIApp, *, name: str | None = None) -> None:
        """Serve ``app`` for a host pattern such as ``{sub}.example.com``."""
        self.router.host(host, app, name=name)

    def url_path_for(self, name: str, /, **path_params: Any) -> str:
        """Return the path of the route called ``name``."""
        return self.router.url_path_for(name, **path_params)

    @property
    def routes(self) -> RouteTable:
        """Every registered route; ``print(app.routes)`` shows a table."""
        return self.router.routes

    @routes.setter
    def routes(self, value: RouteTable) -> None:
        # NOTE: `app.routes += [...]` assigns the same table back once it has added them.
        check_routes_assignment(value, self.router.routes, "App")

    # -- middleware, errors, lifespan, plugins -------------------------------------------

    def add_middleware(self, cls: Any, /, *args: Any, **options: Any) -> None:
        """Add an ASGI middleware class; the first added is the outermost."""
        self._check_setup("add_middleware()")
        self.user_middleware.append(Middleware(cls, *args, **options))

    def middleware(self, kind: str) -> Callable[[HandlerT], HandlerT]:
        """Add the decorated ``async def mw(request, call_next)`` as HTTP middleware."""
        from .middleware.http import HTTPMiddleware

        if kind != "http":
            raise ValueError(f'app.middleware() accepts the kind "http" only, not {kind!r}')

        def decorator(func: HandlerT) -> HandlerT:
            self.add_middleware(HTTPMiddleware, dispatch=func)
            return func

        return decorator

    def add_exception_handler(
        self, key: int | type[BaseException], handler: ExceptionHandler
    ) -> None:
        """Answer an exception class, or an HTTPException status code, with ``handler``."""
        self._check_setup("add_exception_handler()")
        _check_exception_handler(key, handler)
        self.exception_handlers[key] = handler

    def exception_handler(
        self, key: int | type[BaseException]
    ) -> Callable[[ExceptionHandlerT], ExceptionHandlerT]:
        """Register the decorated ``handler(request, exc) -> Response``."""

        def decorator(handler: ExceptionHandlerT) -> ExceptionHandlerT:
            self.add_exception_handler(key, handler)
            return handler

        return decorator

    def add_lifespan(self, lifespan: LifespanFactory) -> None:
        """Add a ``lifespan(app)`` context manager, entered after those added before."""
        self._check_setup("add_lifespan()")
        self._lifespans.append(check_lifespan(lifespan))

    def on_startup(self, hook: HookT) -> HookT:
        """Run the decorated function at startup (in registration order)."""
        self._check_setup("on_startup()")
        self._on_startup.append(check_hook(hook))
        return hook

    def on_shutdown(self, hook: HookT) -> HookT:
        """Run the decorated function at shutdown (in reverse registration order)."""
        self._check_setup("on_shutdown()")
        self._on_shutdown.append(check_hook(hook))
        return hook

    def install(self, plugin: Plugin) -> None:
        """Install a plugin: call its ``setup(app)``; the same plugin twice is an error."""
        self._check_setup("install()")
        if any(installed is plugin for installed in self._plugins):
            raise SetupError(f"The plugin {plugin!r} is already installed on this app")
        setup = getattr(plugin, "setup", None)
        if not callable(setup):
            raise TypeError(f"{plugin!r} is not a plugin: it has no setup(app) method")
        # NOTE: recorded during setup, so a plugin that installs itself again (directly or
        # through another) is refused; forgotten if setup fails, so it can be retried.
        position = len(self._plugins)
        self._plugins.append(plugin)
        try:
            setup(self)
        except BaseException:
            del self._plugins[position]
            raise

    def __repr__(self) -> str:
        return f"<App with {len(self.router.routes)} routes, debug={self.debug}>"


def _watched_without_lifespan(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so that a request watches its loop if no lifespan does (debug=True)."""

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        # NOTE: with a lifespan the loop is watched from the end of the startup, and
        # this finds it so; a server without one (Daphne) sends requests alone.
        if scope["type"] != "lifespan":
            watch_until_the_loop_stops()
        await app(scope, receive, send)

    return watched


def _check_exception_handler(key: Any, handler: Any) -> None:
    """Refuse at registration what could only fail when the error it answers happens."""
    if isinstance(key, bool) or not (
        isinstance(key, int) or (isinstance(key, type) and issubclass(key, BaseException))
    ):
        raise TypeError(f"exception_handler() takes a status code or exception class: {key!r}")
    if isinstance(key, int) and not 100 <= key <= 599:
        # NOTE: status handlers answer an HTTPException by its status (or an unhandled
        # error, 500); any other number would never be looked up.
        raise ValueError(
            f"exception_handler() status codes are 100-599, not {key}: for WebSocket close "
            "codes, handle WebSocketException"
        )
    if not callable(handler):
        raise TypeError(f"The exception handler for {key!r} must be callable, not {handler!r}")
    why = "Exception handlers are called with the request (or WebSocket) and the exception"
    check_arity(handler, 2, why)


def _mounted_apps(routes: Iterable[BaseRoute], seen: set[int]) -> list[ASGIApp]:
    """The ASGI apps mounted in ``routes`` whose own lifespan must run, depth first.

    An app (or router) whose id is in ``seen`` is skipped, and the others are added to it:
    an app mounted in several places starts once.
    """
    apps: list[ASGIApp] = []
    for route in routes:
        if not isinstance(route, (Mount, Host)) or id(route.app) in seen:
            continue
        seen.add(id(route.app))
        if isinstance(route.app, Router):
            apps.extend(_mounted_apps(route.app.routes, seen))
        else:
            apps.append(route.app)
    return apps
