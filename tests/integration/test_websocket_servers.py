"""microasgi WebSockets on real ASGI servers, driven by a real client (``websockets``).

Each server runs ``tests/integration/ws_app.py`` in a subprocess on a free loopback port,
started once for the module. Where a server lacks a feature, ``SERVERS`` says so and the
test asserts what that server does instead; ``docs/websockets.md`` carries the same facts
as a table, which ``test_docs_table_matches`` keeps in step with ``SERVERS``.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import ws_app
from tests.integration.servers import HOST, ROOT, require_module, serve
from tests.support import free_port

pytestmark = pytest.mark.integration

APP = "tests.integration.ws_app:app"
DROPPED = 1006  # no close frame: the TCP connection just ended
NO_STATUS = 1005  # a close frame without a code


require_module("websockets")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402


@dataclass(frozen=True)
class Server:
    """An ASGI server under test: how to start it and what it was seen to support."""

    name: str
    modules: tuple[str, ...]
    argv: Callable[[int], list[str]]
    denial_response: bool = True
    """Supports the ``websocket.http.response`` extension (else a denial is a 403)."""
    accept_headers: bool = True
    """Sends the headers given to ``accept()`` in the handshake response."""
    server_close_reason: bool = True
    """Sends the reason given to ``close()`` in the close frame."""
    any_close_code: bool = True
    """Lets the app close with 1001/1008/1009/1011 (else microasgi closes with 1000)."""
    client_close: tuple[int, str] = (4001, "client bye")
    """What the app sees when the client closes with (4001, "client bye")."""
    invalid_utf8: int = 1007
    """The close code the client gets for a text frame that is not UTF-8."""
    own_limit_mib: int = 16
    """The server's own default message size limit, applied before microasgi's."""
    own_size_limit: tuple[int, ...] = (1009,)
    """The close codes seen for a message over the server's own limit."""
    backpressure: bool = True
    """``send`` waits while the client reads nothing (else the server buffers)."""


def _uvicorn(ws: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *("-m", "uvicorn", APP, "--host", HOST, "--port", str(port)),
        *("--ws", ws, "--log-level", "warning"),
    ]


def _hypercorn(worker: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *("-m", "hypercorn", APP, "--bind", f"{HOST}:{port}", "--worker-class", worker),
    ]


SERVERS = [
    Server(
        "uvicorn --ws websockets",
        ("uvicorn", "websockets"),
        _uvicorn("websockets"),
    ),
    Server(
        "uvicorn --ws wsproto",
        ("uvicorn", "wsproto"),
        _uvicorn("wsproto"),
        invalid_utf8=DROPPED,
    ),
    Server(
        "hypercorn (asyncio)",
        ("hypercorn",),
        _hypercorn("asyncio"),
        client_close=(DROPPED, ""),
        invalid_utf8=DROPPED,
    ),
    Server(
        "hypercorn (trio)",
        ("hypercorn", "trio"),
        _hypercorn("trio"),
        client_close=(DROPPED, ""),
        invalid_utf8=DROPPED,
    ),
    Server(
        "granian",
        ("granian",),
        lambda port: [
            *("-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port)),
            *("--workers", "1", APP),
        ],
        accept_headers=False,
        client_close=(4001, ""),
        invalid_utf8=NO_STATUS,
        own_size_limit=(NO_STATUS, DROPPED),
    ),
    Server(
        "daphne",
        ("daphne",),
        lambda port: ["-m", "daphne", "-b", HOST, "-p", str(port), APP],
        denial_response=False,
        accept_headers=False,
        server_close_reason=False,
        any_close_code=False,
        client_close=(4001, ""),
        invalid_utf8=DROPPED,
        own_limit_mib=1,
        own_size_limit=(DROPPED,),
        backpressure=False,
    ),
]


@dataclass
class Running:
    spec: Server
    port: int
    log: Path

    @property
    def ws(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def get(self, path: str) -> Any:
        response = httpx.get(f"http://{HOST}:{self.port}{path}", trust_env=False, timeout=5)
        response.raise_for_status()
        return response.json()

    def connect(self, path: str, **options: Any) -> ClientConnection:
        options = {"open_timeout": 5, "close_timeout": 5, "proxy": None, **options}
        return connect(self.ws + path, **options)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module", params=SERVERS, ids=lambda spec: spec.name)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    spec: Server = request.param
    for module in spec.modules:
        require_module(module)
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serve(spec.argv(port), log, port=port) as process:
        yield Running(spec, process.port, process.log)


def closed_by_server(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; return the close code and reason the client got."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    received = info.value.rcvd
    return (received.code, received.reason) if received else (DROPPED, "")


def refused(server: Running, path: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info, server.connect(path):
        pass  # pragma: no cover
    return info.value


# -- the tests -------------------------------------------------------------------------


def test_echo_text_and_binary(server: Running) -> None:
    with server.connect("/echo") as ws:
        for i in range(1000):
            ws.send(f"message {i} é")
            assert ws.recv(timeout=5) == f"message {i} é"
            ws.send(b"\x00\xff%d" % i)
            assert ws.recv(timeout=5) == b"\x00\xff%d" % i


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(["chat.v1", "chat.v2"], "chat.v1"), (["other", "chat.v2"], "chat.v2"), (["other"], None)],
)
def test_subprotocol_negotiation(server: Running, offered: list[str], chosen: str | None) -> None:
    with server.connect("/echo", subprotocols=offered) as ws:
        assert ws.subprotocol == chosen


def test_accept_headers(server: Running) -> None:
    with server.connect("/echo") as ws:
        assert ws.response is not None
        header = ws.response.headers.get("x-microasgi")
    assert header == ("accept-headers" if server.spec.accept_headers else None)


def test_server_closes_with_code_and_reason(server: Running) -> None:
    with server.connect("/echo") as ws:
        ws.send("close:4321:bye now")
        code, reason = closed_by_server(ws)
    assert code == 4321
    assert reason == ("bye now" if server.spec.server_close_reason else "")


def test_a_long_close_reason_is_cut_to_fit_the_frame(server: Running) -> None:
    with server.connect("/echo") as ws:
        ws.send("close:4321:" + "é" * 100)  # 200 bytes of UTF-8; a close frame holds 123
        code, reason = closed_by_server(ws)
    assert code == 4321
    assert reason == ("é" * 61 if server.spec.server_close_reason else "")


def test_client_closes_with_code_and_reason(server: Running) -> None:
    key = uuid.uuid4().hex
    with server.connect(f"/record/{key}") as ws:
        ws.close(4001, "client bye")
    deadline = time.monotonic() + 5
    while not (seen := server.get(f"/closes/{key}")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (seen["code"], seen["reason"]) == server.spec.client_close


def test_send_after_the_client_left_is_a_disconnect(server: Running) -> None:
    # uvicorn's websockets raises RuntimeError for it, the others drop it silently
    key = uuid.uuid4().hex
    with server.connect(f"/late-send/{key}") as ws:
        ws.close()
    deadline = time.monotonic() + 5
    while not (seen := server.get(f"/closes/{key}")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == {"late_send": 1006}
    assert f"in WEBSOCKET /late-send/{key}" not in server.log_text()  # nothing logged


def test_denial_response(server: Running) -> None:
    error = refused(server, "/deny")
    if server.spec.denial_response:
        assert error.response.status_code == 401
        assert error.response.headers["www-authenticate"] == 'Bearer realm="integration"'
        assert error.response.body == b"Not authenticated"
    else:
        assert error.response.status_code == 403


def test_close_before_accept_is_403(server: Running) -> None:
    assert refused(server, "/refuse").response.status_code == 403


def test_unknown_path(server: Running) -> None:
    error = refused(server, "/nowhere")
    if server.spec.denial_response:
        assert error.response.status_code == 404
        assert error.response.body == b'{"detail":"Not Found"}'
    else:
        assert error.response.status_code == 403


def _count_logged(server: Running, handler: str, path: str) -> int:
    """How many times the error was logged, each with a traceback through ``handler``."""
    text = server.log_text()
    messages = text.count(f"Unhandled RuntimeError in WEBSOCKET {path}\n")
    return min(messages, text.count(f", in {handler}\n"))


def _wait_logged(server: Running, handler: str, path: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while _count_logged(server, handler, path) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # anything logged a second time would show up by now
    assert _count_logged(server, handler, path) == count


def test_exception_before_accept(server: Running) -> None:
    before = _count_logged(server, "boom_early", "/boom-early")
    error = refused(server, "/boom-early")
    if server.spec.denial_response:
        assert error.response.status_code == 500
        assert error.response.body == b"Internal Server Error"
    else:
        assert error.response.status_code == 403
    _wait_logged(server, "boom_early", "/boom-early", before + 1)


def test_exception_after_accept_closes_1011_once(server: Running) -> None:
    before_tracebacks = server.log_text().count("Traceback")
    before = _count_logged(server, "boom", "/boom")
    with server.connect("/boom") as ws:
        ws.send("go")
        closed = closed_by_server(ws)
    if server.spec.any_close_code:
        assert closed == (1011, "Internal Server Error")
    else:
        assert closed == (1000, "")
    _wait_logged(server, "boom", "/boom", before + 1)
    # the server itself logs nothing more: microasgi handled the error
    assert server.log_text().count("Traceback") == before_tracebacks + 1


def _expected_limit_close(server: Running, code: int, reason: str) -> tuple[int, str]:
    if not server.spec.any_close_code:
        code = 1000
    return code, reason if server.spec.server_close_reason else ""


def test_message_size_limit_1009(server: Running) -> None:
    with server.connect("/small") as ws:
        ws.send("x" * ws_app.SMALL_LIMIT)
        assert ws.recv(timeout=5) == "x" * ws_app.SMALL_LIMIT
        ws.send("é" * (ws_app.SMALL_LIMIT // 2 + 1))  # one character over, in bytes
        closed = closed_by_server(ws)
    assert closed == _expected_limit_close(
        server, 1009, f"Message exceeds the limit of {ws_app.SMALL_LIMIT} bytes"
    )


def test_default_message_size_limit(server: Running) -> None:
    with server.connect("/echo") as ws:
        ws.send(b"x" * (1024 * 1024 + 1))
        closed = closed_by_server(ws)
    if server.spec.own_limit_mib > 1:
        expected = "Message exceeds the limit of 1048576 bytes"
        assert closed == _expected_limit_close(server, 1009, expected)
    else:  # the server's own limit is the same size and applies first
        assert closed[0] in server.spec.own_size_limit


def test_message_over_the_servers_own_limit(server: Running) -> None:
    size = server.spec.own_limit_mib * 1024 * 1024 + 1
    with server.connect("/echo", max_size=None) as ws:
        try:
            ws.send(b"x" * size)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else DROPPED
        else:
            code = closed_by_server(ws)[0]
    assert code in server.spec.own_size_limit


def test_invalid_utf8_text(server: Running) -> None:
    with server.connect("/echo") as ws:
        ws.send(b"\xff\xfe not utf-8", text=True)
        assert closed_by_server(ws)[0] == server.spec.invalid_utf8


def test_idle_timeout_1001(server: Running) -> None:
    with server.connect("/idle") as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
        started = time.monotonic()
        closed = closed_by_server(ws)
    assert time.monotonic() - started >= ws_app.IDLE_TIMEOUT * 0.9
    assert closed == _expected_limit_close(
        server, 1001, f"No message for {ws_app.IDLE_TIMEOUT:g} seconds"
    )


def test_rate_limit_1008(server: Running) -> None:
    with server.connect("/rate") as ws:
        # NOTE: one over the burst, so that no message is left unread when the app
        # closes: hypercorn's trio worker does not always end the TCP connection then.
        for _ in range(ws_app.MAX_RATE + 1):
            ws.send("r")
        echoes = 0
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=5)
                echoes += 1
    assert echoes == ws_app.MAX_RATE
    received = info.value.rcvd
    assert received is not None
    assert (received.code, received.reason) == _expected_limit_close(
        server, 1008, f"More than {ws_app.MAX_RATE} messages per second"
    )


def test_slow_client_backpressure(server: Running) -> None:
    key = uuid.uuid4().hex
    # A raw socket that completes the handshake and then reads nothing at all.
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(
            f"GET /flood/{key} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        assert sock.recv(12) == b"HTTP/1.1 101"
        limit = 16 * 1024 * 1024
        deadline = time.monotonic() + (1 if server.spec.backpressure else 10)
        while time.monotonic() < deadline:
            accepted = server.get(f"/flooded/{key}")["sent"] * ws_app.FLOOD_CHUNK
            if accepted > limit:
                break
            time.sleep(0.1)
    if server.spec.backpressure:
        assert accepted <= limit  # socket buffers and the server's write buffer, no more
    else:
        assert accepted > limit


# -- the table in docs/websockets.md ---------------------------------------------------


def _close(code: int) -> str:
    return {DROPPED: "dropped (1006)", NO_STATUS: "close, no code (1005)"}.get(code, f"{code}")


def _own_limit(server: Server) -> str:
    codes = " or ".join(_close(code) for code in server.own_size_limit)
    return f"{server.own_limit_mib} MiB: {codes}"


def _client_close(server: Server) -> str:
    code, reason = server.client_close
    if code != 4001:
        return f"no: always {code}"
    return "yes" if reason else "code only"


def features_table() -> str:
    """The server table of docs/websockets.md, from what the tests above assert."""
    yes, no = "yes", "no"
    rows = [
        ("Echo, subprotocols, close code from the app", lambda s: yes),
        (
            "Denial responses (`websocket.http.response`)",
            lambda s: yes if s.denial_response else "no: 403",
        ),
        ("Headers given to `accept()`", lambda s: yes if s.accept_headers else "ignored"),
        ("Close reason from the app", lambda s: yes if s.server_close_reason else "dropped"),
        (
            "Close codes 1001/1008/1009/1011 from the app",
            lambda s: yes if s.any_close_code else "refused: microasgi sends 1000",
        ),
        ("Client's close code / reason seen by the app", _client_close),
        ("Invalid UTF-8 in a text frame", lambda s: _close(s.invalid_utf8)),
        ("Server's own message size limit", _own_limit),
        (
            "Backpressure on `send` to a client that reads nothing",
            lambda s: yes if s.backpressure else no,
        ),
    ]
    header = "| | " + " | ".join(s.name for s in SERVERS) + " |"
    lines = [header, "|---" + "|:-:" * len(SERVERS) + "|"]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in SERVERS) + " |")
    return "\n".join(lines)


def test_docs_table_matches() -> None:
    docs = (ROOT / "docs" / "websockets.md").read_text()
    assert features_table() in docs, (
        "regenerate the table: python -m tests.integration.test_websocket_servers"
    )


if __name__ == "__main__":
    print(features_table())
