from __future__ import annotations

import gc
import inspect
import logging
import re
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from microasgi import websockets
from microasgi._endpoint import plan_handler
from microasgi._errors import ExceptionHandlers
from microasgi.app import App
from microasgi.exceptions import HTTPException, WebSocketDisconnect, WebSocketException
from microasgi.limits import Limits
from microasgi.middleware import Middleware
from microasgi.responses import JSONResponse
from microasgi.routing import Router
from microasgi.testing import AsyncTestClient, TestClient, WebSocketDenied
from microasgi.types import Message, Receive, Scope, Send
from microasgi.websockets import (
    WebSocket,
    WebSocketState,
    build_websocket_endpoint,
    websocket_not_found,
)

DENIAL = {"websocket.http.response": {}}


def make_scope(
    *,
    extensions: dict[str, Any] | None = None,
    limits: Limits | None = None,
    **extra: Any,
) -> Scope:
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"room=1&room=2",
        "headers": [(b"host", b"testserver"), (b"cookie", b"sid=abc")],
        "subprotocols": ["chat", "superchat"],
        "extensions": DENIAL if extensions is None else extensions,
    }
    if limits is not None:
        scope["microasgi.limits"] = limits
    scope.update(extra)
    return scope


class Server:
    """An ASGI server stand-in: scripted incoming messages, a record of what the app sent.

    A number in the script is a pause (seconds) before the next message; once the script
    runs out, ``receive`` waits forever (a silent client). ``fail_send`` lists the message
    types whose send raises the OSError a server raises once the client is gone ("*": all).
    """

    def __init__(self, *incoming: Message | float, fail_send: tuple[str, ...] = ()) -> None:
        self.incoming: list[Message | float] = [{"type": "websocket.connect"}, *incoming]
        self.sent: list[Message] = []
        self.fail_send = fail_send

    async def receive(self) -> Message:
        while self.incoming:
            item = self.incoming.pop(0)
            if isinstance(item, (int, float)):
                await anyio.sleep(item)
                continue
            return item
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        if "*" in self.fail_send or message["type"] in self.fail_send:
            raise ConnectionResetError("client gone")
        self.sent.append(message)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def text(data: str) -> Message:
    return {"type": "websocket.receive", "text": data}


def binary(data: bytes) -> Message:
    return {"type": "websocket.receive", "bytes": data}


def disconnect(code: int = 1000, reason: str = "") -> Message:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


def connect(server: Server, **scope_options: Any) -> WebSocket:
    return WebSocket(make_scope(**scope_options), server.receive, server.send)


CLOSE_1000 = {"type": "websocket.close", "code": 1000, "reason": ""}


@pytest.fixture(params=["generator", "iterator"])
def message_iteration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the test with each way iter_*() can iterate; each Python takes one of the two."""
    iterate = {
        "generator": websockets._generated_messages,
        "iterator": websockets._MessageIterator,
    }[request.param]
    monkeypatch.setattr(websockets, "_iterate_messages", iterate)


# -- the connection --------------------------------------------------------------------


def test_websocket_needs_a_websocket_scope() -> None:
    with pytest.raises(ValueError, match='needs a "websocket" scope'):
        WebSocket({"type": "http"}, Server().receive, Server().send)


@pytest.mark.anyio
async def test_connection_properties(anyio_backend: str) -> None:
    ws = connect(Server(), path_params={"room": "lobby"})
    assert ws.subprotocols == ["chat", "superchat"]
    assert ws.headers["host"] == "testserver"
    assert ws.query_params.getlist("room") == ["1", "2"]
    assert ws.path_params == {"room": "lobby"}
    assert ws.cookies == {"sid": "abc"}
    assert ws.client is not None and ws.client.host == "127.0.0.1"
    assert str(ws.url) == "ws://testserver/ws?room=1&room=2"
    assert ws.client_state is WebSocketState.CONNECTING
    assert ws.application_state is WebSocketState.CONNECTING


@pytest.mark.anyio
async def test_no_subprotocols_offered(anyio_backend: str) -> None:
    scope = make_scope()
    del scope["subprotocols"]
    assert WebSocket(scope, Server().receive, Server().send).subprotocols == []


@pytest.mark.anyio
async def test_accept_takes_the_connect_message_and_sends_accept(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    assert server.sent == [{"type": "websocket.accept", "subprotocol": None}]
    assert ws.client_state is WebSocketState.CONNECTED
    assert ws.application_state is WebSocketState.CONNECTED


@pytest.mark.anyio
async def test_receive_returns_the_connect_message_first(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    assert await ws.receive() == {"type": "websocket.connect"}
    await ws.accept()  # the connect message is not awaited twice
    assert server.types() == ["websocket.accept"]


@pytest.mark.parametrize(
    "headers",
    [
        {"x-token": "abc", "Set-Cookie": "a=1"},
        [("x-token", "abc"), ("Set-Cookie", "a=1")],
        [(b"x-token", b"abc"), (b"Set-Cookie", b"a=1")],
        {b"x-token": b"abc", b"set-cookie": b"a=1"},
    ],
)
@pytest.mark.anyio
async def test_accept_with_subprotocol_and_headers(anyio_backend: str, headers: Any) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept(subprotocol="chat", headers=headers)
    assert server.sent == [
        {
            "type": "websocket.accept",
            "subprotocol": "chat",
            "headers": [(b"x-token", b"abc"), (b"set-cookie", b"a=1")],
        }
    ]


@pytest.mark.anyio
async def test_accept_with_a_subprotocol_the_client_did_not_offer(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    with pytest.raises(ValueError, match=r"subprotocol 'nope': the client offered \['chat', "):
        await ws.accept(subprotocol="nope")
    assert server.sent == []
    assert ws.application_state is WebSocketState.CONNECTING
    await ws.accept(subprotocol="superchat")
    assert server.sent == [{"type": "websocket.accept", "subprotocol": "superchat"}]


@pytest.mark.parametrize(
    "headers",
    [{"x": "a\r\nset-cookie: s=1"}, {"x\n": "a"}, [(b"x", b"a\x00")], {"": "a"}],
)
@pytest.mark.anyio
async def test_accept_refuses_unsafe_headers(anyio_backend: str, headers: Any) -> None:
    server = Server()
    with pytest.raises(ValueError, match="Invalid header"):
        await connect(server).accept(headers=headers)
    assert server.sent == []


@pytest.mark.anyio
async def test_accept_when_the_client_left_during_the_handshake(anyio_backend: str) -> None:
    server = Server()
    server.incoming = [disconnect(1006)]
    ws = connect(server)
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.accept()
    assert info.value.code == 1006
    assert server.sent == []
    assert ws.client_state is WebSocketState.DISCONNECTED
    assert ws.application_state is WebSocketState.DISCONNECTED


# -- the state machine -----------------------------------------------------------------


@pytest.mark.anyio
async def test_unexpected_message_during_handshake(anyio_backend: str) -> None:
    server = Server()
    server.incoming = [{"type": "http.request"}]
    with pytest.raises(
        RuntimeError,
        match=re.escape("Expected ASGI message \"websocket.connect\", but got 'http.request'"),
    ):
        await connect(server).receive()


@pytest.mark.anyio
async def test_unexpected_message_after_accept(anyio_backend: str) -> None:
    server = Server({"type": "websocket.connect"})
    ws = connect(server)
    await ws.accept()
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            'Expected ASGI message "websocket.receive" or "websocket.disconnect", '
            "but got 'websocket.connect'"
        ),
    ):
        await ws.receive()


@pytest.mark.anyio
async def test_receive_text_before_accept(anyio_backend: str) -> None:
    ws = connect(Server(text("hi")))
    with pytest.raises(
        RuntimeError, match=re.escape("got 'websocket.connect': call await ws.accept")
    ):
        await ws.receive_text()
    # the connect message was taken; the next receive still needs accept first
    with pytest.raises(
        RuntimeError, match=re.escape('Expected "websocket.accept" to be sent before')
    ):
        await ws.receive_text()


@pytest.mark.anyio
async def test_receive_after_disconnect(anyio_backend: str) -> None:
    ws = connect(Server(disconnect()))
    await ws.accept()
    with pytest.raises(WebSocketDisconnect):
        await ws.receive_text()
    assert ws.client_state is WebSocketState.DISCONNECTED
    with pytest.raises(
        RuntimeError, match=re.escape('"websocket.disconnect" was already received')
    ):
        await ws.receive()


@pytest.mark.anyio
async def test_send_before_accept(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            'Expected ASGI message "websocket.accept", "websocket.close" or '
            "\"websocket.http.response.start\", but got 'websocket.send': call await ws.accept"
        ),
    ):
        await ws.send_text("hi")
    with pytest.raises(RuntimeError, match=re.escape("but got 'websocket.send'")):
        await ws.send_bytes(b"hi")
    assert server.sent == []


@pytest.mark.anyio
async def test_accept_twice(anyio_backend: str) -> None:
    ws = connect(Server())
    await ws.accept()
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            'Expected ASGI message "websocket.send" or "websocket.close", but got '
            "'websocket.accept': accept() was already called"
        ),
    ):
        await ws.accept()


@pytest.mark.anyio
async def test_denial_after_accept_via_send(anyio_backend: str) -> None:
    ws = connect(Server())
    await ws.accept()
    with pytest.raises(RuntimeError, match="a denial response must be sent before accept"):
        await ws.send({"type": "websocket.http.response.start", "status": 403, "headers": []})


@pytest.mark.anyio
async def test_send_after_close(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    await ws.close(4000, "bye")
    assert server.sent[-1] == {"type": "websocket.close", "code": 4000, "reason": "bye"}
    assert ws.application_state is WebSocketState.DISCONNECTED
    with pytest.raises(
        RuntimeError, match=re.escape('Cannot send "websocket.send": the application')
    ):
        await ws.send_text("late")
    with pytest.raises(RuntimeError, match=re.escape('Cannot send "websocket.send"')):
        await ws.send_bytes(b"late")


@pytest.mark.anyio
async def test_close_twice_sends_one_close(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    await ws.close()
    await ws.close(1011)
    assert server.types() == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_close_after_the_client_left_sends_nothing(
    anyio_backend: str, message_iteration: None
) -> None:
    server = Server(disconnect(1001))
    ws = connect(server)
    await ws.accept()
    assert [m async for m in ws.iter_text()] == []
    await ws.close()
    assert server.types() == ["websocket.accept"]
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        ("a" * 123, "a" * 123),
        ("a" * 124, "a" * 123),
        ("€" * 41, "€" * 41),  # 123 bytes
        ("€" * 42, "€" * 41),
        ("a" + "€" * 41, "a" + "€" * 40),  # never half a character
        ("short", "short"),
    ],
)
async def test_close_reason_fits_a_close_frame(anyio_backend: str, reason: str, sent: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    await ws.close(4000, reason)
    assert server.sent[-1] == {"type": "websocket.close", "code": 4000, "reason": sent}


@pytest.mark.anyio
async def test_close_before_accept(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.close(4003, "nope")
    assert server.sent == [{"type": "websocket.close", "code": 4003, "reason": "nope"}]
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
@pytest.mark.parametrize("accepted", [False, True])
async def test_close_reason_none_is_empty(anyio_backend: str, accepted: bool) -> None:
    server = Server()
    ws = connect(server)
    if accepted:
        await ws.accept()
    await ws.close(4000, reason=None)
    assert server.sent[-1] == {"type": "websocket.close", "code": 4000, "reason": ""}
    assert ws.application_state is WebSocketState.DISCONNECTED


def test_close_reason_none_through_the_test_client(client_factory: Callable[..., Any]) -> None:
    app = App()

    @app.websocket("/before")
    async def before(ws: WebSocket) -> None:
        await ws.close(4001, reason=None)

    @app.websocket("/after")
    async def after(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4002, reason=None)

    with client_factory(app) as client:
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/before"):
                pass  # pragma: no cover
        assert (refused.value.code, refused.value.reason) == (4001, "")
        with client.websocket_connect("/after") as session:
            assert session.receive() == {"type": "websocket.close", "code": 4002, "reason": ""}


@pytest.mark.anyio
@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 5000, 0, -1, True, "1000", 1000.0])
async def test_invalid_close_code_is_a_value_error(anyio_backend: str, code: Any) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    with pytest.raises(ValueError, match=re.escape(f"Invalid WebSocket close code {code!r}")):
        await ws.close(code)
    assert server.types() == ["websocket.accept"]
    assert ws.application_state is WebSocketState.CONNECTED  # still open: close it properly
    await ws.close(4999)
    assert server.sent[-1] == {"type": "websocket.close", "code": 4999, "reason": ""}


@pytest.mark.anyio
@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1014, 2999, 3000, 4999])
async def test_valid_close_codes(anyio_backend: str, code: int) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    await ws.close(code)
    assert server.sent[-1] == {"type": "websocket.close", "code": code, "reason": ""}


def test_invalid_close_code_from_a_websocket_exception_closes_1011() -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(1005, "reserved")

    with TestClient(app, raise_server_exceptions=False) as client:
        with client.websocket_connect("/ws") as session:
            with pytest.raises(WebSocketDisconnect) as info:
                session.receive_text()
    assert info.value.code == 1011


@pytest.mark.anyio
async def test_receive_after_the_application_closed(anyio_backend: str) -> None:
    server = Server(text("x" * 100), disconnect(1000))
    ws = connect(server, limits=Limits(max_message_size=10))
    await ws.accept()
    await ws.close()
    # the server may still deliver what was in flight, then the disconnect; no limit applies
    assert (await ws.receive())["text"] == "x" * 100
    assert (await ws.receive())["type"] == "websocket.disconnect"
    assert ws.client_state is WebSocketState.DISCONNECTED
    assert server.types() == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_send_to_a_client_that_left(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    server.fail_send = ("*",)
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.send_text("hello")
    assert info.value.code == 1006
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
async def test_send_after_the_disconnect_was_received_is_a_disconnect(anyio_backend: str) -> None:
    # uvicorn's websockets raises RuntimeError for a send after it reported the disconnect,
    # and the other servers drop it: every sender learns that the client is gone instead.
    server = Server(disconnect(4001, "bye"))
    ws = connect(server)
    await ws.accept()
    assert (await ws.receive())["type"] == "websocket.disconnect"
    for send in (ws.send_text("late"), ws.send_bytes(b"late"), ws.send_json([1])):
        with pytest.raises(WebSocketDisconnect) as info:
            await send
        assert info.value.code == 1006
    assert ws.application_state is WebSocketState.DISCONNECTED
    await ws.close()
    assert server.types() == ["websocket.accept"]


@pytest.mark.anyio
async def test_raw_close_after_the_disconnect_was_received_sends_nothing(
    anyio_backend: str,
) -> None:
    server = Server(disconnect())
    ws = connect(server)
    await ws.accept()
    await ws.receive()
    await ws.send({"type": "websocket.close", "code": 1000})
    assert server.types() == ["websocket.accept"]
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
async def test_a_sender_task_ends_when_the_receiver_sees_the_disconnect(
    anyio_backend: str,
    message_iteration: None,
) -> None:
    # A broadcast-style sender next to an `async for` receiver: once the receiver has the
    # disconnect the sender's next send raises, whatever the server does with late sends.
    sent_by_sender: list[int] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()

        async def sender() -> None:
            for n in range(300):
                await ws.send_text(str(n))
                sent_by_sender.append(n)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            async for _ in ws.iter_text():
                pass

    server = Server(text("a"), 0.05, disconnect())
    await run_endpoint(handler, server)
    assert 0 < len(sent_by_sender) < 100
    assert server.types() == ["websocket.accept"] + ["websocket.send"] * len(sent_by_sender)


@pytest.mark.anyio
async def test_send_raw_messages(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.send({"type": "websocket.accept"})
    await ws.send({"type": "websocket.send", "text": "a"})
    await ws.send({"type": "websocket.close", "code": 1000})
    assert server.types() == ["websocket.accept", "websocket.send", "websocket.close"]
    assert ws.application_state is WebSocketState.DISCONNECTED


# -- receiving and sending data --------------------------------------------------------


@pytest.mark.anyio
async def test_text_bytes_and_json_round_trip(anyio_backend: str) -> None:
    server = Server(
        text("hello"),
        binary(b"\x00\x01"),
        text('{"a": [1, 2]}'),
        binary(b'{"b": null}'),
    )
    ws = connect(server)
    await ws.accept()
    assert await ws.receive_text() == "hello"
    assert await ws.receive_bytes() == b"\x00\x01"
    assert await ws.receive_json() == {"a": [1, 2]}
    assert await ws.receive_json(mode="binary") == {"b": None}
    await ws.send_text("é")
    await ws.send_bytes(b"\xff")
    await ws.send_json({"x": "é"})
    await ws.send_json([1], mode="binary")
    assert server.sent[1:] == [
        {"type": "websocket.send", "text": "é"},
        {"type": "websocket.send", "bytes": b"\xff"},
        {"type": "websocket.send", "text": '{"x":"é"}'},
        {"type": "websocket.send", "bytes": b"[1]"},
    ]


@pytest.mark.anyio
async def test_receive_with_both_keys_present(anyio_backend: str) -> None:
    # hypercorn and daphne send both keys, one of them None
    server = Server(
        {"type": "websocket.receive", "text": "t", "bytes": None},
        {"type": "websocket.receive", "text": None, "bytes": b"b"},
    )
    ws = connect(server)
    await ws.accept()
    assert await ws.receive_text() == "t"
    assert await ws.receive_bytes() == b"b"


@pytest.mark.anyio
async def test_wrong_frame_type_closes_with_1003(anyio_backend: str) -> None:
    ws = connect(Server(binary(b"x"), text("y"), binary(b"{}")))
    await ws.accept()
    with pytest.raises(WebSocketException) as info:
        await ws.receive_text()
    assert (info.value.code, info.value.reason) == (1003, "Expected a text message")
    with pytest.raises(WebSocketException, match="Expected a binary message"):
        await ws.receive_bytes()
    with pytest.raises(WebSocketException, match="Expected a text message"):
        await ws.receive_json()


@pytest.mark.anyio
async def test_malformed_json_closes_with_1007(anyio_backend: str) -> None:
    ws = connect(Server(text("{nope")))
    await ws.accept()
    with pytest.raises(WebSocketException) as info:
        await ws.receive_json()
    assert info.value.code == 1007


@pytest.mark.anyio
async def test_json_mode_is_checked(anyio_backend: str) -> None:
    ws = connect(Server(text("{}")))
    await ws.accept()
    with pytest.raises(ValueError, match='mode must be "text" or "binary"'):
        await ws.receive_json(mode="bytes")
    with pytest.raises(ValueError, match='mode must be "text" or "binary"'):
        await ws.send_json({}, mode="bytes")


@pytest.mark.anyio
async def test_disconnect_carries_code_and_reason(anyio_backend: str) -> None:
    ws = connect(Server(disconnect(4001, "gone")))
    await ws.accept()
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive_bytes()
    assert (info.value.code, info.value.reason) == (4001, "gone")


@pytest.mark.anyio
async def test_disconnect_without_code(anyio_backend: str) -> None:
    ws = connect(Server({"type": "websocket.disconnect"}))
    await ws.accept()
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive_text()
    assert (info.value.code, info.value.reason) == (1000, "")


@pytest.mark.anyio
async def test_receive_text_and_bytes_are_coroutines_to_await_or_start(
    anyio_backend: str,
) -> None:
    ws = connect(Server(text("a"), binary(b"b"), text("c"), disconnect()))
    await ws.accept()
    coroutine = ws.receive_text()
    assert inspect.iscoroutine(coroutine)
    assert await coroutine == "a"
    async with anyio.create_task_group() as tg:
        tg.start_soon(ws.receive_bytes)
    assert await ws.receive_text() == "c"
    with pytest.raises(WebSocketDisconnect):
        await ws.receive_bytes()


@pytest.mark.anyio
async def test_iterators_end_on_disconnect(anyio_backend: str, message_iteration: None) -> None:
    ws = connect(Server(text("a"), text("b"), disconnect()))
    await ws.accept()
    assert [m async for m in ws.iter_text()] == ["a", "b"]

    ws = connect(Server(binary(b"a"), disconnect()))
    await ws.accept()
    assert [m async for m in ws.iter_bytes()] == [b"a"]

    ws = connect(Server(text("[1]"), text('{"a": 2}'), disconnect()))
    await ws.accept()
    assert [m async for m in ws.iter_json()] == [[1], {"a": 2}]

    ws = connect(Server(binary(b"3"), disconnect()))
    await ws.accept()
    assert [m async for m in ws.iter_json(mode="binary")] == [3]


@pytest.mark.anyio
async def test_iterating_again_after_the_end(anyio_backend: str, message_iteration: None) -> None:
    ws = connect(Server(text("a"), disconnect()), limits=Limits(max_message_size=None))
    await ws.accept()
    messages = ws.iter_text()
    assert [m async for m in messages] == ["a"]
    assert [m async for m in messages] == []
    assert [m async for m in ws.iter_bytes()] == []


@pytest.mark.anyio
async def test_leaving_the_loop_early_leaves_nothing_to_finalize(
    anyio_backend: str, message_iteration: None
) -> None:
    hooks = sys.get_asyncgen_hooks()
    ws = connect(Server(text("a"), text("b"), disconnect()))
    await ws.accept()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async for message in ws.iter_text():
            assert message == "a"
            break
        gc.collect()
        await anyio.sleep(0)
    # NOTE: trio warns about an async generator collected unfinished, and both loops
    # would schedule its aclose(); the iterator is closed by Python alone.
    assert [str(w.message) for w in caught] == []
    assert sys.get_asyncgen_hooks() == hooks
    assert await ws.receive_text() == "b"


@pytest.mark.anyio
async def test_iterating_before_accept(anyio_backend: str, message_iteration: None) -> None:
    ws = connect(Server(text("a")))
    with pytest.raises(RuntimeError, match=r"call await ws\.accept"):
        async for _ in ws.iter_text():
            pass  # pragma: no cover


@pytest.mark.anyio
async def test_iterating_after_close_drains_what_was_in_flight(
    anyio_backend: str, message_iteration: None
) -> None:
    server = Server(text("a"), text("late"), disconnect())
    ws = connect(server)
    await ws.accept()
    received = []
    async for message in ws.iter_text():
        received.append(message)
        await ws.close()
    assert received == ["a", "late"]
    assert server.types() == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_send_bytes_to_a_client_that_left(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.accept()
    server.fail_send = ("websocket.send",)
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.send_bytes(b"x")
    assert info.value.code == 1006
    await ws.close()  # already closed: nothing is sent
    assert server.types() == ["websocket.accept"]


# -- denial responses ------------------------------------------------------------------


def asgi_response(status: int, body: bytes, *, chunks: int = 1) -> Callable[..., Awaitable[None]]:
    """A plain ASGI HTTP response app, sending ``body`` in ``chunks`` pieces."""

    async def response(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"www-authenticate", b'Bearer realm="chat"')]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        size = -(-len(body) // chunks)
        for i in range(chunks):
            piece = body[i * size : (i + 1) * size]
            await send({"type": "http.response.body", "body": piece, "more_body": i < chunks - 1})

    return response


@pytest.mark.anyio
async def test_denial_response(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server)
    await ws.send_denial_response(asgi_response(401, b"token expired", chunks=2))
    assert server.sent == [
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"www-authenticate", b'Bearer realm="chat"')],
        },
        {"type": "websocket.http.response.body", "body": b"token e", "more_body": True},
        {"type": "websocket.http.response.body", "body": b"xpired", "more_body": False},
    ]
    assert ws.client_state is WebSocketState.CONNECTED
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
async def test_denial_response_from_a_response_that_speaks_websocket(anyio_backend: str) -> None:
    # A response may already send "websocket.http.response.*" on a websocket scope.
    async def response(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    server = Server()
    await connect(server).send_denial_response(response)
    assert server.types() == ["websocket.http.response.start", "websocket.http.response.body"]


@pytest.mark.anyio
async def test_denial_response_without_the_extension_closes(anyio_backend: str) -> None:
    server = Server()
    ws = connect(server, extensions={})
    await ws.send_denial_response(asgi_response(401, b"no"))
    assert server.sent == [CLOSE_1000]
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
async def test_denial_start_message_without_the_extension(anyio_backend: str) -> None:
    ws = connect(Server(), extensions=None)
    ws.scope["extensions"] = None
    with pytest.raises(
        RuntimeError, match=re.escape('does not support the "websocket.http.response"')
    ):
        await ws.send({"type": "websocket.http.response.start", "status": 403, "headers": []})


@pytest.mark.anyio
async def test_denial_after_accept(anyio_backend: str) -> None:
    ws = connect(Server())
    await ws.accept()
    with pytest.raises(RuntimeError, match="application state is CONNECTED: deny before accept"):
        await ws.send_denial_response(asgi_response(401, b""))


@pytest.mark.anyio
async def test_denial_response_that_does_not_finish(anyio_backend: str) -> None:
    async def response(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    ws = connect(Server())
    with pytest.raises(RuntimeError, match="more_body=False, but it returned before"):
        await ws.send_denial_response(response)
    assert ws.application_state is WebSocketState.RESPONSE


@pytest.mark.anyio
async def test_denial_response_rejects_other_messages(anyio_backend: str) -> None:
    async def response(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.send", "text": "x"})

    with pytest.raises(
        RuntimeError,
        match=re.escape(
            "Expected ASGI message \"websocket.http.response.body\", but got 'websocket.send'"
        ),
    ):
        await connect(Server()).send_denial_response(response)


# -- limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "allowed"),
    [
        (text("x" * 12), True),
        (text("x" * 13), False),
        (text("é" * 6), True),  # 12 bytes in UTF-8
        (text("é" * 7), False),  # 7 characters, 14 bytes
        (text("€" * 4), True),  # 12 bytes
        (text("€" * 5), False),  # 5 characters (<= 12 / 4 + 2), 15 bytes
        (binary(b"x" * 12), True),
        (binary(b"x" * 13), False),
    ],
)
@pytest.mark.anyio
async def test_max_message_size(anyio_backend: str, message: Message, allowed: bool) -> None:
    server = Server(message)
    ws = connect(server, limits=Limits(max_message_size=12))
    await ws.accept()
    if allowed:
        assert (await ws.receive())["type"] == "websocket.receive"
        return
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive()
    assert info.value.code == 1009
    assert server.sent[-1] == {
        "type": "websocket.close",
        "code": 1009,
        "reason": "Message exceeds the limit of 12 bytes",
    }
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
async def test_oversized_message_ends_the_iterator(
    anyio_backend: str, message_iteration: None
) -> None:
    server = Server(text("ok"), text("x" * 2000), text("never"))
    ws = connect(server, limits=Limits(max_message_size=1000))
    await ws.accept()
    assert [m async for m in ws.iter_text()] == ["ok"]
    assert server.sent[-1]["code"] == 1009


@pytest.mark.anyio
async def test_default_max_message_size_is_one_mebibyte(anyio_backend: str) -> None:
    server = Server(binary(b"x" * (1 << 20)), binary(b"x" * ((1 << 20) + 1)))
    ws = connect(server)
    await ws.accept()
    assert len(await ws.receive_bytes()) == 1 << 20
    with pytest.raises(WebSocketDisconnect):
        await ws.receive_bytes()
    assert server.sent[-1]["code"] == 1009


@pytest.mark.anyio
async def test_no_message_size_limit(anyio_backend: str) -> None:
    server = Server(binary(b"x" * ((1 << 20) + 1)), text("é" * (1 << 20)))
    ws = connect(server, limits=Limits(max_message_size=None))
    await ws.accept()
    assert len(await ws.receive_bytes()) == (1 << 20) + 1
    assert len(await ws.receive_text()) == 1 << 20


@pytest.mark.anyio
async def test_limits_come_from_the_app(anyio_backend: str) -> None:
    class FakeApp:
        limits = Limits(max_message_size=3)

    server = Server(text("abcd"))
    ws = WebSocket(make_scope(app=FakeApp()), server.receive, server.send)
    await ws.accept()
    with pytest.raises(WebSocketDisconnect):
        await ws.receive_text()


@pytest.mark.anyio
async def test_idle_timeout_closes_with_1001(anyio_backend: str) -> None:
    server = Server(text("first"))
    ws = connect(server, limits=Limits(websocket_idle_timeout=0.05))
    await ws.accept()
    assert await ws.receive_text() == "first"
    with anyio.fail_after(5):
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert info.value.code == 1001
    assert server.sent[-1] == {
        "type": "websocket.close",
        "code": 1001,
        "reason": "No message for 0.05 seconds",
    }


@pytest.mark.anyio
async def test_idle_timeout_ends_the_iterator(anyio_backend: str, message_iteration: None) -> None:
    server = Server(text("a"))
    ws = connect(server, limits=Limits(websocket_idle_timeout=0.02))
    await ws.accept()
    with anyio.fail_after(5):
        assert [m async for m in ws.iter_text()] == ["a"]
    assert server.sent[-1]["code"] == 1001


@pytest.mark.anyio
async def test_rate_limit_closes_with_1008(anyio_backend: str, message_iteration: None) -> None:
    server = Server(*[text(str(i)) for i in range(10)])
    ws = connect(server, limits=Limits(websocket_max_rate=3))
    await ws.accept()
    received = [m async for m in ws.iter_text()]
    # a burst of one second's worth (3 messages) passes; the fourth at once is over
    assert received == ["0", "1", "2"]
    assert server.sent[-1] == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "More than 3 messages per second",
    }


@pytest.mark.anyio
async def test_rate_limit_refills_over_time(anyio_backend: str, message_iteration: None) -> None:
    burst = [text("burst")] * 10
    server = Server(*burst, 0.25, text("a"), text("b"), text("c"), text("d"))
    ws = connect(server, limits=Limits(websocket_max_rate=10))
    await ws.accept()
    received = [m async for m in ws.iter_text()]
    # the burst empties the bucket; 0.25 s at 10/s refills two messages (and a half)
    assert received == ["burst"] * 10 + ["a", "b"]
    assert server.sent[-1]["code"] == 1008


@pytest.mark.anyio
async def test_slow_rate_allows_one_message_at_once(anyio_backend: str) -> None:
    server = Server(text("a"), text("b"))
    ws = connect(server, limits=Limits(websocket_max_rate=0.5))
    await ws.accept()
    assert await ws.receive_text() == "a"
    with pytest.raises(WebSocketDisconnect):
        await ws.receive_text()


# -- endpoints -------------------------------------------------------------------------


async def run_endpoint(
    handler: Callable[..., Any],
    server: Server,
    *,
    param_names: tuple[str, ...] = (),
    **scope_options: Any,
) -> None:
    # The endpoint lets exceptions out; the app's exception handlers answer them, as in an App.
    app = build_websocket_endpoint(handler, plan_handler(handler, param_names))
    scope = make_scope(**scope_options)
    with anyio.fail_after(5):
        try:
            await app(scope, server.receive, server.send)
        except Exception as exc:
            await ExceptionHandlers({}).handle(exc, scope, server.receive, server.send)


@pytest.mark.anyio
async def test_endpoint_passes_converted_path_params(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def handler(ws: WebSocket, room: str, n: int) -> None:
        seen.append((ws.path_params, room, n))
        await ws.accept()

    server = Server()
    await run_endpoint(
        handler, server, param_names=("room", "n"), path_params={"room": "a", "n": 3}
    )
    assert seen == [({"room": "a", "n": 3}, "a", 3)]
    assert server.types() == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_endpoint_with_only_path_params(anyio_backend: str) -> None:
    seen: list[int] = []

    async def handler(n: int) -> None:
        seen.append(n)

    await run_endpoint(handler, Server(), param_names=("n",), path_params={"n": 1})
    assert seen == [1]


@pytest.mark.anyio
async def test_endpoint_passes_the_websocket_after_path_params(anyio_backend: str) -> None:
    seen: list[Any] = []

    async def by_annotation(room: str, ws: WebSocket) -> None:
        seen.append((room, ws.path_params))
        await ws.accept()

    async def by_name(room: str, *, websocket) -> None:  # type: ignore[no-untyped-def]
        seen.append((room, type(websocket).__name__))

    server = Server()
    await run_endpoint(by_annotation, server, param_names=("room",), path_params={"room": "a"})
    await run_endpoint(by_name, Server(), param_names=("room",), path_params={"room": "b"})
    assert seen == [("a", {"room": "a"}), ("b", "WebSocket")]
    assert server.types() == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_endpoint_with_var_keywords(anyio_backend: str) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(ws: WebSocket, **params: Any) -> None:
        seen.append(params)

    await run_endpoint(handler, Server(), param_names=("a",), path_params={"a": "x"})
    assert seen == [{"a": "x"}]


def test_endpoint_must_be_async() -> None:
    def handler(ws: WebSocket) -> None:
        pass

    with pytest.raises(TypeError, match=r"WebSocket handler .*handler must be an async function"):
        build_websocket_endpoint(handler, plan_handler(handler, ()))


@pytest.mark.anyio
async def test_echo_endpoint(anyio_backend: str, message_iteration: None) -> None:
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(message)

    server = Server(text("a"), text("b"), disconnect())
    await run_endpoint(echo, server)
    assert [m.get("text") for m in server.sent] == [None, "a", "b"]
    # the client left: nothing more is sent
    assert server.types()[-1] == "websocket.send"


@pytest.mark.anyio
async def test_returning_after_accept_closes_1000(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()

    server = Server()
    await run_endpoint(handler, server)
    assert server.sent[-1] == CLOSE_1000


@pytest.mark.anyio
async def test_returning_before_accept_closes(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        pass

    server = Server()
    await run_endpoint(handler, server)
    assert server.sent == [CLOSE_1000]


@pytest.mark.anyio
async def test_returning_after_close_sends_nothing_more(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4000)

    server = Server()
    await run_endpoint(handler, server)
    assert server.types() == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_returning_when_the_client_left_during_the_handshake(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.receive()  # the disconnect

    server = Server()
    server.incoming = [disconnect(1006)]
    await run_endpoint(handler, server)
    assert server.sent == []


@pytest.mark.anyio
async def test_disconnect_escaping_the_handler_is_normal(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()

    server = Server(disconnect(1001))
    await run_endpoint(handler, server)
    assert server.types() == ["websocket.accept"]
    assert caplog.records == []


@pytest.mark.anyio
async def test_websocket_exception_after_accept(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4400, "bad request")

    server = Server()
    await run_endpoint(handler, server)
    assert server.sent[-1] == {"type": "websocket.close", "code": 4400, "reason": "bad request"}


@pytest.mark.anyio
async def test_websocket_exception_before_accept(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        raise WebSocketException(1008, "no token")

    server = Server()
    await run_endpoint(handler, server)
    assert server.sent == [{"type": "websocket.close", "code": 1008, "reason": "no token"}]


@pytest.mark.anyio
async def test_websocket_exception_when_the_client_is_gone(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4400)

    server = Server(fail_send=("websocket.close",))
    await run_endpoint(handler, server)
    assert server.types() == ["websocket.accept"]


@pytest.mark.anyio
async def test_malformed_json_from_the_client_closes_1007(
    anyio_backend: str, message_iteration: None
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for _ in ws.iter_json():
            pass

    server = Server(text("{bad"))
    await run_endpoint(handler, server)
    assert server.sent[-1] == {
        "type": "websocket.close",
        "code": 1007,
        "reason": "Malformed JSON message",
    }


class Boom(Exception):
    pass


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "microasgi" and r.levelno == logging.ERROR]


@pytest.mark.anyio
async def test_exception_after_accept_closes_1011_once_and_logs(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise Boom("kaput")

    server = Server()
    await run_endpoint(handler, server, path="/ws/\x1b[31mred\r\n")
    assert server.sent[1:] == [
        {"type": "websocket.close", "code": 1011, "reason": "Internal Server Error"}
    ]
    [record] = error_records(caplog)
    assert record.exc_info is not None and record.exc_info[0] is Boom
    message = record.getMessage()
    assert "WEBSOCKET" in message
    assert "\x1b" not in message and "\r" not in message and "\\x1b[31mred\\r\\n" in message


@pytest.mark.anyio
async def test_exception_before_accept_sends_a_500_denial(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        raise Boom

    server = Server()
    await run_endpoint(handler, server)
    start, body = server.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 500
    assert dict(start["headers"])[b"content-type"] == b"text/plain; charset=utf-8"
    assert body["type"] == "websocket.http.response.body"
    assert body["body"] == b"Internal Server Error"
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_exception_before_accept_without_the_extension_closes(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        raise Boom

    server = Server()
    await run_endpoint(handler, server, extensions={})
    assert server.sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_exception_when_the_client_left_during_the_handshake(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.receive()
        raise Boom

    server = Server()
    server.incoming = [disconnect(1006)]
    await run_endpoint(handler, server)
    assert server.sent == []
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_exception_after_close_does_not_close_again(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4000)
        raise Boom

    server = Server()
    await run_endpoint(handler, server)
    assert server.types() == ["websocket.accept", "websocket.close"]
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_exception_after_the_client_left(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        finally:
            raise Boom

    server = Server(disconnect())
    await run_endpoint(handler, server)
    assert server.types() == ["websocket.accept"]
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_exception_during_a_denial_response(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def response(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 403, "headers": []})
        raise Boom

    async def handler(ws: WebSocket) -> None:
        await ws.send_denial_response(response)

    server = Server()
    await run_endpoint(handler, server)
    assert server.types() == ["websocket.http.response.start"]
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_exception_when_the_error_answer_cannot_be_sent(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        raise Boom

    for extensions in (DENIAL, {}):
        server = Server(fail_send=("*",))
        await run_endpoint(handler, server, extensions=extensions)
        assert server.sent == []
    assert len(error_records(caplog)) == 2


@pytest.mark.anyio
async def test_exception_is_reraised_for_the_test_client(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise Boom("for the test")

    server = Server()
    with pytest.raises(Boom, match="for the test"):
        await run_endpoint(handler, server, extensions={**DENIAL, "microasgi.testing": {}})
    assert server.sent[-1]["code"] == 1011
    assert len(error_records(caplog)) == 1


# -- unknown paths ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_not_found_with_the_denial_extension(anyio_backend: str) -> None:
    server = Server()
    await websocket_not_found(make_scope(), server.receive, server.send)
    start, body = server.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 404
    assert dict(start["headers"])[b"content-type"] == b"application/json"
    assert body["type"] == "websocket.http.response.body"
    assert body["body"] == b'{"detail":"Not Found"}'


@pytest.mark.anyio
async def test_not_found_without_the_extension(anyio_backend: str) -> None:
    server = Server()
    await websocket_not_found(make_scope(extensions={}), server.receive, server.send)
    assert server.sent == [CLOSE_1000]


@pytest.mark.anyio
async def test_not_found_when_the_client_is_gone(
    anyio_backend: str, message_iteration: None
) -> None:
    server = Server()
    server.incoming = [disconnect(1006)]
    await websocket_not_found(make_scope(), server.receive, server.send)
    assert server.sent == []


# -- through the app and the test clients ----------------------------------------------


def chat_app() -> App:
    app = App()

    @app.websocket("/echo/{room}/{n:int}")
    async def echo(ws: WebSocket, room: str, n: int) -> None:
        subprotocol = "chat" if "chat" in ws.subprotocols else None
        await ws.accept(subprotocol=subprotocol, headers={"x-room": room})
        await ws.send_json({"room": room, "n": n, "q": ws.query_params.get("q")})
        async for message in ws.iter_text():
            await ws.send_text(message)

    @app.websocket("/bytes")
    async def echo_bytes(ws: WebSocket) -> None:
        await ws.accept()
        async for data in ws.iter_bytes():
            await ws.send_bytes(data)

    @app.websocket("/json")
    async def echo_json(ws: WebSocket) -> None:
        await ws.accept()
        async for data in ws.iter_json():
            await ws.send_json(data, mode="binary")

    @app.websocket("/auth")
    async def auth(ws: WebSocket) -> None:
        if ws.headers.get("authorization") != "Bearer good":
            await ws.send_denial_response(
                JSONResponse(
                    {"detail": "Not authenticated"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="chat"'},
                )
            )
            return
        await ws.accept()
        await ws.send_text("welcome")

    @app.websocket("/refuse")
    async def refuse(ws: WebSocket) -> None:
        await ws.close(4403, "go away")

    @app.websocket("/bye")
    async def bye(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4000, "done")

    @app.websocket("/boom-early")
    async def boom_early(ws: WebSocket) -> None:
        raise Boom("before accept")

    @app.websocket("/boom")
    async def boom(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        raise Boom("after accept")

    @app.websocket("/small", limits=Limits(max_message_size=8))
    async def small(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(message)

    return app


def test_echo_through_the_app() -> None:
    with TestClient(chat_app()) as client:
        with client.websocket_connect("/echo/lobby/7?q=hi", subprotocols=["chat"]) as ws:
            assert ws.accepted_subprotocol == "chat"
            assert (b"x-room", b"lobby") in ws.extra_headers
            assert ws.receive_json() == {"room": "lobby", "n": 7, "q": "hi"}
            for i in range(100):
                ws.send_text(f"message {i}")
                assert ws.receive_text() == f"message {i}"
        with client.websocket_connect("/bytes") as ws:
            ws.send_bytes(b"\x00\xff")
            assert ws.receive_bytes() == b"\x00\xff"
        with client.websocket_connect("/json") as ws:
            ws.send_json({"a": [1, "é"]})
            assert ws.receive_json(mode="binary") == {"a": [1, "é"]}


def test_no_subprotocol_when_none_offered() -> None:
    with TestClient(chat_app()) as client, client.websocket_connect("/echo/a/1") as ws:
        assert ws.accepted_subprotocol is None


def test_denial_response_through_the_app() -> None:
    with TestClient(chat_app()) as client:
        with pytest.raises(WebSocketDenied) as info, client.websocket_connect("/auth"):
            pass  # pragma: no cover
        assert info.value.status_code == 401
        assert info.value.headers["www-authenticate"] == 'Bearer realm="chat"'
        assert info.value.json() == {"detail": "Not authenticated"}
        with client.websocket_connect("/auth", headers={"Authorization": "Bearer good"}) as ws:
            assert ws.receive_text() == "welcome"


def test_unknown_path_is_a_404_denial() -> None:
    with TestClient(chat_app()) as client, pytest.raises(WebSocketDenied) as info:
        with client.websocket_connect("/nowhere"):
            pass  # pragma: no cover
    assert info.value.status_code == 404
    assert info.value.json() == {"detail": "Not Found"}


def test_close_before_accept_through_the_app() -> None:
    with TestClient(chat_app()) as client, pytest.raises(WebSocketDisconnect) as info:
        with client.websocket_connect("/refuse"):
            pass  # pragma: no cover
    assert (info.value.code, info.value.reason) == (4403, "go away")


def test_websocket_exception_through_the_app() -> None:
    with TestClient(chat_app()) as client, client.websocket_connect("/bye") as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert (info.value.code, info.value.reason) == (4000, "done")


def test_message_too_big_through_the_app() -> None:
    with TestClient(chat_app()) as client, client.websocket_connect("/small") as ws:
        ws.send_text("12345678")
        assert ws.receive_text() == "12345678"
        ws.send_text("123456789")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert info.value.code == 1009


def test_app_level_message_limit() -> None:
    app = App(max_message_size=4)

    @app.websocket("/ws")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.receive_bytes()

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("abcd")
        assert ws.receive_text() == "abcd"
        ws.send_bytes(b"abcde")
        assert ws.receive() == {
            "type": "websocket.close",
            "code": 1009,
            "reason": "Message exceeds the limit of 4 bytes",
        }


def test_exception_before_accept_is_a_500_denial() -> None:
    with TestClient(chat_app(), raise_server_exceptions=False) as client:
        with pytest.raises(WebSocketDenied) as info:
            with client.websocket_connect("/boom-early"):
                pass  # pragma: no cover
    assert info.value.status_code == 500
    assert info.value.text == "Internal Server Error"


def test_exception_after_accept_closes_1011() -> None:
    with TestClient(chat_app(), raise_server_exceptions=False) as client:
        with client.websocket_connect("/boom") as ws:
            ws.send_text("go")
            assert ws.receive() == {
                "type": "websocket.close",
                "code": 1011,
                "reason": "Internal Server Error",
            }


def test_exception_reaches_the_test() -> None:
    with TestClient(chat_app()) as client, pytest.raises(Boom, match="after accept"):
        with client.websocket_connect("/boom") as ws:
            ws.send_text("go")
            ws.receive()


def test_websocket_routes_in_routers_and_mounts() -> None:
    api = Router()

    @api.websocket("/feed/{id:int}")
    async def feed(ws: WebSocket, id: int) -> None:
        await ws.accept()
        await ws.send_json({"id": id, "path": ws.url.path})

    sub = App()

    @sub.websocket("/inner")
    async def inner(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(ws.scope["root_path"])

    app = App()
    app.include_router(api, prefix="/api")
    app.mount("/sub", sub)
    with TestClient(app) as client:
        with client.websocket_connect("/api/feed/5") as ws:
            assert ws.receive_json() == {"id": 5, "path": "/api/feed/5"}
        with client.websocket_connect("/sub/inner") as ws:
            assert ws.receive_text() == "/sub"


def test_route_middleware_sees_the_websocket() -> None:
    class Tag:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope["tag"] = "tagged"
            await self.app(scope, receive, send)

    app = App()

    @app.websocket("/ws", middleware=[Middleware(Tag)])
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(ws.scope["tag"])

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "tagged"


def test_handler_sees_the_client_close() -> None:
    seen: list[tuple[int, str]] = []

    app = App()

    @app.websocket("/ws")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append((exc.code, exc.reason))
            raise

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.close(4001, "leaving")
    assert seen == [(4001, "leaving")]


def test_lifespan_state_reaches_the_websocket() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        yield {"greeting": "hello"}

    app = App(lifespan=lifespan)

    @app.websocket("/ws")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(ws.state.greeting)

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hello"


@pytest.mark.anyio
async def test_async_client(anyio_backend: str) -> None:
    async with AsyncTestClient(chat_app()) as client:
        async with client.websocket_connect("/echo/r/1", subprotocols=["chat"]) as ws:
            assert ws.accepted_subprotocol == "chat"
            assert await ws.receive_json() == {"room": "r", "n": 1, "q": None}
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"
        async with client.websocket_connect("/small") as ws:
            await ws.send_text("x" * 9)
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive_text()
            assert closed.value.code == 1009
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket_connect("/auth"):
                pass  # pragma: no cover
        assert denied.value.status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize("code", [1001, 1008, 1009, 1011])
async def test_close_code_refused_by_the_server_falls_back_to_1000(
    anyio_backend: str, code: int
) -> None:
    server = Server()

    async def send(message: Message) -> None:
        # daphne (autobahn) raises for close codes other than 1000 and 3000-4999
        if message["type"] == "websocket.close" and message["code"] not in (1000, 4000):
            raise Exception(f"invalid close code {message['code']}")
        server.sent.append(message)

    ws = WebSocket(make_scope(), server.receive, send)
    await ws.accept()
    await ws.close(code, "why")
    assert server.sent[-1] == {"type": "websocket.close", "code": 1000, "reason": "why"}
    assert ws.application_state is WebSocketState.DISCONNECTED


@pytest.mark.anyio
async def test_other_close_failures_propagate(anyio_backend: str) -> None:
    async def send(message: Message) -> None:
        if message["type"] == "websocket.close":
            raise Exception("server bug")

    ws = WebSocket(make_scope(), Server().receive, send)
    with pytest.raises(Exception, match="server bug"):
        await ws.close(1011)  # before accept: the code never reaches the client
    ws = WebSocket(make_scope(), Server().receive, send)
    await ws.accept()
    with pytest.raises(Exception, match="server bug"):
        await ws.close(4000)  # a code every server allows: nothing to fall back to


def test_echo_example() -> None:
    from examples.echo import TOKEN, app

    with TestClient(app) as client:
        assert "new WebSocket" in client.get("/").text
        with client.websocket_connect("/ws") as ws:
            ws.send_text("hello")
            assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDenied) as info, client.websocket_connect("/private"):
            pass  # pragma: no cover
        assert info.value.status_code == 401
        assert info.value.headers["www-authenticate"] == 'Bearer realm="echo"'
        with client.websocket_connect(f"/private?token={TOKEN}") as ws:
            assert ws.receive_json() == {"hello": "you are in"}


def test_exception_is_logged_once_under_the_test_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(chat_app()) as client, pytest.raises(Boom):
        with client.websocket_connect("/boom") as ws:
            ws.send_text("go")
            ws.receive()
    assert len(error_records(caplog)) == 1


@pytest.mark.anyio
async def test_every_send_after_the_client_left_is_a_disconnect(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        for _ in range(2):
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.send_text("x")
            assert info.value.code == 1006
        with pytest.raises(WebSocketDisconnect):
            await ws.send_json({"a": 1})

    await run_endpoint(handler, Server(fail_send=("websocket.send",)))


@pytest.mark.anyio
async def test_disconnects_grouped_by_a_task_group_end_the_handler(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()

        async def leave() -> None:
            raise WebSocketDisconnect(1001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(leave)
            tg.start_soon(leave)

    server = Server()
    await run_endpoint(handler, server)
    assert server.sent[-1]["type"] == "websocket.accept"


@pytest.mark.anyio
async def test_other_grouped_errors_still_fail(anyio_backend: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()

        async def leave() -> None:
            raise WebSocketDisconnect(1001)

        async def fail() -> None:
            raise KeyError("k")

        async with anyio.create_task_group() as tg:
            tg.start_soon(leave)
            tg.start_soon(fail)

    server = Server()
    await run_endpoint(handler, server)
    assert server.sent[-1]["code"] == 1011


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (WebSocketException(4001, "nope"), 4001, "nope"),
        (HTTPException(403, "forbidden"), 1008, "forbidden"),
    ],
)
async def test_one_error_from_a_task_group_is_answered_as_if_raised_alone(
    anyio_backend: str, error: Exception, code: int, reason: str
) -> None:
    # A task group wraps the one error of a task next to the receive loop in a group.
    async def handler(ws: WebSocket) -> None:
        await ws.accept()

        async def leave() -> None:
            raise WebSocketDisconnect(1001)

        async def refuse() -> None:
            await ws.receive_text()
            raise error

        async with anyio.create_task_group() as tg:
            tg.start_soon(leave)
            tg.start_soon(refuse)

    server = Server(text("a"))
    await run_endpoint(handler, server)
    assert server.sent[-1] == {"type": "websocket.close", "code": code, "reason": reason}


def test_one_error_from_a_task_group_reaches_the_test_alone() -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()

        async def fail() -> None:
            try:
                {}["missing"]
            except KeyError as exc:
                raise Boom("in a task") from exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(fail)

    with TestClient(app) as client, pytest.raises(Boom) as info:
        with client.websocket_connect("/ws") as session:
            session.receive_text()
    assert isinstance(info.value.__cause__, KeyError)


class CopyScope:
    """A route middleware that hands its app a copy of the scope, as many ASGI ones do."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(dict(scope), receive, send)


def failing_after_accept(router: Router | App, **options: Any) -> None:
    @router.websocket("/boom", **options)
    async def boom(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("accepted")
        raise Boom("after accept")

    @router.websocket("/http-error", **options)
    async def http_error(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("accepted")
        raise HTTPException(403, "no more")


def served_on_a_copy(where: str) -> App:
    """An app whose WebSocket handlers run on a copy of the scope the router answers with."""
    app = App()
    if where == "mounted router":
        router = Router()
        failing_after_accept(router)
        app.mount("/at", router)
    elif where == "router under a mounted router":
        inner, outer = Router(), Router()
        failing_after_accept(inner)
        outer.mount("/in", inner)
        app.mount("/at", outer)
    else:
        failing_after_accept(app, middleware=[Middleware(CopyScope)])
    return app


PREFIXES = {"mounted router": "/at", "router under a mounted router": "/at/in", "middleware": ""}


@pytest.mark.parametrize("where", list(PREFIXES))
def test_an_error_after_accept_closes_1011_on_a_copied_scope(where: str) -> None:
    # NOTE: the error handling above the copy once made a new WebSocket that thought the
    # handshake was still open: it sent a denial after accept(), which servers refuse, and
    # the socket stayed open with nothing on the server side.
    app = served_on_a_copy(where)
    with TestClient(app, raise_server_exceptions=False, timeout=2) as client:
        with client.websocket_connect(PREFIXES[where] + "/boom") as ws:
            assert ws.receive_text() == "accepted"
            assert ws.receive() == {
                "type": "websocket.close",
                "code": 1011,
                "reason": "Internal Server Error",
            }


@pytest.mark.parametrize("where", list(PREFIXES))
def test_an_http_exception_after_accept_closes_1008_on_a_copied_scope(where: str) -> None:
    app = served_on_a_copy(where)
    with TestClient(app, timeout=2) as client:
        with client.websocket_connect(PREFIXES[where] + "/http-error") as ws:
            assert ws.receive_text() == "accepted"
            assert ws.receive() == {"type": "websocket.close", "code": 1008, "reason": "no more"}
