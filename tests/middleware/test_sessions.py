from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from microasgi.app import App
from microasgi.middleware import Middleware, SessionMiddleware
from microasgi.middleware.sessions import b64decode, b64encode, sign, signing_keys
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse
from microasgi.testing import TestClient
from microasgi.websockets import WebSocket

ClientFactory = Callable[..., TestClient]


def make_app(**options: Any) -> App:
    options.setdefault("secret_key", "s3cret")
    app = App(middleware=[Middleware(SessionMiddleware, **options)])

    @app.get("/")
    async def read(request: Request) -> dict[str, Any]:
        return {"session": request.session}

    @app.post("/set/{key}/{value}")
    async def write(request: Request, key: str, value: str) -> dict[str, Any]:
        request.session[key] = value
        return {"session": request.session}

    @app.post("/nested")
    async def nested(request: Request) -> str:
        request.session.setdefault("cart", []).append(len(request.session.get("cart", [])))
        return "ok"

    @app.post("/clear")
    async def clear(request: Request) -> str:
        request.session.clear()
        return "cleared"

    @app.post("/bad")
    async def bad(request: Request) -> str:
        request.session["when"] = object()
        return "never"

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(websocket.session)
        await websocket.close()

    return app


def set_cookie_headers(response: Any) -> list[str]:
    return list(response.headers.get_list("set-cookie"))


def test_a_session_round_trip(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client:
        assert client.get("/").json() == {"session": {}}
        response = client.post("/set/user/ann")
        assert response.json() == {"session": {"user": "ann"}}
        (header,) = set_cookie_headers(response)
        assert header.startswith("session=")
        assert "; Path=/; Max-Age=1209600; HttpOnly; SameSite=Lax" in header
        assert "Secure" not in header
        assert client.get("/").json() == {"session": {"user": "ann"}}


def test_the_session_cookie_in_any_of_several_cookie_headers(
    client_factory: ClientFactory,
) -> None:
    with client_factory(make_app()) as client:
        cookie = client.post("/set/user/ann").cookies["session"]
        client.cookies.clear()
        for headers in (
            [("cookie", f"session={cookie}"), ("cookie", "theme=dark")],
            [("cookie", "theme=dark"), ("cookie", f"session={cookie}")],
        ):
            response = client.get("/", headers=headers)
            assert response.json() == {"session": {"user": "ann"}}


def test_a_session_cookie_among_others_of_the_same_name(client_factory: ClientFactory) -> None:
    # NOTE: an app on the parent domain with the same cookie name: the browser sends both.
    foreign = forge(b'{"user":"eve"}', int(time.time()), key="their key")
    with client_factory(make_app()) as client:
        cookie = client.post("/set/user/ann").cookies["session"]
        client.cookies.clear()
        for header in (
            f"session={cookie}; session={foreign}",
            f"session=garbage; theme=dark; session={cookie}",
        ):
            response = client.get("/", headers={"cookie": header})
            assert response.json() == {"session": {"user": "ann"}}
            assert set_cookie_headers(response) == []
        many = "; ".join(["session=x"] * 20 + [f"session={cookie}"])
        assert client.get("/", headers={"cookie": many}).json() == {"session": {}}


def test_set_cookie_only_when_the_session_changed(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client:
        assert set_cookie_headers(client.get("/")) == []
        client.post("/set/a/1")
        assert set_cookie_headers(client.get("/")) == []
        assert set_cookie_headers(client.post("/set/a/1")) == []
        assert len(set_cookie_headers(client.post("/set/a/2"))) == 1
        assert len(set_cookie_headers(client.post("/nested"))) == 1
        assert len(set_cookie_headers(client.post("/nested"))) == 1
        assert client.get("/").json()["session"]["cart"] == [0, 1]


def test_clearing_deletes_the_cookie(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client:
        assert set_cookie_headers(client.post("/clear")) == []
        client.post("/set/a/1")
        (header,) = set_cookie_headers(client.post("/clear"))
        assert header.startswith("session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970")
        assert "session" not in client.cookies
        assert client.get("/").json() == {"session": {}}


def forge(payload: bytes, timestamp: int, key: str = "s3cret", name: str = "session") -> str:
    encoded = b64encode(payload)
    signature = sign(signing_keys(key, b"microasgi.sessions")[0], f"{name}.{encoded}.{timestamp}")
    return f"{encoded}.{timestamp}.{signature}"


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "a.b.c",
        "a.1.",
        ".1.x",
        forge(b'{"user":"ann"}', int(time.time()))[:-2] + "AA",
        forge(b'{"user":"ann"}', int(time.time()), key="other key"),
        forge(b'{"user":"ann"}', int(time.time()), name="other"),
        forge(b'{"user":"ann"}', int(time.time()) - 15 * 24 * 3600),
        forge(b'["not", "a", "dict"]', int(time.time())),
        forge(b"{not json", int(time.time())),
        forge(b'{"user":"ann"}', int(time.time())).replace(".", ".9", 1),
        "x" * 10_000,
        "\xe9.1.x",
        "\xe9.1.\xe9",
    ],
)
def test_bad_cookies_give_an_empty_session(client_factory: ClientFactory, cookie: str) -> None:
    with client_factory(make_app()) as client:
        response = client.get("/", headers={"cookie": f"session={cookie}".encode("latin-1")})
        assert response.status_code == 200
        assert response.json() == {"session": {}}


def test_a_tampered_payload_is_refused(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client:
        client.post("/set/role/user")
        payload, timestamp, signature = client.cookies["session"].split(".")
        session = base64.urlsafe_b64decode(payload + "==").replace(b"user", b"root")
        tampered = f"{b64encode(session)}.{timestamp}.{signature}"
        client.cookies.clear()
        client.cookies.set("session", tampered)
        assert client.get("/").json() == {"session": {}}


def test_a_forged_cookie_with_the_right_key_is_accepted(client_factory: ClientFactory) -> None:
    cookie = forge(b'{"user":"ann"}', int(time.time()))
    with client_factory(make_app(), cookies={"session": cookie}) as client:
        assert client.get("/").json() == {"session": {"user": "ann"}}


def test_key_rotation(client_factory: ClientFactory) -> None:
    old_cookie = forge(b'{"user":"ann"}', int(time.time()), key="old")
    app = make_app(secret_key=["new", "old"])
    with client_factory(app) as client:
        # NOTE: for the test server's host, as the cookie the response replaces.
        client.cookies.set("session", old_cookie, domain="testserver.local")
        assert client.get("/").json() == {"session": {"user": "ann"}}
        client.post("/set/user/bob")
        assert len(client.cookies.jar) == 1
    # NOTE: what is signed now verifies with the newest key alone.
    with client_factory(make_app(secret_key="new"), cookies=client.cookies) as fresh:
        assert fresh.get("/").json() == {"session": {"user": "bob"}}
    with client_factory(make_app(secret_key="old"), cookies=client.cookies) as stale:
        assert stale.get("/").json() == {"session": {}}


def cookie_parts(header: str) -> tuple[bytes, int]:
    """The JSON payload and the signing time of a Set-Cookie header for the session."""
    payload, timestamp, _ = header.split(";")[0].split("=", 1)[1].split(".")
    return b64decode(payload), int(timestamp)


def test_an_unchanged_session_is_signed_again_after_a_minute(client_factory: ClientFactory) -> None:
    recent = forge(b'{"user":"ann"}', int(time.time()) - 30)
    with client_factory(make_app(), cookies={"session": recent}) as client:
        response = client.get("/")
        assert response.json() == {"session": {"user": "ann"}}
        assert set_cookie_headers(response) == []
    # NOTE: 13 days old of 14: read now, it is good for 14 days more.
    old = forge(b'{"user":"ann"}', int(time.time()) - 13 * 24 * 3600)
    with client_factory(make_app()) as client:
        # NOTE: for the test server's host, as the cookie the response replaces.
        client.cookies.set("session", old, domain="testserver.local")
        (header,) = set_cookie_headers(client.get("/"))
        payload, signed_at = cookie_parts(header)
        assert payload == b'{"user":"ann"}'
        assert abs(signed_at - time.time()) < 5
        assert "Max-Age=1209600" in header
        assert client.get("/").json() == {"session": {"user": "ann"}}
        assert set_cookie_headers(client.get("/")) == []


def test_a_response_a_shared_cache_may_keep_is_not_given_the_session_to_sign_again(
    client_factory: ClientFactory,
) -> None:
    app = make_app()

    @app.get("/public")
    async def public(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"Cache-Control": "public, max-age=60"})

    @app.get("/shared")
    async def shared(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"Cache-Control": "private, S-MaxAge=60"})

    @app.get("/private")
    async def private(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"Cache-Control": "no-cache"})

    @app.post("/public/set")
    async def public_set(request: Request) -> PlainTextResponse:
        request.session["user"] = "bob"
        return PlainTextResponse("set", headers={"Cache-Control": "public"})

    old = forge(b'{"user":"ann"}', int(time.time()) - 3600)
    with client_factory(app, cookies={"session": old}) as client:
        assert set_cookie_headers(client.get("/public")) == []
        assert set_cookie_headers(client.get("/shared")) == []
        assert len(set_cookie_headers(client.get("/private"))) == 1
        # NOTE: a change is still sent: that is the handler's own doing.
        assert len(set_cookie_headers(client.post("/public/set"))) == 1


def test_a_session_signed_with_an_older_key_is_signed_with_the_newest(
    client_factory: ClientFactory,
) -> None:
    for max_age in (14 * 24 * 3600, None):
        cookie = forge(b'{"user":"ann"}', int(time.time()), key="old")
        app = make_app(secret_key=["new", "old"], max_age=max_age)
        with client_factory(app, cookies={"session": cookie}) as client:
            (header,) = set_cookie_headers(client.get("/"))
        renewed = header.split(";")[0].split("=", 1)[1]
        with client_factory(make_app(secret_key="new"), cookies={"session": renewed}) as client:
            assert client.get("/").json() == {"session": {"user": "ann"}}


def test_a_browser_session_is_not_signed_again_for_its_age(client_factory: ClientFactory) -> None:
    cookie = forge(b'{"user":"ann"}', int(time.time()) - 365 * 24 * 3600)
    with client_factory(make_app(max_age=None), cookies={"session": cookie}) as client:
        response = client.get("/")
        assert response.json() == {"session": {"user": "ann"}}
        assert set_cookie_headers(response) == []


def test_a_session_due_to_be_signed_again_and_emptied_is_deleted(
    client_factory: ClientFactory,
) -> None:
    old = forge(b'{"user":"ann"}', int(time.time()) - 3600)
    with client_factory(make_app(), cookies={"session": old}) as client:
        (header,) = set_cookie_headers(client.post("/clear"))
        assert header.startswith("session=; ")
        assert "Max-Age=0" in header


def test_max_age_none_is_a_browser_session(client_factory: ClientFactory) -> None:
    cookie = forge(b'{"user":"ann"}', 1)
    with client_factory(make_app(max_age=None), cookies={"session": cookie}) as client:
        assert client.get("/").json() == {"session": {"user": "ann"}}
        (header,) = set_cookie_headers(client.post("/set/a/b"))
        assert "Max-Age" not in header


def test_cookie_attributes(client_factory: ClientFactory) -> None:
    app = make_app(
        session_cookie="__Host-sid",
        same_site="none",
        https_only=True,
        http_only=False,
        path="/",
        max_age=60,
    )
    with client_factory(app, base_url="https://testserver") as client:
        (header,) = set_cookie_headers(client.post("/set/a/1"))
        assert header.startswith("__Host-sid=")
        assert header.endswith("; Path=/; Max-Age=60; SameSite=None; Secure")
        assert client.get("/").json() == {"session": {"a": "1"}}
    app = make_app(domain="example.com", path="/app", same_site="strict")
    with client_factory(app) as client:
        (header,) = set_cookie_headers(client.post("/set/a/1"))
        assert (
            "; Path=/app; Domain=example.com; Max-Age=1209600; HttpOnly; SameSite=Strict" in header
        )
        value = header[len("session=") :].split(";")[0]
        (header,) = set_cookie_headers(
            client.post("/clear", headers={"cookie": f"session={value}"})
        )
        assert "Domain=example.com" in header


def test_many_malformed_cookies_and_nameless_ones(client_factory: ClientFactory) -> None:
    good = forge(b'{"user":"ann"}', int(time.time()), name="__Host-sid")
    header = "; ".join(["x", "=", "a=b=c", "=__Host-sid=forged"] * 5_000 + [f"__Host-sid={good}"])
    app = make_app(session_cookie="__Host-sid", https_only=True)
    with client_factory(app, base_url="https://testserver") as client:
        response = client.get("/", headers={"cookie": header})
        assert response.json() == {"session": {"user": "ann"}}
        response = client.get("/", headers={"cookie": "=__Host-sid=" + good})
        assert response.json() == {"session": {}}


def test_websockets_read_the_session(client_factory: ClientFactory) -> None:
    cookie = forge(b'{"user":"ann"}', int(time.time()))
    with client_factory(make_app(), cookies={"session": cookie}) as client:
        with client.websocket_connect("/ws") as session:
            assert session.receive_json() == {"user": "ann"}


def test_request_session_without_the_middleware(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/")
    async def read(request: Request) -> str:
        return str(request.session)

    with client_factory(app) as client, pytest.raises(RuntimeError, match="SessionMiddleware"):
        client.get("/")


def test_data_that_is_not_json(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client, pytest.raises(TypeError, match="JSON data"):
        client.post("/bad")


def test_json_data_the_standard_library_writes(client_factory: ClientFactory) -> None:
    app = App(middleware=[Middleware(SessionMiddleware, secret_key="s3cret")])

    @app.post("/")
    async def write(request: Request) -> str:
        request.session.update(cart={7: 2}, big=2**70, client=request.client)
        return "ok"

    @app.get("/")
    async def read(request: Request) -> dict[str, Any]:
        return request.session

    with client_factory(app) as client:
        assert client.post("/").status_code == 200
        assert client.get("/").json() == {
            "cart": {"7": 2},
            "big": 2**70,
            "client": ["testclient", 50000],
        }


def test_a_session_too_large_for_a_cookie_is_logged(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with client_factory(make_app()) as client, caplog.at_level(logging.WARNING, "microasgi"):
        client.post("/set/big/" + "x" * 5000)
    assert "past the 4096 that browsers keep" in caplog.text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secret_key": ""}, "secret_key"),
        ({"secret_key": []}, "secret_key"),
        ({"session_cookie": "bad name"}, "session_cookie"),
        ({"same_site": "sometimes"}, "same_site"),
        ({"same_site": "none"}, "https_only=True"),
        ({"path": "/; Domain=evil.com"}, "path"),
        ({"domain": "a b"}, "domain"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": -60}, "max_age"),
        ({"session_cookie": "__Secure-s"}, "https_only=True"),
        ({"session_cookie": "__Host-s"}, "https_only=True"),
        ({"session_cookie": "__Host-s", "https_only": True, "path": "/app"}, "path='/'"),
        ({"session_cookie": "__host-s", "https_only": True, "domain": "a.example"}, "domain"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    options.setdefault("secret_key", "k")
    with pytest.raises(ValueError, match=message):
        SessionMiddleware(PlainTextResponse("x"), **options)


def test_base64_helpers() -> None:
    assert b64decode(b64encode(b"\xff\x00data")) == b"\xff\x00data"
    with pytest.raises(ValueError, match="malformed"):
        b64decode("a")
    assert signing_keys(b"bytes key", b"p") == signing_keys("bytes key", b"p")


def test_cookie_prefixes_with_the_attributes_they_need(client_factory: ClientFactory) -> None:
    # NOTE: browsers drop a __Host- cookie without Secure and Path=/ or with a Domain, and
    # a __Secure- one without Secure: such options are refused above, these pass.
    for name in ("__Host-session", "__Secure-session"):
        app = make_app(session_cookie=name, https_only=True)
        with client_factory(app, base_url="https://testserver") as client:
            header = client.post("/set/a/1").headers["set-cookie"]
            assert header.startswith(f"{name}=") and "; Secure" in header
            assert client.get("/").json() == {"session": {"a": "1"}}
