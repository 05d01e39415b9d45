"""Black-box checks of the public contract (API.md), written as an outside suite would.

Only public imports are used; where API.md is silent the tests expect what a Starlette or
FastAPI user would.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from microasgi import (
    URL,
    App,
    BackgroundTask,
    BackgroundTasks,
    EventSourceResponse,
    FileResponse,
    FormData,
    Headers,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    Limits,
    Middleware,
    MutableHeaders,
    NoMatchFound,
    PlainTextResponse,
    QueryParams,
    RedirectResponse,
    Request,
    Response,
    RouteConflictError,
    Router,
    RouteTemplateError,
    ServerSentEvent,
    StaticFiles,
    StreamingResponse,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
    WebSocketException,
)
from microasgi.broadcast import Broadcast
from microasgi.middleware import (
    CORSMiddleware,
    CSRFMiddleware,
    GZipMiddleware,
    HTTPSRedirectMiddleware,
    RequestIDMiddleware,
    SessionMiddleware,
    TrustedHostMiddleware,
)
from microasgi.routing import register_converter
from microasgi.testing import AsyncTestClient, TestClient, WebSocketDenied


def _lower_headers(headers: Any) -> dict[str, str]:
    """Normalise a mapping or (name, value) pairs, str or bytes, to a lower-case dict."""
    items = headers.items() if hasattr(headers, "items") else headers
    out = {}
    for name, value in items:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        out[name.lower()] = value
    return out


def _scope(kind: str, path: str, method: str = "GET") -> dict[str, Any]:
    """An ASGI scope as a server would build it (for tests below the test client)."""
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("c", 1),
        "server": ("testserver", 80),
        "extensions": {},
    }
    if kind == "http":
        scope["method"] = method
    else:
        scope["subprotocols"] = []
    return scope


async def _raw_text_app(scope: Any, receive: Any, send: Any) -> None:
    """A bare ASGI app echoing what it sees of the scope."""
    body = f"{scope['path']}|{scope.get('root_path', '')}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


# --- Application and routes -------------------------------------------------------------


def test_decorators_return_the_original_function_and_register_routes() -> None:
    app = App()

    def handler(request: Request) -> str:
        return request.method

    for verb in ("get", "post", "put", "patch", "delete", "options"):
        assert getattr(app, verb)(f"/{verb}")(handler) is handler
    assert app.head("/head")(handler) is handler
    assert app.route("/items", methods=["GET", "POST"])(handler) is handler

    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close()

    assert app.websocket("/ws")(ws_handler) is ws_handler

    with TestClient(app) as client:
        for verb in ("get", "post", "put", "patch", "delete", "options"):
            response = client.request(verb.upper(), f"/{verb}")
            assert response.status_code == 200, verb
            assert response.text == verb.upper()
        assert client.head("/head").status_code == 200
        assert client.get("/items").text == "GET"
        assert client.post("/items").text == "POST"
        assert client.put("/items").status_code == 405
        with client.websocket_connect("/ws"):
            pass


def test_path_params_are_converted_and_url_path_for_builds_paths() -> None:
    app = App()

    @app.get("/users/{user_id:int}", name="user")
    async def get_user(request: Request, user_id: int) -> dict[str, Any]:
        return {
            "id": user_id,
            "type": type(user_id).__name__,
            "url": str(request.url_for("user", user_id=5)),
        }

    with TestClient(app) as client:
        assert client.get("/users/3").json() == {
            "id": 3,
            "type": "int",
            "url": "http://testserver/users/5",
        }
        assert client.get("/users/abc").status_code == 404
    assert app.url_path_for("user", user_id=3) == "/users/3"
    with pytest.raises(NoMatchFound):
        app.url_path_for("no-such-route")


def test_builtin_converters() -> None:
    app = App()
    seen: dict[str, Any] = {}

    @app.get("/f/{x:float}", name="f")
    async def as_float(request: Request, x: float) -> None:
        seen["float"] = x

    @app.get("/u/{x:uuid}", name="u")
    async def as_uuid(request: Request, x: uuid.UUID) -> None:
        seen["uuid"] = x

    @app.get("/p/{rest:path}", name="p")
    async def as_path(request: Request, rest: str) -> None:
        seen["path"] = rest

    @app.get("/s/{name}", name="s")
    async def as_str(request: Request, name: str) -> None:
        seen["str"] = name

    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with TestClient(app) as client:
        assert client.get("/f/1.5").status_code == 204
        assert client.get(f"/u/{value}").status_code == 204
        assert client.get("/p/a/b/c.txt").status_code == 204
        assert client.get("/s/bob").status_code == 204
        assert client.get("/s/caf%C3%A9").status_code == 204
        assert client.get("/s/a/b").status_code == 404  # {name} is one segment
        assert client.get("/u/not-a-uuid").status_code == 404
    assert seen == {"float": 1.5, "uuid": value, "path": "a/b/c.txt", "str": "café"}
    assert app.url_path_for("u", x=value) == f"/u/{value}"
    assert app.url_path_for("p", rest="a/b") == "/p/a/b"
    assert app.url_path_for("f", x=2.5) == "/f/2.5"


def test_register_converter_adds_a_custom_converter() -> None:
    register_converter("contracthex", "[0-9a-f]+", lambda s: int(s, 16), lambda v: format(v, "x"))
    app = App()

    @app.get("/h/{n:contracthex}", name="hex")
    async def hexed(request: Request, n: int) -> dict[str, int]:
        return {"n": n}

    with TestClient(app) as client:
        assert client.get("/h/ff").json() == {"n": 255}
        assert client.get("/h/xyz").status_code == 404
    assert app.url_path_for("hex", n=255) == "/h/ff"


def test_handler_gets_request_first_and_only_the_params_it_names() -> None:
    app = App()

    @app.get("/a/{x}/{y:int}")
    async def no_params(req: Request) -> dict[str, Any]:
        assert isinstance(req, Request)
        return req.path_params

    @app.get("/b/{x}/{y:int}")
    async def one_param(request: Request, y: int) -> dict[str, Any]:
        return {"y": y, "all": request.path_params}

    @app.get("/c/{x}")
    def with_default(request: Request, x: str, extra: str = "default") -> list[str]:
        return [x, extra]  # a name that is no path parameter keeps its default

    with TestClient(app) as client:
        assert client.get("/a/foo/2").json() == {"x": "foo", "y": 2}
        assert client.get("/c/foo").json() == ["foo", "default"]
        assert client.get("/b/foo/2").json() == {"y": 2, "all": {"x": "foo", "y": 2}}


def test_return_value_conversions() -> None:
    app = App()

    @app.get("/response")
    async def response(request: Request) -> Response:
        return Response(b"raw", status_code=201, headers={"x-a": "1"}, media_type="text/foo")

    @app.get("/dict")
    async def a_dict(request: Request) -> dict[str, int]:
        return {"a": 1}

    @app.get("/list")
    async def a_list(request: Request) -> list[int]:
        return [1, 2]

    @app.get("/str")
    async def a_str(request: Request) -> str:
        return "héllo"

    @app.get("/bytes")
    async def a_bytes(request: Request) -> bytes:
        return b"\x00\x01"

    @app.get("/none")
    async def nothing(request: Request) -> None:
        return None

    with TestClient(app) as client:
        r = client.get("/response")
        assert (r.status_code, r.content, r.headers["x-a"]) == (201, b"raw", "1")
        assert r.headers["content-type"].startswith("text/foo")
        r = client.get("/dict")
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"a": 1}
        assert client.get("/list").json() == [1, 2]
        r = client.get("/str")
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.text == "héllo"
        r = client.get("/bytes")
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.content == b"\x00\x01"
        r = client.get("/none")
        assert (r.status_code, r.content) == (204, b"")
        assert "content-length" not in r.headers
        assert "content-type" not in r.headers


def test_plain_def_handlers_run_in_a_worker_thread() -> None:
    app = App()
    threads: dict[str, int] = {}

    @app.get("/async")
    async def in_loop(request: Request) -> str:
        threads["async"] = threading.get_ident()
        return "a"

    @app.get("/sync")
    def in_thread(request: Request) -> str:
        threads["sync"] = threading.get_ident()
        return "s"

    with TestClient(app) as client:
        assert client.get("/async").text == "a"
        assert client.get("/sync").text == "s"
    assert threads["sync"] != threads["async"]


def test_include_router_with_prefix() -> None:
    app = App()
    api = Router()

    @api.post("/things", name="things")
    async def create(request: Request) -> dict[str, bool]:
        return {"created": True}

    app.include_router(api, prefix="/api")
    with TestClient(app) as client:
        assert client.post("/api/things").json() == {"created": True}
        assert client.post("/things").status_code == 404
    assert app.url_path_for("things") == "/api/things"


def test_mount_any_asgi_app_with_root_path_semantics() -> None:
    app = App()
    app.mount("/raw", _raw_text_app)
    sub = App()

    @sub.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        return {"path": request.url.path, "root_path": request.scope["root_path"]}

    app.mount("/sub", sub)
    with TestClient(app) as client:
        # The full path stays in scope["path"]; the prefix is appended to root_path.
        assert client.get("/raw/x/y").text == "/raw/x/y|/raw"
        assert client.get("/sub/hello").json() == {"path": "/sub/hello", "root_path": "/sub"}
        assert client.get("/sub/nope").status_code == 404


def test_nested_mounts_append_each_prefix_to_root_path() -> None:
    inner = App()
    inner.mount("/b", _raw_text_app)
    app = App()
    app.mount("/a", inner)
    with TestClient(app) as client:
        assert client.get("/a/b/c").text == "/a/b/c|/a/b"


def test_bad_templates_are_refused_at_registration() -> None:
    app = App()

    async def handler(request: Request) -> None:
        return None

    with pytest.raises(RouteTemplateError):
        app.get("/x/{rest:path}/y")(handler)  # path is last only
    with pytest.raises(RouteTemplateError):
        app.get("/x/{n:nosuchconverter}")(handler)


def test_static_files_mount(tmp_path: Path) -> None:
    from microasgi import staticfiles

    assert staticfiles.StaticFiles is StaticFiles
    (tmp_path / "a.txt").write_text("static text")
    app = App()
    app.mount("/static", StaticFiles(directory=tmp_path), name="static")

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("custom 404", status_code=404)

    with TestClient(app) as client:
        r = client.get("/static/a.txt")
        assert r.status_code == 200
        assert r.text == "static text"
        assert r.headers["content-type"].startswith("text/plain")
        r = client.get("/static/missing.txt")
        assert (r.status_code, r.text) == (404, "custom 404")
    assert app.url_path_for("static", path="/a.txt") == "/static/a.txt"


def test_static_beats_typed_param_beats_plain_param_beats_path() -> None:
    app = App()

    @app.get("/m/{rest:path}")
    async def by_path(request: Request) -> str:
        return "path"

    @app.get("/m/{name}")
    async def by_str(request: Request) -> str:
        return "str"

    @app.get("/m/{id:int}")
    async def by_int(request: Request) -> str:
        return "int"

    @app.get("/m/me")
    async def static(request: Request) -> str:
        return "static"

    @app.get("/n/{x:int}/tail")
    async def int_then_tail(request: Request) -> str:
        return "int tail"

    @app.get("/n/{x}/other")
    async def str_then_other(request: Request) -> str:
        return "str other"

    with TestClient(app) as client:
        assert client.get("/m/me").text == "static"
        assert client.get("/m/12").text == "int"
        assert client.get("/m/bob").text == "str"
        assert client.get("/m/a/b").text == "path"
        assert client.get("/n/3/tail").text == "int tail"
        assert client.get("/n/3/other").text == "str other"  # the int branch gives way


def test_route_conflict_names_both_routes() -> None:
    app = App()

    async def handler(request: Request) -> None:
        return None

    app.get("/c/{a}")(handler)
    with pytest.raises(RouteConflictError) as excinfo:
        app.get("/c/{b}")(handler)
    assert "/c/{a}" in str(excinfo.value)
    assert "/c/{b}" in str(excinfo.value)

    app.post("/c/{b}")(handler)  # other methods: no conflict
    app.get("/d/{x:int}")(handler)
    app.get("/d/{y}")(handler)  # another converter: no conflict
    with pytest.raises(RouteConflictError):
        app.get("/d/{z:int}")(handler)  # same converter at the same place
    app.get("/e")(handler)
    with pytest.raises(RouteConflictError):
        app.get("/e")(handler)


def test_route_conflict_through_include_router() -> None:
    app = App()

    @app.get("/api/t")
    async def direct(request: Request) -> None:
        return None

    api = Router()

    @api.get("/t")
    async def included(request: Request) -> None:
        return None

    with pytest.raises(RouteConflictError):
        app.include_router(api, prefix="/api")


def test_404_and_405_with_allow() -> None:
    app = App()

    @app.get("/only-get")
    async def only_get(request: Request) -> str:
        return "x"

    with TestClient(app) as client:
        r = client.get("/nowhere")
        assert r.status_code == 404
        assert r.json() == {"detail": "Not Found"}
        r = client.post("/only-get")
        assert r.status_code == 405
        assert r.json() == {"detail": "Method Not Allowed"}
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert {"GET", "HEAD"} <= allowed
        assert "POST" not in allowed


def test_head_is_answered_for_get_routes_without_a_body() -> None:
    app = App()

    @app.get("/g")
    async def g(request: Request) -> str:
        return "hello"

    with TestClient(app) as client:
        r = client.head("/g")
        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["content-length"] == "5"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_options_is_answered_with_204_and_allow_unless_handled() -> None:
    app = App()

    @app.route("/r", methods=["GET", "POST"])
    async def r(request: Request) -> str:
        return "x"

    @app.get("/custom")
    async def custom_get(request: Request) -> str:
        return "x"

    @app.options("/custom")
    async def custom_options(request: Request) -> str:
        return "mine"

    with TestClient(app) as client:
        response = client.options("/r")
        assert response.status_code == 204
        assert response.content == b""
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "POST", "HEAD", "OPTIONS"} <= allowed
        assert client.options("/custom").text == "mine"
        assert client.options("/nowhere").status_code == 404


def test_redirect_slashes_with_308() -> None:
    app = App()

    @app.route("/a", methods=["GET", "POST"])
    async def a(request: Request) -> str:
        return "a"

    @app.get("/b/")
    async def b(request: Request) -> str:
        return "b"

    @app.get("/both")
    async def both(request: Request) -> str:
        return "no slash"

    @app.get("/both/")
    async def both_slash(request: Request) -> str:
        return "slash"

    with TestClient(app, follow_redirects=False) as client:
        r = client.get("/a/?x=1")
        assert r.status_code == 308
        assert r.headers["location"] in ("/a?x=1", "http://testserver/a?x=1")
        assert client.post("/a/").status_code == 308
        r = client.get("/b")
        assert r.status_code == 308
        assert r.headers["location"] in ("/b/", "http://testserver/b/")
        assert client.get("/both").text == "no slash"
        assert client.get("/both/").text == "slash"
    with TestClient(app) as client:
        assert client.get("/a/").text == "a"

    strict = App(redirect_slashes=False)
    strict.get("/a")(a)
    with TestClient(strict, follow_redirects=False) as client:
        assert client.get("/a/").status_code == 404


def test_host_routing_wins_and_exposes_sub() -> None:
    app = App()

    @app.get("/")
    async def main(request: Request) -> str:
        return "main"

    hosted = Router()

    @hosted.get("/")
    async def per_host(request: Request, sub: str) -> dict[str, Any]:
        return {"sub": sub, "params": request.path_params}

    @hosted.websocket("/ws")
    async def per_host_ws(ws: WebSocket, sub: str) -> None:
        await ws.accept()
        await ws.send_json({"sub": sub, "params": ws.path_params})
        await ws.close()

    app.host("{sub}.example.com", hosted)
    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers={"host": "chat.example.com"}) as s:
            assert s.receive_json() == {"sub": "chat", "params": {"sub": "chat"}}
        r = client.get("/", headers={"host": "api.example.com"})
        assert r.json() == {"sub": "api", "params": {"sub": "api"}}
        r = client.get("/", headers={"host": "api.example.com:8000"})
        assert r.json()["sub"] == "api"
        assert client.get("/").text == "main"


# --- Request ----------------------------------------------------------------------------


def test_headers_keep_starlette_methods() -> None:
    headers = Headers(raw=[(b"a", b"1"), (b"a", b"2"), (b"b", b"3")])  # ASGI: lower-case
    assert headers["a"] == "1"
    assert headers.getlist("A") == ["1", "2"]
    assert headers.items() == [("a", "1"), ("a", "2"), ("b", "3")]
    assert headers.raw == [(b"a", b"1"), (b"a", b"2"), (b"b", b"3")]
    assert "B" in headers
    with pytest.raises(TypeError):
        headers["c"] = "x"  # type: ignore[index]

    mutable = MutableHeaders({"x": "1"})
    mutable.append("x", "2")
    assert mutable.getlist("x") == ["1", "2"]
    mutable["Y"] = "3"
    assert mutable["y"] == "3"
    del mutable["X"]
    assert "x" not in mutable
    assert mutable.raw == [(b"y", b"3")]


def test_query_params_and_form_data_keep_starlette_methods() -> None:
    params = QueryParams("a=1&a=2&b=x%20y")
    assert params["a"] == "2"  # Starlette: the last value wins for []
    assert params.getlist("a") == ["1", "2"]
    assert params.multi_items() == [("a", "1"), ("a", "2"), ("b", "x y")]
    assert str(params) == "a=1&a=2&b=x+y"
    assert QueryParams({"k": "v"})["k"] == "v"
    assert QueryParams("a=&b").multi_items() == [("a", ""), ("b", "")]

    form = FormData([("f", "1"), ("f", "2")])
    assert form.getlist("f") == ["1", "2"]
    assert form.multi_items() == [("f", "1"), ("f", "2")]


def test_url_replace_and_include_query_params() -> None:
    url = URL("https://user:pw@example.com:8443/p/q?a=1#frag")
    assert (url.scheme, url.hostname, url.port, url.path, url.query) == (
        "https",
        "example.com",
        8443,
        "/p/q",
        "a=1",
    )
    assert url.fragment == "frag"
    assert str(url.replace(path="/z", query="")) == "https://user:pw@example.com:8443/z#frag"
    assert url.replace(scheme="http").scheme == "http"
    assert url.replace(hostname="other.org").netloc == "user:pw@other.org:8443"
    assert url.replace(port=None).port is None
    assert str(url.include_query_params(b="2")) == (
        "https://user:pw@example.com:8443/p/q?a=1&b=2#frag"
    )
    assert url.include_query_params(a="9").query == "a=9"
    assert url == "https://user:pw@example.com:8443/p/q?a=1#frag"


def test_request_attributes() -> None:
    app = App()

    @app.get("/path/{x}")
    async def inspect(request: Request, x: str) -> dict[str, Any]:
        url = request.url
        request.state.marker = "set"
        with pytest.raises(TypeError):
            request.headers["x"] = "y"  # type: ignore[index]
        return {
            "method": request.method,
            "url": [url.scheme, url.hostname, url.port, url.path, url.query],
            "str_url": str(url),
            "replaced": str(url.replace(path="/other")),
            "base_url": str(request.base_url),
            "header": request.headers["X-Multi"],
            "headers": request.headers.getlist("x-multi"),
            "a": request.query_params["a"],
            "as": request.query_params.getlist("a"),
            "path_params": request.path_params,
            "cookies": request.cookies,
            "client": list(request.client) if request.client else None,
            "state": request.state.marker,
            "app": request.app is app,
            "scope": request.scope["type"],
            "disconnected": await request.is_disconnected(),
        }

    with TestClient(app) as client:
        data = client.get(
            "/path/val?a=1&a=2",
            headers=[("x-multi", "1"), ("X-Multi", "2"), ("cookie", "c1=v1; c2=v2")],
        ).json()
    assert data == {
        "method": "GET",
        "url": ["http", "testserver", None, "/path/val", "a=1&a=2"],
        "str_url": "http://testserver/path/val?a=1&a=2",
        "replaced": "http://testserver/other?a=1&a=2",
        "base_url": "http://testserver/",
        "header": "1",
        "headers": ["1", "2"],
        "a": "2",
        "as": ["1", "2"],
        "path_params": {"x": "val"},
        "cookies": {"c1": "v1", "c2": "v2"},
        "client": ["testclient", 50000],
        "state": "set",
        "app": True,
        "scope": "http",
        "disconnected": False,
    }


def test_body_is_cached_and_stream_yields_it() -> None:
    app = App()

    @app.post("/twice")
    async def twice(request: Request) -> dict[str, str]:
        first = await request.body()
        second = await request.body()
        return {"first": first.decode(), "second": second.decode()}

    @app.post("/stream")
    async def stream(request: Request) -> bytes:
        chunks = [chunk async for chunk in request.stream()]
        return b"".join(chunks)

    def body_chunks() -> Iterator[bytes]:
        yield b"abc"
        yield b"def"

    with TestClient(app) as client:
        assert client.post("/twice", content=b"data").json() == {"first": "data", "second": "data"}
        assert client.post("/stream", content=body_chunks()).content == b"abcdef"


def test_json_body_rules() -> None:
    app = App()

    @app.post("/j")
    async def j(request: Request) -> dict[str, Any]:
        return {"got": await request.json()}

    lax = App(strict_content_type=False)
    lax.post("/j")(j)
    payload = b'{"a": 1}'
    with TestClient(app) as client:
        assert client.post("/j", json={"a": 1}).json() == {"got": {"a": 1}}
        for media in ("application/json; charset=utf-8", "application/vnd.api+json"):
            r = client.post("/j", content=payload, headers={"content-type": media})
            assert r.json() == {"got": {"a": 1}}, media
        r = client.post("/j", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert "detail" in r.json()
        r = client.post("/j", content=payload, headers={"content-type": "text/plain"})
        assert r.status_code == 415
        assert "detail" in r.json()
        assert client.post("/j", content=payload).status_code == 415  # no content type
        r = client.post(
            "/j", content=payload, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 415
    with TestClient(lax) as client:
        r = client.post("/j", content=payload, headers={"content-type": "text/plain"})
        assert r.json() == {"got": {"a": 1}}


def test_form_with_fields_and_files() -> None:
    app = App()

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        data = await request.form()
        upload = data["file"]
        assert isinstance(upload, UploadFile)
        size = upload.size
        await upload.seek(0)
        again = await upload.read(3)
        await upload.seek(0)
        content = await upload.read()
        await upload.write(b"!")  # at the current position: the end
        await upload.seek(0)
        written = await upload.read()
        await upload.close()
        return {
            "names": data.getlist("name"),
            "filename": upload.filename,
            "content_type": upload.content_type,
            "part_header": upload.headers["content-type"],
            "size": size,
            "size_after_write": upload.size,
            "content": content.decode(),
            "again": again.decode(),
            "written": written.decode(),
        }

    with TestClient(app) as client:
        r = client.post(
            "/form",
            data={"name": ["a", "b"]},
            files={"file": ("hello.txt", b"hello world", "text/plain")},
        )
        assert r.json() == {
            "names": ["a", "b"],
            "filename": "hello.txt",
            "content_type": "text/plain",
            "part_header": "text/plain",
            "size": 11,
            "size_after_write": 12,
            "content": "hello world",
            "again": "hel",
            "written": "hello world!",
        }
        r = client.post("/form", data={"name": "x"}, files={"file": ("f", b"", "a/b")})
        assert r.status_code == 200


def test_urlencoded_form() -> None:
    app = App()

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        async with request.form() as data:  # Starlette's spelling
            return {"a": data.getlist("a"), "b": data["b"]}

    with TestClient(app) as client:
        assert client.post(
            "/form",
            content=b"a=1&a=2&b=x+y",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ).json() == {"a": ["1", "2"], "b": "x y"}


def test_large_uploads_spool_to_disk() -> None:
    app = App()

    @app.post("/up")
    async def up(request: Request) -> dict[str, Any]:
        upload = (await request.form())["file"]
        assert isinstance(upload, UploadFile)
        spooled = upload.file
        return {
            "spooled": isinstance(spooled, tempfile.SpooledTemporaryFile),
            "rolled": bool(getattr(spooled, "_rolled", False)),
            "size": upload.size,
        }

    big = os.urandom(3 * 1024 * 1024)  # over max_part_size: files are bounded by body size
    with TestClient(app) as client:
        r = client.post("/up", files={"file": ("big.bin", big, "application/octet-stream")})
        assert r.json() == {"spooled": True, "rolled": True, "size": len(big)}


def test_form_limits() -> None:
    # Counts give 400 as in Starlette; a field over max_part_size is a size: 413 (documented).
    app = App(max_fields=2)

    @app.post("/default")
    async def default(request: Request) -> str:
        await request.form()
        return "ok"

    @app.post("/tight")
    async def tight(request: Request) -> str:
        await request.form(max_files=1, max_fields=1, max_part_size=10)
        return "ok"

    two_files = {"a": ("a.txt", b"1", "text/plain"), "b": ("b.txt", b"2", "text/plain")}
    with TestClient(app) as client:
        assert client.post("/default", data={"a": "1", "b": "2"}).text == "ok"
        assert client.post("/default", data={"a": "1", "b": "2", "c": "3"}).status_code == 400
        assert client.post("/tight", files=two_files).status_code == 400
        assert client.post("/tight", data={"a": "1", "b": "2"}).status_code == 400
        assert (
            client.post("/tight", data={"a": "x" * 11}, files={"f": ("f", b"", "a/b")}).status_code
            == 413
        )
        assert (
            client.post("/tight", data={"a": "x" * 10}, files={"f": ("f", b"", "a/b")}).text == "ok"
        )


def test_default_max_part_size_is_one_mebibyte() -> None:
    # form(max_part_size=...) can only lower the route's limit (docs/requests.md, "Coming
    # from Starlette"; API.md does not say so): raising it takes Limits on the route.
    app = App()

    @app.post("/form")
    async def form(request: Request) -> str:
        await request.form(max_part_size=2 * 1024 * 1024)
        return "ok"

    @app.post("/raised", limits=Limits(max_part_size=2 * 1024 * 1024))
    async def raised(request: Request) -> str:
        await request.form()
        return "ok"

    with TestClient(app) as client:
        files = {"f": ("f", b"", "a/b")}
        r = client.post("/form", data={"a": "x" * (1024 * 1024 + 1)}, files=files)
        assert r.status_code == 413
        r = client.post("/form", data={"a": "x" * (1024 * 1024)}, files=files)
        assert r.text == "ok"
        r = client.post("/raised", data={"a": "x" * (1024 * 1024 + 1)}, files=files)
        assert r.text == "ok"


def test_limits_as_app_keywords() -> None:
    values = {
        "max_body_size": 11,
        "max_fields": 12,
        "max_files": 13,
        "max_part_size": 14,
        "max_part_headers": 15,
        "max_ranges": 16,
        "max_message_size": 17,
        "websocket_idle_timeout": 1.5,
        "websocket_max_rate": 19,
    }
    for name, value in values.items():
        assert getattr(App(**{name: value}).limits, name) == value
        assert getattr(App(limits=Limits(**{name: value})).limits, name) == value
    with pytest.raises(TypeError):
        App(max_bodysize=1)  # type: ignore[call-arg]


def test_max_body_size_413_app_router_and_route() -> None:
    app = App(max_body_size=100)

    async def echo(request: Request) -> str:
        return str(len(await request.body()))

    app.post("/app")(echo)
    app.post("/route", limits=Limits(max_body_size=10))(echo)
    api = Router(limits=Limits(max_body_size=1000))
    api.post("/router")(echo)
    app.include_router(api, prefix="/api")

    with TestClient(app) as client:
        assert client.post("/app", content=b"x" * 100).text == "100"
        r = client.post("/app", content=b"x" * 101)
        assert r.status_code == 413
        assert "detail" in r.json()
        assert client.post("/route", content=b"x" * 11).status_code == 413
        assert client.post("/api/router", content=b"x" * 500).text == "500"

        def chunked() -> Iterator[bytes]:
            for _ in range(20):
                yield b"x" * 10

        assert client.post("/app", content=chunked()).status_code == 413


def test_max_body_size_does_not_read_the_whole_body() -> None:
    app = App(max_body_size=1000)

    @app.post("/u")
    async def upload(request: Request) -> str:
        return str(len(await request.body()))

    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 100, "more_body": pulled < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope("http", "/u", method="POST")
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert pulled < 100


def test_route_limits_override_only_the_fields_they_set() -> None:
    app = App(max_fields=2)

    @app.post("/form", limits=Limits(max_body_size=100_000))
    async def form(request: Request) -> str:
        await request.form()
        return "ok"

    with TestClient(app) as client:
        assert client.post("/form", data={"a": "1", "b": "2"}).text == "ok"
        assert client.post("/form", data={"a": "1", "b": "2", "c": "3"}).status_code == 400


def test_max_part_headers() -> None:
    app = App(max_part_headers=2)

    @app.post("/form")
    async def form(request: Request) -> str:
        await request.form()
        return "ok"

    def body(extra_headers: int) -> bytes:
        lines = [b"--B", b'Content-Disposition: form-data; name="a"']
        lines += [b"X-Extra-%d: 1" % i for i in range(extra_headers)]
        return b"\r\n".join([*lines, b"", b"value", b"--B--", b""])

    headers = {"content-type": "multipart/form-data; boundary=B"}
    with TestClient(app) as client:
        assert client.post("/form", content=body(1), headers=headers).text == "ok"
        assert client.post("/form", content=body(2), headers=headers).status_code == 400


@pytest.mark.anyio
async def test_client_is_none_when_the_server_gives_none(anyio_backend: str) -> None:
    app = App()
    seen: list[Any] = []

    @app.get("/")
    async def index(request: Request) -> None:
        seen.append(request.client)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = _scope("http", "/")
    del scope["client"]
    await app(scope, receive, send)
    assert seen == [None]


@pytest.mark.anyio
async def test_is_disconnected_after_the_client_went(anyio_backend: str) -> None:
    app = App()
    seen: list[bool] = []

    @app.post("/")
    async def index(request: Request) -> None:
        await request.body()
        seen.append(await request.is_disconnected())

    messages = [
        {"type": "http.request", "body": b"x", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    with anyio.fail_after(5):
        await app(_scope("http", "/", method="POST"), receive, send)
    assert seen == [True]


# --- Responses ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Point:
    x: int
    y: int


def test_response_classes() -> None:
    app = App()
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")

    @app.get("/plain")
    async def plain(request: Request) -> Response:
        return PlainTextResponse("p", status_code=202)

    @app.get("/html")
    async def html(request: Request) -> Response:
        return HTMLResponse("<b>h</b>")

    @app.get("/json")
    async def json_(request: Request) -> Response:
        return JSONResponse({"p": _Point(1, 2), "when": when, "id": ident, "u": "é"})

    @app.get("/default")
    async def default(request: Request) -> Response:
        return Response()

    @app.get("/str-content")
    async def str_content(request: Request) -> Response:
        return Response("é", media_type="text/plain")

    with TestClient(app) as client:
        r = client.get("/plain")
        assert (r.status_code, r.text, r.headers["content-type"]) == (
            202,
            "p",
            "text/plain; charset=utf-8",
        )
        r = client.get("/html")
        assert (r.text, r.headers["content-type"]) == ("<b>h</b>", "text/html; charset=utf-8")
        r = client.get("/json")
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "p": {"x": 1, "y": 2},
            "when": "2024-01-02T03:04:05+00:00",
            "id": str(ident),
            "u": "é",
        }
        r = client.get("/default")
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["content-length"] == "0"
        r = client.get("/str-content")
        assert r.content == "é".encode()
        assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_json_accepts_what_the_standard_library_accepts() -> None:
    # Where API.md is silent: json.dumps (Starlette, FastAPI) turns int/UUID keys into strings
    # and named tuples (such as request.client) into arrays.
    app = App()
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")

    @app.get("/returned")
    async def returned(request: Request) -> dict[int, str]:
        return {1: "a", 2: "b"}

    @app.get("/client")
    async def client_address(request: Request) -> Response:
        return JSONResponse({"client": request.client})

    @app.get("/response")
    async def response(request: Request) -> Response:
        return JSONResponse({ident: [1]})

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({7: "seven"})
        await ws.close()

    with TestClient(app) as client:
        assert client.get("/returned").json() == {"1": "a", "2": "b"}
        assert client.get("/response").json() == {str(ident): [1]}
        assert client.get("/client").json() == {"client": ["testclient", 50000]}
        with client.websocket_connect("/ws") as s:
            assert s.receive_json() == {"7": "seven"}


def test_redirect_response_defaults_to_307() -> None:
    app = App()

    @app.get("/old")
    async def old(request: Request) -> Response:
        return RedirectResponse("/new")

    @app.get("/perm")
    async def perm(request: Request) -> Response:
        return RedirectResponse(URL("/new"), status_code=301)

    @app.get("/new")
    async def new(request: Request) -> str:
        return "new"

    assert RedirectResponse("/x").status_code == 307
    with TestClient(app, follow_redirects=False) as client:
        r = client.get("/old")
        assert (r.status_code, r.headers["location"]) == (307, "/new")
        assert client.get("/perm").status_code == 301
    with TestClient(app) as client:
        assert client.get("/old").text == "new"


def test_streaming_response_with_async_and_sync_iterators() -> None:
    app = App()

    async def agen() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    def gen() -> Iterator[str]:
        yield "c"
        yield "d"

    @app.get("/async")
    async def async_stream(request: Request) -> Response:
        return StreamingResponse(agen(), media_type="text/plain")

    @app.get("/sync")
    async def sync_stream(request: Request) -> Response:
        return StreamingResponse(gen(), headers={"x-s": "1"})

    @app.get("/list")
    async def list_stream(request: Request) -> Response:
        return StreamingResponse(iter([b"e", b"f"]))

    with TestClient(app) as client:
        r = client.get("/async")
        assert (r.text, r.headers["content-type"]) == ("ab", "text/plain; charset=utf-8")
        r = client.get("/sync")
        assert (r.text, r.headers["x-s"]) == ("cd", "1")
        assert client.get("/list").text == "ef"


@pytest.fixture
def file_client(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "data.txt"
    path.write_bytes(b"0123456789" * 10)
    app = App()

    @app.get("/f")
    async def f(request: Request) -> Response:
        return FileResponse(path)

    @app.get("/named")
    async def named(request: Request) -> Response:
        return FileResponse(path, filename="report.txt")

    with TestClient(app) as client:
        yield client


def test_file_response_headers(file_client: TestClient) -> None:
    r = file_client.get("/f")
    assert r.status_code == 200
    assert r.content == b"0123456789" * 10
    assert r.headers["content-length"] == "100"
    assert r.headers["content-type"].startswith("text/plain")
    assert "last-modified" in r.headers
    assert "etag" in r.headers
    assert r.headers["accept-ranges"] == "bytes"
    r = file_client.head("/f")
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "100")
    r = file_client.get("/named")
    assert r.headers["content-disposition"] == 'attachment; filename="report.txt"'


def test_file_response_conditional_requests(file_client: TestClient) -> None:
    first = file_client.get("/f")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = file_client.get("/f", headers={"if-none-match": etag})
    assert (r.status_code, r.content) == (304, b"")
    assert r.headers["etag"] == etag
    r = file_client.get("/f", headers={"if-none-match": f'"other", {etag}'})
    assert r.status_code == 304
    r = file_client.get("/f", headers={"if-none-match": '"other"'})
    assert r.status_code == 200
    r = file_client.get("/f", headers={"if-modified-since": modified})
    assert r.status_code == 304
    r = file_client.get("/f", headers={"if-modified-since": "Mon, 01 Jan 1990 00:00:00 GMT"})
    assert r.status_code == 200


def test_file_response_ranges(file_client: TestClient) -> None:
    r = file_client.get("/f", headers={"range": "bytes=0-9"})
    assert r.status_code == 206
    assert r.content == b"0123456789"
    assert r.headers["content-range"] == "bytes 0-9/100"
    assert r.headers["content-length"] == "10"
    r = file_client.get("/f", headers={"range": "bytes=-5"})
    assert (r.status_code, r.content) == (206, b"56789")
    r = file_client.get("/f", headers={"range": "bytes=95-"})
    assert (r.status_code, r.content) == (206, b"56789")
    r = file_client.get("/f", headers={"range": "bytes=200-300"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */100"

    r = file_client.get("/f", headers={"range": "bytes=0-1,5-6"})
    assert r.status_code == 206
    media_type = r.headers["content-type"]
    assert media_type.startswith("multipart/byteranges; boundary=")
    boundary = media_type.split("boundary=", 1)[1]
    assert r.content.count(f"--{boundary}".encode()) == 3
    assert b"Content-Range: bytes 0-1/100" in r.content
    assert b"Content-Range: bytes 5-6/100" in r.content
    assert r.headers["content-length"] == str(len(r.content))


def test_file_response_if_range(file_client: TestClient) -> None:
    first = file_client.get("/f")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = file_client.get("/f", headers={"range": "bytes=0-1", "if-range": etag})
    assert (r.status_code, r.content) == (206, b"01")
    r = file_client.get("/f", headers={"range": "bytes=0-1", "if-range": modified})
    assert r.status_code == 206
    r = file_client.get("/f", headers={"range": "bytes=0-1", "if-range": '"stale"'})
    assert (r.status_code, len(r.content)) == (200, 100)


def test_max_ranges_caps_multiple_ranges(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"0123456789" * 10)
    app = App(max_ranges=2)

    @app.get("/f")
    async def f(request: Request) -> Response:
        return FileResponse(path)

    with TestClient(app) as client:
        assert client.get("/f", headers={"range": "bytes=0-1,5-6"}).status_code == 206
        r = client.get("/f", headers={"range": "bytes=0-1,5-6,8-9"})
        assert r.status_code in (200, 416)  # never a 206 with more parts than allowed


def test_event_source_response() -> None:
    app = App()

    async def events() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent("hello", event="greet", id="1", retry=1000)
        await anyio.sleep(0.3)
        yield ServerSentEvent("line1\nline2")

    @app.get("/sse")
    async def sse(request: Request) -> Response:
        return EventSourceResponse(events(), ping=0.05)

    with TestClient(app) as client:
        r = client.get("/sse")
    assert r.headers["content-type"].startswith("text/event-stream")
    text = r.text.replace("\r\n", "\n")
    assert "event: greet\n" in text
    assert "id: 1\n" in text
    assert "retry: 1000\n" in text
    assert "data: hello\n" in text
    assert "data: line1\ndata: line2\n" in text
    # keep-alive pings are SSE comments
    assert any(line.startswith(":") for line in text.splitlines())


@pytest.mark.anyio
async def test_event_source_stops_when_the_client_goes(anyio_backend: str) -> None:
    app = App()
    finished = anyio.Event()
    gone = anyio.Event()

    async def forever() -> AsyncIterator[ServerSentEvent]:
        try:
            n = 0
            while True:
                yield ServerSentEvent(str(n))
                n += 1
                await anyio.sleep(0.01)
        finally:
            finished.set()

    @app.get("/sse")
    async def sse(request: Request) -> Response:
        return EventSourceResponse(forever())

    bodies: list[bytes] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])
            gone.set()  # the client goes after the first event

    with anyio.fail_after(5):
        await app(_scope("http", "/sse"), receive, send)
        await finished.wait()
    assert b"data: 0" in bodies[0]


def test_cookies_and_header_mutation() -> None:
    app = App()

    @app.get("/set")
    async def set_cookie(request: Request) -> Response:
        response = PlainTextResponse("x")
        response.set_cookie(
            "sid",
            "abc",
            max_age=60,
            path="/p",
            domain="example.com",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        response.set_cookie(
            "other",
            "2",
            expires=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        )
        response.headers["x-one"] = "1"
        response.headers.append("x-many", "a")
        response.headers.append("x-many", "b")
        response.headers["x-gone"] = "g"
        del response.headers["x-gone"]
        return response

    @app.get("/delete")
    async def delete(request: Request) -> Response:
        response = PlainTextResponse("x")
        response.delete_cookie("sid", path="/p")
        return response

    with TestClient(app) as client:
        r = client.get("/set")
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 2
        cookie = cookies[0]
        assert "expires=Wed, 02 Jan 2030 03:04:05 GMT" in cookies[1]
        assert cookie.startswith("sid=abc;")
        lowered = cookie.lower()
        for part in ("max-age=60", "path=/p", "domain=example.com", "secure", "httponly"):
            assert part in lowered, part
        assert "samesite=strict" in lowered
        assert r.headers["x-one"] == "1"
        assert r.headers.get_list("x-many") == ["a", "b"]
        assert "x-gone" not in r.headers
        r = client.get("/delete")
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith("sid=")
        assert "max-age=0" in cookie
        assert "path=/p" in cookie


def test_crlf_in_headers_and_cookies_raises_value_error() -> None:
    with pytest.raises(ValueError):
        Response(headers={"x": "a\r\nb: c"})
    with pytest.raises(ValueError):
        Response(headers={"x\nb": "a"})
    response = Response()
    with pytest.raises(ValueError):
        response.headers["x"] = "a\nb"
    with pytest.raises(ValueError):
        response.headers["x\r"] = "a"
    with pytest.raises(ValueError):
        response.headers.append("x", "a\rb")
    with pytest.raises(ValueError):
        response.set_cookie("k", "v", path="/\r\nSet-Cookie: evil=1")
    with pytest.raises(ValueError):
        response.set_cookie("k", "v", domain="a.com\n")
    with pytest.raises(ValueError):
        response.delete_cookie("k", path="/\n")
    # A redirect target is percent-encoded (as in Starlette), so it cannot split headers.
    location = RedirectResponse("/x\r\nSet-Cookie: evil=1").headers["location"]
    assert "\r" not in location and "\n" not in location


def test_background_tasks_run_after_the_response() -> None:
    app = App()
    log: list[Any] = []

    async def async_task(value: str, *, key: str) -> None:
        log.append(("async", value, key))

    def sync_task(value: str) -> None:
        log.append(("sync", value))

    @app.get("/one")
    async def one(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(async_task, "v", key="k"))

    @app.get("/many")
    async def many(request: Request) -> Response:
        tasks = BackgroundTasks()
        tasks.add_task(sync_task, "1")
        tasks.add_task(async_task, "2", key="k2")
        return PlainTextResponse("ok", background=tasks)

    with TestClient(app) as client:
        assert client.get("/one").text == "ok"
        assert log == [("async", "v", "k")]
        log.clear()
        assert client.get("/many").text == "ok"
        assert log == [("sync", "1"), ("async", "2", "k2")]


@pytest.mark.anyio
async def test_background_task_runs_after_the_body_is_sent(anyio_backend: str) -> None:
    app = App()
    order: list[str] = []

    async def task() -> None:
        order.append("task")

    @app.get("/bg")
    async def bg(request: Request) -> Response:
        return PlainTextResponse("early", background=BackgroundTask(task))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            order.append("body sent")

    with anyio.fail_after(5):
        await app(_scope("http", "/bg"), receive, send)
    assert order == ["body sent", "task"]


# --- WebSockets --------------------------------------------------------------------------


def test_websocket_echo_iterators_and_send_receive() -> None:
    app = App()

    @app.websocket("/text")
    async def text(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(message.upper())

    @app.websocket("/bytes")
    async def bytes_(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_bytes():
            await ws.send_bytes(message[::-1])

    @app.websocket("/json")
    async def json_(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_json():
            await ws.send_json({"got": message})

    @app.websocket("/once")
    async def once(ws: WebSocket) -> None:
        await ws.accept()
        text = await ws.receive_text()
        data = await ws.receive_bytes()
        obj = await ws.receive_json()
        await ws.send_json({"text": text, "bytes": data.decode(), "json": obj})
        await ws.close(code=4321, reason="bye")

    with TestClient(app) as client:
        with client.websocket_connect("/text") as s:
            s.send_text("hi")
            assert s.receive_text() == "HI"
        with client.websocket_connect("/bytes") as s:
            s.send_bytes(b"abc")
            assert s.receive_bytes() == b"cba"
        with client.websocket_connect("/json") as s:
            s.send_json({"a": [1]})
            assert s.receive_json() == {"got": {"a": [1]}}
        with client.websocket_connect("/once") as s:
            s.send_text("t")
            s.send_bytes(b"b")
            s.send_json([1])
            assert s.receive_json() == {"text": "t", "bytes": "b", "json": [1]}
            with pytest.raises(WebSocketDisconnect) as excinfo:
                s.receive_text()
            assert (excinfo.value.code, excinfo.value.reason) == (4321, "bye")


def test_websocket_attributes_and_path_param_kwargs() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        yield {"db": "conn"}

    app = App(lifespan=lifespan)

    @app.websocket("/ws/{room}")
    async def chat(ws: WebSocket, room: str) -> None:
        assert isinstance(ws, WebSocket)
        await ws.accept()
        await ws.send_json(
            {
                "room": room,
                "path_params": ws.path_params,
                "header": ws.headers["x-h"],
                "q": ws.query_params.getlist("q"),
                "cookies": ws.cookies,
                "client": list(ws.client) if ws.client else None,
                "url": [ws.url.scheme, ws.url.path, ws.url.query],
                "state": ws.state.db,
                "subprotocols": ws.subprotocols,
            }
        )
        await ws.close()

    with TestClient(app) as client:
        with client.websocket_connect(
            "/ws/lobby?q=1&q=2",
            headers={"x-h": "v", "cookie": "c=1"},
            subprotocols=["a", "b"],
        ) as s:
            assert s.receive_json() == {
                "room": "lobby",
                "path_params": {"room": "lobby"},
                "header": "v",
                "q": ["1", "2"],
                "cookies": {"c": "1"},
                "client": ["testclient", 50000],
                "url": ["ws", "/ws/lobby", "q=1&q=2"],
                "state": "conn",
                "subprotocols": ["a", "b"],
            }


@pytest.mark.parametrize(
    "extra",
    [
        {"x-str": "1"},
        {b"x-str": b"1"},
        [("x-str", "1")],
        [(b"x-str", b"1")],
    ],
)
def test_websocket_accept_subprotocol_and_headers(extra: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept(subprotocol=ws.subprotocols[-1], headers=extra)
        await ws.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws", subprotocols=["one", "two"]) as s:
            assert s.accepted_subprotocol == "two"
            assert _lower_headers(s.extra_headers)["x-str"] == "1"


def test_websocket_refusals() -> None:
    app = App()

    @app.websocket("/close")
    async def close(ws: WebSocket) -> None:
        await ws.close(4003, "go away")

    @app.websocket("/deny")
    async def deny(ws: WebSocket) -> None:
        await ws.send_denial_response(
            PlainTextResponse("nope", status_code=401, headers={"x-why": "token"})
        )

    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect("/close"):
                pass
        assert (closed.value.code, closed.value.reason) == (4003, "go away")
        with pytest.raises(WebSocketDenied) as denied:
            with client.websocket_connect("/deny"):
                pass
        assert denied.value.status_code == 401
        assert denied.value.headers["x-why"] == "token"
        assert denied.value.content == b"nope"


class _Server:
    """A server stand-in: the scripted messages, then silence; a record of what was sent."""

    def __init__(self, *inbox: dict[str, Any]) -> None:
        self.inbox = list(inbox)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.inbox:
            return self.inbox.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _handshake_without_denial_support(app: App, path: str) -> list[dict[str, Any]]:
    """Connect to ``path`` on a server without the denial extension; what the app sent."""
    server = _Server({"type": "websocket.connect"})

    async def main() -> None:
        with anyio.fail_after(5):
            await app(_scope("websocket", path), server.receive, server.send)

    anyio.run(main)
    return server.sent


def test_send_denial_response_without_server_support_is_403() -> None:
    app = App()

    @app.websocket("/deny")
    async def deny(ws: WebSocket) -> None:
        await ws.send_denial_response(PlainTextResponse("nope", status_code=401))

    # A close before accept is what a server answers with HTTP 403.
    messages = _handshake_without_denial_support(app, "/deny")
    assert [m["type"] for m in messages] == ["websocket.close"]


def test_websocket_error_before_accept_without_denial_support_closes() -> None:
    app = App()

    @app.websocket("/ws")
    async def broken(ws: WebSocket) -> None:
        raise RuntimeError("before accept")

    # Logged, not re-raised to the server; the server answers the close with 403.
    messages = _handshake_without_denial_support(app, "/ws")
    assert [m["type"] for m in messages] == ["websocket.close"]


def test_websocket_disconnect_is_raised_when_the_peer_goes() -> None:
    app = App()
    seen: list[int] = []

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append(exc.code)

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as s:
            s.send_text("x")
            s.close(4000)
    assert seen == [4000]


def test_websocket_iterators_end_when_the_peer_goes() -> None:
    app = App()
    ended: list[str] = []

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        async for _ in ws.iter_text():
            pass
        ended.append("loop ended")

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as s:
            s.send_text("x")
    assert ended == ["loop ended"]


def test_websocket_handler_errors() -> None:
    app = App()

    @app.websocket("/after")
    async def after(ws: WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("after accept")

    @app.websocket("/before")
    async def before(ws: WebSocket) -> None:
        raise RuntimeError("before accept")

    with TestClient(app, raise_server_exceptions=False) as client:
        with client.websocket_connect("/after") as s:
            with pytest.raises(WebSocketDisconnect) as excinfo:
                s.receive_text()
            assert excinfo.value.code == 1011
        with pytest.raises(WebSocketDenied) as denied:
            with client.websocket_connect("/before"):
                pass
        assert denied.value.status_code == 500
    with TestClient(app) as client:
        with pytest.raises(RuntimeError, match="before accept"):
            with client.websocket_connect("/before"):
                pass


def test_websocket_exception_closes_with_its_code() -> None:
    app = App()

    @app.websocket("/after")
    async def after(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4400, "bad input")

    @app.websocket("/before")
    async def before(ws: WebSocket) -> None:
        raise WebSocketException(4401, "who are you")

    with TestClient(app) as client:
        with client.websocket_connect("/after") as s:
            with pytest.raises(WebSocketDisconnect) as excinfo:
                s.receive_text()
            assert (excinfo.value.code, excinfo.value.reason) == (4400, "bad input")
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/before"):
                pass
        assert (refused.value.code, refused.value.reason) == (4401, "who are you")


def test_websocket_message_size_and_idle_limits() -> None:
    app = App(max_message_size=10, websocket_idle_timeout=0.2)

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as s:
            s.send_text("short")
            assert s.receive_text() == "short"
            s.send_text("x" * 11)
            with pytest.raises(WebSocketDisconnect) as excinfo:
                s.receive_text()
            assert excinfo.value.code == 1009
        with client.websocket_connect("/ws") as s:
            with pytest.raises(WebSocketDisconnect) as idle:
                s.receive_text()  # nothing sent: the idle timeout closes the socket
            assert idle.value.code == 1001  # going away (docs/websockets.md)


def test_websocket_max_rate() -> None:
    app = App(websocket_max_rate=5)

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as s:
            for _ in range(50):
                s.send_text("x")
            with pytest.raises(WebSocketDisconnect) as excinfo:
                while True:
                    s.receive_text()
            assert excinfo.value.code == 1008  # policy violation (docs/websockets.md)


def test_websocket_limits_per_route() -> None:
    app = App()

    @app.websocket("/ws", limits=Limits(max_message_size=4))
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_bytes()

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as s:
            s.send_bytes(b"12345")
            with pytest.raises(WebSocketDisconnect) as excinfo:
                s.receive_bytes()
            assert excinfo.value.code == 1009


# --- Errors ------------------------------------------------------------------------------


class _MyError(Exception):
    pass


class _SubError(_MyError):
    pass


def test_http_exception_responses() -> None:
    app = App()

    @app.get("/plain")
    async def plain(request: Request) -> None:
        raise HTTPException(403)

    @app.get("/detail")
    def detail(request: Request) -> None:
        raise HTTPException(400, detail={"field": "bad"}, headers={"x-err": "1"})

    with TestClient(app) as client:
        r = client.get("/plain")
        assert (r.status_code, r.json()) == (403, {"detail": "Forbidden"})
        assert r.headers["content-type"] == "application/json"
        r = client.get("/detail")
        assert (r.status_code, r.json()) == (400, {"detail": {"field": "bad"}})
        assert r.headers["x-err"] == "1"


def test_exception_handlers_by_status_and_class() -> None:
    app = App()

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"custom 404 {request.url.path}", status_code=404)

    @app.exception_handler(_MyError)
    async def mine(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": type(exc).__name__}, status_code=418)

    @app.get("/raise-404")
    async def raise_404(request: Request) -> None:
        raise HTTPException(404)

    @app.get("/mine")
    async def raise_mine(request: Request) -> None:
        raise _MyError

    @app.get("/sub")
    def raise_sub(request: Request) -> None:
        raise _SubError

    with TestClient(app) as client:
        assert client.get("/nowhere").text == "custom 404 /nowhere"
        assert client.get("/raise-404").text == "custom 404 /raise-404"
        r = client.get("/mine")
        assert (r.status_code, r.json()) == (418, {"error": "_MyError"})
        assert client.get("/sub").json() == {"error": "_SubError"}


def test_exception_handler_for_http_exception_and_405() -> None:
    app = App()

    @app.exception_handler(HTTPException)
    async def as_text(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return PlainTextResponse(
            f"{exc.status_code}: {exc.detail}", status_code=exc.status_code, headers=exc.headers
        )

    @app.get("/forbidden")
    async def forbidden(request: Request) -> None:
        raise HTTPException(403, "no")

    with TestClient(app) as client:
        r = client.get("/forbidden")
        assert (r.status_code, r.text) == (403, "403: no")
        r = client.get("/nowhere")
        assert (r.status_code, r.text) == (404, "404: Not Found")
        r = client.post("/forbidden")
        assert (r.status_code, r.text) == (405, "405: Method Not Allowed")
        assert "GET" in r.headers["allow"]


def test_exception_handlers_in_the_constructor_and_for_500() -> None:
    async def teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("handled", status_code=418)

    async def server_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"oops: {exc}", status_code=500)

    app = App(exception_handlers={_MyError: teapot, 500: server_error})

    @app.get("/mine")
    async def raise_mine(request: Request) -> None:
        raise _MyError

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("kaput")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/mine").text == "handled"
        r = client.get("/boom")
        assert (r.status_code, r.text) == (500, "oops: kaput")


def test_a_handler_for_exception_is_the_500_handler() -> None:
    # As in Starlette/FastAPI: HTTPExceptions (router 404/405, 415, raised ones) keep their
    # own answer; only errors nothing else answers reach the handler for Exception.
    app = App()

    @app.exception_handler(Exception)
    async def catch_all(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"caught {type(exc).__name__}", status_code=500)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("x")

    @app.get("/forbidden")
    async def forbidden(request: Request) -> None:
        raise HTTPException(403)

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4400, "bad")

    with TestClient(app) as client:
        assert client.get("/boom").text == "caught RuntimeError"
        r = client.get("/forbidden")
        assert (r.status_code, r.json()) == (403, {"detail": "Forbidden"})
        assert client.get("/nowhere").status_code == 404
        assert client.post("/boom").status_code == 405
        with client.websocket_connect("/ws") as s:
            with pytest.raises(WebSocketDisconnect) as excinfo:
                s.receive_text()
            assert excinfo.value.code == 4400


def test_unhandled_errors_500_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="microasgi"):
            r = client.get("/boom", headers={"accept": "text/html"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "Internal Server Error"
    records = [
        rec
        for rec in caplog.records
        if rec.name.startswith("microasgi") and rec.exc_info and rec.exc_info[1] is not None
    ]
    assert len(records) == 1
    assert isinstance(records[0].exc_info[1], RuntimeError)  # type: ignore[index]

    with TestClient(app) as client:  # raise_server_exceptions=True by default
        with pytest.raises(RuntimeError, match="secret detail"):
            client.get("/boom")


def test_error_in_a_mounted_app_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    sub = App()

    @sub.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("inner")

    app = App()
    app.mount("/sub", sub)
    for raise_server_exceptions in (False, True):
        caplog.clear()
        with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
            with caplog.at_level(logging.ERROR, logger="microasgi"):
                try:
                    assert client.get("/sub/boom").status_code == 500
                except RuntimeError:
                    assert raise_server_exceptions
        logged = [rec for rec in caplog.records if rec.name.startswith("microasgi")]
        assert len(logged) == 1, [rec.getMessage() for rec in logged]


def test_debug_error_pages() -> None:
    app = App(debug=True)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("visible detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"accept": "text/html,application/xhtml+xml"})
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("text/html")
        assert "visible detail" in r.text
        assert "RuntimeError" in r.text
        r = client.get("/boom", headers={"accept": "application/json"})
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("text/plain")
        assert "visible detail" in r.text
        assert "Traceback" in r.text


def test_debug_page_escapes_the_error_message() -> None:
    app = App(debug=True)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("<script>alert(1)</script>")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"accept": "text/html"})
    assert "<script>alert(1)</script>" not in r.text
    assert "&lt;script&gt;" in r.text


def test_debug_warns_when_the_event_loop_blocks(caplog: pytest.LogCaptureFixture) -> None:
    app = App(debug=True)

    @app.get("/block")
    async def block(request: Request) -> str:
        time.sleep(0.5)  # a blocking call in async code
        return "done"

    with caplog.at_level(logging.WARNING, logger="microasgi"):
        with TestClient(app) as client:
            assert client.get("/block").text == "done"
    assert any(
        rec.name.startswith("microasgi") and "block" in rec.getMessage() for rec in caplog.records
    )


# --- Middleware and plugins --------------------------------------------------------------


class _Recorder:
    """An ASGI middleware with options recording its order and construction count."""

    built = 0

    def __init__(self, app: Any, *, name: str, log: list[str]) -> None:
        self.app = app
        self.name = name
        self.log = log
        type(self).built += 1

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.log.append(self.name)
        await self.app(scope, receive, send)


class _HeaderMiddleware:
    def __init__(self, app: Any, value: str = "yes") -> None:
        self.app = app
        self.value = value

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (b"x-mw", self.value.encode())],
                }
            await send(message)

        await self.app(scope, receive, wrapped)


def test_asgi_middleware_order_and_built_once() -> None:
    log: list[str] = []
    _Recorder.built = 0
    app = App()
    app.add_middleware(_Recorder, name="first", log=log)
    app.add_middleware(_Recorder, name="second", log=log)

    @app.get("/")
    async def index(request: Request) -> str:
        log.append("handler")
        return "x"

    with TestClient(app) as client:
        for _ in range(3):
            client.get("/")
    assert log == ["first", "second", "handler"] * 3
    assert _Recorder.built == 2

    log.clear()
    app2 = App(
        middleware=[
            Middleware(_Recorder, name="outer", log=log),
            Middleware(_Recorder, name="inner", log=log),
        ]
    )
    app2.get("/")(index)
    with TestClient(app2) as client:
        client.get("/")
    assert log == ["outer", "inner", "handler"]


def test_http_middleware_decorator() -> None:
    app = App()
    seen: list[str] = []

    @app.middleware("http")
    async def timing(request: Request, call_next: Any) -> Response:
        seen.append((await request.body()).decode())
        response = await call_next(request)
        response.headers["x-time"] = "1"
        return response

    @app.post("/")
    async def index(request: Request) -> str:
        return "handler saw " + (await request.body()).decode()

    with TestClient(app) as client:
        r = client.post("/", content=b"payload")
    assert r.text == "handler saw payload"
    assert r.headers["x-time"] == "1"
    assert seen == ["payload"]


def test_http_middleware_keeps_contextvars_both_ways() -> None:
    outer: contextvars.ContextVar[str] = contextvars.ContextVar("outer", default="unset")
    inner: contextvars.ContextVar[str] = contextvars.ContextVar("inner", default="unset")
    app = App()

    @app.middleware("http")
    async def mw(request: Request, call_next: Any) -> Response:
        outer.set("from middleware")
        response = await call_next(request)
        response.headers["x-inner"] = inner.get()
        return response

    @app.get("/")
    async def index(request: Request) -> str:
        inner.set("from handler")
        return outer.get()

    with TestClient(app) as client:
        r = client.get("/")
    assert r.text == "from middleware"
    assert r.headers["x-inner"] == "from handler"


@pytest.mark.anyio
async def test_http_middleware_does_not_break_streaming(anyio_backend: str) -> None:
    app = App()
    first_chunk_out = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await first_chunk_out.wait()  # deadlocks if the middleware buffers the body
        yield b"second"

    @app.middleware("http")
    async def mw(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["x-mw"] = "1"
        return response

    @app.get("/s")
    async def stream(request: Request) -> Response:
        return StreamingResponse(body())

    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body") == b"first":
            first_chunk_out.set()

    with anyio.fail_after(5):
        await app(_scope("http", "/s"), receive, send)
    assert (b"x-mw", b"1") in sent[0]["headers"]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"firstsecond"


def test_http_middleware_lets_background_tasks_run() -> None:
    app = App()
    ran: list[str] = []

    @app.middleware("http")
    async def mw(request: Request, call_next: Any) -> Response:
        return await call_next(request)

    @app.get("/")
    async def index(request: Request) -> Response:
        return PlainTextResponse("x", background=BackgroundTask(ran.append, "task"))

    with TestClient(app) as client:
        assert client.get("/").text == "x"
    assert ran == ["task"]


def test_route_level_middleware() -> None:
    app = App()

    @app.get("/with", middleware=[Middleware(_HeaderMiddleware, value="route")])
    async def with_mw(request: Request) -> str:
        return "w"

    @app.get("/without")
    async def without_mw(request: Request) -> str:
        return "wo"

    with TestClient(app) as client:
        assert client.get("/with").headers["x-mw"] == "route"
        assert "x-mw" not in client.get("/without").headers


def test_plugins_install() -> None:
    events: list[str] = []

    class Plugin:
        def setup(self, app: App) -> None:
            @app.get("/plugin")
            async def plugin_route(request: Request) -> None:
                raise _MyError

            async def on_error(request: Request, exc: Exception) -> Response:
                return PlainTextResponse("plugin handled", status_code=409)

            app.exception_handler(_MyError)(on_error)
            app.add_middleware(_HeaderMiddleware, value="plugin")

            @app.on_startup
            async def start() -> None:
                events.append("start")

            @app.on_shutdown
            async def stop() -> None:
                events.append("stop")

    app = App()
    app.install(Plugin())
    with TestClient(app) as client:
        r = client.get("/plugin")
        assert (r.status_code, r.text, r.headers["x-mw"]) == (409, "plugin handled", "plugin")
        assert events == ["start"]
    assert events == ["start", "stop"]


def test_middleware_is_importable_from_both_places() -> None:
    from microasgi import middleware

    assert middleware.Middleware is Middleware


def test_cors_middleware() -> None:
    app = App()
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["https://a.com"],
        allow_origin_regex=r"https://.*\.b\.com",
        allow_methods=["GET", "POST"],
        allow_headers=["X-Custom"],
        allow_credentials=True,
        expose_headers=["X-Exposed"],
        max_age=123,
    )

    @app.route("/", methods=["GET", "POST"])
    async def index(request: Request) -> str:
        return "x"

    with TestClient(app) as client:
        r = client.options(
            "/",
            headers={
                "origin": "https://a.com",
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-custom",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://a.com"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "x-custom" in r.headers["access-control-allow-headers"].lower()
        assert r.headers["access-control-max-age"] == "123"
        assert r.headers["access-control-allow-credentials"] == "true"

        r = client.get("/", headers={"origin": "https://x.b.com"})
        assert r.headers["access-control-allow-origin"] == "https://x.b.com"
        assert r.headers["access-control-expose-headers"].lower() == "x-exposed"
        assert "origin" in r.headers["vary"].lower()

        r = client.options(
            "/",
            headers={
                "origin": "https://a.com",
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-not-allowed",
            },
        )
        assert r.status_code == 400
        r = client.get("/", headers={"origin": "https://evil.com"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
        r = client.options(
            "/",
            headers={"origin": "https://evil.com", "access-control-request-method": "GET"},
        )
        assert r.status_code == 400

    star = App()
    star.add_middleware(CORSMiddleware, allow_origins=["*"])
    star.get("/")(index)
    with TestClient(star) as client:
        r = client.get("/", headers={"origin": "https://any.org"})
        assert r.headers["access-control-allow-origin"] == "*"


def test_gzip_middleware() -> None:
    app = App()
    app.add_middleware(GZipMiddleware, minimum_size=100)

    @app.get("/big")
    async def big(request: Request) -> str:
        return "x" * 1000

    @app.get("/small")
    async def small(request: Request) -> str:
        return "x" * 10

    with TestClient(app) as client:
        r = client.get("/big", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in r.headers["vary"].lower()
        assert r.text == "x" * 1000
        r = client.get("/small", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers
        r = client.get("/big", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in r.headers
        assert r.text == "x" * 1000


def test_zstd_compression_when_available() -> None:
    # API.md puts zstd next to GZipMiddleware without naming the class that offers it:
    # GZipMiddleware stays gzip-only (as in Starlette); CompressionMiddleware negotiates zstd
    # (the zstandard package is a test dependency: a missing one fails here).
    from microasgi.middleware import CompressionMiddleware

    async def big(request: Request) -> str:
        return "x" * 1000

    gzip_only = App()
    gzip_only.add_middleware(GZipMiddleware, minimum_size=100)
    gzip_only.get("/big")(big)
    negotiating = App()
    negotiating.add_middleware(CompressionMiddleware, minimum_size=100)
    negotiating.get("/big")(big)

    with TestClient(gzip_only) as client:
        r = client.get("/big", headers={"accept-encoding": "zstd, gzip"})
        assert r.headers["content-encoding"] == "gzip"
    with TestClient(negotiating) as client:
        r = client.get("/big", headers={"accept-encoding": "zstd"})
        assert r.headers["content-encoding"] == "zstd"
        assert r.text == "x" * 1000


def test_trusted_host_middleware() -> None:
    app = App()
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["example.com", "*.example.org"])

    @app.get("/")
    async def index(request: Request) -> str:
        return "x"

    with TestClient(app) as client:
        assert client.get("/", headers={"host": "example.com"}).status_code == 200
        assert client.get("/", headers={"host": "a.example.org"}).status_code == 200
        assert client.get("/", headers={"host": "evil.com"}).status_code == 400


def test_https_redirect_middleware_uses_307() -> None:
    app = App()
    app.add_middleware(HTTPSRedirectMiddleware)

    @app.post("/p")
    async def p(request: Request) -> str:
        return "x"

    with TestClient(app, follow_redirects=False) as client:
        r = client.post("/p?q=1")
        assert r.status_code == 307
        assert r.headers["location"] == "https://testserver/p?q=1"
    with TestClient(app, base_url="https://testserver") as client:
        assert client.post("/p").text == "x"


def _session_app(**options: Any) -> App:
    app = App()
    app.add_middleware(SessionMiddleware, **options)

    @app.get("/set/{value}")
    async def set_value(request: Request, value: str) -> str:
        request.session["value"] = value
        return "set"

    @app.get("/get")
    async def get_value(request: Request) -> dict[str, Any]:
        return dict(request.session)

    return app


def test_session_middleware_options() -> None:
    app = _session_app(
        secret_key="k", session_cookie="sid", max_age=100, same_site="strict", https_only=True
    )
    with TestClient(app, base_url="https://testserver") as client:
        r = client.get("/set/v1")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("sid=")
        lowered = cookie.lower()
        assert "max-age=100" in lowered
        assert "samesite=strict" in lowered
        assert "secure" in lowered
        assert "httponly" in lowered
        assert client.get("/get").json() == {"value": "v1"}


def test_session_key_rotation() -> None:
    def cookie_from(app: App, path: str, cookie: str | None = None) -> tuple[str, Any]:
        headers = {"cookie": f"session={cookie}"} if cookie else {}
        with TestClient(app) as client:
            r = client.get(path, headers=headers)
        set_cookie = r.headers.get("set-cookie", "")
        value = set_cookie.split(";", 1)[0].split("=", 1)[1] if set_cookie else cookie
        return value, r

    old_value, _ = cookie_from(_session_app(secret_key="old"), "/set/hello")
    rotated = _session_app(secret_key=["new", "old"])
    _, r = cookie_from(rotated, "/get", old_value)
    assert r.json() == {"value": "hello"}  # verified with an older key
    new_value, _ = cookie_from(rotated, "/set/again", old_value)
    _, r = cookie_from(_session_app(secret_key="new"), "/get", new_value)
    assert r.json() == {"value": "again"}  # signed with the first key
    _, r = cookie_from(_session_app(secret_key=["newest"]), "/get", old_value)
    assert r.json() == {}


def test_csrf_middleware_rejects_unsafe_requests_without_a_token() -> None:
    app = App()
    app.add_middleware(CSRFMiddleware, secret_key="k")

    @app.route("/", methods=["GET", "POST"])
    async def index(request: Request) -> str:
        return "x"

    with TestClient(app) as client:
        r = client.get("/")
        assert r.status_code == 200
        token = client.cookies.get("csrftoken")
        assert token
        assert client.post("/").status_code == 403
        assert client.post("/", headers={"x-csrf-token": token}).status_code == 200


def test_request_id_middleware() -> None:
    app = App()
    app.add_middleware(RequestIDMiddleware)

    @app.get("/")
    async def index(request: Request) -> str:
        return "x"

    with TestClient(app) as client:
        first = client.get("/").headers["x-request-id"]
        second = client.get("/").headers["x-request-id"]
        assert first and second and first != second
        r = client.get("/", headers={"x-request-id": "given-id"})
        assert r.headers["x-request-id"] == "given-id"


# --- Lifespan and state ------------------------------------------------------------------


def test_lifespan_state_reaches_request_state() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        events.append("enter")
        yield {"db": "conn", "counter": [0]}
        events.append("exit")

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        request.state.counter[0] += 1
        return {"db": request.state.db, "counter": request.state.counter[0]}

    with TestClient(app) as client:
        assert events == ["enter"]
        assert client.get("/").json() == {"db": "conn", "counter": 1}
        assert client.get("/").json() == {"db": "conn", "counter": 2}
    assert events == ["enter", "exit"]


def test_request_state_changes_do_not_leak_between_requests() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        yield {"shared": "x"}

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        seen = getattr(request.state, "mine", None)
        request.state.mine = "set"
        return {"seen": seen, "shared": request.state.shared}

    with TestClient(app) as client:
        assert client.get("/").json() == {"seen": None, "shared": "x"}
        assert client.get("/").json() == {"seen": None, "shared": "x"}


def test_startup_and_shutdown_hook_order() -> None:
    events: list[str] = []
    app = App()

    @app.on_startup
    async def s1() -> None:
        events.append("s1")

    @app.on_startup
    def s2() -> None:
        events.append("s2")

    @app.on_shutdown
    async def d1() -> None:
        events.append("d1")

    @app.on_shutdown
    def d2() -> None:
        events.append("d2")

    with TestClient(app):
        assert events == ["s1", "s2"]
    assert events == ["s1", "s2", "d2", "d1"]


def test_startup_and_shutdown_hooks_in_the_constructor() -> None:
    events: list[str] = []
    app = App(on_startup=[lambda: events.append("up")], on_shutdown=[lambda: events.append("down")])
    with TestClient(app):
        assert events == ["up"]
    assert events == ["up", "down"]


@pytest.mark.anyio
async def test_failing_startup_reports_startup_failed(anyio_backend: str) -> None:
    async def broken() -> None:
        raise RuntimeError("no database")

    app = App(on_startup=[broken])
    server = _Server({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    with anyio.fail_after(5):
        try:
            await app(scope, server.receive, server.send)
        except RuntimeError:
            pass  # an app may re-raise after reporting the failure
    assert [m["type"] for m in server.sent] == ["lifespan.startup.failed"]
    assert "no database" in server.sent[0]["message"]


def test_failing_startup_refuses_the_test_client() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise RuntimeError("cannot start")
        yield

    app = App(lifespan=lifespan)
    with pytest.raises(Exception, match="cannot start"):
        with TestClient(app):
            pass


# --- Broadcast ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_broadcast_memory_publish_subscribe(anyio_backend: str) -> None:
    broadcast = Broadcast("memory://")
    app = App(lifespan=broadcast.lifespan)
    async with broadcast.lifespan(app):
        async with broadcast.subscribe("room:1") as sub:
            await broadcast.publish("room:1", "hello")
            await broadcast.publish("room:2", "elsewhere")
            await broadcast.publish("room:1", b"\x00bytes")
            with anyio.fail_after(5):
                events = []
                async for event in sub:
                    events.append(event)
                    if len(events) == 2:
                        break
    assert [(e.channel, e.message) for e in events] == [
        ("room:1", "hello"),
        ("room:1", b"\x00bytes"),
    ]
    assert isinstance(events[0].message, str)
    assert isinstance(events[1].message, bytes)


@pytest.mark.anyio
@pytest.mark.parametrize("style", ["lifespan", "install"])
async def test_broadcast_as_app_lifespan_and_plugin(anyio_backend: str, style: str) -> None:
    broadcast = Broadcast("memory://")
    app = App(lifespan=broadcast.lifespan) if style == "lifespan" else App()
    if style == "install":
        app.install(broadcast)

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept()
        async with broadcast.subscribe("chat") as sub:
            await ws.send_text("ready")
            async for event in sub:
                await ws.send_text(event.message)
                break

    @app.post("/say")
    async def say(request: Request) -> None:
        await broadcast.publish("chat", (await request.body()).decode())

    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/ws") as s:
            assert await s.receive_text() == "ready"
            assert (await client.post("/say", content=b"hi")).status_code == 204
            with anyio.fail_after(5):
                assert await s.receive_text() == "hi"


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the redis client is asyncio-only
async def test_broadcast_over_redis(anyio_backend: str, redis_server: Any) -> None:
    publisher, subscriber = Broadcast(redis_server.url), Broadcast(redis_server.url)
    async with publisher.lifespan(App()), subscriber.lifespan(App()):
        async with subscriber.subscribe("room:1") as sub:
            await publisher.publish("room:1", "hello")
            await publisher.publish("room:1", b"\xffbytes")
            with anyio.fail_after(5):
                events = []
                async for event in sub:
                    events.append((event.channel, event.message))
                    if len(events) == 2:
                        break
    assert events == [("room:1", "hello"), ("room:1", b"\xffbytes")]


# --- Testing -----------------------------------------------------------------------------


def test_test_client_is_an_httpx_client() -> None:
    app = App()

    @app.get("/")
    async def index(request: Request) -> str:
        return "no lifespan needed"

    client = TestClient(app)
    assert isinstance(client, httpx.Client)
    assert isinstance(AsyncTestClient(app), httpx.AsyncClient)
    assert client.get("/").text == "no lifespan needed"  # as in Starlette, without `with`
    client.close()


@pytest.mark.anyio
async def test_async_test_client(anyio_backend: str) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        events.append("up")
        yield {"k": "v"}
        events.append("down")

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> dict[str, str]:
        return {"k": request.state.k}

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("async boom")

    @app.websocket("/ws")
    async def ws_handler(ws: WebSocket) -> None:
        await ws.accept(subprotocol="p2", headers={"x-a": "1"})
        await ws.send_json(await ws.receive_json())
        await ws.close()

    async with AsyncTestClient(app) as client:
        assert events == ["up"]
        assert (await client.get("/")).json() == {"k": "v"}
        with pytest.raises(RuntimeError, match="async boom"):
            await client.get("/boom")
        async with client.websocket_connect("/ws", subprotocols=["p1", "p2"]) as s:
            assert s.accepted_subprotocol == "p2"
            assert _lower_headers(s.extra_headers)["x-a"] == "1"
            await s.send_json({"a": 1})
            assert await s.receive_json() == {"a": 1}
    assert events == ["up", "down"]
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        assert (await client.get("/boom")).status_code == 500


# --- Running -----------------------------------------------------------------------------


def _cli_commands() -> list[list[str]]:
    script = shutil.which("microasgi", path=str(Path(sys.executable).parent))
    assert script, "the microasgi console script is installed"
    return [[script], [sys.executable, "-m", "microasgi"]]


@pytest.mark.parametrize("which", [0, 1], ids=["script", "python-m"])
def test_cli_help(which: int) -> None:
    command = _cli_commands()[which]
    top = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    assert "run" in top.stdout
    result = subprocess.run([*command, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--reload", "--workers", "--server"):
        assert option in result.stdout, option
    for server in ("uvicorn", "granian", "hypercorn"):
        assert server in result.stdout, server


@pytest.mark.integration
@pytest.mark.parametrize("server", ["uvicorn", "granian", "hypercorn"])
def test_cli_run_serves_an_app(tmp_path: Path, server: str) -> None:
    (tmp_path / "contract_app.py").write_text(
        "from microasgi import App\n"
        "app = App()\n"
        "@app.get('/')\n"
        "async def index(request):\n"
        "    return {'served': True}\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            *[sys.executable, "-m", "microasgi", "run", "contract_app:app"],
            *["--port", str(port), "--server", server],
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert r.json() == {"served": True}
    finally:
        process.terminate()
        process.wait(timeout=30)
