"""The chat example in two uvicorn processes sharing one real Redis, through a Redis restart.

A ``websockets`` client talks to each process. What one says reaches the other, the member
list spans both, a client that reconnects to the other process gets what it missed, and
when Redis stops and comes back on the same port, delivery resumes. Every wait is bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.integration.servers import ServerProcess, require_module, serve, server_argv
from tests.support import RedisServer, free_port

pytestmark = pytest.mark.integration

require_module("websockets")
require_module("redis")

from websockets.sync.client import ClientConnection, connect  # noqa: E402

APP = "examples.chat.app:app"


@contextmanager
def chat(redis_server: RedisServer, log: Path) -> Iterator[ServerProcess]:
    """One process of the chat app under uvicorn, using ``redis_server``."""
    port = free_port()
    argv = server_argv("uvicorn", APP, port)
    with serve(argv, log, port=port, env={"REDIS_URL": redis_server.url}) as server:
        yield server


class Client:
    """A chat client over a real WebSocket: its room events in order, its member list."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.members: list[str] | None = None

    def say(self, text: str) -> None:
        self.ws.send(json.dumps({"type": "message", "text": text}))

    def until(self, done: Callable[[Client], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"waited {timeout} s: events={self.events} members={self.members} "
                    f"errors={self.errors}"
                )
            try:
                data = json.loads(self.ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            if data["type"] == "members":
                self.members = data["members"]
            elif data["type"] == "error":
                self.errors.append(data["detail"])
            else:
                self.events.append(data)

    def said(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "message"]


def url(server: ServerProcess, nick: str, last_id: str | None = None) -> str:
    query = f"nick={quote(nick)}" + (f"&last_id={quote(last_id)}" if last_id else "")
    return f"ws://127.0.0.1:{server.port}/ws/lobby?{query}"


def members(*names: str) -> Callable[[Client], bool]:
    return lambda client: client.members == list(names)


def said(text: str) -> Callable[[Client], bool]:
    return lambda client: text in client.said()


def first_events(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    """Read the first ``count`` events of the room's event stream."""
    events = []
    with httpx.stream("GET", f"{server.url}/rooms/lobby/events", timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == count:
                    break
    return events


def test_two_processes_share_rooms_through_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        chat(redis_server, tmp_path / "one.log") as one,
        chat(redis_server, tmp_path / "two.log") as two,
    ):
        with connect(url(one, "ada")) as ada_ws, connect(url(two, "bob")) as bob_ws:
            ada, bob = Client(ada_ws), Client(bob_ws)
            # The member list spans both processes.
            ada.until(members("ada", "bob"))
            bob.until(members("ada", "bob"))

            ada.say("hello from one")
            bob.until(said("hello from one"))
            bob.say("hello from two")
            ada.until(said("hello from two"))
            bob.until(said("hello from two"))
            # One id per event, the same in both processes (a Redis stream id).
            assert [(e["type"], e["id"]) for e in ada.events] == [
                (e["type"], e["id"]) for e in bob.events
            ]

            # A client that comes back, to the other process, gets what it missed.
            last_seen = ada.events[-1]["id"]
            ada_ws.close()
            bob.until(lambda client: client.events[-1]["type"] == "leave")
            bob.until(members("bob"))
            bob.say("while ada was away")
            with connect(url(two, "ada", last_seen)) as back_ws:
                back = Client(back_ws)
                back.until(said("while ada was away"))
                assert [(e["type"], e["nick"]) for e in back.events[:2]] == [
                    ("leave", "ada"),
                    ("message", "bob"),
                ]
            # The read-only stream of either process starts with the room's recent events.
            texts = [e.get("text") for e in first_events(one, 3)]
            assert texts == [None, None, "hello from one"]  # two joins, then the first message

    for log in ("one.log", "two.log"):
        text = (tmp_path / log).read_text()
        assert "Traceback" not in text, text


def test_delivery_resumes_after_a_redis_restart(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        chat(redis_server, tmp_path / "one.log") as one,
        chat(redis_server, tmp_path / "two.log") as two,
    ):
        with connect(url(one, "ada")) as ada_ws, connect(url(two, "bob")) as bob_ws:
            ada, bob = Client(ada_ws), Client(bob_ws)
            ada.until(members("ada", "bob"))
            ada.say("before the restart")
            bob.until(said("before the restart"))

            redis_server.stop()
            # Publishing gives up within its retry budget (2 s): the sender is told, and
            # the connections stay open.
            ada.say("while Redis is down")
            ada.until(lambda client: bool(client.errors), timeout=10)
            assert "not sent" in ada.errors[0].lower()

            redis_server.start()  # the same port, empty: no persistence
            for sender, receiver, name in ((ada, bob, "ada"), (bob, ada, "bob")):
                deadline = time.monotonic() + 20
                attempt = 0
                # NOTE: the pub/sub readers reconnect with backoff (at most 2 s); until they
                # have resubscribed, a message has nobody to reach, so say it again.
                while not any(t.startswith(f"{name} after") for t in receiver.said()):
                    assert time.monotonic() < deadline, (sender.errors, receiver.events)
                    sender.say(f"{name} after the restart ({attempt})")
                    attempt += 1
                    try:
                        receiver.until(said(f"{name} after the restart ({attempt - 1})"), 0.5)
                    except AssertionError:
                        pass

    for log in ("one.log", "two.log"):
        text = (tmp_path / log).read_text()
        assert "Traceback" not in text, text
        assert "Unhandled" not in text, text
