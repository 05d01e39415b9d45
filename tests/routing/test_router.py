from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microasgi import (
    App,
    HTTPException,
    Limits,
    Middleware,
    NoMatchFound,
    PlainTextResponse,
    Request,
    RouteConflictError,
    Router,
    RouteTemplateError,
    SetupError,
    WebSocket,
)
from microasgi.routing import Host, Mount, Route, WebSocketRoute
from microasgi.routing.router import route_path
from microasgi.routing.routes import BaseRoute
from microasgi.testing import TestClient
from microasgi.types import ASGIApp, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]


async def echo_path(request: Request) -> dict[str, Any]:
    return {
        "path": request.url.path,
        "root_path": request.scope.get("root_path", ""),
        "params": {k: str(v) for k, v in request.path_params.items()},
    }


def test_decorators_return_the_function_unchanged() -> None:
    app = App()

    async def handler(request: Request) -> str:
        return "x"

    for decorator in (app.get, app.post, app.put, app.patch, app.delete, app.head, app.options):
        assert decorator(f"/{decorator.__name__}")(handler) is handler
    assert app.route("/r", methods=["GET", "POST"])(handler) is handler
    assert app.websocket("/ws")(handler) is handler
    router = Router()
    assert router.get("/x")(handler) is handler
    assert router.websocket("/ws")(handler) is handler


def test_methods_and_automatic_head_and_options(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/a")
    async def get_a(request: Request) -> str:
        return "get"

    @app.post("/a")
    async def post_a(request: Request) -> str:
        return "post"

    @app.put("/b")
    async def put_b(request: Request) -> str:
        return "put"

    with client_factory(app) as client:
        assert client.get("/a").text == "get"
        assert client.post("/a").text == "post"
        head = client.head("/a")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == "3"
        options = client.options("/a")
        assert options.status_code == 204
        assert options.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        not_allowed = client.delete("/a")
        assert not_allowed.status_code == 405
        assert not_allowed.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        assert not_allowed.json() == {"detail": "Method Not Allowed"}
        assert client.head("/b").status_code == 405
        assert client.get("/b").headers["allow"] == "OPTIONS, PUT"
        assert client.get("/nowhere").status_code == 404
        assert client.get("/nowhere").json() == {"detail": "Not Found"}


def test_http_to_a_websocket_only_path_is_not_found(client_factory: ClientFactory) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    @app.websocket("/both")
    async def both_ws(websocket: WebSocket) -> None:
        await websocket.close()

    @app.get("/both")
    async def both_get(request: Request) -> str:
        return "get"

    @app.get("/ws/")
    async def slashed(request: Request) -> str:
        return "slashed"

    with client_factory(app) as client:
        # NOTE: a path served by a WebSocket route alone has no HTTP method to allow, so
        # HTTP gets what any unknown path gets: the slash redirect, else a 404.
        for method in ("GET", "POST"):
            response = client.request(method, "/ws", follow_redirects=False)
            assert (response.status_code, response.headers["location"]) == (308, "/ws/")
        with client.websocket_connect("/ws"):
            pass
        assert client.options("/both").headers["allow"] == "GET, HEAD, OPTIONS"
        assert client.post("/both").status_code == 405
    bare = App()

    @bare.websocket("/ws")
    async def bare_ws(websocket: WebSocket) -> None:
        await websocket.close()

    with client_factory(bare) as client:
        for method in ("GET", "OPTIONS"):
            response = client.request(method, "/ws")
            assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
            assert "allow" not in response.headers


def test_explicit_head_and_options_handlers_win(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/a")
    async def get_a(request: Request) -> str:
        return "get"

    @app.head("/a")
    async def head_a(request: Request) -> PlainTextResponse:
        return PlainTextResponse("", headers={"x-head": "explicit"})

    @app.options("/a")
    async def options_a(request: Request) -> PlainTextResponse:
        return PlainTextResponse("custom options")

    @app.head("/h")
    async def head_first(request: Request) -> PlainTextResponse:
        return PlainTextResponse("", headers={"x-head": "first"})

    @app.get("/h")
    async def get_after(request: Request) -> str:
        return "get"

    with client_factory(app) as client:
        assert client.head("/a").headers["x-head"] == "explicit"
        assert client.options("/a").text == "custom options"
        assert client.head("/h").headers["x-head"] == "first"


def test_head_drops_streamed_bodies(client_factory: ClientFactory) -> None:
    from microasgi import StreamingResponse

    app = App()

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            yield b"a"
            yield b"b"

        return StreamingResponse(chunks())

    with client_factory(app) as client:
        response = client.head("/stream")
        assert response.status_code == 200
        assert response.content == b""
        assert client.get("/stream").content == b"ab"


def test_path_params_are_converted_and_injected(client_factory: ClientFactory) -> None:
    app = App()
    seen: dict[str, Any] = {}

    @app.get("/users/{user_id:int}")
    async def user(request: Request, user_id: int) -> dict[str, Any]:
        seen["user_id"] = user_id
        return {"id": user_id, "params": request.path_params}

    @app.get("/f/{x:float}/{u:uuid}/{rest:path}")
    async def many(request: Request, x: float, **kwargs: Any) -> dict[str, Any]:
        return {"x": x, "u": str(kwargs["u"]), "rest": kwargs["rest"]}

    @app.get("/only/{name}")
    async def only(name: str) -> str:
        return name

    with client_factory(app) as client:
        assert client.get("/users/42").json() == {"id": 42, "params": {"user_id": 42}}
        assert seen["user_id"] == 42
        assert type(seen["user_id"]) is int
        assert client.get("/users/abc").status_code == 404
        u = uuid.uuid4()
        body = client.get(f"/f/1.5/{u}/a/b/c").json()
        assert body == {"x": 1.5, "u": str(u), "rest": "a/b/c"}
        assert client.get("/only/bob").text == "bob"


def test_precedence_static_then_typed_then_str_then_path(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/p/{rest:path}")
    async def by_path(request: Request) -> str:
        return "path"

    @app.get("/p/{name}")
    async def by_str(request: Request) -> str:
        return "str"

    @app.get("/p/{n:int}")
    async def by_int(request: Request) -> str:
        return "int"

    @app.get("/p/me")
    async def by_static(request: Request) -> str:
        return "static"

    with client_factory(app) as client:
        assert client.get("/p/me").text == "static"
        assert client.get("/p/7").text == "int"
        assert client.get("/p/bob").text == "str"
        assert client.get("/p/a/b").text == "path"


def test_method_mismatch_falls_back_to_a_lower_precedence_route(
    client_factory: ClientFactory,
) -> None:
    app = App()

    @app.post("/items/new")
    async def create(request: Request) -> str:
        return "create"

    @app.get("/items/{name}")
    async def read(request: Request, name: str) -> str:
        return f"read {name}"

    with client_factory(app) as client:
        assert client.get("/items/new").text == "read new"
        assert client.post("/items/new").text == "create"
        response = client.put("/items/new")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"


def test_conflicts_raise_at_registration_naming_both() -> None:
    app = App()

    @app.get("/a/{x:int}")
    async def first(request: Request, x: int) -> str:
        return "1"

    async def second(request: Request, y: int) -> str:
        return "2"

    async def third(request: Request, y: float) -> str:
        return "3"

    with pytest.raises(RouteConflictError) as info:
        app.get("/a/{y:int}")(second)
    message = str(info.value)
    assert "/a/{x:int}" in message
    assert "/a/{y:int}" in message
    assert info.value.existing.path == "/a/{x:int}"  # type: ignore[attr-defined]
    assert info.value.new.path == "/a/{y:int}"  # type: ignore[attr-defined]

    # Same pattern, other methods: fine; other converter at the same place: fine.
    app.post("/a/{y:int}")(second)
    app.get("/a/{y:float}")(third)
    app.websocket("/a/{x:int}")(second)
    with pytest.raises(RouteConflictError, match="WebSocket"):
        app.websocket("/a/{z:int}")(second)

    outer = Router()
    outer.mount("/static", App())
    with pytest.raises(RouteConflictError, match="same prefix"):
        outer.mount("/static/", App())


def test_template_errors_name_the_template() -> None:
    app = App()

    async def handler(request: Request) -> str:
        return ""

    for template in ("/a/{x:nope}", "/a/{x}/{x}", "/a/{p:path}/b", "no-slash", "/a/{x"):
        with pytest.raises(RouteTemplateError, match=re.escape(repr(template))):
            app.get(template)(handler)
    with pytest.raises(ValueError, match="Invalid HTTP methods"):
        app.route("/m", methods=["GE T"])(handler)
    with pytest.raises(TypeError, match="not one string"):
        app.route("/m", methods="GET")(handler)
    with pytest.raises(TypeError, match="must be callable"):
        app.add_route("/m", "not callable")  # type: ignore[arg-type]
    with pytest.raises(RouteTemplateError, match="must start with '/'"):
        app.mount("static", App())
    with pytest.raises(TypeError, match="route record"):
        app.router.add("nope")  # type: ignore[arg-type]


def test_redirect_slashes_both_ways_and_keeps_query(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/a")
    async def a(request: Request) -> str:
        return "a"

    @app.post("/b/")
    async def b(request: Request) -> str:
        return "b"

    with client_factory(app, follow_redirects=False) as client:
        response = client.get("/a/?x=1")
        assert response.status_code == 308
        assert response.headers["location"] == "/a?x=1"
        response = client.post("/b")
        assert response.status_code == 308
        assert response.headers["location"] == "/b/"
    with client_factory(app) as client:
        assert client.post("/b").text == "b"


def test_a_slash_redirect_drops_every_trailing_slash(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/a")
    async def a(request: Request) -> str:
        return "a"

    @app.post("/a/")
    async def a_slash(request: Request) -> str:
        return "a/"

    with client_factory(app, follow_redirects=False) as client:
        response = client.get("/a//")
        assert (response.status_code, response.headers["location"]) == (308, "/a")
    with client_factory(app) as client:
        assert client.get("/a///").text == "a"

    only_slash = App()

    @only_slash.get("/b/")
    async def b(request: Request) -> str:
        return "b/"

    with client_factory(only_slash, follow_redirects=False) as client:
        response = client.get("/b//")
        assert (response.status_code, response.headers["location"]) == (308, "/b/")


@pytest.mark.parametrize("path", ["//evil.com/", "/\\evil.com/", "//evil.com"])
def test_slash_redirect_is_never_an_open_redirect(client_factory: ClientFactory, path: str) -> None:
    app = App()

    @app.get("/{rest:path}")
    async def catch_all(request: Request, rest: str) -> str:
        return rest

    @app.get("/evil.com")
    async def evil(request: Request) -> str:
        return "evil"

    plain = App()

    @plain.get("/evil.com")
    async def evil2(request: Request) -> str:
        return "evil"

    with client_factory(plain, follow_redirects=False) as client:
        response = client.get(path)
        assert response.status_code == 404
        assert "location" not in response.headers


def test_redirect_slashes_can_be_disabled(client_factory: ClientFactory) -> None:
    app = App(redirect_slashes=False)

    @app.get("/a")
    async def a(request: Request) -> str:
        return "a"

    with client_factory(app, follow_redirects=False) as client:
        assert client.get("/a/").status_code == 404


def test_include_router_with_prefix_middleware_and_limits(client_factory: ClientFactory) -> None:
    calls: list[str] = []

    class Tag:
        def __init__(self, app: Any, tag: str) -> None:
            self.app = app
            self.tag = tag

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            calls.append(self.tag)
            await self.app(scope, receive, send)

    api = Router(middleware=[Middleware(Tag, tag="router")], limits=Limits(max_body_size=5))

    @api.post("/things", middleware=[Middleware(Tag, tag="route")])
    async def create(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body())}

    @api.get("/", name="api_root")
    async def root(request: Request) -> str:
        return "root"

    @api.websocket("/ws")
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    nested = Router()
    nested.mount("/files", PlainTextResponse("files"))
    api.include_router(nested, prefix="/n")

    app = App()
    app.include_router(api, prefix="/api/", middleware=[Middleware(Tag, tag="include")])

    @app.post("/open")
    async def open_(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body())}

    with client_factory(app) as client:
        assert client.post("/api/things", content=b"1234").json() == {"size": 4}
        assert calls == ["include", "router", "route"]
        assert client.post("/api/things", content=b"123456").status_code == 413
        assert client.post("/open", content=b"123456").json() == {"size": 6}
        assert client.get("/api/").text == "root"
        assert client.get("/api/n/files/x").text == "files"
        with client.websocket_connect("/api/ws") as session:
            assert session.receive_text() == "hi"
    assert app.url_path_for("api_root") == "/api/"
    with pytest.raises(RouteTemplateError):
        App().include_router(api, prefix="nope")


def test_mount_sees_full_path_and_extended_root_path(client_factory: ClientFactory) -> None:
    seen: list[tuple[str, str]] = []

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["path"], scope["root_path"]))
        await PlainTextResponse("raw")(scope, receive, send)

    sub = Router()
    sub.get("/items/{item_id:int}", name="item")(echo_path)
    sub.get("/")(echo_path)

    app = App()
    app.mount("/raw", raw)
    app.mount("/sub", sub, name="sub")
    app.mount("/users/{user}", sub, name="per_user")

    with client_factory(app, root_path="/prefix") as client:
        assert client.get("/raw/a/b").text == "raw"
        assert client.get("/raw").text == "raw"
        assert seen == [("/prefix/raw/a/b", "/prefix/raw"), ("/prefix/raw", "/prefix/raw")]
        body = client.get("/sub/items/3").json()
        assert body == {
            "path": "/prefix/sub/items/3",
            "root_path": "/prefix/sub",
            "params": {"item_id": "3"},
        }
        body = client.get("/users/ann/items/4").json()
        assert body["params"] == {"user": "ann", "item_id": "4"}
        assert client.get("/rawx").status_code == 404
    assert app.url_path_for("sub:item", item_id=3) == "/sub/items/3"
    assert app.url_path_for("per_user:item", user="ann", item_id=3) == "/users/ann/items/3"
    assert app.url_path_for("sub", path="/a/b") == "/sub/a/b"
    with pytest.raises(NoMatchFound):
        app.url_path_for("sub:item")
    with pytest.raises(NoMatchFound):
        app.url_path_for("per_user:item", item_id=3)
    with pytest.raises(NoMatchFound):
        app.url_path_for("sub:nothing")
    with pytest.raises(NoMatchFound):
        app.url_path_for("sub", nope=1)
    assert [type(r) for r in app.routes] == [Mount, Mount, Mount]
    assert len(app.routes[1].routes) == 2  # type: ignore[attr-defined]


def test_root_mount_catches_the_rest(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/own")
    async def own(request: Request) -> str:
        return "own"

    app.mount("/", PlainTextResponse("mounted"))
    with client_factory(app) as client:
        assert client.get("/own").text == "own"
        assert client.get("/anything/else").text == "mounted"


def test_host_routing_wins_and_exposes_params(client_factory: ClientFactory) -> None:
    tenant = Router()

    @tenant.get("/")
    async def tenant_home(request: Request) -> dict[str, Any]:
        return dict(request.path_params)

    @tenant.get("/page", name="page")
    async def page(request: Request) -> str:
        return "page"

    app = App()

    @app.get("/")
    async def home(request: Request) -> str:
        return "main"

    app.host("{sub}.example.com", tenant, name="tenant")
    app.host("{n:int}.numbers.test", tenant)

    with client_factory(app) as client:
        assert client.get("/", headers={"host": "acme.example.com"}).json() == {"sub": "acme"}
        assert client.get("/", headers={"host": "ACME.example.com:8000"}).json() == {"sub": "acme"}
        assert client.get("/", headers={"host": "42.numbers.test"}).json() == {"n": 42}
        assert client.get("/", headers={"host": "x.numbers.test"}).text == "main"
        assert client.get("/", headers={"host": "example.com"}).text == "main"
        assert client.get("/", headers={"host": "[::1]:8000"}).text == "main"
    assert app.url_path_for("tenant:page") == "/page"
    with pytest.raises(NoMatchFound):
        app.url_path_for("tenant:missing")
    with pytest.raises(NoMatchFound):
        app.url_path_for("other:page")
    assert isinstance(app.routes[1], Host)
    assert len(app.routes[1].routes) == 2  # type: ignore[attr-defined]
    for bad in ("{sub.example.com", "{1x}.example.com", "a..b", "{a}.{a}.com"):
        with pytest.raises(RouteTemplateError):
            App().host(bad, tenant)


def test_host_without_host_header_uses_server_name() -> None:
    from microasgi.routing.router import _host_name

    assert _host_name({"headers": [], "server": ("Example.COM", 80)}) == "example.com"
    assert _host_name({"headers": [], "server": ("Example.COM", 8000)}) == "example.com"
    assert _host_name({"headers": [], "server": ("::1", 8000)}) == "[::1]"
    # NOTE: as in request.url: no Host and no server address (or a Unix socket's) is localhost.
    assert _host_name({"headers": []}) == "localhost"
    assert _host_name({"headers": [], "server": ("/tmp/app.sock", None)}) == "localhost"


INVALID_HOSTS = [
    "evil#.example.com",
    "a@b.example.com",
    "x?y.example.com",
    "x y.example.com",
    "<img onerror=alert(1) src=x>.example.com",
    "a/b.example.com",
    "a\\b.example.com",
    "a\tb.example.com",
    "acme.example.com:99999",
    "acme.example.com:",
    "acme.example.com:8x",
    "acme.example.com:80:80",
    "[::1.example.com",
    "[zz::1]",
    "",
]


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_an_invalid_host_header_never_matches_a_host_route(
    client_factory: ClientFactory, host: str
) -> None:
    tenant = Router()

    @tenant.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {"tenant": request.path_params["sub"]}

    app = App()

    @app.get("/whoami")
    async def main(request: Request) -> dict[str, Any]:
        return {"main": request.url.hostname}

    app.host("{sub}.example.com", tenant)
    app.host("{sub}.{domain}.{tld}", tenant)
    app.host("{sub}.{tld}", tenant)
    with client_factory(app) as client:
        # NOTE: the Host header is ignored, as request.url ignores it: the server's name
        # stands in, and it matches no host route.
        response = client.get("/whoami", headers={"host": host})
        assert response.json() == {"main": "testserver"}
        response = client.get("/whoami", headers={"host": "acme.example.com:8443"})
        assert response.json() == {"tenant": "acme"}


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_host_match_refuses_what_the_url_refuses(host: str) -> None:
    route = Host("{sub}.example.com", Router())
    assert route.match(host) is None


@given(st.text(st.characters(codec="latin-1"), max_size=30))
def test_host_routing_sees_the_host_of_request_url(host: str) -> None:
    from microasgi.datastructures import URL
    from microasgi.routing.router import _host_name

    scope = {
        "type": "http",
        "path": "/",
        "headers": [(b"host", host.encode("latin-1"))],
        "server": ("testserver", 80),
    }
    name = _host_name(scope)
    url = URL(scope=scope)
    assert url.hostname is not None
    # NOTE: a fully qualified name's final dot is not part of the host routes see.
    hostname = url.hostname[:-1] if url.hostname.endswith(".") else url.hostname
    assert name.strip("[]") == hostname
    route = Host("{label}", Router())
    params = route.match(host)
    if params is not None:
        assert params == {"label": hostname}


def test_host_match_ignores_port_and_case() -> None:
    route = Host("{sub}.example.com", Router())
    assert route.match("ACME.Example.com:8000") == {"sub": "acme"}
    assert route.match("acme.example.com") == {"sub": "acme"}
    assert route.match("acme.example.org") is None
    assert route.match("a.b.example.com") is None
    assert Host("{n:int}.numbers.test", Router()).match("x.numbers.test") is None


def test_host_routing_takes_a_fully_qualified_host_with_its_final_dot(
    client_factory: ClientFactory,
) -> None:
    tenant = Router()

    @tenant.get("/")
    async def tenant_home(request: Request) -> dict[str, Any]:
        return dict(request.path_params)

    app = App()

    @app.get("/")
    async def home(request: Request) -> str:
        return "main"

    app.host("{sub}.example.com", tenant)
    app.host("api.example.org", PlainTextResponse("api"))
    route = Host("{sub}.example.com", Router())
    assert route.match("Acme.Example.com.:8000") == {"sub": "acme"}
    assert route.match("acme.example.com..") is None
    with client_factory(app) as client:
        assert client.get("/", headers={"host": "acme.example.com."}).json() == {"sub": "acme"}
        assert client.get("/", headers={"host": "api.example.org.:80"}).text == "api"
        assert client.get("/", headers={"host": "acme.example.com.."}).text == "main"
        assert client.get("/", headers={"host": "."}).text == "main"


def test_host_template_with_an_internationalized_name(client_factory: ClientFactory) -> None:
    route = Host("{sub}.Bücher.example", Router())
    assert route.match("shop.xn--bcher-kva.example") == {"sub": "shop"}
    assert route.match("shop.bcher.example") is None
    with pytest.raises(RouteTemplateError, match="not a valid internationalized label"):
        Host("{sub}." + "ü" * 70 + ".example", Router())
    app = App()
    app.host("bücher.example", PlainTextResponse("books"))

    @app.get("/")
    async def home(request: Request) -> str:
        return "main"

    with client_factory(app) as client:
        assert client.get("/", headers={"host": "xn--bcher-kva.example"}).text == "books"
        assert client.get("/", headers={"host": "other.example"}).text == "main"


@pytest.mark.parametrize("template", ["example.com:8080", "{sub}.example.com:443", "[::1]:8000"])
def test_host_template_with_a_port_is_refused(template: str) -> None:
    with pytest.raises(RouteTemplateError, match="has a port; host routes ignore the port"):
        App().host(template, Router())


def test_host_template_with_an_ipv6_address() -> None:
    assert Host("[::1]", Router()).match("[::1]:8000") == {}


def test_url_path_for_and_request_url_for(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/users/{user_id:int}", name="user")
    async def user(request: Request, user_id: int) -> str:
        return str(request.url_for("user", user_id=user_id + 1))

    @app.get("/files/{name:path}", name="file")
    async def file(request: Request) -> str:
        return ""

    assert app.url_path_for("user", user_id=3) == "/users/3"
    assert app.url_path_for("file", name="a/b.txt") == "/files/a/b.txt"
    with pytest.raises(NoMatchFound, match='"user"'):
        app.url_path_for("user")
    with pytest.raises(NoMatchFound):
        app.url_path_for("nobody")
    with client_factory(app) as client:
        assert client.get("/users/1").text == "http://testserver/users/2"
    with client_factory(app, root_path="/root") as client:
        assert client.get("/users/1").text == "http://testserver/root/users/2"


def test_routes_table_is_readable() -> None:
    app = App()

    @app.get("/users/{user_id:int}", name="user")
    async def user(request: Request, user_id: int) -> str:
        return ""

    @app.websocket("/ws")
    async def ws(websocket: Any) -> None:
        return None

    app.mount("/static", PlainTextResponse("x"), name="static")
    app.host("api.example.com", Router())
    table = str(app.routes)
    lines = table.splitlines()
    assert lines[0].split() == ["METHODS", "PATH", "NAME", "ENDPOINT"]
    assert lines[1].split()[:3] == ["GET,HEAD", "/users/{user_id:int}", "user"]
    assert "test_router" in lines[1]
    assert lines[2].split()[:3] == ["WS", "/ws", "ws"]
    assert lines[3].split()[:3] == ["MOUNT", "/static", "static"]
    assert lines[4].split()[:2] == ["HOST", "api.example.com"]
    assert (
        repr(app.routes[0])
        == "Route(path='/users/{user_id:int}', methods=['GET', 'HEAD'], name='user')"
    )
    assert repr(app.routes[1]) == "WebSocketRoute(path='/ws', name='ws')"
    assert repr(app.routes[2]).startswith("Mount(path='/static', name='static'")
    assert repr(app.routes[3]).startswith("Host(host='api.example.com'")
    assert repr(app.router) == "<Router with 4 routes>"


def test_registration_after_start_raises_naming_the_call(client_factory: ClientFactory) -> None:
    app = App()
    router = Router()
    app.mount("/r", router)
    with client_factory(app) as client:
        assert client.get("/missing").status_code == 404

    async def handler(request: Request) -> str:
        return ""

    with pytest.raises(SetupError, match=r"Router\.add_route\(\)"):
        app.get("/late")(handler)
    with pytest.raises(SetupError, match=r"Router\.add_websocket_route\(\)"):
        app.websocket("/late")(handler)
    with pytest.raises(SetupError, match=r"include_router\(\)"):
        app.include_router(Router())
    with pytest.raises(SetupError, match=r"mount\(\)"):
        app.mount("/late", router)
    with pytest.raises(SetupError, match=r"host\(\)"):
        app.host("late.example.com", router)
    with pytest.raises(SetupError, match=r"add_route\(\)"):
        router.add_route("/late", handler)
    with pytest.raises(SetupError, match=r"add\(\)"):
        router.add(Route("/late", handler))


def test_router_is_an_asgi_app_on_its_own(client_factory: ClientFactory) -> None:
    router = Router(
        [
            Route("/", echo_path),
            Route("/boom", echo_path, methods=["POST"]),
            WebSocketRoute("/ws", echo_path),
        ]
    )
    with client_factory(router) as client:
        assert client.get("/").json()["path"] == "/"
        response = client.get("/boom")
        assert response.status_code == 405
        assert response.json() == {"detail": "Method Not Allowed"}
        assert response.headers["allow"] == "OPTIONS, POST"


async def raise_teapot(request: Request) -> None:
    raise HTTPException(418, "short and stout", headers={"x-pot": "1"})


async def raise_bug(request: Request) -> None:
    raise RuntimeError("bug in a handler")


def standalone_router() -> Router:
    router = Router(redirect_slashes=False)
    router.get("/a")(echo_path)
    router.get("/teapot")(raise_teapot)
    router.get("/bug")(raise_bug)
    return router


def test_a_router_served_on_its_own_answers_errors_as_an_app_does(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with client_factory(standalone_router(), raise_server_exceptions=False) as client:
        response = client.get("/missing")
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
        assert response.headers["content-type"] == "application/json"
        response = client.post("/a")
        assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"
        response = client.get("/teapot")
        assert (response.status_code, response.json()) == (418, {"detail": "short and stout"})
        assert response.headers["x-pot"] == "1"
        assert not caplog.records
        response = client.get("/bug")
        assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert [record.getMessage() for record in caplog.records] == [
        "Unhandled RuntimeError in GET /bug"
    ]


@pytest.mark.anyio
async def test_a_router_served_by_a_server_never_lets_an_error_escape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # NOTE: a server calls the router with no test extension; nothing may reach it, or it
    # would answer 500 where a 404 is due.
    router = standalone_router()
    for method, path, status in (
        ("GET", "/missing", 404),
        ("DELETE", "/a", 405),
        ("GET", "/teapot", 418),
        ("GET", "/bug", 500),
    ):
        sent = await call_directly(router, method, path)
        assert sent[0]["status"] == status
    assert len(caplog.records) == 1


async def call_directly(
    app: ASGIApp, method: str, path: str, query_string: bytes = b""
) -> list[dict[str, Any]]:
    """Call ``app`` as a server does: a bare scope, no test extension."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query_string,
        "headers": [],
    }
    await app(scope, receive, send)
    return sent


def test_a_router_served_on_its_own_refuses_unknown_websockets(
    client_factory: ClientFactory,
) -> None:
    from microasgi.exceptions import WebSocketDisconnect
    from microasgi.testing import WebSocketDenied

    router = standalone_router()

    @router.websocket("/ws")
    async def refuse(websocket: Any) -> None:
        raise HTTPException(403, "no")

    with client_factory(router) as client:
        for path in ("/nowhere", "/ws"):
            with pytest.raises((WebSocketDenied, WebSocketDisconnect)):
                with client.websocket_connect(path):
                    pass


def test_a_router_inside_an_app_leaves_errors_to_the_app(client_factory: ClientFactory) -> None:
    app = App()

    @app.exception_handler(404)
    async def not_found(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse(f"app 404 for {request.url.path}", status_code=404)

    @app.exception_handler(418)
    async def teapot(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse("app teapot", status_code=418)

    app.mount("/sub", standalone_router())
    app.host("api.example.com", standalone_router())
    with client_factory(app) as client:
        assert client.get("/sub/missing").text == "app 404 for /sub/missing"
        assert client.get("/sub/teapot").text == "app teapot"
        assert client.get("/missing", headers={"host": "api.example.com"}).text == (
            "app 404 for /missing"
        )
        with pytest.raises(RuntimeError, match="bug in a handler"):
            client.get("/sub/bug")


def test_a_router_inside_another_framework_answers_itself(client_factory: ClientFactory) -> None:
    class Foreign:
        """Stands in for another framework's app: it sets scope["app"] to itself."""

        router = "not a microasgi router"

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope["app"] = self
            await self.inner(scope, receive, send)

    with client_factory(Foreign(standalone_router())) as client:
        response = client.get("/missing")
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


def test_route_path_below_root_path() -> None:
    assert route_path("/api/users", "/api") == "/users"
    assert route_path("/api", "/api") == "/"
    assert route_path("/apix/users", "/api") == "/apix/users"
    assert route_path("/other", "/api") == "/other"


def test_unknown_websocket_path_is_refused(client_factory: ClientFactory) -> None:
    from microasgi.exceptions import WebSocketDisconnect
    from microasgi.testing import WebSocketDenied

    app = App()

    @app.get("/http-only")
    async def http_only(request: Request) -> str:
        return ""

    with client_factory(app) as client:
        for path in ("/nowhere", "/http-only"):
            with pytest.raises((WebSocketDenied, WebSocketDisconnect)):
                with client.websocket_connect(path):
                    pass


# --- WebSocket routes are keyed apart from every HTTP method ---------------------------------


def test_http_method_websocket_is_an_unknown_method(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()

    @app.get("/both")
    async def both_http(request: Request) -> str:
        return "http"

    @app.websocket("/both")
    async def both_ws(websocket: WebSocket) -> None:
        await websocket.accept()

    with caplog.at_level("ERROR", logger="microasgi"), client_factory(app) as client:
        assert client.request("WEBSOCKET", "/ws").status_code == 404
        assert client.request("WEBSOCKET", "/nope").status_code == 404
        response = client.request("WEBSOCKET", "/both")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"
        assert client.request("websocket", "/both").status_code == 405
        assert client.get("/ws").status_code == 404
    assert caplog.records == []


@pytest.mark.parametrize("method", ["websocket", "WebSocket", "WEBSOCKET"])
def test_a_route_for_the_websocket_method_is_refused(method: str) -> None:
    app = App()
    with pytest.raises(ValueError, match=r"WEBSOCKET is not an HTTP method.*@app.websocket"):
        app.route("/x", methods=[method])(echo_path)


def test_a_route_for_the_star_method_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'\*' is not an HTTP method"):
        Route("/x", echo_path, methods=["*"])


def test_an_empty_methods_list_is_refused() -> None:
    app = App()
    with pytest.raises(ValueError, match=r"methods for '/x' is empty"):
        app.route("/x", methods=[])(echo_path)
    with pytest.raises(ValueError, match="is empty"):
        Route("/x", echo_path, methods=iter(()))
    assert Route("/x", echo_path).methods == {"GET"}


def test_slash_redirect_only_toward_a_path_with_http_routes(client_factory: ClientFactory) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()

    @app.post("/form")
    async def form(request: Request) -> str:
        return "posted"

    with client_factory(app) as client:
        assert client.get("/ws/", follow_redirects=False).status_code == 404
        # NOTE: a path with an HTTP route for another method still redirects, as in
        # Starlette; the method is then refused there with 405.
        response = client.get("/form/", follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (308, "/form")


# --- router middleware wraps the router's routes however it is served ------------------------


class _Count:
    """Counts the scopes it sees, by type, and adds ``x-router`` to HTTP responses."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope["type"])

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-router", b"1")]}
            await send(message)

        await self.app(scope, receive, tagged)


def _guarded_router(seen: list[str]) -> Router:
    router = Router(middleware=[Middleware(_Count, seen=seen)])

    @router.get("/x")
    async def x(request: Request) -> str:
        return "x"

    @router.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    router.mount("/files", PlainTextResponse("files"))
    return router


@pytest.mark.parametrize("served", ["included", "mounted", "host", "standalone"])
def test_router_middleware_wraps_each_route_once_however_served(
    client_factory: ClientFactory, served: str
) -> None:
    seen: list[str] = []
    router = _guarded_router(seen)
    app: ASGIApp
    headers = {}
    prefix = ""
    if served == "standalone":
        app = router
    else:
        app = App()
        if served == "included":
            app.include_router(router, prefix="/r")
            prefix = "/r"
        elif served == "mounted":
            app.mount("/r", router)
            prefix = "/r"
        else:
            app.host("h.example.com", router)
            headers = {"host": "h.example.com"}
    with client_factory(app) as client:
        response = client.get(prefix + "/x", headers=headers)
        assert (response.text, response.headers.get("x-router")) == ("x", "1")
        assert client.head(prefix + "/x", headers=headers).headers.get("x-router") == "1"
        assert client.get(prefix + "/files/a", headers=headers).headers.get("x-router") == "1"
        with client.websocket_connect(prefix + "/ws", headers=headers) as session:
            assert session.receive_text() == "hi"
    assert seen == ["http", "http", "http", "websocket"]


def test_middleware_of_nested_routers_apply_outermost_first(client_factory: ClientFactory) -> None:
    calls: list[str] = []

    class Tag:
        def __init__(self, app: ASGIApp, tag: str) -> None:
            self.app = app
            self.tag = tag

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            calls.append(self.tag)
            await self.app(scope, receive, send)

    inner = Router(middleware=[Middleware(Tag, tag="inner")])

    @inner.get("/x", middleware=[Middleware(Tag, tag="route")])
    async def x(request: Request) -> str:
        return "x"

    outer = Router(middleware=[Middleware(Tag, tag="outer")])
    outer.include_router(inner, prefix="/i")
    outer.mount("/m", inner)
    app = App()
    app.mount("/o", outer)
    app.include_router(outer, prefix="/inc")
    with client_factory(app) as client:
        for path in ("/o/i/x", "/o/m/x", "/inc/i/x", "/inc/m/x"):
            calls.clear()
            assert client.get(path).text == "x"
            assert calls == ["outer", "inner", "route"], path


def test_a_route_record_in_two_routers_gets_each_routers_middleware(
    client_factory: ClientFactory,
) -> None:
    seen: list[str] = []
    route = Route("/x", echo_path)
    guarded = Router([route], middleware=[Middleware(_Count, seen=seen)])
    plain = Router([route])
    assert guarded.routes[0] is route
    assert plain.routes[0] is not route and plain.routes[0].path == "/x"
    with client_factory(plain) as client:
        assert client.get("/x").headers.get("x-router") is None
    with client_factory(guarded) as client:
        assert client.get("/x").headers.get("x-router") == "1"
    assert seen == ["http"]


def test_a_mount_with_middleware_is_served_only_once_prepared() -> None:
    mount = Mount("/m", PlainTextResponse("m"), middleware=[Middleware(_Count, seen=[])])
    assert mount.handler is not mount.app
    assert Mount("/m", PlainTextResponse("m")).handler is not None


# --- scope["route"] and scope["endpoint"] -----------------------------------------------------


def test_scope_route_and_endpoint_are_the_matched_route_for_get_and_head(
    client_factory: ClientFactory,
) -> None:
    seen: list[tuple[str, Any, Any]] = []

    class RecordRoute:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def record(message: Any) -> None:
                if message["type"] == "http.response.start":
                    route = scope["route"]
                    seen.append((route.path, route.name, scope["endpoint"]))
                await send(message)

            await self.app(scope, receive, record)

    async def item(request: Request, item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app = App(middleware=[Middleware(RecordRoute)])
    route = app.add_route("/items/{item_id:int}", item, name="item")
    with client_factory(app) as client:
        assert client.get("/items/3").status_code == 200
        assert client.head("/items/3").status_code == 200
    assert seen == [("/items/{item_id:int}", "item", item)] * 2
    assert route.record is route


def test_scope_route_of_a_websocket_route(client_factory: ClientFactory) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        route = websocket.scope["route"]
        await websocket.send_json([route.path, websocket.scope["endpoint"] is ws])
        await websocket.close()

    with client_factory(app) as client, client.websocket_connect("/ws") as session:
        assert session.receive_json() == ["/ws", True]


# --- app.routes registers what is added to it -------------------------------------------------


def test_routes_appended_to_app_routes_are_registered(client_factory: ClientFactory) -> None:
    app = App()

    async def late(request: Request) -> str:
        return "late"

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ws")
        await websocket.close()

    app.routes.append(Route("/late", late, name="late"))
    app.routes.extend([Route("/more", late), WebSocketRoute("/ws", ws)])
    routes = app.routes
    routes += [Mount("/m", PlainTextResponse("mounted"))]
    assert routes is app.routes
    app.routes.insert(0, Route("/first", late, name="first"))
    assert [r.path for r in app.routes] == ["/first", "/late", "/more", "/ws", "/m"]
    assert app.url_path_for("late") == "/late"
    with client_factory(app) as client:
        assert client.get("/late").text == "late"
        assert client.get("/more").text == "late"
        assert client.get("/first").text == "late"
        assert client.get("/m/x").text == "mounted"
        with client.websocket_connect("/ws") as session:
            assert session.receive_text() == "ws"
        with pytest.raises(SetupError, match=r"Router.add\(\)"):
            app.routes.append(Route("/later", late))


def test_app_routes_refuses_a_conflicting_or_foreign_entry() -> None:
    app = App()
    app.routes.append(Route("/x", echo_path))
    with pytest.raises(RouteConflictError):
        app.routes.append(Route("/x", echo_path))
    with pytest.raises(TypeError, match="takes a route record"):
        app.routes.append("/y")  # type: ignore[arg-type]
    assert len(app.routes) == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda routes: routes.pop(),
        lambda routes: routes.remove(routes[0]),
        lambda routes: routes.clear(),
        lambda routes: routes.sort(key=lambda route: route.path),
        lambda routes: routes.reverse(),
        lambda routes: routes.__setitem__(0, Route("/z", echo_path)),
        lambda routes: routes.__delitem__(0),
        lambda routes: routes.__imul__(2),
    ],
)
def test_app_routes_cannot_remove_or_reorder_routes(mutate: Callable[[Any], Any]) -> None:
    app = App()
    app.add_route("/x", echo_path)
    with pytest.raises(TypeError, match="cannot remove, replace or reorder routes"):
        mutate(app.routes)
    assert [r.path for r in app.routes] == ["/x"]


def test_every_kind_of_record_shared_by_two_routers_is_copied(
    client_factory: ClientFactory,
) -> None:
    seen: list[str] = []

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    records = [
        WebSocketRoute("/ws", ws),
        Mount("/m", PlainTextResponse("m")),
        Host("h.example.com", PlainTextResponse("host")),
    ]
    plain = Router(records)
    guarded = Router(records, middleware=[Middleware(_Count, seen=seen)])
    assert all(a is b for a, b in zip(plain.routes, records))
    assert all(a is not b and type(a) is type(b) for a, b in zip(guarded.routes, records))
    with client_factory(guarded) as client:
        assert client.get("/m/x").headers.get("x-router") == "1"
        assert client.get("/", headers={"host": "h.example.com"}).headers["x-router"] == "1"
    with client_factory(plain) as client:
        assert client.get("/", headers={"host": "h.example.com"}).headers.get("x-router") is None
    assert seen == ["http", "http"]


def test_an_included_host_route_keeps_the_router_middleware(
    client_factory: ClientFactory,
) -> None:
    seen: list[str] = []
    router = Router(middleware=[Middleware(_Count, seen=seen)])
    router.host("h.example.com", PlainTextResponse("host"), name="h")
    app = App()
    app.include_router(router)
    with client_factory(app) as client:
        response = client.get("/", headers={"host": "h.example.com"})
        assert (response.text, response.headers.get("x-router")) == ("host", "1")
    assert seen == ["http"]


def test_include_router_refuses_a_prefix_for_its_host_routes(
    client_factory: ClientFactory,
) -> None:
    admin = Router()

    @admin.get("/panel")
    async def panel(request: Request) -> str:
        return "panel"

    api = Router()
    api.host("admin.example.com", admin, name="admin")

    @api.get("/ping")
    async def ping(request: Request) -> str:
        return "pong"

    app = App()

    @app.get("/home")
    async def home(request: Request) -> str:
        return "home"

    # NOTE: copied as is, the host route would answer /panel (not /api/panel) and hide /home.
    with pytest.raises(ValueError, match=r"prefix='/api'.*Host\(host='admin.example.com'.*mount"):
        app.include_router(api, prefix="/api")
    assert [route.name for route in app.routes] == ["home"]
    app.include_router(api, prefix="/")
    with client_factory(app) as client:
        assert client.get("/panel", headers={"host": "admin.example.com"}).text == "panel"
        assert client.get("/ping").text == "pong"


def test_what_cannot_be_served_is_refused_at_registration() -> None:
    app = App()
    with pytest.raises(TypeError, match=r"Mount serves an ASGI app .*got 'static/'"):
        app.mount("/static", "static/")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Host serves an ASGI app .*got None"):
        app.host("{sub}.example.com", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Mount serves an ASGI app"):
        Mount("/api", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"include_router\(\) takes a Router, got <App .*mount\(\)"):
        app.include_router(App())  # type: ignore[arg-type]
    assert app.routes == []


def test_router_add_refuses_an_unknown_record() -> None:
    class Odd(BaseRoute):
        pass

    with pytest.raises(TypeError, match="takes a route record"):
        Router().add(Odd())
    with pytest.raises(NotImplementedError):
        Odd().copy()


# --- routes += and copies of the route table --------------------------------------------------


def test_router_routes_plus_equals_registers_the_routes(client_factory: ClientFactory) -> None:
    router = Router()
    router.routes += [Route("/y", echo_path), Mount("/m", PlainTextResponse("m"))]
    assert [route.path for route in router.routes] == ["/y", "/m"]
    with client_factory(router) as client:
        assert client.get("/y").json()["path"] == "/y"
        assert client.get("/m/z").text == "m"


def test_router_routes_cannot_be_replaced() -> None:
    router = Router([Route("/y", echo_path)])
    with pytest.raises(TypeError, match=r"Router.routes cannot be replaced.*routes \+= \[\.\.\.\]"):
        router.routes = [Route("/z", echo_path)]  # type: ignore[assignment]
    with pytest.raises(TypeError, match="cannot be replaced"):
        router.routes = Router().routes
    assert [route.path for route in router.routes] == ["/y"]


def test_copies_of_the_route_table_are_plain_lists() -> None:
    import copy

    router = Router()
    router.get("/y")(echo_path)
    router.mount("/m", PlainTextResponse("m"), name="m")
    shallow = copy.copy(router.routes)
    assert type(shallow) is list
    assert shallow == list(router.routes)
    assert all(a is b for a, b in zip(shallow, router.routes))
    deep = copy.deepcopy(router.routes)
    assert type(deep) is list
    assert [(type(r), r.path, r.name) for r in deep] == [
        (type(r), r.path, r.name) for r in router.routes
    ]
    assert all(a is not b and a.owner is None for a, b in zip(deep, router.routes))
    other = Router(deep)
    assert other.url_path_for("echo_path") == "/y"
    # The copies leave the router as it was.
    assert len(router.routes) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "location"),
    [
        (b"a=\x01b", "/a?a=%01b"),
        (b"a=b c", "/a?a=b%20c"),
        (b"x=1#frag", "/a?x=1%23frag"),
        (b"q=caf\xc3\xa9&r=%C3%A9", "/a?q=caf%C3%A9&r=%C3%A9"),
        (b'a=\x7f"<>`{}|\\^', "/a?a=%7F%22%3C%3E%60%7B%7D%7C%5C%5E"),
        (b"k=v&l=/x?y:@!$'()*+,;=", "/a?k=v&l=/x?y:@!$'()*+,;="),
    ],
)
async def test_a_slash_redirect_escapes_what_a_query_may_not_hold(
    anyio_backend: str, query: bytes, location: str
) -> None:
    # NOTE: HTTP/1.1 servers refuse such request targets, but HTTP/2 ones (hypercorn) pass
    # them on, and the Location header must not carry them raw.
    app = App()

    @app.get("/a")
    async def a(request: Request) -> str:
        return "a"

    sent = await call_directly(app, "GET", "/a/", query)
    assert sent[0]["status"] == 308
    assert dict(sent[0]["headers"])[b"location"] == location.encode("ascii")
