from __future__ import annotations

import gc
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from microasgi import App, Request, WebSocket
from microasgi.exceptions import WebSocketDisconnect
from microasgi.testing import (
    AsyncTestClient,
    AsyncWebSocketTestSession,
    LifespanFailed,
    TestClient,
    WebSocketDenied,
    WebSocketTestSession,
)
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

ClientFactory = Callable[..., TestClient]
E = TypeVar("E", bound=BaseException)


@pytest.fixture
def make_client(client_factory: ClientFactory) -> ClientFactory:
    """A sync TestClient whose event loop runs on the backend under test."""
    return client_factory


def raises_on_block(
    manager: AbstractContextManager[Any], expected: type[E], match: str | None = None
) -> pytest.ExceptionInfo[E]:
    """Enter and leave ``manager`` with an empty block; one of the two must raise."""
    with pytest.raises(expected, match=match) as info, manager:
        pass
    return info


async def respond(send: Send, body: bytes = b"", status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def read_messages(receive: Receive) -> list[Message]:
    messages = [await receive()]
    while messages[-1].get("more_body"):
        messages.append(await receive())
    return messages


def recording_app(scopes: list[Scope]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            return
        await respond(send, b"ok")

    return app


# --- HTTP scope ---------------------------------------------------------------------------


def test_http_scope(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    client = make_client(recording_app(scopes), headers={"X-Default": "d"})
    response = client.get("/caf%C3%A9/a%2Fb?q=1&r=%20", headers={"X-Custom": "Value"})
    assert response.status_code == 200
    assert response.text == "ok"
    (scope,) = scopes
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["root_path"] == ""
    assert scope["client"] == ("testclient", 50000)
    assert scope["server"] == ("testserver", 80)
    assert scope["extensions"] == {"microasgi.testing": {}}
    assert scope["state"] == {}
    headers = scope["headers"]
    assert all(name == name.lower() and isinstance(value, bytes) for name, value in headers)
    assert (b"host", b"testserver") in headers
    assert (b"user-agent", b"testclient") in headers
    assert (b"x-default", b"d") in headers
    assert (b"x-custom", b"Value") in headers


def test_https_base_url_port_and_client(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    client = make_client(
        recording_app(scopes), base_url="https://example.org:8443", client=("10.0.0.1", 1234)
    )
    client.post("/x", cookies=None)
    (scope,) = scopes
    assert scope["scheme"] == "https"
    assert scope["server"] == ("example.org", 8443)
    assert scope["client"] == ("10.0.0.1", 1234)
    assert (b"host", b"example.org:8443") in scope["headers"]
    assert scope["method"] == "POST"


def test_https_default_port_and_no_client(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    client = make_client(
        recording_app(scopes),
        base_url="https://example.org",
        client=None,
        raise_server_exceptions=False,
    )
    client.get("/")
    with client.websocket_connect("/"):
        pass
    assert scopes[0]["server"] == ("example.org", 443)
    assert scopes[0]["client"] is None
    # without raise_server_exceptions the app is not asked to re-raise what it answered
    assert scopes[0]["extensions"] == {}
    assert scopes[1]["extensions"] == {"websocket.http.response": {}}


def test_root_path_is_prefixed_like_a_server(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    make_client(recording_app(scopes), root_path="/api v1").get("/items/a%20b")
    (scope,) = scopes
    assert scope["root_path"] == "/api v1"
    assert scope["path"] == "/api v1/items/a b"
    assert scope["raw_path"] == b"/api%20v1/items/a%20b"


def test_a_path_that_holds_the_root_path_is_kept(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    client = make_client(recording_app(scopes), root_path="/api")
    client.get("/api/items")
    client.get("/api")
    client.get("/apiary")
    assert [(s["path"], s["raw_path"]) for s in scopes] == [
        ("/api/items", b"/api/items"),
        ("/api", b"/api"),
        ("/api/apiary", b"/api/apiary"),
    ]
    app = App()

    @app.get("/hello")
    async def hello(request: Request) -> str:
        return request.url.path

    with make_client(app, root_path="/proxy") as proxied:
        # NOTE: Starlette's client passes both forms; the route sees the same path.
        assert proxied.get("/proxy/hello").text == "/proxy/hello"
        assert proxied.get("/hello").text == "/proxy/hello"


def test_cookies_and_follow_redirects(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/old":
            await send(
                {"type": "http.response.start", "status": 307, "headers": [(b"location", b"/new")]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        cookie = dict(scope["headers"]).get(b"cookie", b"")
        await respond(send, scope["path"].encode() + b" " + cookie)

    client = make_client(app, cookies={"session": "abc"})
    response = client.get("/old")
    assert response.text == "/new session=abc"
    assert response.history[0].status_code == 307
    no_follow = make_client(app, follow_redirects=False)
    assert no_follow.get("/old").status_code == 307


# --- Request bodies -----------------------------------------------------------------------


def body_app(log: list[list[Message]]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = await read_messages(receive)
        log.append(messages)
        await respond(send, b"".join(message["body"] for message in messages))

    return app


def test_request_body_is_streamed_in_64k_chunks(make_client: ClientFactory) -> None:
    log: list[list[Message]] = []
    payload = bytes(range(256)) * 800  # 204800 bytes
    response = make_client(body_app(log)).post("/", content=payload)
    assert response.content == payload
    (messages,) = log
    assert [len(message["body"]) for message in messages] == [65536, 65536, 65536, 8192]
    assert [message["more_body"] for message in messages] == [True, True, True, False]
    assert all(message["type"] == "http.request" for message in messages)


def test_exactly_one_chunk(make_client: ClientFactory) -> None:
    log: list[list[Message]] = []
    make_client(body_app(log)).post("/", content=b"x" * 65536)
    assert [(len(m["body"]), m["more_body"]) for m in log[0]] == [(65536, False)]


def test_empty_body_is_one_message(make_client: ClientFactory) -> None:
    log: list[list[Message]] = []
    make_client(body_app(log)).get("/")
    assert log == [[{"type": "http.request", "body": b"", "more_body": False}]]


def test_generator_body_and_files(make_client: ClientFactory) -> None:
    log: list[list[Message]] = []
    client = make_client(body_app(log))
    response = client.post("/", content=iter([b"a", b"", b"b" * 70000]))
    assert response.content == b"a" + b"b" * 70000
    assert [len(m["body"]) for m in log[0]] == [65536, 4465]
    response = client.post("/", files={"upload": ("a.txt", b"hello")})
    assert b"hello" in response.content


def test_disconnect_waits_for_the_response(make_client: ClientFactory) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_messages(receive)

        async def listen() -> None:
            events.append((await receive())["type"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            for _ in range(10):
                await anyio.sleep(0)
            events.append("final body")
            await send({"type": "http.response.body", "body": b"b"})
        events.append(str(await receive()))

    response = make_client(app).get("/")
    assert response.content == b"ab"
    assert events == ["final body", "http.disconnect", "{'type': 'http.disconnect'}"]


# --- Responses ----------------------------------------------------------------------------


def test_chunked_response(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain"), (b"x-multi", b"1"), (b"x-multi", b"2")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        for part in (b"one ", b"two ", b""):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"three"})

    response = make_client(app).get("/")
    assert response.status_code == 201
    assert response.text == "one two three"
    assert response.headers.get_list("x-multi") == ["1", "2"]
    assert response.reason_phrase == "Created"


def test_head_response_has_no_body(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b"body")

    response = make_client(app).head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_gzip_response_is_decoded(make_client: ClientFactory) -> None:
    import gzip

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-encoding", b"gzip")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": gzip.compress(b"squeezed")})

    assert make_client(app).get("/").content == b"squeezed"


# --- Errors -------------------------------------------------------------------------------


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("boom")


async def failing_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("late boom")


async def silent_app(scope: Scope, receive: Receive, send: Send) -> None:
    pass


async def unfinished_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"half", "more_body": True})


def test_exception_is_raised_in_the_test(make_client: ClientFactory) -> None:
    with pytest.raises(ValueError, match="boom"):
        make_client(failing_app).get("/")
    with pytest.raises(ValueError, match="late boom"):
        make_client(failing_after_start).get("/")


def test_exception_becomes_500(make_client: ClientFactory) -> None:
    response = make_client(failing_app, raise_server_exceptions=False).get("/")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_exception_after_start_keeps_the_started_response(make_client: ClientFactory) -> None:
    response = make_client(failing_after_start, raise_server_exceptions=False).get("/")
    assert response.status_code == 200
    assert response.content == b"partial"


def test_app_without_response(make_client: ClientFactory) -> None:
    with pytest.raises(RuntimeError, match=re.escape('without sending "http.response.start"')):
        make_client(silent_app).get("/")
    assert make_client(silent_app, raise_server_exceptions=False).get("/").status_code == 500


def test_app_without_complete_response(make_client: ClientFactory) -> None:
    with pytest.raises(RuntimeError, match="without completing the response"):
        make_client(unfinished_app).get("/")
    response = make_client(unfinished_app, raise_server_exceptions=False).get("/")
    assert (response.status_code, response.content) == (200, b"half")


@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        ([{"type": "http.response.body", "body": b"x"}], RuntimeError, "http.response.start"),
        (
            [{"type": "http.response.start", "status": 200}] * 2,
            RuntimeError,
            "already started",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body", "body": b""},
                {"type": "http.response.body", "body": b""},
            ],
            RuntimeError,
            "the response is complete",
        ),
        ([{"type": "http.response.trailers"}], RuntimeError, "Unexpected ASGI message"),
        ([{"type": "http.response.start", "status": "200"}], TypeError, "must be an int"),
        (
            [{"type": "http.response.start", "status": 200, "headers": [("a", "b")]}],
            TypeError,
            r"\(bytes, bytes\)",
        ),
    ],
)
def test_protocol_violations(
    make_client: ClientFactory, messages: list[Message], error: type[Exception], match: str
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)

    with pytest.raises(error, match=match):
        make_client(app).get("/")


# --- Lifespan -----------------------------------------------------------------------------


def lifespan_app(events: list[str], *, fail: str | None = None) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert scope["asgi"]["version"] == "3.0"
            message = await receive()
            assert message["type"] == "lifespan.startup"
            events.append("startup")
            if fail == "startup":
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                raise ConnectionError("no database")
            scope["state"]["db"] = "connection"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            events.append("shutdown")
            if fail == "shutdown":
                await send({"type": "lifespan.shutdown.failed", "message": "stuck"})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = scope["state"]
        events.append(f"request db={state.get('db')} extra={state.get('extra')}")
        state["extra"] = "set by request"
        await respond(send, b"ok")

    return app


def test_lifespan_runs_and_shares_state(make_client: ClientFactory) -> None:
    events: list[str] = []
    client = make_client(lifespan_app(events))
    portals = [client.portal]
    with client:
        assert events == ["startup"]
        portals.append(client.portal)
        client.get("/")
        client.get("/")
    portals.append(client.portal)
    assert portals[0] is None
    assert portals[1] is not None
    assert portals[2] is None
    assert events == [
        "startup",
        "request db=connection extra=None",
        "request db=connection extra=None",
        "shutdown",
    ]


def test_requests_outside_the_block_have_no_lifespan_state(make_client: ClientFactory) -> None:
    events: list[str] = []
    client = make_client(lifespan_app(events))
    client.get("/")
    assert events == ["request db=None extra=None"]


def test_one_event_loop_for_the_whole_block(make_client: ClientFactory) -> None:
    threads: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] != "lifespan"
        threads.append(threading.get_ident())
        await respond(send)

    with make_client(app) as client:
        client.get("/")
        client.get("/")
        assert client.portal is not None
        assert client.portal.call(threading.get_ident) == threads[0]
    assert threads[0] == threads[1] != threading.get_ident()


def test_lifespan_startup_failed(make_client: ClientFactory) -> None:
    events: list[str] = []
    client = make_client(lifespan_app(events, fail="startup"))
    with pytest.raises(LifespanFailed, match="startup failed: no database") as info, client:
        pytest.fail("the block must not run")  # pragma: no cover
    assert info.value.phase == "startup"
    assert info.value.message == "no database"
    assert isinstance(info.value.__cause__, ConnectionError)
    assert events == ["startup"]
    assert client.portal is None  # not running, and free to be entered again


def test_lifespan_shutdown_failed(make_client: ClientFactory) -> None:
    events: list[str] = []
    client = make_client(lifespan_app(events, fail="shutdown"))
    info = raises_on_block(client, LifespanFailed, match="shutdown failed: stuck")
    assert info.value.phase == "shutdown"
    assert info.value.__cause__ is None
    assert events == ["startup", "shutdown"]


def test_failed_without_message() -> None:
    assert str(LifespanFailed("startup", "")) == "Lifespan startup failed."


@pytest.mark.parametrize("raises", [True, False])
def test_lifespan_unsupported(make_client: ClientFactory, raises: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if raises:
                raise AssertionError("only http")
            return
        await respond(send, b"fine")

    with make_client(app) as client:
        assert client.get("/").text == "fine"


def test_lifespan_exception_after_startup_raises_on_exit(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        raise KeyError("crashed while serving")

    raises_on_block(make_client(app), KeyError, match="crashed while serving")
    client = make_client(app, raise_server_exceptions=False)
    info = raises_on_block(client, LifespanFailed, match="the app raised KeyError")
    assert isinstance(info.value.__cause__, KeyError)


def test_lifespan_protocol_error(make_client: ClientFactory) -> None:
    async def wrong_reply(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    raises_on_block(
        make_client(wrong_reply),
        RuntimeError,
        match=re.escape('Expected ASGI message "lifespan.startup.complete"'),
    )

    async def unprompted(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.startup.complete"})

    raises_on_block(
        make_client(unprompted), RuntimeError, match="no lifespan event awaits an answer"
    )


def test_lifespan_returns_without_answering(make_client: ClientFactory) -> None:
    async def swallowed(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "lifespan.bogus"})
        except RuntimeError:
            return

    raises_on_block(
        make_client(swallowed),
        LifespanFailed,
        match=re.escape('without answering "lifespan.startup"'),
    )


def test_lifespan_shutdown_edge_cases(make_client: ClientFactory) -> None:
    async def leaves_early(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})

    with make_client(leaves_early):
        pass

    async def lingers(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        await anyio.sleep_forever()

    with make_client(lingers):
        pass

    async def raises_after_complete(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        raise OSError("cleanup failed")

    raises_on_block(make_client(raises_after_complete), OSError, match="cleanup failed")


def test_lifespan_shutdown_runs_when_the_block_fails(make_client: ClientFactory) -> None:
    events: list[str] = []
    with pytest.raises(ZeroDivisionError), make_client(lifespan_app(events)):
        1 / 0  # noqa: B018
    assert events == ["startup", "shutdown"]


def test_bad_backend_leaves_the_client_stopped() -> None:
    client = TestClient(silent_app, backend="no-such-backend")
    with pytest.raises(LookupError), client:
        pass  # pragma: no cover
    assert client.portal is None
    assert not client.is_closed


# --- WebSockets ---------------------------------------------------------------------------


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept with the first offered subprotocol and echo every message back."""
    assert (await receive())["type"] == "websocket.connect"
    subprotocols = scope["subprotocols"]
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": subprotocols[0] if subprotocols else None,
            "headers": [(b"x-accepted", b"yes"), (b"set-cookie", b"a=b")],
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked to"})
            return
        reply: Message = {"type": "websocket.send"}
        if message.get("text") is not None:
            reply["text"] = message["text"]
        else:
            reply["bytes"] = message["bytes"]
        await send(reply)


def test_websocket_scope(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    client = make_client(recording_app(scopes), base_url="https://example.org", cookies={"c": "1"})
    session = client.websocket_connect(
        "/ws/a%20b?x=1", subprotocols=["chat", "json"], headers={"X-Token": "t"}
    )
    assert isinstance(session, WebSocketTestSession)
    with session as ws:
        assert ws.scope is scopes[0]
    (scope,) = scopes
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "wss"
    assert scope["path"] == "/ws/a b"
    assert scope["raw_path"] == b"/ws/a%20b"
    assert scope["query_string"] == b"x=1"
    assert scope["root_path"] == ""
    assert scope["server"] == ("example.org", 443)
    assert scope["client"] == ("testclient", 50000)
    assert scope["subprotocols"] == ["chat", "json"]
    assert scope["extensions"] == {"websocket.http.response": {}, "microasgi.testing": {}}
    assert scope["state"] == {}
    assert "method" not in scope
    headers = dict(scope["headers"])
    assert headers[b"host"] == b"example.org"
    assert headers[b"upgrade"] == b"websocket"
    assert headers[b"connection"] == b"upgrade"
    assert headers[b"sec-websocket-version"] == b"13"
    assert len(headers[b"sec-websocket-key"]) == 24
    assert headers[b"sec-websocket-protocol"] == b"chat, json"
    assert headers[b"x-token"] == b"t"
    assert headers[b"cookie"] == b"c=1"


def test_websocket_url_with_ws_scheme(make_client: ClientFactory) -> None:
    scopes: list[Scope] = []
    with make_client(recording_app(scopes)).websocket_connect("ws://other:8000/ws"):
        pass
    assert scopes[0]["scheme"] == "ws"
    assert scopes[0]["server"] == ("other", 8000)
    assert scopes[0]["subprotocols"] == []


def test_websocket_gets_lifespan_state(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["greeting"] = "hello"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["state"]["greeting"]})
        await receive()

    with make_client(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hello"


def test_websocket_accept_subprotocol_and_headers(make_client: ClientFactory) -> None:
    with make_client(echo_app).websocket_connect("/", subprotocols=["v2", "v1"]) as ws:
        assert ws.accepted_subprotocol == "v2"
        assert ws.extra_headers == [(b"x-accepted", b"yes"), (b"set-cookie", b"a=b")]
    with make_client(echo_app).websocket_connect("/") as ws:
        assert ws.accepted_subprotocol is None


def test_websocket_messages(make_client: ClientFactory) -> None:
    with make_client(echo_app).websocket_connect("/") as ws:
        ws.send_text("héllo")
        assert ws.receive_text() == "héllo"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_bytes() == b"\x00\x01"
        ws.send_json({"a": [1, "é"]})
        assert ws.receive_text() == '{"a":[1,"é"]}'
        ws.send_json({"b": 2}, mode="binary")
        assert ws.receive_bytes() == b'{"b":2}'
        ws.send_json({"c": 3})
        assert ws.receive_json() == {"c": 3}
        ws.send_json([4], mode="binary")
        assert ws.receive_json(mode="binary") == [4]
        ws.send({"type": "websocket.receive", "text": "raw"})
        assert ws.receive() == {"type": "websocket.send", "text": "raw"}


def test_websocket_wrong_message_kind(make_client: ClientFactory) -> None:
    with make_client(echo_app).websocket_connect("/") as ws:
        ws.send_bytes(b"x")
        with pytest.raises(TypeError, match="app sent bytes"):
            ws.receive_text()
        ws.send_text("x")
        with pytest.raises(TypeError, match="app sent text"):
            ws.receive_bytes()
        with pytest.raises(ValueError, match="mode must be"):
            ws.receive_json(mode="yaml")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="mode must be"):
            ws.send_json({}, mode="xml")  # type: ignore[arg-type]


def test_websocket_close_before_accept(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4003, "reason": "go away"})
        assert await receive() == {
            "type": "websocket.disconnect",
            "code": 4003,
            "reason": "go away",
        }

    with pytest.raises(WebSocketDisconnect) as info, make_client(app).websocket_connect("/"):
        pytest.fail("must not open")  # pragma: no cover
    assert (info.value.code, info.value.reason) == (4003, "go away")


def test_websocket_close_before_accept_default_code(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    with pytest.raises(WebSocketDisconnect) as info, make_client(app).websocket_connect("/"):
        pass  # pragma: no cover
    assert (info.value.code, info.value.reason) == (1000, "")


async def denying_app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
    await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": b'{"detail":', "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b'"who?"}'})
    assert (await receive())["type"] == "websocket.disconnect"


def test_websocket_denial_response(make_client: ClientFactory) -> None:
    info = raises_on_block(make_client(denying_app).websocket_connect("/"), WebSocketDenied)
    denied = info.value
    assert denied.status_code == 401
    assert isinstance(denied.headers, httpx.Headers)
    assert denied.headers["WWW-Authenticate"] == "Bearer"
    assert denied.content == b'{"detail":"who?"}'
    assert denied.text == '{"detail":"who?"}'
    assert denied.json() == {"detail": "who?"}
    assert str(denied) == "The app refused the WebSocket connection with HTTP 401."


def test_websocket_unfinished_denial(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403})
        await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})

    raises_on_block(
        make_client(app).websocket_connect("/"),
        RuntimeError,
        match="without completing its WebSocket denial",
    )
    info = raises_on_block(
        make_client(app, raise_server_exceptions=False).websocket_connect("/"), WebSocketDenied
    )
    assert (info.value.status_code, info.value.content) == (403, b"no")


def test_websocket_app_returns_without_answer(make_client: ClientFactory) -> None:
    raises_on_block(
        make_client(silent_app).websocket_connect("/"),
        RuntimeError,
        match="without accepting or refusing",
    )
    info = raises_on_block(
        make_client(silent_app, raise_server_exceptions=False).websocket_connect("/"),
        WebSocketDenied,
    )
    assert info.value.status_code == 500


def test_websocket_exception_before_accept(make_client: ClientFactory) -> None:
    raises_on_block(make_client(failing_app).websocket_connect("/"), ValueError, match="boom")
    info = raises_on_block(
        make_client(failing_app, raise_server_exceptions=False).websocket_connect("/"),
        WebSocketDenied,
    )
    assert info.value.status_code == 500


def test_websocket_close_then_raise_before_accept(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        await anyio.sleep(0)
        raise LookupError("after close")

    raises_on_block(make_client(app).websocket_connect("/"), LookupError, match="after close")


def test_websocket_app_closes_after_accept(make_client: ClientFactory) -> None:
    with make_client(echo_app).websocket_connect("/") as ws:
        ws.send_text("close please")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert (info.value.code, info.value.reason) == (4000, "asked to")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
        assert (info.value.code, info.value.reason) == (4000, "asked to")
        ws.send_text("into the void")


def test_websocket_app_returns_after_accept(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    with make_client(app).websocket_connect("/") as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 1000


async def crash_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    message = await receive()
    raise ValueError(f"cannot handle {message.get('text')}")


def test_websocket_exception_after_accept(make_client: ClientFactory) -> None:
    with make_client(crash_after_accept).websocket_connect("/") as ws:
        ws.send_text("this")
        with pytest.raises(ValueError, match="cannot handle this"):
            ws.receive_text()
    # reported once: leaving the block does not raise it again


def test_websocket_exception_is_raised_on_exit(make_client: ClientFactory) -> None:
    session = make_client(crash_after_accept).websocket_connect("/")
    with pytest.raises(ValueError, match="cannot handle that"), session as ws:
        ws.send_text("that")


def test_websocket_exception_is_raised_on_send(make_client: ClientFactory) -> None:
    with make_client(crash_after_accept).websocket_connect("/") as ws:
        ws.send_text("x")
        with pytest.raises(ValueError, match="cannot handle x"):
            for _ in range(500):  # until the app has run and failed
                ws.send_text("more")
                time.sleep(0.002)


def test_websocket_exception_without_raising(make_client: ClientFactory) -> None:
    client = make_client(crash_after_accept, raise_server_exceptions=False)
    with client.websocket_connect("/") as ws:
        ws.send_text("this")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1011
        ws.send_text("dropped")


def test_websocket_exit_disconnects_and_waits(make_client: ClientFactory) -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        received.append(await receive())
        await anyio.sleep(0.01)
        received.append({"type": "app finished"})

    with make_client(app).websocket_connect("/"):
        pass
    assert received == [
        {"type": "websocket.disconnect", "code": 1000, "reason": ""},
        {"type": "app finished"},
    ]


def test_websocket_client_close(make_client: ClientFactory) -> None:
    received: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        received.append(await receive())
        received.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            received.append(type(exc).__mro__[1])
        await send({"type": "websocket.close"})  # the closing handshake is accepted

    with make_client(app).websocket_connect("/") as ws:
        ws.send_text("last words")
        ws.close(4001, "done")
        ws.close()  # closing twice is harmless
        ws.send_text("dropped")
    assert received == [
        {"type": "websocket.receive", "text": "last words"},
        {"type": "websocket.disconnect", "code": 4001, "reason": "done"},
        OSError,
    ]


def test_websocket_send_after_disconnect_ends_the_app(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.send", "text": "nobody listens"})

    with make_client(app).websocket_connect("/"):
        pass  # the app's OSError is what a server would log, not a test failure


def test_websocket_app_blocked_on_a_full_buffer(make_client: ClientFactory) -> None:
    sent: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for number in range(1000):
            await send({"type": "websocket.send", "text": str(number)})
            sent.append(number)

    with make_client(app).websocket_connect("/") as ws:
        assert ws.receive_text() == "0"
    assert 0 < len(sent) < 1000


async def echo_until_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo text messages; a send blocked for 5 s (a deadlock) fails the app and the test."""
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        with anyio.fail_after(5):
            await send({"type": "websocket.send", "text": message["text"]})


def test_websocket_many_sends_before_reading(make_client: ClientFactory) -> None:
    # More than both directions' buffers hold: the test must not block on its own sends
    # while the app waits for the test to read its echoes.
    with make_client(echo_until_disconnect).websocket_connect("/") as ws:
        for number in range(500):
            ws.send_text(str(number))
        assert [ws.receive_text() for _ in range(500)] == [str(n) for n in range(500)]


def test_websocket_sends_to_an_app_that_never_reads(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await anyio.sleep(5)
        raise AssertionError("the test was blocked sending to an app that does not read")

    started = time.monotonic()
    with make_client(app, timeout=0.05).websocket_connect("/") as ws:
        for number in range(500):
            ws.send_text(str(number))
    assert time.monotonic() - started < 4  # the app was cancelled at the end, not awaited


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"type": "websocket.send", "text": "x"}], 'Expected ASGI message "websocket.accept"'),
        (
            [{"type": "websocket.accept"}, {"type": "websocket.accept"}],
            'Expected ASGI message "websocket.send" or "websocket.close"',
        ),
        (
            [{"type": "websocket.accept"}, {"type": "websocket.send", "text": "a", "bytes": b"b"}],
            "exactly one",
        ),
        ([{"type": "websocket.accept"}, {"type": "websocket.send"}], "exactly one"),
        (
            [
                {"type": "websocket.accept"},
                {"type": "websocket.close"},
                {"type": "websocket.close"},
            ],
            "nothing more",
        ),
        ([{"type": "websocket.accept", "headers": [("a", "b")]}], r"\(bytes, bytes\)"),
        (
            [{"type": "websocket.accept"}, {"type": "websocket.close", "reason": "é" * 62}],
            "over 123 bytes",
        ),
    ],
)
def test_websocket_protocol_violations(
    make_client: ClientFactory, messages: list[Message], match: str
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        for message in messages:
            await send(message)

    session = make_client(app).websocket_connect("/")
    with pytest.raises((RuntimeError, TypeError), match=match), session as ws:
        ws.receive()


def test_websocket_session_misuse(make_client: ClientFactory) -> None:
    session = make_client(echo_app).websocket_connect("/")
    with pytest.raises(RuntimeError, match="context manager"):
        session.send_text("x")
    session.__exit__(None, None, None)  # leaving before entering does nothing
    with session:
        pass
    with pytest.raises(RuntimeError, match="entered only once"), session:
        pass  # pragma: no cover


def test_websocket_inside_the_client_block_uses_its_loop(make_client: ClientFactory) -> None:
    threads: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("unsupported")
        threads.append(threading.get_ident())
        await echo_app(scope, receive, send)

    with make_client(app) as client:
        with client.websocket_connect("/") as ws:
            ws.send_text("a")
            assert ws.receive_text() == "a"
        assert client.portal is not None
        assert client.portal.call(threading.get_ident) == threads[0]


# --- Streaming, timeouts and reuse -------------------------------------------------------


async def endless_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Stream numbered lines until cancelled, as an event stream does."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    await send({"type": "http.response.start", "status": 200})
    number = 0
    while True:
        await send({"type": "http.response.body", "body": b"%d\n" % number, "more_body": True})
        number += 1


def test_stream_reads_an_endless_response_as_it_comes(make_client: ClientFactory) -> None:
    client = make_client(endless_app)
    started = time.monotonic()
    with client.stream("GET", "/") as response:
        lines = response.iter_lines()
        assert [next(lines) for _ in range(3)] == ["0", "1", "2"]
    assert time.monotonic() - started < 5
    with client, client.stream("GET", "/") as response:  # inside the block: the same loop
        assert next(response.iter_bytes()) == b"0\n"


def stream_then_lifespan_app(events: list[str]) -> ASGIApp:
    """Stream lines until cancelled; record the cancellation and the lifespan shutdown."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        try:
            await endless_app(scope, receive, send)
        finally:
            events.append("cancelled")

    return app


@pytest.mark.timeout(10)
def test_leaving_the_client_cancels_a_response_left_open(make_client: ClientFactory) -> None:
    events: list[str] = []
    with make_client(stream_then_lifespan_app(events)) as client:
        response = client.send(client.build_request("GET", "/"), stream=True)
        assert next(response.iter_lines()) == "0"
    assert events == ["cancelled", "shutdown"]  # as a server closes connections first
    response.close()  # closing it later does nothing

    with pytest.raises(AssertionError), make_client(endless_app) as client:
        response = client.send(client.build_request("GET", "/"), stream=True)
        raise AssertionError("the test fails with a response open")
    response.close()


def test_closing_the_client_stops_a_response_left_open(make_client: ClientFactory) -> None:
    client = make_client(endless_app)
    threads = threading.active_count()
    client.send(client.build_request("GET", "/"), stream=True)
    assert threading.active_count() == threads + 1  # the response's event loop
    client.close()
    assert threading.active_count() == threads


@pytest.mark.anyio
async def test_leaving_the_async_client_cancels_responses_left_open() -> None:
    events: list[str] = []
    async with AsyncTestClient(stream_then_lifespan_app(events)) as client:
        for _ in range(2):
            await client.send(client.build_request("GET", "/"), stream=True)
    assert events == ["cancelled", "cancelled", "shutdown"]

    events.clear()
    with anyio.move_on_after(0.05) as timeout:  # the test itself is cancelled
        async with AsyncTestClient(stream_then_lifespan_app(events)) as client:
            await client.send(client.build_request("GET", "/"), stream=True)
            await anyio.sleep_forever()
    assert timeout.cancelled_caught
    assert events == ["cancelled", "shutdown"]
    gc.collect()  # a stream left unclosed would warn here


def test_streamed_chunks_arrive_before_the_app_returns(make_client: ClientFactory) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await send({"type": "http.response.body", "body": b"last"})
        events.append("returned")

    with make_client(app).stream("GET", "/") as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"first"
        assert events == []  # the app waits for the test to take the next chunk
        assert list(chunks) == [b"last"]
    assert events == ["returned"]


def test_app_that_never_answers_times_out(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_messages(receive)
        await receive()  # waits for a disconnect that only follows a response

    client = make_client(app, timeout=0.05)
    with pytest.raises(httpx.ReadTimeout, match=r"did not start a response within 0\.05 s"):
        client.get("/")


def test_stalled_body_and_stuck_background_work_time_out(make_client: ClientFactory) -> None:
    async def stalls(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await anyio.sleep_forever()

    async def lingers(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b"done")
        await anyio.sleep_forever()

    with pytest.raises(httpx.ReadTimeout, match="send more of the body"):
        make_client(stalls).get("/", timeout=0.05)
    with pytest.raises(httpx.ReadTimeout, match="background task"):
        make_client(lingers, timeout=0.05).get("/")


def test_client_can_be_entered_again(make_client: ClientFactory) -> None:
    events: list[str] = []
    client = make_client(lifespan_app(events))
    with client:
        assert client.get("/").status_code == 200
    assert client.get("/").status_code == 200  # still usable after the block
    with client:
        with pytest.raises(RuntimeError, match="does not nest"), client:
            pass  # pragma: no cover
    assert [e for e in events if not e.startswith("request")] == ["startup", "shutdown"] * 2
    client.__exit__()  # leaving a client that is not running does nothing
    client.close()
    assert client.is_closed


def test_websocket_handshake_and_receive_time_out(make_client: ClientFactory) -> None:
    async def never_accepts(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass  # pragma: no cover

    session = make_client(never_accepts, timeout=0.05).websocket_connect("/")
    raises_on_block(session, TimeoutError, match=r"accept or refuse the WebSocket within 0\.05 s")
    with make_client(silent, timeout=0.05).websocket_connect("/") as ws:
        with pytest.raises(TimeoutError, match="send a message"):
            ws.receive_text()


def test_websocket_denial_that_stalls_times_out(make_client: ClientFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await anyio.sleep_forever()

    session = make_client(app, timeout=0.05).websocket_connect("/")
    raises_on_block(session, TimeoutError, match="finish its denial response")


def test_websocket_app_that_ignores_the_disconnect_is_cancelled(
    make_client: ClientFactory,
) -> None:
    cancelled: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await anyio.sleep_forever()  # e.g. waits on a pub/sub feed, never on receive
        finally:
            cancelled.append(True)

    with make_client(app, timeout=0.05).websocket_connect("/"):
        pass
    assert cancelled == [True]


# --- AsyncTestClient ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_client_http() -> None:
    scopes: list[Scope] = []
    log: list[list[Message]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("unsupported")
        scopes.append(scope)
        await body_app(log)(scope, receive, send)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * 70000
        yield b"b"

    async with AsyncTestClient(app, headers={"x-h": "1"}) as client:
        response = await client.post("/p?q=1", content=chunks())
        assert response.content == b"a" * 70000 + b"b"
        response = await client.post("/p", json={"k": "v"})
        assert json.loads(response.content) == {"k": "v"}
    assert [(len(m["body"]), m["more_body"]) for m in log[0]] == [(65536, True), (4465, False)]
    assert scopes[0]["path"] == "/p"
    assert scopes[0]["query_string"] == b"q=1"
    assert (b"x-h", b"1") in scopes[0]["headers"]
    assert (b"user-agent", b"testclient") in scopes[0]["headers"]


@pytest.mark.anyio
async def test_async_client_app_reads_part_of_a_streamed_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        await respond(send, str(len(first["body"])).encode())

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"z" * 50000

    client = AsyncTestClient(app)
    response = await client.post("/", content=chunks())
    assert response.text == "65536"
    await client.aclose()


@pytest.mark.anyio
async def test_async_client_body_survives_a_poll_for_the_disconnect() -> None:
    # NOTE: is_disconnected() cancels receive() once it waits: the test's generator, then
    # between two chunks, must not be the one cancelled (the rest of the body was lost).
    from microasgi import App

    app = App()

    @app.post("/")
    async def read(request: Request) -> dict[str, int]:
        assert not await request.is_disconnected()
        return {"size": len(await request.body())}

    closed: list[bool] = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for chunk in (b"ab", b"cd"):
                await anyio.sleep(0.01)
                yield chunk
        finally:
            closed.append(True)

    async with AsyncTestClient(app) as client:
        response = await client.post("/", content=chunks())
    assert response.json() == {"size": 4}
    assert closed == [True]


@pytest.mark.anyio
async def test_async_client_stops_pulling_a_body_the_app_never_reads() -> None:
    # NOTE: the body is pulled in a task beside the app; it must stop when the app ends.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, b"no thanks")

    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            pulled.append(1)
            yield b"z"

    client = AsyncTestClient(app)
    with anyio.fail_after(5):
        response = await client.post("/", content=endless())
    await client.aclose()
    assert response.text == "no thanks"
    assert len(pulled) <= 2


@pytest.mark.anyio
async def test_async_client_lifespan_and_state() -> None:
    events: list[str] = []
    async with AsyncTestClient(lifespan_app(events)) as client:
        assert (await client.get("/")).text == "ok"
        assert (await client.get("/")).text == "ok"
    assert events == [
        "startup",
        "request db=connection extra=None",
        "request db=connection extra=None",
        "shutdown",
    ]


@pytest.mark.anyio
async def test_async_client_lifespan_failure() -> None:
    client = AsyncTestClient(lifespan_app([], fail="startup"))
    with pytest.raises(LifespanFailed, match="no database"):
        async with client:
            pytest.fail("the block must not run")  # pragma: no cover
    assert not client.is_closed


@pytest.mark.anyio
async def test_async_client_errors() -> None:
    with pytest.raises(ValueError, match="boom"):
        await AsyncTestClient(failing_app).get("/")
    response = await AsyncTestClient(failing_app, raise_server_exceptions=False).get("/")
    assert response.status_code == 500


@pytest.mark.anyio
async def test_async_client_lifespan_body_failure_still_shuts_down() -> None:
    events: list[str] = []
    with pytest.raises(ZeroDivisionError):
        async with AsyncTestClient(lifespan_app(events)):
            1 / 0  # noqa: B018
    assert events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_async_client_shutdown_runs_when_the_test_is_cancelled() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        events.append("startup")
        try:
            yield
        finally:
            await anyio.sleep(0)  # cleanup that awaits, as closing a pool does
            events.append("shutdown")

    with anyio.move_on_after(0.05) as timeout:
        async with AsyncTestClient(App(lifespan=lifespan)):
            await anyio.sleep_forever()
    assert timeout.cancelled_caught
    assert events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_async_client_startup_when_the_test_is_cancelled() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def slow_startup(app: App) -> AsyncIterator[None]:
        try:
            await anyio.sleep_forever()
        finally:
            events.append("startup cancelled")
        yield  # pragma: no cover

    with anyio.move_on_after(0.05) as timeout:
        async with AsyncTestClient(App(lifespan=slow_startup)):
            pytest.fail("the block must not run")  # pragma: no cover
    assert timeout.cancelled_caught  # and the caller's cancel scopes are intact
    assert events == ["startup cancelled"]
    await anyio.sleep(0)


@pytest.mark.anyio
async def test_async_websocket_session() -> None:
    async with AsyncTestClient(echo_app) as client:
        session = client.websocket_connect("/", subprotocols=["p"])
        assert isinstance(session, AsyncWebSocketTestSession)
        async with session as ws:
            assert ws.accepted_subprotocol == "p"
            assert ws.extra_headers == [(b"x-accepted", b"yes"), (b"set-cookie", b"a=b")]
            assert ws.scope["type"] == "websocket"
            await ws.send_text("t")
            assert await ws.receive_text() == "t"
            await ws.send_bytes(b"b")
            assert await ws.receive_bytes() == b"b"
            await ws.send_json({"j": 1})
            assert await ws.receive_json() == {"j": 1}
            await ws.send_json({"j": 2}, mode="binary")
            assert await ws.receive_json(mode="binary") == {"j": 2}
            await ws.send({"type": "websocket.receive", "text": "raw"})
            assert await ws.receive() == {"type": "websocket.send", "text": "raw"}
            await ws.send_text("close please")
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
            assert (info.value.code, info.value.reason) == (4000, "asked to")


@pytest.mark.anyio
async def test_async_websocket_refusals() -> None:
    client = AsyncTestClient(denying_app)
    with pytest.raises(WebSocketDenied) as denied:
        async with client.websocket_connect("/"):
            pass  # pragma: no cover
    assert denied.value.json() == {"detail": "who?"}

    async def closing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4004, "reason": "nope"})

    with pytest.raises(WebSocketDisconnect) as closed:
        async with AsyncTestClient(closing).websocket_connect("/"):
            pass  # pragma: no cover
    assert (closed.value.code, closed.value.reason) == (4004, "nope")


@pytest.mark.anyio
async def test_async_websocket_app_exception_and_close() -> None:
    client = AsyncTestClient(crash_after_accept)
    with pytest.raises(ValueError, match="cannot handle boom"):
        async with client.websocket_connect("/") as ws:
            await ws.send_text("boom")
    async with client.websocket_connect("/") as ws:
        await ws.close(1001)
        with pytest.raises(ValueError, match="cannot handle None"):
            await ws.receive()


@pytest.mark.anyio
async def test_async_websocket_many_sends_before_reading() -> None:
    async with AsyncTestClient(echo_until_disconnect).websocket_connect("/") as ws:
        for number in range(500):
            await ws.send_text(str(number))
        assert [await ws.receive_text() for _ in range(500)] == [str(n) for n in range(500)]


@pytest.mark.anyio
async def test_async_websocket_sends_to_an_app_that_never_reads() -> None:
    received: list[Message] = []
    all_sent = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await all_sent.wait()  # the test's messages wait for the app, in order
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message)

    with anyio.fail_after(4):
        async with AsyncTestClient(app).websocket_connect("/") as ws:
            for number in range(500):
                await ws.send_bytes(str(number).encode())
            all_sent.set()
    assert [message["bytes"] for message in received] == [str(n).encode() for n in range(500)]


@pytest.mark.anyio
async def test_async_websocket_session_when_the_test_is_cancelled() -> None:
    events: list[str] = []
    app = App()

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            async for text in ws.iter_text():
                await ws.send_text(text)
        finally:
            await anyio.sleep(0)  # cleanup that awaits
            events.append("echo ended")

    @app.websocket("/slow")
    async def slow(ws: WebSocket) -> None:
        await anyio.sleep(0.2)
        events.append("slow accepts")
        await ws.accept()

    client = AsyncTestClient(app)
    with anyio.move_on_after(0.05) as timeout:
        async with client.websocket_connect("/echo") as ws:
            await ws.send_text("a")
            assert await ws.receive_text() == "a"
            await anyio.sleep_forever()
    assert timeout.cancelled_caught
    assert events == ["echo ended"]  # it got its disconnect, as from a server

    with anyio.move_on_after(0.05) as timeout:
        async with client.websocket_connect("/slow"):
            pytest.fail("the handshake must not complete")  # pragma: no cover
    assert timeout.cancelled_caught  # and the caller's cancel scopes are intact
    assert events == ["echo ended", "slow accepts"]
    await anyio.sleep(0)


@pytest.mark.anyio
async def test_async_websocket_session_misuse() -> None:
    session = AsyncTestClient(echo_app).websocket_connect("/")
    with pytest.raises(RuntimeError, match="context manager"):
        await session.receive()


@pytest.mark.anyio
async def test_async_client_streams_and_can_be_entered_again() -> None:
    client = AsyncTestClient(endless_app)
    async with client.stream("GET", "/") as response:
        lines = response.aiter_lines()
        assert [await lines.__anext__() for _ in range(2)] == ["0", "1"]
    async with client:
        with pytest.raises(RuntimeError, match="does not nest"):
            async with client:
                pass  # pragma: no cover
    await client.__aexit__()  # leaving a client that is not running does nothing

    async def hangs(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    with pytest.raises(httpx.ReadTimeout, match="start a response"):
        await AsyncTestClient(hangs, timeout=0.05).get("/")
