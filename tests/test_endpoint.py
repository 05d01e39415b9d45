from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import pytest

import microasgi
from microasgi._endpoint import plan_handler
from microasgi.app import App
from microasgi.requests import Request
from microasgi.routing.routes import Route
from microasgi.testing import TestClient

ClientFactory = Callable[..., TestClient]


def test_plan_handler_conventions() -> None:
    async def request_only(request: Any) -> None: ...
    async def request_and_id(request: Any, item_id: int) -> None: ...
    async def only_params(item_id: int) -> None: ...
    async def nothing() -> None: ...
    async def var_kw(request: Any, **params: Any) -> None: ...
    async def var_pos(*args: Any) -> None: ...
    async def keyword_only(request: Any, *, item_id: int) -> None: ...

    names = ("item_id", "other")
    assert plan_handler(request_only, names)[:2] == (True, ())
    assert plan_handler(request_and_id, names)[:2] == (True, ("item_id",))
    assert plan_handler(only_params, names)[:2] == (False, ("item_id",))
    assert plan_handler(nothing, names)[:2] == (False, ())
    assert plan_handler(var_kw, names)[:2] == (True, ("item_id", "other"))
    assert plan_handler(var_pos, names)[:2] == (True, ())
    assert plan_handler(keyword_only, names)[:2] == (True, ("item_id",))
    assert plan_handler(functools.partial(request_and_id), names)[:2] == (True, ("item_id",))
    assert plan_handler(len, names)[:2] == (True, ())
    assert plan_handler(dict, names)[:2] == (True, ())


@pytest.mark.anyio
async def test_an_unbuilt_route_says_so() -> None:
    async def handler(request: Any) -> str:
        return ""

    route = Route("/", handler)
    with pytest.raises(RuntimeError, match="prepared when the app starts"):
        await route.app({}, None, None)  # type: ignore[arg-type]


def test_the_connection_by_keyword() -> None:
    async def first(request: Any, item_id: int) -> None: ...
    async def named(item_id: int, request: Any) -> None: ...
    async def annotated(item_id: int, req: Request) -> None: ...
    async def keyword_only(item_id: int, *, connection: Request) -> None: ...
    async def dotted(item_id: int, req: microasgi.Request) -> None: ...
    async def evaluated(item_id: int, req: Any) -> None: ...
    async def without(item_id: int, other: str) -> None: ...
    async def var_kw(item_id: int, request: Any, **params: Any) -> None: ...

    evaluated.__annotations__["req"] = Request  # as without `from __future__ import annotations`
    names = ("item_id",)
    assert plan_handler(first, names)[3] is None
    assert plan_handler(named, names)[3] == "request"
    assert plan_handler(annotated, names)[3] == "req"
    assert plan_handler(keyword_only, names)[3] == "connection"
    assert plan_handler(dotted, names)[3] == "req"
    assert plan_handler(evaluated, names)[3] == "req"
    assert plan_handler(without, names)[3] is None
    assert plan_handler(var_kw, names)[3] == "request"
    assert plan_handler(len, names)[3] is None
    assert plan_handler(named, names)[:3] == (False, ("item_id",), ())


def test_the_request_may_follow_the_path_parameters(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/users/{user_id:int}")
    async def get_user(user_id: int, request: Request) -> dict[str, Any]:
        return {"id": user_id, "path": request.url.path}

    @app.get("/items/{item_id}")
    def get_item(item_id: str, *, req: Request) -> dict[str, Any]:
        return {"id": item_id, "method": req.method}

    with client_factory(app) as client:
        assert client.get("/users/3").json() == {"id": 3, "path": "/users/3"}
        assert client.get("/items/a").json() == {"id": "a", "method": "GET"}


def test_sync_functools_wraps_decorator_around_an_async_handler(
    client_factory: ClientFactory,
) -> None:
    def logged(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return wrapper

    app = App()

    @app.get("/items/{item_id:int}")
    @logged
    async def get_item(request: Request, item_id: int) -> dict[str, int]:
        return {"id": item_id}

    with client_factory(app) as client:
        assert client.get("/items/7").json() == {"id": 7}


class MyRequest(Request):
    """A Request subclass, named nothing like Request's own class names."""


def test_a_request_subclass_annotation_is_resolved(client_factory: ClientFactory) -> None:
    # NOTE: this module has `from __future__ import annotations`, so the annotation is the
    # string "MyRequest" until it is evaluated in the module.
    app = App()

    @app.get("/a/{item_id:int}")
    async def after_param(item_id: int, req: MyRequest) -> dict[str, Any]:
        return {"id": item_id, "req": isinstance(req, Request)}

    @app.get("/b")
    async def keyword_only(*, req: MyRequest) -> dict[str, Any]:
        return {"req": isinstance(req, Request)}

    with client_factory(app) as client:
        assert client.get("/a/1").json() == {"id": 1, "req": True}
        assert client.get("/b").json() == {"req": True}


def test_annotations_are_resolved_one_by_one_and_fall_back_to_the_name() -> None:
    async def handler(item_id: int, conn: Request, other: Undefined) -> None: ...  # noqa: F821

    # "Request" resolves; "Undefined" cannot, and does not stop the others.
    assert plan_handler(handler, ("item_id",))[3] == "conn"
    assert plan_handler(handler, ("item_id",))[2] == ("other",)

    async def unresolved(item_id: int, conn: Request, other: Undefined) -> None: ...  # noqa: F821

    unresolved.__annotations__["conn"] = "typing_only.Request"
    assert plan_handler(unresolved, ("item_id",))[3] == "conn"


def test_annotations_of_wrapped_and_callable_handlers_are_resolved() -> None:
    async def base(item_id: int, extra: str, conn: MyRequest) -> None: ...

    class Handler:
        async def __call__(self, item_id: int, conn: MyRequest) -> None: ...

    class Bound:
        async def handle(self, item_id: int, conn: MyRequest) -> None: ...

    @functools.wraps(base)
    async def wrapper(*args: Any, **kwargs: Any) -> None: ...

    names = ("item_id",)
    assert plan_handler(functools.partial(base, extra="e"), names)[3] == "conn"
    assert plan_handler(Handler(), names)[3] == "conn"
    assert plan_handler(Bound().handle, names)[3] == "conn"
    assert plan_handler(wrapper, names)[3] == "conn"


def test_a_positional_only_path_parameter_is_refused_at_registration() -> None:
    app = App()

    async def by_id(request: Request, uid: int, /) -> None: ...

    with pytest.raises(TypeError, match=r"by_id takes the path parameter 'uid' as positional-only"):
        app.get("/a/{uid:int}")(by_id)

    async def extra(request: Request, other: int, /) -> None: ...

    with pytest.raises(TypeError, match=r"extra takes 'other' as a positional-only parameter"):
        app.get("/b")(extra)

    async def ws(websocket: Any, room: str, /) -> None: ...

    with pytest.raises(TypeError, match="'room' as positional-only"):
        app.websocket("/ws/{room}")(ws)
    assert app.routes == []


def test_positional_only_parameters_that_can_be_filled_are_accepted(
    client_factory: ClientFactory,
) -> None:
    app = App()

    @app.get("/a/{uid:int}")
    async def connection_only(request: Request, /, uid: int) -> dict[str, Any]:
        return {"uid": uid}

    @app.get("/b")
    async def with_default(request: Request, page: int = 1, /) -> dict[str, Any]:
        return {"page": page}

    app.add_route("/c", dict)  # no signature: nothing to check
    with client_factory(app) as client:
        assert client.get("/a/3").json() == {"uid": 3}
        assert client.get("/b").json() == {"page": 1}


def test_an_annotated_connection_is_recognised(client_factory: ClientFactory) -> None:
    from typing import Annotated

    async def real(item_id: int, req: Annotated[Request, "meta"]) -> dict[str, Any]:
        return {"id": item_id, "req": type(req).__name__}

    async def unresolved(item_id: int, req: Any) -> None: ...
    async def nested(item_id: int, req: Any) -> None: ...
    async def qualified(item_id: int, req: Any) -> None: ...
    async def other(item_id: int, value: Any) -> None: ...
    async def evaluated(item_id: int, req: Any) -> None: ...

    # As without `from __future__ import annotations`: the Annotated object itself.
    evaluated.__annotations__["req"] = Annotated[Request, "meta"]
    unresolved.__annotations__["req"] = "Annotated[TypingOnly.Request, Depends(f(1, 2))]"
    nested.__annotations__["req"] = "Annotated[dict[str, Request], 'x']"
    qualified.__annotations__["req"] = "typing.Annotated[ Request ]"
    other.__annotations__["value"] = "NotAnnotated[Request, 'x']"
    names = ("item_id",)
    assert plan_handler(real, names)[3] == "req"
    assert plan_handler(evaluated, names)[3] == "req"
    assert plan_handler(unresolved, names)[3] == "req"
    assert plan_handler(qualified, names)[3] == "req"
    assert plan_handler(nested, names)[3] is None
    assert plan_handler(other, names)[3] is None
    assert plan_handler(real, names)[:3] == (False, ("item_id",), ())

    app = App()
    app.get("/a/{item_id:int}")(real)
    with client_factory(app) as client:
        assert client.get("/a/3").json() == {"id": 3, "req": "Request"}


def test_a_path_parameter_annotated_against_its_converter_is_refused() -> None:
    app = App()

    async def plain_as_int(request: Request, user_id: int) -> None: ...

    with pytest.raises(TypeError, match=r"plain_as_int annotates the path parameter 'user_id' as"):
        app.get("/users/{user_id}")(plain_as_int)
    with pytest.raises(TypeError, match=r"passes it as str; write '\{user_id:int\}' in the path"):
        app.get("/users/{user_id}")(plain_as_int)

    async def int_as_str(request: Request, code: str) -> None: ...

    with pytest.raises(TypeError, match=r"as str, but its route passes it as int; write '{code}'"):
        app.get("/codes/{code:int}")(int_as_str)

    async def annotated_uuid(ws: Any, room: Annotated[uuid.UUID, "x"]) -> None: ...

    with pytest.raises(TypeError, match=r"write '\{room:uuid\}'"):
        app.websocket("/ws/{room:float}")(annotated_uuid)
    assert app.routes == []


def test_annotations_that_agree_with_the_converter_are_accepted(
    client_factory: ClientFactory,
) -> None:
    app = App()

    @app.get("/a/{n:int}/{x:float}/{u:uuid}/{s}/{rest:path}")
    async def agreeing(request: Request, n: int, x: float, u: uuid.UUID, s: str, rest: str) -> str:
        return f"{n!r} {x!r} {u!r} {s!r} {rest!r}"

    @app.get("/b/{n:int}/{s}")
    async def lenient(request: Request, n: float, s: Any) -> str:  # int is a valid float
        return f"{n!r} {s!r}"

    @app.get("/c/{s}")
    async def unknown(request: Request, s: Undefined) -> str:  # type: ignore[name-defined]  # noqa: F821
        return s

    @app.get("/d/{n:int}")
    async def by_kwargs(request: Request, **params: str) -> str:  # no such parameter by name
        return repr(params)

    with client_factory(app) as client:
        assert client.get("/d/4").text == "{'n': 4}"
        uid = "12345678-1234-5678-1234-567812345678"
        text = client.get(f"/a/1/2.5/{uid}/s/r/t").text
        assert text == f"1 2.5 UUID('{uid}') 's' 'r/t'"
        assert client.get("/b/1/s").text == "1 's'"
        assert client.get("/c/z").text == "z"


def test_a_plain_handler_returning_a_coroutine_is_named_and_the_coroutine_closed(
    client_factory: ClientFactory,
) -> None:
    ran = []

    async def inner(request: Request) -> str:
        ran.append(request)
        return "never"

    def logged(func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(request: Request) -> Any:  # no functools.wraps: looks synchronous
            return func(request)

        return wrapper

    app = App()
    app.add_route("/coro", logged(inner))
    with client_factory(app) as client:
        # filterwarnings=error turns a "never awaited" coroutine into a failure here; trio
        # refuses a coroutine from a worker thread itself, in its own words
        error = "wrapper is a plain function that returned a coroutine|appears to be asynchr"
        with pytest.raises(TypeError, match=error):
            client.get("/coro")
    assert ran == []


def test_a_replaced_builtin_converter_is_not_checked_against_annotations(
    monkeypatch: pytest.MonkeyPatch, client_factory: ClientFactory
) -> None:
    from microasgi.routing import converters

    # NOTE: restore the built-in when the test ends; the registry is process-wide.
    monkeypatch.setitem(converters._converters, "uuid", converters.get_converter("uuid"))
    converters.register_converter("uuid", "[0-9a-f-]+", str, str)
    app = App()

    @app.get("/u/{u:uuid}")
    async def as_text(request: Request, u: str) -> str:
        return u

    with client_factory(app) as client:
        assert client.get("/u/12-ab").text == "12-ab"
