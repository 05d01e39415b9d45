"""url_path_for and request.url_for: encoding, round trips, mounts, hosts and root paths."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microasgi import App, NoMatchFound, Request, Router
from microasgi.requests import HTTPConnection
from microasgi.responses import RedirectResponse
from microasgi.routing import Mount, Route
from microasgi.routing.routes import URLPath
from microasgi.testing import TestClient
from microasgi.types import ASGIApp, Receive, Scope, Send
from microasgi.websockets import WebSocket

ClientFactory = Callable[..., TestClient]

# --- encoding: every built URL routes back to the same handler with the same value -------

AWKWARD = [
    "plain",
    "a?admin=1#frag",
    "50% off",
    "%2F",
    "%",
    "a b",
    "#",
    "?",
    "\\evil.com",
    "..",
    ".",
    "...",
    "..a",
    "café",
    "日本語",
    "😀",
    "a+b",
    "~user",
    "@:!$&'()*,;=",
    "<script>",
    '"quoted"',
    "tab\there",
    "\x00",
    "\r\n",
    "{x}",
]
PATHS = [
    *AWKWARD,
    "/evil.com",
    "//evil.com",
    "/\\evil.com",
    "a/b",
    "a/../b",
    "../../etc/passwd",
    "./a",
    "a/.",
    "a//b",
    "a/",
    "dir/file name.txt",
    "",
]


def echo_app() -> App:
    app = App()

    @app.get("/items/{x}", name="item")
    async def item(request: Request, x: str) -> dict[str, str]:
        return {"route": "item", "x": x}

    @app.get("/files/{p:path}", name="files")
    async def files(request: Request, p: str) -> dict[str, str]:
        return {"route": "files", "p": p}

    @app.get("/{p:path}", name="catchall")
    async def catchall(request: Request, p: str) -> dict[str, str]:
        return {"route": "catchall", "p": p}

    @app.get("/build")
    async def build(request: Request) -> dict[str, str]:
        kind = request.query_params["kind"]
        value = request.query_params["value"]
        key = "x" if kind == "item" else "p"
        return {"url": str(request.url_for(kind, **{key: value}))}

    return app


@pytest.mark.parametrize("value", AWKWARD)
def test_str_parameter_round_trips(client_factory: ClientFactory, value: str) -> None:
    app = echo_app()
    path = app.url_path_for("item", x=value)
    assert "?" not in path and "#" not in path and "\\" not in path and " " not in path
    with client_factory(app) as client:
        assert client.get(path).json() == {"route": "item", "x": value}
        url = client.get("/build", params={"kind": "item", "value": value}).json()["url"]
        assert url == "http://testserver" + path
        assert client.get(url).json() == {"route": "item", "x": value}


@pytest.mark.parametrize("value", PATHS)
@pytest.mark.parametrize("name", ["files", "catchall"])
def test_path_parameter_round_trips(client_factory: ClientFactory, name: str, value: str) -> None:
    app = echo_app()
    path = app.url_path_for(name, p=value)
    assert not path.startswith(("//", "/\\"))
    assert "?" not in path and "#" not in path and "\\" not in path
    with client_factory(app) as client:
        assert client.get(path).json() == {"route": name, "p": value}
        url = client.get("/build", params={"kind": name, "value": value}).json()["url"]
        assert url == "http://testserver" + path
        assert client.get(url).json() == {"route": name, "p": value}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=st.text(st.characters(codec="utf-8", blacklist_characters="/"), min_size=1),
    p=st.text(st.characters(codec="utf-8")),
)
def test_any_value_round_trips(x: str, p: str) -> None:
    app = echo_app()
    with TestClient(app) as client:
        assert client.get(app.url_path_for("item", x=x)).json() == {"route": "item", "x": x}
        path = app.url_path_for("files", p=p)
        assert client.get(path).json() == {"route": "files", "p": p}
        path = app.url_path_for("catchall", p=p)
        assert not path.startswith("//")
        assert client.get(path).json() == {"route": "catchall", "p": p}


@pytest.mark.parametrize("target", ["/evil.com", "//evil.com", "\\evil.com", "/\\evil.com"])
def test_redirect_to_a_built_path_stays_on_the_site(
    client_factory: ClientFactory, target: str
) -> None:
    app = echo_app()

    @app.get("/go", name="go")
    async def go(request: Request) -> RedirectResponse:
        return RedirectResponse(app.url_path_for("catchall", p=request.query_params["next"]))

    with client_factory(app) as client:
        response = client.get("/go", params={"next": target}, follow_redirects=False)
        location = response.headers["location"]
        assert location.startswith("/")
        assert not location.startswith(("//", "/\\"))
        assert client.get(location).json() == {"route": "catchall", "p": target}


def test_static_text_of_a_template_is_encoded_too(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/café/{x}/50%", name="odd")
    async def odd(request: Request, x: str) -> str:
        return x

    path = app.url_path_for("odd", x="é")
    assert path == "/caf%C3%A9/%C3%A9/50%25"
    with client_factory(app) as client:
        assert client.get(path).text == "é"


def test_mount_path_parameter_is_encoded(client_factory: ClientFactory) -> None:
    seen: list[str] = []

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await RedirectResponse("/")(scope, receive, send)

    app = App()
    app.mount("/static", raw, name="static")
    path = app.url_path_for("static", path="/css/a b?.css")
    assert path == "/static/css/a%20b%3F.css"
    with client_factory(app) as client:
        client.get(path, follow_redirects=False)
    assert seen == ["/static/css/a b?.css"]


# --- url_path_for: the name index ------------------------------------------------------


async def nothing(request: Request) -> str:
    return ""


def test_url_path_for_sees_routes_added_after_a_lookup() -> None:
    router = Router()
    router.get("/a", name="a")(nothing)
    assert router.url_path_for("a") == "/a"
    with pytest.raises(NoMatchFound):
        router.url_path_for("b")
    router.get("/b", name="b")(nothing)
    assert router.url_path_for("b") == "/b"


def test_same_name_picks_the_first_route_whose_params_fit() -> None:
    router = Router()
    router.get("/one/{x:int}", name="same")(nothing)
    router.get("/two/{y}", name="same")(nothing)
    assert router.url_path_for("same", x=1) == "/one/1"
    assert router.url_path_for("same", y="b") == "/two/b"
    with pytest.raises(NoMatchFound):
        router.url_path_for("same", z=1)


def test_a_colon_name_goes_to_the_first_registered_of_route_and_mount() -> None:
    inner = Router()
    inner.get("/b", name="b")(nothing)
    first_route = Router([Route("/literal", nothing, name="a:b"), Mount("/m", inner, name="a")])
    assert first_route.url_path_for("a:b") == "/literal"
    first_mount = Router([Mount("/m", inner, name="a"), Route("/literal", nothing, name="a:b")])
    assert first_mount.url_path_for("a:b") == "/m/b"
    assert Router([Route("/literal", nothing, name="a:b")]).url_path_for("a:b") == "/literal"
    unnamed = Router([Mount("/m", inner)])
    with pytest.raises(NoMatchFound):
        unnamed.url_path_for("b")


def test_url_path_for_says_what_the_path_leads_to() -> None:
    inner = Router()
    inner.get("/page", name="page")(nothing)
    inner.websocket("/ws", name="ws")(nothing)
    app = App()
    app.get("/", name="home")(nothing)
    app.websocket("/live", name="live")(nothing)
    app.mount("/sub", inner, name="sub")
    app.host("api.example.com", inner, name="api")
    expected = {
        ("home", ()): ("/", "http"),
        ("live", ()): ("/live", "websocket"),
        ("sub:page", ()): ("/sub/page", "http"),
        ("sub:ws", ()): ("/sub/ws", "websocket"),
        ("api:ws", ()): ("/ws", "websocket"),
        ("sub", (("path", "x"),)): ("/sub/x", ""),
    }
    for (name, params), (path, protocol) in expected.items():
        built = app.url_path_for(name, **dict(params))
        assert isinstance(built, URLPath)
        assert (built, built.protocol) == (path, protocol)


def test_a_foreign_mounted_app_path_keeps_its_own_protocol() -> None:
    class Foreign:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            raise NotImplementedError

        def url_path_for(self, name: str, /, **params: Any) -> str:
            if name != "page":
                raise LookupError(name)
            return "/page"

    app = App()
    app.mount("/f", Foreign(), name="f")
    app.host("f.example.com", Foreign(), name="fh")
    for name, path in (("f:page", "/f/page"), ("fh:page", "/page")):
        built = app.url_path_for(name)
        assert (built, getattr(built, "protocol", None)) == (path, "")
    with pytest.raises(NoMatchFound):
        app.url_path_for("f:other")


# --- request.url_for and base_url: where the app is served ------------------------------


def describe(connection: HTTPConnection) -> dict[str, str]:
    """url_for of every name in the query (params as JSON), and the base URL."""
    out = {"base": str(connection.base_url)}
    for name, params in connection.query_params.items():
        try:
            out[name] = str(connection.url_for(name, **json.loads(params or "{}")))
        except NoMatchFound:
            out[name] = "NoMatchFound"
    return out


async def show(request: Request) -> dict[str, str]:
    return describe(request)


async def show_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(describe(websocket))
    await websocket.close()


def nested_app() -> App:
    """An app with a mounted Router (and one inside it), a mounted App and a host router."""
    deep = Router()
    deep.get("/leaf", name="leaf")(show)
    sub = Router()
    sub.get("/inner", name="inner")(show)
    sub.websocket("/ws", name="ws")(show_ws)
    sub.mount("/deep", deep, name="deep")
    inner_router = Router()
    inner_router.get("/r", name="r")(show)
    inner_app = App()
    inner_app.get("/in", name="in")(show)
    inner_app.websocket("/ws", name="iws")(show_ws)
    inner_app.mount("/ir", inner_router, name="ir")
    tenant = Router()
    tenant.get("/t", name="t")(show)
    app = App()
    app.get("/", name="top")(show)
    app.get("/p/{x:path}", name="p")(show)
    app.mount("/sub", sub, name="sub")
    app.mount("/app", inner_app, name="ia")
    app.host("{h}.example.com", tenant, name="tenant")
    return app


NAMES = {
    "top": "",
    "sub:inner": "",
    "sub:deep:leaf": "",
    "sub:ws": "",
    "ia:in": "",
    "ia:ir:r": "",
    "in": "",
    "ir:r": "",
    "p": '{"x": "a b/c"}',
}


def expected_urls(root: str, host: str = "testserver", base: str = "") -> dict[str, str]:
    site = f"http://{host}{root}"
    return {
        "base": f"{site}{base}/",
        "top": f"{site}/",
        "sub:inner": f"{site}/sub/inner",
        "sub:deep:leaf": f"{site}/sub/deep/leaf",
        "sub:ws": f"ws://{host}{root}/sub/ws",
        "ia:in": f"{site}/app/in",
        "ia:ir:r": f"{site}/app/ir/r",
        "p": f"{site}/p/a%20b/c",
    }


@pytest.mark.parametrize(("root_path", "root"), [("", ""), ("/proxy", "/proxy")])
def test_url_for_from_the_app_and_its_mounted_routers(
    client_factory: ClientFactory, root_path: str, root: str
) -> None:
    outer = {**expected_urls(root), "in": "NoMatchFound", "ir:r": "NoMatchFound"}
    with client_factory(nested_app(), root_path=root_path) as client:
        for path in ("/", "/sub/inner", "/sub/deep/leaf"):
            assert client.get(path, params=NAMES).json() == outer, path
        with client.websocket_connect("/sub/ws?" + "&".join(f"{n}=" for n in NAMES)) as ws:
            data = ws.receive_json()
        # NOTE: from a WebSocket too, an HTTP route gets http:// and the base is ws://.
        assert data == {
            **{name: url for name, url in outer.items() if name != "p"},
            "base": f"ws://testserver{root}/",
            "p": "NoMatchFound",  # no params given in this query
        }


@pytest.mark.parametrize(("root_path", "root"), [("", ""), ("/proxy", "/proxy")])
def test_url_for_inside_a_mounted_app(
    client_factory: ClientFactory, root_path: str, root: str
) -> None:
    # NOTE: request.app is the mounted app: its own names resolve first, under its root;
    # names it lacks are looked up in the app it is mounted in.
    inside = {
        **expected_urls(root, base="/app"),
        "in": f"http://testserver{root}/app/in",
        "ir:r": f"http://testserver{root}/app/ir/r",
    }
    with client_factory(nested_app(), root_path=root_path) as client:
        for path in ("/app/in", "/app/ir/r"):
            assert client.get(path, params=NAMES).json() == inside, path
        with client.websocket_connect("/app/ws?in=&top=") as ws:
            assert ws.receive_json() == {
                "base": f"ws://testserver{root}/app/",
                "in": f"http://testserver{root}/app/in",
                "top": f"http://testserver{root}/",
            }


def test_url_for_under_a_host_route(client_factory: ClientFactory) -> None:
    expected = {**expected_urls("", host="acme.example.com"), "in": "NoMatchFound"}
    expected["ir:r"] = "NoMatchFound"
    with client_factory(nested_app()) as client:
        data = client.get("/t", params=NAMES, headers={"host": "acme.example.com"}).json()
    assert data == expected


def test_url_for_leads_to_the_host_of_a_host_route(client_factory: ClientFactory) -> None:
    app = nested_app()
    app.host("static.example.com", Router(routes=[Route("/s", show, name="s")]), name="plain")
    query = {"tenant:t": '{"h": "Globex"}', "plain:s": ""}
    with client_factory(app) as client:
        data = client.get("/", params=query, headers={"host": "example.org:8080"}).json()
        inside = client.get("/t", params={"tenant:t": ""}, headers={"host": "acme.example.com"})
    # NOTE: a host parameter value is lower-cased: hosts are case-insensitive.
    assert data["tenant:t"] == "http://globex.example.com:8080/t"
    assert data["plain:s"] == "http://static.example.com:8080/s"
    # NOTE: without its host parameters the path keeps the request's host.
    assert inside.json()["tenant:t"] == "http://acme.example.com/t"


def test_url_path_for_a_host_route_carries_the_host() -> None:
    tenant = Router()
    tenant.get("/t", name="t")(nothing)
    tenant.websocket("/ws", name="ws")(nothing)
    inner = Router()
    inner.host("{team}.{region:int}.example.com", tenant, name="team")
    app = App()
    app.mount("/m", inner, name="m")
    built = app.url_path_for("m:team:t", team="red", region=7)
    assert (built, built.protocol, built.host) == ("/m/t", "http", "red.7.example.com")
    ws = app.url_path_for("m:team:ws", team="red", region=7)
    assert (ws, ws.protocol, ws.host) == ("/m/ws", "websocket", "red.7.example.com")
    assert app.url_path_for("m:team:t").host is None
    assert app.url_path_for("m:team:t", team="db_1", region=0).host == "db_1.0.example.com"
    assert URLPath("/x").host is None


def test_url_path_for_refuses_some_host_params() -> None:
    tenant = Router()
    tenant.get("/t", name="t")(nothing)
    app = App()
    app.host("{team}.{region:int}.example.com", tenant, name="team")
    with pytest.raises(NoMatchFound):
        app.url_path_for("team:t", team="red")


@pytest.mark.parametrize("value", ["a.b", "a b", "", "-a", "a" * 64, "café", "a:1", "a/b"])
def test_url_path_for_refuses_a_value_that_is_no_host_label(value: str) -> None:
    tenant = Router()
    tenant.get("/t", name="t")(nothing)
    app = App()
    app.host("{team}.example.com", tenant, name="team")
    with pytest.raises(ValueError, match=re.escape("host template '{team}.example.com' cannot")):
        app.url_path_for("team:t", team=value)


def test_url_path_for_refuses_a_value_the_host_converter_cannot_write() -> None:
    tenant = Router()
    tenant.get("/t", name="t")(nothing)
    app = App()
    app.host("{n:int}.example.com", tenant, name="n")
    with pytest.raises(ValueError, match="cannot be -1"):
        app.url_path_for("n:t", n=-1)


def test_url_for_with_an_encoded_root_path(client_factory: ClientFactory) -> None:
    # NOTE: root_path is percent-decoded in the scope, like path.
    with client_factory(nested_app(), root_path="/my app") as client:
        data = client.get("/sub/inner", params={"sub:inner": ""}).json()
    assert data == {
        "base": "http://testserver/my%20app/",
        "sub:inner": "http://testserver/my%20app/sub/inner",
    }


def test_url_for_keeps_a_secure_scheme(client_factory: ClientFactory) -> None:
    with client_factory(nested_app(), base_url="https://example.org") as client:
        data = client.get("/sub/inner", params={"top": "", "sub:ws": ""}).json()
    assert data == {
        "base": "https://example.org/",
        "top": "https://example.org/",
        "sub:ws": "wss://example.org/sub/ws",
    }


def test_url_for_through_a_wrapped_mounted_router(client_factory: ClientFactory) -> None:
    # NOTE: the mount knows nothing of what it serves; a middleware around the router
    # must not change where the app's URLs point.
    def wrap(app: ASGIApp) -> ASGIApp:
        async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
            await app(scope, receive, send)

        return wrapper

    sub = Router()
    sub.get("/inner", name="inner")(show)
    app = App()
    app.get("/", name="top")(show)
    app.mount("/sub", wrap(sub), name="sub")
    with client_factory(app, root_path="/proxy") as client:
        data = client.get("/sub/inner", params={"top": "", "sub": '{"path": "inner"}'}).json()
    assert data == {
        "base": "http://testserver/proxy/",
        "top": "http://testserver/proxy/",
        "sub": "http://testserver/proxy/sub/inner",
    }


def test_url_for_raises_value_errors_of_the_converters(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/n/{n:int}", name="n")
    async def number(request: Request, n: int) -> str:
        with pytest.raises(ValueError, match="must not be negative"):
            request.url_for("n", n=-1)
        with pytest.raises(NoMatchFound):
            request.url_for("nothing")
        return str(request.url_for("n", n=n + 1))

    with client_factory(app) as client:
        assert client.get("/n/1").text == "http://testserver/n/2"


def test_url_for_needs_an_app(client_factory: ClientFactory) -> None:
    router = Router()

    @router.get("/")
    async def home(request: Request) -> str:
        with pytest.raises(RuntimeError, match="needs an App"):
            request.url_for("home")
        return str(request.base_url)

    with client_factory(router, root_path="/r") as client:
        assert client.get("/").text == "http://testserver/r/"
