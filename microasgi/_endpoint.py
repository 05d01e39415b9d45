"""Turn a user handler into an ASGI app, once, at start-up.

The signature is read at registration: whether the handler takes the request, which path
parameters it wants as keywords, and whether it is ``async def`` or runs in a worker thread.
Per request, only the Request is built and the return value converted.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from ._json import dump_json
from ._utils import callable_name, is_async_callable
from .concurrency import run_in_threadpool
from .requests import FORM_KEY, HTTPConnection, Request
from .responses import Response
from .types import ASGIApp, Receive, Scope, Send

__all__ = [
    "HandlerPlan",
    "build_endpoint",
    "check_handler",
    "path_kwargs",
    "plan_handler",
    "send_result",
]

_JSON_TYPE = (b"content-type", b"application/json")
_TEXT_TYPE = (b"content-type", b"text/plain; charset=utf-8")
_BYTES_TYPE = (b"content-type", b"application/octet-stream")


_CONNECTION_NAMES = frozenset({"request", "websocket"})
_CONNECTION_TYPES = frozenset({"Request", "WebSocket", "HTTPConnection"})


def _takes_connection(parameter: inspect.Parameter) -> bool:
    """True for a parameter named ``request`` (or ``websocket``) or annotated with one.

    ``Annotated[Request, ...]`` counts as ``Request``.
    """
    if parameter.name in _CONNECTION_NAMES:
        return True
    annotation = _unwrap_annotated(parameter.annotation)
    if isinstance(annotation, str):
        # NOTE: an annotation that could not be resolved (a name imported only under
        # TYPE_CHECKING, a class local to a function) is judged by its class name.
        return annotation.strip().rpartition(".")[2] in _CONNECTION_TYPES
    return isinstance(annotation, type) and issubclass(annotation, HTTPConnection)


_ANNOTATED = re.compile(r"\s*(?:[A-Za-z_][\w.]*\.)?Annotated\s*\[(.*)\]\s*", re.DOTALL)
"""``Annotated[...]`` in an annotation left as a string (``typing.Annotated[...]`` too)."""


def _unwrap_annotated(annotation: Any) -> Any:
    """The type inside ``Annotated[T, ...]`` (an object or a string), else ``annotation``."""
    if isinstance(annotation, str):
        match = _ANNOTATED.fullmatch(annotation)
        return annotation if match is None else _first_argument(match.group(1))
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _first_argument(arguments: str) -> str:
    """The first of comma-separated type arguments, brackets taken into account."""
    depth = 0
    for index, char in enumerate(arguments):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            return arguments[:index]
    return arguments


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    """``func``'s signature, string annotations resolved where they can be.

    Postponed annotations (``from __future__ import annotations``) are evaluated in the
    handler's module; one that cannot be (a ``NameError``...) stays a string.
    """
    signature = inspect.signature(func)
    if not any(isinstance(p.annotation, str) for p in signature.parameters.values()):
        return signature
    namespace = _globals_of(func)
    parameters = [
        p.replace(annotation=_resolve(p.annotation, namespace))
        if isinstance(p.annotation, str)
        else p
        for p in signature.parameters.values()
    ]
    return signature.replace(parameters=parameters)


def _globals_of(func: Any) -> dict[str, Any]:
    """The module namespace the annotations of ``func`` were written in."""
    while True:
        if isinstance(func, functools.partial):
            func = func.func
        elif inspect.ismethod(func):
            func = func.__func__
        else:
            break
    func = inspect.unwrap(func)
    if not inspect.isfunction(func):
        # NOTE: a callable instance: its annotations are those of its class's __call__.
        func = inspect.getattr_static(type(func), "__call__", func)
    namespace = getattr(func, "__globals__", None)
    return namespace if isinstance(namespace, dict) else {}


def _resolve(annotation: str, namespace: dict[str, Any]) -> Any:
    # NOTE: evaluating the annotation in its module is what typing.get_type_hints does;
    # per parameter, so that one unresolvable annotation does not hide the others.
    try:
        return eval(annotation, namespace)
    except Exception:
        return annotation


_CONVERTED_TYPES: dict[str, type] = {
    "str": str,
    "path": str,
    "int": int,
    "float": float,
    "uuid": uuid.UUID,
}
"""What each built-in converter passes to the handler (a custom one's type is its own)."""

_CONVERTER_OF = {str: "", int: ":int", float: ":float", uuid.UUID: ":uuid"}


def check_handler(
    func: Callable[..., Any],
    param_names: tuple[str, ...],
    converters: Mapping[str, str] | None = None,
) -> None:
    """Refuse at registration a handler that every request would fail to call.

    A positional-only parameter other than the first cannot be filled: the connection is
    the only positional argument, path parameters are passed by name. ``converters`` maps
    each path parameter to its converter's name, checked against the handler's annotations.
    """
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return
    if converters:
        _check_annotations(func, converters)
    for index, parameter in enumerate(parameters):
        if parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
            continue
        if parameter.name in param_names:
            raise TypeError(
                f"Handler {callable_name(func)} takes the path parameter "
                f"{parameter.name!r} as positional-only; path parameters are passed by "
                f"keyword, so move it after the '/' in the signature"
            )
        if index > 0 and parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"Handler {callable_name(func)} takes {parameter.name!r} as a positional-only "
                "parameter without a default, which nothing passes; the connection is the "
                "only positional argument"
            )


def _check_annotations(func: Callable[..., Any], converters: Mapping[str, str]) -> None:
    """Refuse a path parameter annotated with a type its converter does not pass.

    ``user_id: int`` on ``{user_id}`` would get a str on every request, and fail (or match
    nothing) far from the route; the annotation does not convert, the template does.
    """
    parameters = _signature(func).parameters
    for name, converter in converters.items():
        parameter = parameters.get(name)
        passed = _CONVERTED_TYPES.get(converter)
        if parameter is None or passed is None:
            continue
        annotation = _unwrap_annotated(parameter.annotation)
        wanted = next((t for t in _CONVERTER_OF if annotation is t), None)
        # NOTE: an int is a valid float (PEP 484), so float on {x:int} stands.
        if wanted is None or wanted is passed or (wanted is float and passed is int):
            continue
        raise TypeError(
            f"Handler {callable_name(func)} annotates the path parameter {name!r} as "
            f"{wanted.__name__}, but its route passes it as {passed.__name__}; write "
            f"'{{{name}{_CONVERTER_OF[wanted]}}}' in the path to have it converted"
        )


class HandlerPlan(NamedTuple):
    """How a handler is called (see ``plan_handler``)."""

    pass_connection: bool
    wanted: tuple[str, ...]
    outer: tuple[str, ...] | None
    keyword: str | None
    required: tuple[str, ...]


def plan_handler(func: Callable[..., Any], param_names: tuple[str, ...]) -> HandlerPlan:
    """Decide how to call ``func``, from one reading of its signature.

    Returns (pass the connection first?, route parameters to pass by name, other names it
    takes by keyword, the parameter that takes the connection by name, the other names
    without a default, which a host or mount around the route must supply). The connection is
    passed positionally when the handler has a positional parameter that is not a path
    parameter; path parameters are passed when their name is in the signature (all of them
    when it takes ``**kwargs``). The other names are those a host or mount around the route
    may put in ``path_params`` (``None``: it takes ``**kwargs``, so all). The connection
    goes by name when it comes after a path parameter: ``async def get_user(user_id: int,
    request: Request)`` gets ``request=``; ``None`` when it is passed first or not taken.
    """
    try:
        parameters = _signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return HandlerPlan(True, (), (), None, ())
    names = {p.name for p in parameters}
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    takes_var_pos = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    pass_connection = takes_var_pos or bool(positional and positional[0].name not in param_names)
    wanted = tuple(n for n in param_names if takes_var_kw or n in names)
    by_name = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in param_names
    ]
    keyword = None
    if not pass_connection:
        keyword = next((p.name for p in by_name if _takes_connection(p)), None)
    if takes_var_kw:
        return HandlerPlan(pass_connection, wanted, None, keyword, ())
    connection = positional[0].name if pass_connection and positional else None
    others = [
        p for p in by_name if p.name != connection and (pass_connection or not _takes_connection(p))
    ]
    outer = tuple(p.name for p in others)
    required = tuple(p.name for p in others if p.default is inspect.Parameter.empty)
    return HandlerPlan(pass_connection, wanted, outer, keyword, required)


def path_kwargs(
    params: dict[str, Any], wanted: tuple[str, ...], outer: tuple[str, ...] | None
) -> dict[str, Any]:
    """The keyword arguments for a handler: its route's parameters and those an enclosing
    host or mount supplied under a name it takes."""
    if outer is None:
        return dict(params)
    kwargs = {n: params[n] for n in wanted}
    for n in outer:
        if n in params:
            kwargs[n] = params[n]
    return kwargs


def build_endpoint(
    func: Callable[..., Any], param_names: tuple[str, ...], plan: HandlerPlan
) -> ASGIApp:
    """Return the ASGI app that calls an HTTP handler and sends what it returns."""
    pass_request, wanted, outer, request_keyword, _ = plan
    name = callable_name(func)
    is_async = is_async_callable(func)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            if simple:
                result = await func(request)
            elif all_params:
                # PERF: the handler takes every path parameter; unless a mount or host added
                # its own, the scope's dict is exactly the keywords.
                params = scope["path_params"]
                if len(params) != len(wanted):
                    params = {n: params[n] for n in wanted}
                result = await func(request, **params)
            else:
                kwargs = path_kwargs(scope.get("path_params", {}), wanted, outer)
                if request_keyword is not None:
                    kwargs[request_keyword] = request
                args = (request,) if pass_request else ()
                if is_async:
                    result = await func(*args, **kwargs)
                else:
                    result = await run_in_threadpool(func, *args, **kwargs)
            # PERF: the common return types are sent right here, without a Response object or
            # another coroutine; the bytes are those JSONResponse / PlainTextResponse send.
            result_type = type(result)
            if result_type is dict:
                try:
                    body = orjson.dumps(result)
                except TypeError:  # non-str keys, named tuples, big ints: the slower, lenient path
                    body = dump_json(result)
                content_type = _JSON_TYPE
            elif result_type is str:
                body = result.encode()
                content_type = _TEXT_TYPE
            else:
                await send_result(result, scope, receive, send, name)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body)), content_type],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            # NOTE: a parsed form's files are closed once the response, background tasks
            # included, is done; when no form was parsed this is one dict lookup.
            if FORM_KEY in scope:
                await request.close()

    # PERF: the fast paths serve handlers that take the request and only their route's
    # parameters, which is nearly all of them.
    simple = is_async and pass_request and not wanted and outer == ()
    all_params = (
        is_async and pass_request and bool(wanted) and wanted == param_names and outer == ()
    )
    return app


async def send_result(result: Any, scope: Scope, receive: Receive, send: Send, name: str) -> None:
    """Send a handler's return value: Response, dict/list, str, bytes or None."""
    if isinstance(result, Response):
        await result(scope, receive, send)
        return
    if result is None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if isinstance(result, (dict, list)):
        body = dump_json(result)
        content_type = _JSON_TYPE
    elif isinstance(result, str):
        body = result.encode()
        content_type = _TEXT_TYPE
    elif isinstance(result, (bytes, bytearray, memoryview)):
        body = bytes(result)
        content_type = _BYTES_TYPE
    elif inspect.iscoroutine(result):
        # NOTE: closed, or it would also be reported as never awaited; the usual cause is a
        # plain `def` decorator that hides the async handler from the start-up check.
        result.close()
        raise TypeError(
            f"Handler {name} is a plain function that returned a coroutine, which is not "
            "awaited; make it `async def`, or decorate the async handler with functools.wraps"
        )
    else:
        raise TypeError(
            f"Handler {name} returned {type(result).__name__}; return a Response, "
            "dict, list, str, bytes or None"
        )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body)), content_type],
        }
    )
    await send({"type": "http.response.body", "body": body})
