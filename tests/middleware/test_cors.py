from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi.app import App
from microasgi.middleware import CORSMiddleware, Middleware
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response
from microasgi.testing import TestClient
from microasgi.websockets import WebSocket

ClientFactory = Callable[..., TestClient]

SITE = "https://example.com"


def make_app(**options: Any) -> App:
    app = App(middleware=[Middleware(CORSMiddleware, **options)])

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.post("/items")
    async def create(request: Request) -> Response:
        return PlainTextResponse("created", status_code=201, headers={"x-item": "1"})

    @app.get("/crash")
    async def crash(request: Request) -> str:
        raise RuntimeError("boom")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    return app


def preflight(client: TestClient, origin: str = SITE, method: str = "POST", **headers: str) -> Any:
    return client.options(
        "/items",
        headers={"origin": origin, "access-control-request-method": method, **headers},
    )


def test_simple_request_from_an_allowed_origin(client_factory: ClientFactory) -> None:
    with client_factory(make_app(allow_origins=[SITE])) as client:
        response = client.get("/", headers={"origin": SITE})
        assert response.text == "hello"
        assert response.headers["access-control-allow-origin"] == SITE
        assert response.headers["vary"] == "Origin"
        assert "access-control-allow-credentials" not in response.headers


def test_no_origin_no_cors_headers_but_vary(client_factory: ClientFactory) -> None:
    # NOTE: the answer depends on the Origin, so a cache must not hand this response, which
    # has no CORS headers, to a cross-origin request (Fetch standard, CORS and HTTP caches).
    with client_factory(make_app(allow_origins=[SITE])) as client:
        response = client.get("/")
        assert "access-control-allow-origin" not in response.headers
        assert response.headers["vary"] == "Origin"


def test_no_origin_and_any_origin_no_vary(client_factory: ClientFactory) -> None:
    with client_factory(make_app(allow_origins=["*"])) as client:
        response = client.get("/")
        assert "access-control-allow-origin" not in response.headers
        assert "vary" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        "https://exampleXcom",
        "https://example.com.evil",
        "https://evil.example.com",
        "http://example.com",
        "https://example.com:8443",
        "https://EXAMPLE.com",
        "null",
        "https://example.com/",
    ],
)
def test_bypass_attempts_get_no_cors_headers(client_factory: ClientFactory, origin: str) -> None:
    with client_factory(make_app(allow_origins=[SITE], allow_credentials=True)) as client:
        response = client.get("/", headers={"origin": origin})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
        assert response.headers["vary"] == "Origin"
        assert preflight(client, origin).status_code == 400


def test_origins_are_strings_not_patterns(client_factory: ClientFactory) -> None:
    # NOTE: "." in an origin would match any character if it were used as a regex.
    with client_factory(make_app(allow_origins=["https://a.b.example"])) as client:
        response = client.get("/", headers={"origin": "https://aXbXexample"})
        assert "access-control-allow-origin" not in response.headers


def test_origins_are_written_as_browsers_send_them(client_factory: ClientFactory) -> None:
    origins = ["HTTPS://Shop.Example", "https://admin.example:443", "http://localhost:80"]
    with client_factory(make_app(allow_origins=origins)) as client:
        for origin in ("https://shop.example", "https://admin.example", "http://localhost"):
            response = client.get("/", headers={"origin": origin})
            assert response.headers["access-control-allow-origin"] == origin
        for origin in ("https://admin.example:443", "http://localhost:8080"):
            response = client.get("/", headers={"origin": origin})
            assert "access-control-allow-origin" not in response.headers


def test_regex_origins_match_in_full(client_factory: ClientFactory) -> None:
    app = make_app(allow_origin_regex=r"https://[a-z]+\.example\.com")
    with client_factory(app) as client:
        response = client.get("/", headers={"origin": "https://shop.example.com"})
        assert response.headers["access-control-allow-origin"] == "https://shop.example.com"
        for origin in ("https://shop.example.com.evil", "https://x.shop.example.com"):
            response = client.get("/", headers={"origin": origin})
            assert "access-control-allow-origin" not in response.headers


def test_credentials_echo_the_exact_origin_never_a_star(client_factory: ClientFactory) -> None:
    app = make_app(allow_origins=["*"], allow_credentials=True, expose_headers=["x-item"])
    with client_factory(app) as client:
        response = client.post("/items", headers={"origin": "https://any.site"})
        assert response.status_code == 201
        assert response.headers["access-control-allow-origin"] == "https://any.site"
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-expose-headers"] == "x-item"
        assert response.headers["vary"] == "Origin"


def test_any_origin_without_credentials_is_a_star(client_factory: ClientFactory) -> None:
    with client_factory(make_app(allow_origins=["*"])) as client:
        response = client.get("/", headers={"origin": "https://any.site"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "vary" not in response.headers
        response = preflight(client, "https://any.site", "GET")
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        # NOTE: the same for every origin, but not for every method and header asked for.
        assert response.headers["vary"] == (
            "Access-Control-Request-Method, Access-Control-Request-Headers"
        )


def test_preflight_allowed(client_factory: ClientFactory) -> None:
    app = make_app(
        allow_origins=[SITE],
        allow_methods=["GET", "POST"],
        allow_headers=["X-Token"],
        allow_credentials=True,
        max_age=300,
    )
    with client_factory(app) as client:
        response = preflight(client, **{"access-control-request-headers": "X-Token, Accept"})
        assert (response.status_code, response.text) == (200, "OK")
        assert response.headers["access-control-allow-origin"] == SITE
        assert response.headers["access-control-allow-methods"] == "GET, POST"
        assert response.headers["access-control-max-age"] == "300"
        assert response.headers["access-control-allow-credentials"] == "true"
        allowed = response.headers["access-control-allow-headers"]
        assert {h.strip() for h in allowed.split(",")} >= {"x-token", "accept", "content-type"}
        assert response.headers["vary"] == (
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        )


def test_preflight_refusals_say_why(client_factory: ClientFactory) -> None:
    app = make_app(allow_origins=[SITE], allow_methods=["GET"])
    with client_factory(app) as client:
        response = preflight(
            client, "https://evil.site", "DELETE", **{"access-control-request-headers": "x-secret"}
        )
        assert response.status_code == 400
        assert response.json() == {"detail": "Disallowed CORS origin, method, headers"}
        assert "access-control-allow-origin" not in response.headers
        response = preflight(client, SITE, "GET", **{"access-control-request-headers": "x-no"})
        assert response.json() == {"detail": "Disallowed CORS headers"}
        assert response.headers["vary"] == (
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        )


def test_preflight_with_any_method_and_header(client_factory: ClientFactory) -> None:
    app = make_app(allow_origins=[SITE], allow_methods=["*"], allow_headers=["*"])
    with client_factory(app) as client:
        response = preflight(client, SITE, "PATCH", **{"access-control-request-headers": "x-a"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-headers"] == "x-a"
        assert response.headers["access-control-allow-methods"] == "PATCH"
        assert preflight(client, SITE, "PATCH").status_code == 200


def test_requested_headers_on_several_lines(client_factory: ClientFactory) -> None:
    def asking(client: TestClient, *lines: str) -> Any:
        headers = [("origin", SITE), ("access-control-request-method", "GET")]
        headers += [("access-control-request-headers", line) for line in lines]
        return client.options("/items", headers=headers)

    with client_factory(make_app(allow_origins=[SITE], allow_headers=["x-a"])) as client:
        assert asking(client, "x-a", "x-a, content-type").status_code == 200
        assert asking(client, "x-evil", "x-a").status_code == 400
    with client_factory(make_app(allow_origins=[SITE], allow_headers=["*"])) as client:
        response = asking(client, "x-a", "x-b")
        assert response.headers["access-control-allow-headers"] == "x-a, x-b"


@pytest.mark.parametrize("credentials", [False, True])
@pytest.mark.parametrize("method", ["PROPFIND", "QUERY", "patch", "GET"])
def test_any_method_echoes_the_method_asked_for(
    client_factory: ClientFactory, method: str, credentials: bool
) -> None:
    # NOTE: a browser sends the request only if its method is in the list it gets back;
    # a fixed list of the usual methods would block PROPFIND whatever "*" promised.
    app = make_app(allow_origins=[SITE], allow_methods=["*"], allow_credentials=credentials)

    @app.route("/dav", methods=["PROPFIND", "QUERY", "GET", "patch"])
    async def dav(request: Request) -> str:
        return "dav"

    with client_factory(app) as client:
        headers = {"origin": SITE, "access-control-request-method": method}
        response = client.options("/dav", headers=headers)
        assert (response.status_code, response.text) == (200, "OK")
        assert response.headers["access-control-allow-methods"] == method
        assert response.headers["access-control-allow-origin"] == SITE
        assert "Access-Control-Request-Method" in response.headers["vary"]
        response = client.request(method, "/dav", headers={"origin": SITE})
        assert response.text == "dav"
        assert response.headers["access-control-allow-origin"] == SITE


@pytest.mark.parametrize("method", ["GET POST", "GET,POST", "", "G\x7fT"])
def test_any_method_refuses_what_is_not_a_method(
    client_factory: ClientFactory, method: str
) -> None:
    app = make_app(allow_origins=[SITE], allow_methods=["*"])
    with client_factory(app) as client:
        response = preflight(client, SITE, method)
        assert response.status_code == 400
        assert response.json() == {"detail": "Disallowed CORS method"}
        assert "access-control-allow-methods" not in response.headers


def test_an_options_request_that_is_not_a_preflight(client_factory: ClientFactory) -> None:
    with client_factory(make_app(allow_origins=[SITE])) as client:
        response = client.options("/", headers={"origin": SITE})
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == SITE


def test_cors_headers_on_error_responses(client_factory: ClientFactory) -> None:
    app = make_app(allow_origins=[SITE])

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("nothing", status_code=404)

    with client_factory(app, raise_server_exceptions=False) as client:
        response = client.get("/crash", headers={"origin": SITE})
        assert response.status_code == 500
        assert response.headers["access-control-allow-origin"] == SITE
        response = client.get("/missing", headers={"origin": SITE})
        assert (response.status_code, response.text) == (404, "nothing")
        assert response.headers["access-control-allow-origin"] == SITE
        response = client.delete("/", headers={"origin": SITE})
        assert response.status_code == 405
        assert response.headers["access-control-allow-origin"] == SITE


def test_existing_cors_headers_are_replaced(client_factory: ClientFactory) -> None:
    app = App(middleware=[Middleware(CORSMiddleware, allow_origins=[SITE])])

    @app.get("/")
    async def index(request: Request) -> Response:
        headers = {"access-control-allow-origin": "*", "vary": "Accept-Encoding"}
        return PlainTextResponse("x", headers=headers)

    with client_factory(app) as client:
        response = client.get("/", headers={"origin": SITE})
        assert response.headers.get_list("access-control-allow-origin") == [SITE]
        assert response.headers["vary"] == "Accept-Encoding, Origin"


def test_preflights_reach_a_mounted_app_with_its_own_rules(client_factory: ClientFactory) -> None:
    app = App()
    app.mount("/api", make_app(allow_origins=[SITE], allow_methods=["POST"]))
    with client_factory(app) as client:
        response = client.options(
            "/api/items", headers={"origin": SITE, "access-control-request-method": "POST"}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == SITE
        assert client.post("/api/items", headers={"origin": SITE}).status_code == 201


def test_websockets_and_lifespan_pass_through(client_factory: ClientFactory) -> None:
    with client_factory(make_app(allow_origins=[SITE])) as client:
        with client.websocket_connect("/ws", headers={"origin": "https://evil.site"}):
            pass


@pytest.mark.parametrize(
    "origin", ["https://example.com/", "example.com", "https://*.example.com", "https://"]
)
def test_invalid_origins_are_refused_at_setup(origin: str) -> None:
    with pytest.raises(ValueError, match="allow_origin_regex"):
        CORSMiddleware(PlainTextResponse("x"), allow_origins=[origin])


def test_settings_split_from_a_string_are_stripped(client_factory: ClientFactory) -> None:
    options = {
        name: value.split(",")
        for name, value in {
            "allow_origins": f"https://other.example, {SITE}",
            "allow_methods": "GET, POST",
            "allow_headers": "x-a, X-B",
            "expose_headers": "x-item, x-more",
        }.items()
    }
    with client_factory(make_app(**options)) as client:
        response = preflight(client, SITE, "POST", **{"access-control-request-headers": "x-b"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-methods"] == "GET, POST"
        response = client.post("/items", headers={"origin": SITE})
        assert response.headers["access-control-expose-headers"] == "x-item, x-more"


@pytest.mark.parametrize("option", ["allow_origins", "allow_methods", "allow_headers"])
def test_a_string_where_a_list_belongs_is_refused(option: str) -> None:
    with pytest.raises(TypeError, match=f"{option} takes a list"):
        CORSMiddleware(PlainTextResponse("x"), **{option: "GET"})


def test_a_lone_star_string_means_any(client_factory: ClientFactory) -> None:
    app = make_app(allow_origins="*", allow_methods="*", allow_headers="*")
    with client_factory(app) as client:
        response = preflight(client, SITE, "PUT", **{"access-control-request-headers": "x-a"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-allow-headers"] == "x-a"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("allow_methods", "GET POST"),
        ("allow_headers", "x-a, x-b"),
        ("expose_headers", "x-a\r\nset-cookie: a=b"),
        ("allow_headers", ""),
    ],
)
def test_entries_that_are_not_names_are_refused(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {option} entry"):
        CORSMiddleware(PlainTextResponse("x"), **{option: [value]})


# -- CORS given to a route or a router ------------------------------------------------------


OTHER = "https://other.example"


def routed_app() -> App:
    """CORS on routes and on an included router, none on the app."""
    from microasgi.routing import Router

    seen: list[dict[str, Any]] = []

    class RecordPathParams:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(dict(scope.get("path_params") or {}))
            await self.app(scope, receive, send)

    app = App()
    app.state.seen = seen
    route_cors = Middleware(CORSMiddleware, allow_origins=[SITE], allow_headers=["x-token"])

    @app.get("/items/{item_id:int}", middleware=[Middleware(RecordPathParams), route_cors])
    async def read(request: Request, item_id: int) -> str:
        return f"item {item_id}"

    # NOTE: the same path, other rules: a preflight gets the rules of the method it asks for.
    other_cors = Middleware(CORSMiddleware, allow_origins=[OTHER], allow_methods=["DELETE"])

    @app.delete("/items/{item_id:int}", middleware=[other_cors])
    async def remove(request: Request, item_id: int) -> str:
        return "removed"

    @app.get("/plain")
    async def plain(request: Request) -> str:
        return "plain"

    @app.websocket("/plain")
    async def plain_ws(websocket: WebSocket) -> None:
        await websocket.close()  # pragma: no cover

    api = Router(
        middleware=[Middleware(CORSMiddleware, allow_origins=[SITE], allow_methods=["PUT"])]
    )

    @api.put("/things/{name}")
    async def put_thing(request: Request, name: str) -> str:
        return f"put {name}"

    app.include_router(api, prefix="/api")
    return app


def ask(client: TestClient, path: str, method: str, origin: str = SITE, **headers: str) -> Any:
    return client.options(
        path, headers={"origin": origin, "access-control-request-method": method, **headers}
    )


def test_a_route_with_cors_answers_its_preflight(client_factory: ClientFactory) -> None:
    app = routed_app()
    with client_factory(app) as client:
        response = ask(client, "/items/7", "GET", **{"access-control-request-headers": "x-token"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == SITE
        assert response.headers["access-control-allow-headers"].endswith(", x-token")
        assert "allow" not in response.headers
        # NOTE: the route's own middleware saw the preflight, with the path parameters.
        assert app.state.seen == [{"item_id": 7}]
        refused = ask(client, "/items/7", "GET", **{"access-control-request-headers": "x-other"})
        assert refused.status_code == 400
        response = client.get("/items/7", headers={"origin": SITE})
        assert response.text == "item 7"
        assert response.headers["access-control-allow-origin"] == SITE
        # NOTE: HEAD is answered by the GET route, so its CORS rules answer for it too
        # (which allow GET alone).
        response = ask(client, "/items/7", "HEAD")
        assert response.status_code == 400
        assert "method" in response.json()["detail"]


def test_a_preflight_gets_the_rules_of_the_method_it_asks_for(
    client_factory: ClientFactory,
) -> None:
    with client_factory(routed_app()) as client:
        response = ask(client, "/items/7", "DELETE", origin=OTHER)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == OTHER
        assert response.headers["access-control-allow-methods"] == "DELETE"
        assert ask(client, "/items/7", "DELETE").status_code == 400


def test_a_router_with_cors_answers_the_preflights_of_its_routes(
    client_factory: ClientFactory,
) -> None:
    with client_factory(routed_app()) as client:
        response = ask(client, "/api/things/box", "PUT")
        assert response.status_code == 200
        assert response.headers["access-control-allow-methods"] == "PUT"
        response = client.put("/api/things/box", headers={"origin": SITE})
        assert response.text == "put box"
        assert response.headers["access-control-allow-origin"] == SITE


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        # a method nothing serves at that path
        ("/items/7", {"access-control-request-method": "PATCH"}),
        ("/api/things/box", {"access-control-request-method": "GET"}),
        # not a preflight
        ("/items/7", {}),
        # a route without middleware
        ("/plain", {"access-control-request-method": "GET"}),
        # the router's name for a WebSocket route, sent by a client
        ("/plain", {"access-control-request-method": "<websocket>"}),
    ],
)
def test_other_options_requests_get_the_automatic_answer(
    client_factory: ClientFactory, path: str, headers: dict[str, str]
) -> None:
    app = routed_app()
    with client_factory(app) as client:
        response = client.options(path, headers={"origin": SITE, **headers})
        assert response.status_code == 204
        assert "access-control-allow-origin" not in response.headers
        assert "OPTIONS" in response.headers["allow"]
        assert app.state.seen == []
