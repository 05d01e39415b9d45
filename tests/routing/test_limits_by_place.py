"""Router limits reach everything a router serves, in each place it is served."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi import App, Limits, Middleware, Request, Router
from microasgi.limits import limits_for
from microasgi.routing import Host, Mount
from microasgi.testing import TestClient
from microasgi.types import ASGIApp, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]

SMALL = Limits(max_body_size=10)
BODY = b"x" * 100


async def post(request: Request) -> dict[str, Any]:
    limits = limits_for(request.scope)
    return {
        "size": len(await request.body()),
        "max_fields": limits.max_fields,
        "max_body_size": limits.max_body_size,
    }


def _router(**options: Any) -> Router:
    router = Router(**options)
    router.post("/x")(post)
    return router


async def limits_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app that answers the body limit in force for it."""
    body = str(limits_for(scope).max_body_size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class Tag:
    def __init__(self, app: ASGIApp, tag: str) -> None:
        self.app = app
        self.tag = tag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("tags", []).append(self.tag)
        await self.app(scope, receive, send)


def test_included_router_limits_reach_the_routers_it_mounts(
    client_factory: ClientFactory,
) -> None:
    limited = _router(limits=SMALL)
    limited.mount("/m", _router())
    limited.mount("/plain", limits_app)
    app = App()
    app.include_router(limited, prefix="/b")
    with client_factory(app) as client:
        assert client.post("/b/x", content=BODY).status_code == 413
        assert client.post("/b/m/x", content=BODY).status_code == 413
        assert client.post("/b/m/x", content=b"12345").json()["size"] == 5
        assert client.get("/b/plain").text == "10"


def test_include_router_limits_reach_the_routers_it_mounts(client_factory: ClientFactory) -> None:
    outer = Router()
    outer.mount("/m", _router())
    hosts = Router()
    hosts.host("h.example.com", _router())
    app = App()
    app.include_router(outer, prefix="/b", limits=SMALL)
    app.include_router(hosts, limits=SMALL)
    with client_factory(app) as client:
        assert client.post("/b/m/x", content=BODY).status_code == 413
        response = client.post("/x", content=BODY, headers={"host": "h.example.com"})
        assert response.status_code == 413


def test_included_router_limits_reach_its_host_routes(client_factory: ClientFactory) -> None:
    limited = Router(limits=SMALL)
    limited.host("{sub}.example.com", _router())
    app = App()
    app.include_router(limited)
    with client_factory(app, base_url="http://foo.example.com") as client:
        assert client.post("/x", content=BODY).status_code == 413
        assert client.post("/x", content=b"1").json()["size"] == 1


def test_mounted_router_limits_reach_the_routers_it_mounts(client_factory: ClientFactory) -> None:
    limited = Router(limits=SMALL)
    limited.mount("/m", _router())
    limited.host("h.example.com", _router())
    app = App()
    app.mount("/b", limited)
    with client_factory(app) as client:
        assert client.post("/b/m/x", content=BODY).status_code == 413
        response = client.post("/b/x", content=BODY, headers={"host": "h.example.com"})
        assert response.status_code == 413


@pytest.mark.parametrize("open_first", [True, False])
def test_a_router_mounted_in_two_places_gets_the_limits_of_each(
    client_factory: ClientFactory, open_first: bool
) -> None:
    shared = Router(middleware=[Middleware(Tag, tag="shared")])

    @shared.post("/x")
    async def x(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body()), "tags": request.scope.get("tags", [])}

    shared.post("/fields", limits=Limits(max_fields=3))(post)
    limited = Router(limits=SMALL, middleware=[Middleware(Tag, tag="limited")])
    limited.mount("/m", shared)
    app = App()
    if open_first:
        app.mount("/open", shared)
        app.mount("/limited", limited)
    else:
        app.mount("/limited", limited)
        app.mount("/open", shared)
    app.mount("/again", shared)
    with client_factory(app) as client:
        assert client.post("/open/x", content=BODY).json() == {"size": 100, "tags": ["shared"]}
        assert client.post("/limited/m/x", content=BODY).status_code == 413
        assert client.post("/limited/m/x", content=b"1").json() == {
            "size": 1,
            "tags": ["limited", "shared"],
        }
        # A route's own override applies over the limits of each place.
        assert client.post("/open/fields", content=BODY).json() == {
            "size": 100,
            "max_fields": 3,
            "max_body_size": App().limits.max_body_size,
        }
        assert client.post("/limited/m/fields", content=BODY).status_code == 413
        assert client.post("/limited/m/fields", content=b"1").json()["max_fields"] == 3
        assert client.post("/again/fields", content=BODY).json()["size"] == 100


def test_a_router_in_two_apps_gets_the_limits_of_each(client_factory: ClientFactory) -> None:
    shared = Router()
    shared.post("/x", limits=Limits(max_fields=3))(post)
    small_app = App(limits=SMALL)
    small_app.mount("/s", shared)
    large_app = App(max_body_size=1000)
    large_app.mount("/s", shared)
    with client_factory(small_app) as small, client_factory(large_app) as large:
        assert small.post("/s/x", content=BODY).status_code == 413
        assert large.post("/s/x", content=BODY).json() == {
            "size": 100,
            "max_fields": 3,
            "max_body_size": 1000,
        }


def test_a_mounted_app_applies_its_own_limits(client_factory: ClientFactory) -> None:
    inner = App(max_body_size=1000)
    inner.post("/x", limits=Limits(max_fields=3))(post)
    inner.post("/y")(post)
    limited = Router(limits=SMALL)
    limited.mount("/inner", inner)
    limited.host("inner.example.com", inner)
    app = App()
    app.mount("/b", limited)
    with client_factory(app) as client:
        assert client.post("/b/inner/x", content=BODY).json()["max_body_size"] == 1000
        assert client.post("/b/inner/y", content=BODY).json()["max_body_size"] == 1000
        response = client.post("/b/y", content=BODY, headers={"host": "inner.example.com"})
        assert response.json()["max_body_size"] == 1000


def test_limits_set_by_a_middleware_are_the_base_of_route_overrides(
    client_factory: ClientFactory,
) -> None:
    class SetLimits:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope["microasgi.limits"] = Limits(max_body_size=10, max_fields=7)
            await self.app(scope, receive, send)

    app = App(middleware=[Middleware(SetLimits)])
    app.post("/x", limits=Limits(max_fields=3))(post)
    with client_factory(app) as client:
        assert client.post("/x", content=BODY).status_code == 413
        assert client.post("/x", content=b"1").json()["max_fields"] == 3


def test_app_limits_replaced_after_startup_are_honoured(client_factory: ClientFactory) -> None:
    app = App()
    app.post("/x", limits=Limits(max_fields=3))(post)
    with client_factory(app) as client:
        assert client.post("/x", content=BODY).status_code == 200
        app.limits = SMALL
        assert client.post("/x", content=BODY).status_code == 413


def test_a_standalone_router_applies_its_limits_over_the_defaults(
    client_factory: ClientFactory,
) -> None:
    router = _router(limits=Limits(max_fields=3))
    router.mount("/m", _router())
    with client_factory(router) as client:
        assert client.post("/x", content=BODY).json() == {
            "size": 100,
            "max_fields": 3,
            "max_body_size": Limits().max_body_size,
        }
        assert client.post("/m/x", content=BODY).json()["max_fields"] == 3


def test_a_router_mounted_inside_itself_is_prepared(client_factory: ClientFactory) -> None:
    router = _router(limits=SMALL)
    router.mount("/again", router)
    app = App()
    app.mount("/r", router)
    with client_factory(app) as client:
        assert client.post("/r/again/again/x", content=b"1").json()["size"] == 1
        assert client.post("/r/again/x", content=BODY).status_code == 413


def test_mount_and_host_records_carry_limits(client_factory: ClientFactory) -> None:
    app = App()
    app.routes.extend(
        [
            Mount("/m", _router(), limits=SMALL),
            Host("h.example.com", _router(), limits=SMALL),
        ]
    )
    copied = Router()
    copied.add(app.routes[0])
    assert copied.routes[0].limits is SMALL  # type: ignore[attr-defined]
    with client_factory(app) as client:
        assert client.post("/m/x", content=BODY).status_code == 413
        response = client.post("/x", content=BODY, headers={"host": "h.example.com"})
        assert response.status_code == 413
