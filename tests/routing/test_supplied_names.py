"""A handler parameter that nothing supplies is refused when the app starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi import App, PlainTextResponse, Request, Router, WebSocket
from microasgi.testing import LifespanFailed, TestClient
from tests.support import run_startup

ClientFactory = Callable[..., TestClient]


def app_with_a_typo() -> App:
    app = App()

    @app.get("/users/{user_id:int}")
    async def get_user(request: Request, user_idd: int) -> dict[str, Any]:
        return {"id": user_idd}

    return app


def test_a_typo_fails_startup_naming_the_handler_route_and_name(
    client_factory: ClientFactory,
) -> None:
    with pytest.raises(LifespanFailed) as info, client_factory(app_with_a_typo()):
        pass
    cause = info.value.__cause__
    assert isinstance(cause, TypeError)
    message = str(cause)
    assert "get_user" in message
    assert "'/users/{user_id:int}'" in message
    assert "'user_idd'" in message


def test_without_a_lifespan_every_request_raises_it(client_factory: ClientFactory) -> None:
    client = client_factory(app_with_a_typo())
    for _ in range(2):
        with pytest.raises(TypeError, match="takes 'user_idd', which no path parameter"):
            client.get("/users/1")
    answering = client_factory(app_with_a_typo(), raise_server_exceptions=False)
    assert answering.get("/users/1").status_code == 500


@pytest.mark.anyio
async def test_the_server_is_told_startup_failed(anyio_backend: str) -> None:
    sent, raised = await run_startup(app_with_a_typo())
    assert isinstance(raised, TypeError)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "'user_idd'" in sent[0]["message"]


def test_a_websocket_handler_is_checked_too(client_factory: ClientFactory) -> None:
    app = App()

    @app.websocket("/rooms/{room}")
    async def chat(websocket: WebSocket, rooom: str) -> None:
        await websocket.accept()

    with pytest.raises(LifespanFailed, match="'rooom'"), client_factory(app):
        pass


def test_names_a_mount_or_host_supplies_are_accepted(client_factory: ClientFactory) -> None:
    orgs = Router()

    @orgs.get("/users/{user_id:int}")
    async def org_user(request: Request, org: str, user_id: int) -> dict[str, Any]:
        return {"org": org, "id": user_id}

    tenants = Router()

    @tenants.get("/")
    async def tenant(request: Request, sub: str) -> str:
        return sub

    inner = Router()

    @inner.get("/")
    async def deep(request: Request, org: str, team: str) -> str:
        return f"{org}/{team}"

    outer = Router()
    outer.mount("/teams/{team}", inner)

    app = App()
    app.mount("/orgs/{org}", orgs)
    app.mount("/deep/{org}", outer)
    app.host("{sub}.example.com", tenants)
    with client_factory(app) as client:
        assert client.get("/orgs/acme/users/3").json() == {"org": "acme", "id": 3}
        assert client.get("/deep/acme/teams/red/").text == "acme/red"
        assert client.get("/", headers={"host": "blue.example.com"}).text == "blue"


def test_an_included_router_prefix_supplies_its_names(client_factory: ClientFactory) -> None:
    router = Router()

    @router.get("/users")
    async def users(request: Request, org: str) -> str:
        return org

    app = App()
    app.include_router(router, prefix="/orgs/{org}")
    with client_factory(app) as client:
        assert client.get("/orgs/acme/users").text == "acme"


def test_a_mounted_app_takes_the_mount_names(client_factory: ClientFactory) -> None:
    sub = App()

    @sub.get("/")
    async def index(request: Request, org: str) -> str:
        return org

    app = App()
    app.mount("/orgs/{org}", sub)
    with client_factory(app) as client:
        assert client.get("/orgs/acme/").text == "acme"
    # NOTE: without a lifespan the mounted app is built on its first request, which
    # carries the mount's path_params.
    fresh = App()
    again = App()
    again.get("/")(index)
    fresh.mount("/orgs/{org}", again)
    assert client_factory(fresh).get("/orgs/acme/").text == "acme"


def test_a_mounted_app_missing_a_name_fails_the_parent_startup(
    client_factory: ClientFactory,
) -> None:
    sub = App()

    @sub.get("/")
    async def index(request: Request, orgg: str) -> str:
        return orgg

    app = App()
    app.mount("/orgs/{org}", sub)
    with pytest.raises(LifespanFailed, match="'orgg'"), client_factory(app):
        pass


def test_a_router_served_where_a_name_is_missing_is_refused(
    client_factory: ClientFactory,
) -> None:
    router = Router()

    @router.get("/")
    async def index(request: Request, org: str) -> str:
        return org

    app = App()
    app.mount("/orgs/{org}", router)
    app.mount("/all", router)
    with pytest.raises(LifespanFailed, match="'org'"), client_factory(app):
        pass


def test_defaults_kwargs_and_the_connection_need_nothing(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/default")
    async def default(request: Request, org: str = "none") -> str:
        return org

    @app.get("/kwargs")
    async def kwargs(request: Request, **params: Any) -> dict[str, Any]:
        return params

    @app.get("/items/{item_id}")
    async def item(item_id: str, req: Request) -> str:
        return f"{item_id} {req.method}"

    router = Router()
    router.mount("/again", router)  # NOTE: mounted inside itself: the check still ends
    app.mount("/loop", router)

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        response = PlainTextResponse(scope["path_params"]["org"])
        await response(scope, receive, send)

    app.mount("/plain/{org}", plain)  # NOTE: an ASGI app with no routes to check
    with client_factory(app) as client:
        assert client.get("/plain/acme/x").text == "acme"
        assert client.get("/default").text == "none"
        assert client.get("/kwargs").json() == {}
        assert client.get("/items/a").text == "a GET"


def test_a_router_served_on_its_own_is_not_checked(client_factory: ClientFactory) -> None:
    # NOTE: a router written to be mounted under "/orgs/{org}" can be tested alone.
    router = Router()

    @router.get("/health")
    async def health(request: Request) -> str:
        return "ok"

    @router.get("/users")
    async def users(request: Request, org: str) -> str:
        return org

    client = client_factory(router, raise_server_exceptions=False)
    assert client.get("/health").text == "ok"
    assert client.get("/users").status_code == 500
    app = App()
    app.mount("/orgs/{org}", router)
    with client_factory(app) as client:
        assert client.get("/orgs/acme/users").text == "acme"
