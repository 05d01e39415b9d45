"""The chat example in process: page, WebSocket protocol, validation, replay, SSE, presence."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import orjson
import pytest

from examples.chat.app import (
    MAX_TEXT,
    NICK_RULE,
    ROOM_RULE,
    STATIC,
    Presence,
    Room,
    RoomFeed,
    create_app,
    presence_channel,
    room_event,
)
from microasgi import App, WebSocketDisconnect
from microasgi.broadcast import Broadcast, Event, Subscription
from microasgi.testing import TestClient, WebSocketTestSession

ClientFactory = Callable[..., TestClient]


class Peer:
    """One chat client: the room events it got (in order) and its latest member list."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.members: list[str] | None = None

    def say(self, text: str) -> None:
        self.ws.send_json({"type": "message", "text": text})

    def until(self, done: Callable[[Peer], bool], limit: int = 30) -> None:
        """Read messages until ``done(self)``; fail after ``limit`` messages."""
        for _ in range(limit):
            if done(self):
                return
            data = self.ws.receive_json()
            if data["type"] == "members":
                self.members = data["members"]
            else:
                self.events.append(data)
        raise AssertionError(f"not done after {limit} messages: {self.events} {self.members}")

    def said(self) -> list[tuple[str, str]]:
        return [(e["nick"], e["text"]) for e in self.events if e["type"] == "message"]

    def kinds(self) -> list[tuple[str, str]]:
        return [(e["type"], e["nick"]) for e in self.events]


def has_members(*names: str) -> Callable[[Peer], bool]:
    return lambda peer: peer.members == list(names)


def has_said(*pairs: tuple[str, str]) -> Callable[[Peer], bool]:
    return lambda peer: peer.said()[-len(pairs) :] == list(pairs)


def has_event(kind: str, nick: str) -> Callable[[Peer], bool]:
    return lambda peer: (kind, nick) in peer.kinds()


def refusal(ws: WebSocketTestSession) -> tuple[int, str]:
    """Read until the server closes; return its code and reason."""
    with pytest.raises(WebSocketDisconnect) as closed:
        for _ in range(30):
            ws.receive_json()
    return closed.value.code, closed.value.reason or ""


@pytest.fixture
def app() -> App:
    return create_app("memory://")


# -- the page ------------------------------------------------------------------------


def test_the_page_runs_only_its_own_files(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        page = client.get("/")
        script = client.get("/static/chat.js")
        style = client.get("/static/chat.css")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # No inline script or handler: the policy would block them, and they are not needed.
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="static/chat.js" defer>']
    assert not re.search(r"\son[a-z]+=", page.text)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


def test_the_script_never_writes_markup() -> None:
    lines = (STATIC / "chat.js").read_text().splitlines()
    source = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source


# -- talking -------------------------------------------------------------------------


def test_two_members_talk_and_see_each_other(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        with client.websocket_connect("/ws/lobby?nick=ada") as ada_ws:
            ada = Peer(ada_ws)
            ada.until(lambda p: has_members("ada")(p) and has_event("join", "ada")(p))
            with client.websocket_connect("/ws/lobby?nick=Zo%C3%AB") as zoe_ws:
                zoe = Peer(zoe_ws)
                zoe.until(has_members("ada", "Zoë"))
                ada.until(has_members("ada", "Zoë"))
                ada.say("hello <b>Zoë</b> & co")
                zoe.until(has_said(("ada", "hello <b>Zoë</b> & co")))
                zoe.say("  hi ada  ")
                ada.until(has_said(("ada", "hello <b>Zoë</b> & co"), ("Zoë", "hi ada")))
            ada.until(lambda p: has_members("ada")(p) and has_event("leave", "Zoë")(p))
    assert ada.kinds() == [
        ("join", "ada"),
        ("join", "Zoë"),
        ("message", "ada"),
        ("message", "Zoë"),
        ("leave", "Zoë"),
    ]
    message = ada.events[2]
    assert set(message) == {"type", "id", "nick", "text", "time"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["time"])
    ids = [int(e["id"]) for e in ada.events]
    assert ids == sorted(ids)


def test_rooms_are_separate(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        with (
            client.websocket_connect("/ws/one?nick=ada") as ada_ws,
            client.websocket_connect("/ws/two?nick=bob") as bob_ws,
        ):
            ada, bob = Peer(ada_ws), Peer(bob_ws)
            ada.say("only in one")
            bob.say("only in two")
            ada.until(has_said(("ada", "only in one")))
            bob.until(has_said(("bob", "only in two")))
            assert ada.members == ["ada"]
            assert bob.members == ["bob"]
    assert ("bob", "only in two") not in ada.said()
    assert ("ada", "only in one") not in bob.said()


def test_the_same_nick_twice_is_listed_once(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        with client.websocket_connect("/ws/lobby?nick=ada") as first_ws:
            first = Peer(first_ws)
            with client.websocket_connect("/ws/lobby?nick=ada") as second_ws:
                Peer(second_ws).until(has_members("ada"))
                first.until(lambda p: p.kinds().count(("join", "ada")) == 2)
            first.until(has_event("leave", "ada"))
            assert first.members == ["ada"]


# -- replay --------------------------------------------------------------------------


def test_a_newcomer_gets_the_recent_events(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        with client.websocket_connect("/ws/lobby?nick=ada") as ada_ws:
            ada = Peer(ada_ws)
            for n in range(3):
                ada.say(f"message {n}")
            ada.until(has_said(("ada", "message 2")))
        with client.websocket_connect("/ws/lobby?nick=bob") as bob_ws:
            bob = Peer(bob_ws)
            bob.until(has_event("join", "bob"))
    assert bob.kinds() == [("join", "ada")] + [("message", "ada")] * 3 + [
        ("leave", "ada"),
        ("join", "bob"),
    ]
    assert [e["id"] for e in bob.events[:4]] == [e["id"] for e in ada.events]


def test_a_reconnecting_member_gets_what_it_missed(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        with client.websocket_connect("/ws/lobby?nick=ada") as ada_ws:
            ada = Peer(ada_ws)
            with client.websocket_connect("/ws/lobby?nick=bob") as bob_ws:
                bob = Peer(bob_ws)
                bob.until(has_event("join", "bob"))
                last_seen = bob.events[-1]["id"]
            ada.say("while bob was away")
            ada.until(has_said(("ada", "while bob was away")))
            with client.websocket_connect(f"/ws/lobby?nick=bob&last_id={last_seen}") as bob_ws:
                back = Peer(bob_ws)
                back.until(has_event("join", "bob"))
                ada.say("welcome back")
                back.until(has_said(("ada", "while bob was away"), ("ada", "welcome back")))
    assert back.kinds() == [
        ("leave", "bob"),
        ("message", "ada"),
        ("join", "bob"),
        ("message", "ada"),
    ]
    assert int(back.events[0]["id"]) > int(last_seen)


@pytest.mark.anyio
async def test_a_stranger_s_payloads_are_skipped() -> None:
    async with Broadcast("memory://", history=10) as broadcast:
        await broadcast.publish_json("chat:r", {"type": "message", "nick": "a", "text": "1"})
        await broadcast.publish("chat:r", "not json")
        await broadcast.publish("chat:r", b"\xff\xfe")
        await broadcast.publish_json("chat:r", ["a", "list"])
        await broadcast.publish_json("chat:r", {"type": "shout"})
        async with broadcast.subscribe("chat:r") as subscription:
            feed = RoomFeed(broadcast, subscription, resume=False)
            first = await feed.__anext__()
            await broadcast.publish("chat:r", "still not json")
            await broadcast.publish_json("chat:r", {"type": "leave", "nick": "a"})
            second = await feed.__anext__()
    assert (first.id, orjson.loads(first.json)) == (
        "1",
        {"type": "message", "nick": "a", "text": "1", "id": "1"},
    )
    assert (second.id, orjson.loads(second.json)) == (
        "7",
        {"type": "leave", "nick": "a", "id": "7"},
    )


@pytest.mark.anyio
async def test_a_new_feed_has_no_gap_and_no_duplicate() -> None:
    """Events published between the subscription and the history read come once."""
    async with Broadcast("memory://", history=10) as broadcast:
        await broadcast.publish_json("chat:r", {"type": "join", "nick": "1"})
        async with broadcast.subscribe("chat:r") as subscription:
            # Published after the subscription, before the feed reads the history: both
            # the history and the subscription have it.
            await broadcast.publish_json("chat:r", {"type": "join", "nick": "2"})
            feed = RoomFeed(broadcast, subscription, resume=False)
            got = [await feed.__anext__(), await feed.__anext__()]
            await broadcast.publish_json("chat:r", {"type": "join", "nick": "3"})
            got.append(await feed.__anext__())
    assert [(orjson.loads(e.json)["nick"], e.id) for e in got] == [
        ("1", "1"),
        ("2", "2"),
        ("3", "3"),
    ]


def test_an_event_is_encoded_once_for_all_its_readers() -> None:
    event = Event("chat:r", '{"type": "join", "nick": "a"}', "4")
    encoded = room_event(event)
    assert encoded is not None
    assert room_event(event) is encoded
    assert room_event(Event("chat:r", event.message, "4")) == encoded  # equal, made anew
    assert room_event(Event("chat:r", b"\x00")) is None


def test_member_lists_coalesce(client_factory: ClientFactory) -> None:
    """A burst of joins reaches a member as a couple of lists, not one per join."""
    app = create_app("memory://", members_interval=0.3)
    with client_factory(app) as client, client.websocket_connect("/ws/r?nick=ada") as ws:
        ada = Peer(ws)
        lists = []
        others = [client.websocket_connect(f"/ws/r?nick=u{n}") for n in range(6)]
        for other in others:
            other.__enter__()
        try:
            expected = ["ada", "u0", "u1", "u2", "u3", "u4", "u5"]
            while ada.members != expected:
                ada.until(lambda p: p.members is not None and p.members not in lists)
                lists.append(ada.members)
        finally:
            for other in reversed(others):
                other.__exit__(None, None, None)
    assert lists[0] == ["ada"]
    assert len(lists) <= 3, lists


def test_a_stopping_server_closes_sockets_for_a_restart(
    client_factory: ClientFactory, app: App
) -> None:
    with client_factory(app) as client, client.websocket_connect("/ws/lobby?nick=ada") as ws:
        Peer(ws).until(has_members("ada"))
        assert client.portal is not None
        client.portal.call(app.state.chat.broadcast.disconnect)  # as the lifespan ends
        # The page reconnects after a 1012; its goodbye could not be said any more.
        assert refusal(ws) == (1012, "The server is restarting")


# -- refusals ------------------------------------------------------------------------

BAD_NICKS = ["", "-ada", ".ada", "a" * 25, "ada lovelace", "<script>", "ada%00", "ada%0A"]
BAD_ROOMS = ["Lobby", "-lobby", "a" * 33, "lob_by", "lob%20by", "%C3%A9t%C3%A9"]


@pytest.mark.parametrize("nick", BAD_NICKS)
def test_a_bad_nickname_is_refused(client_factory: ClientFactory, app: App, nick: str) -> None:
    with client_factory(app) as client, client.websocket_connect(f"/ws/lobby?nick={nick}") as ws:
        assert refusal(ws) == (1008, NICK_RULE)


@pytest.mark.parametrize("room", BAD_ROOMS)
def test_a_bad_room_is_refused(client_factory: ClientFactory, app: App, room: str) -> None:
    with client_factory(app) as client:
        with client.websocket_connect(f"/ws/{room}?nick=ada") as ws:
            assert refusal(ws) == (1008, ROOM_RULE)
        feed = client.get(f"/rooms/{room}/events")
    assert feed.status_code == 400
    assert feed.json() == {"detail": ROOM_RULE}


def test_the_rules_fit_in_a_close_frame() -> None:
    # RFC 6455: a close reason is at most 123 bytes of UTF-8.
    assert len(NICK_RULE.encode()) <= 123
    assert len(ROOM_RULE.encode()) <= 123


BAD_MESSAGES = [
    ('{"type": "message", "text": ""}', "Empty message"),
    ('{"type": "message", "text": "   "}', "Empty message"),
    (orjson.dumps({"type": "message", "text": "x" * (MAX_TEXT + 1)}).decode(), "longer than"),
    ('{"type": "message", "text": "red \\u001b[31m"}', "control characters"),
    ('{"type": "message", "text": "two\\nlines"}', "control characters"),
    ('{"type": "message", "text": 5}', "Text must be a string"),
    ('{"type": "shout", "text": "hi"}', 'Expected {"type": "message"'),
    ('["message", "hi"]', 'Expected {"type": "message"'),
    ("hi", 'Expected {"type": "message"'),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_MESSAGES)
def test_a_bad_message_closes_with_a_reason(
    client_factory: ClientFactory, app: App, raw: str, reason: str
) -> None:
    with client_factory(app) as client, client.websocket_connect("/ws/lobby?nick=ada") as ws:
        ws.send_text(raw)
        code, why = refusal(ws)
    assert code == 1008
    assert reason in why


def test_a_message_of_the_longest_length_is_fine(client_factory: ClientFactory, app: App) -> None:
    text = "é" * MAX_TEXT  # two bytes each in UTF-8
    with client_factory(app) as client, client.websocket_connect("/ws/lobby?nick=ada") as ws:
        ada = Peer(ws)
        ada.say(text)
        ada.until(has_said(("ada", text)))


def test_binary_and_oversized_messages_are_refused(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        with client.websocket_connect("/ws/lobby?nick=ada") as ws:
            ws.send_bytes(b'{"type": "message", "text": "hi"}')
            assert refusal(ws)[0] == 1003
        with client.websocket_connect("/ws/lobby?nick=ada") as ws:
            ws.send_text("x" * 100_000)
            assert refusal(ws)[0] == 1009


def test_flooding_is_refused(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client, client.websocket_connect("/ws/lobby?nick=ada") as ws:
        for n in range(20):
            ws.send_json({"type": "message", "text": f"spam {n}"})
        code, reason = refusal(ws)
    assert code == 1008
    assert "messages per second" in reason


@pytest.mark.parametrize("last_id", ["abc", "1-0", "9" * 30, "-1"])
def test_a_malformed_last_id_is_refused(
    client_factory: ClientFactory, app: App, last_id: str
) -> None:
    with client_factory(app) as client:
        with client.websocket_connect(f"/ws/lobby?nick=ada&last_id={last_id}") as ws:
            assert refusal(ws) == (1008, "last_id is not an event id of this server")
        feed = client.get("/rooms/lobby/events", headers={"last-event-id": last_id})
    assert feed.status_code == 400
    assert feed.json() == {"detail": "Last-Event-ID is not an event id of this server"}


# -- the read-only event stream ------------------------------------------------------


async def read_stream(
    app: App, path: str, count: int, headers: Iterable[tuple[bytes, bytes]] = ()
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """GET an event stream through the ASGI interface; leave after ``count`` events."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    start: dict[str, str] = {}
    events: list[dict[str, str]] = []
    buffer = b""
    requested = False
    enough = anyio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal buffer
        if message["type"] == "http.response.start":
            start["status"] = str(message["status"])
            start.update((k.decode(), v.decode()) for k, v in message["headers"])
            return
        buffer += message.get("body", b"")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
            if "data" in fields:
                events.append(fields)
        if len(events) >= count or not message.get("more_body"):
            enough.set()

    with anyio.fail_after(10):
        await app(scope, receive, send)  # type: ignore[arg-type]
    return start, events


def test_the_event_stream_replays_then_goes_live(client_factory: ClientFactory, app: App) -> None:
    with client_factory(app) as client:
        assert client.portal is not None
        with client.websocket_connect("/ws/lobby?nick=ada") as ws:
            ada = Peer(ws)
            ada.say("before")
            ada.until(has_said(("ada", "before")))
            watching = client.portal.start_task_soon(read_stream, app, "/rooms/lobby/events", 3)
            ada.say("after")
            ada.until(has_said(("ada", "after")))
            start, events = watching.result(timeout=10)
    assert start["status"] == "200"
    assert start["content-type"] == "text/event-stream; charset=utf-8"
    data = [orjson.loads(event["data"]) for event in events]
    assert [(d["type"], d.get("text")) for d in data] == [
        ("join", None),
        ("message", "before"),
        ("message", "after"),
    ]
    assert [event["id"] for event in events] == [d["id"] for d in data]
    assert [event["id"] for event in events] == [e["id"] for e in ada.events]


def test_the_event_stream_resumes_after_last_event_id(
    client_factory: ClientFactory, app: App
) -> None:
    with client_factory(app) as client:
        assert client.portal is not None
        with client.websocket_connect("/ws/lobby?nick=ada") as ws:
            ada = Peer(ws)
            for text in ("one", "two", "three"):
                ada.say(text)
            ada.until(has_said(("ada", "three")))
        ids = [e["id"] for e in ada.events]
        _, events = client.portal.call(
            read_stream, app, "/rooms/lobby/events", 2, [(b"last-event-id", ids[1].encode())]
        )
    assert [orjson.loads(e["data"]).get("text") for e in events[:2]] == ["two", "three"]
    assert [e["id"] for e in events[:2]] == ids[2:4]


# -- presence across processes -------------------------------------------------------


async def wait_for_members(room: Room, expected: list[str], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        members = None
        while members != expected:
            members = await room.next_members(members)


@pytest.mark.anyio
async def test_presence_is_shared_by_processes() -> None:
    """Two Presence objects on one broadcast stand for two processes."""
    async with Broadcast("memory://") as broadcast:
        # A long heartbeat: a process that joins later must learn of the others at once.
        one, two = Presence(broadcast, heartbeat=60), Presence(broadcast, heartbeat=60)
        async with one.running(), two.running():
            assert one.node != two.node
            async with one.join("r", "ada") as room_one:
                await wait_for_members(room_one, ["ada"])
                async with two.join("r", "bob") as room_two:
                    await wait_for_members(room_two, ["ada", "bob"])
                    await wait_for_members(room_one, ["ada", "bob"])
                    async with two.join("other", "bob") as other:
                        await wait_for_members(other, ["bob"])
                await wait_for_members(room_one, ["ada"])


async def next_from(heard: Subscription, node: str) -> dict[str, Any]:
    """The next presence announcement of ``node``."""
    with anyio.fail_after(5):
        async for event in heard:
            said: dict[str, Any] = event.json()
            if said["node"] == node:
                return said
    raise AssertionError("the subscription ended")


async def until_following(heard: Subscription, presence: Presence) -> None:
    """Wait until ``presence`` follows the room: it then asks the others to announce."""
    while not (await next_from(heard, presence.node))["sync"]:
        pass


@pytest.mark.anyio
async def test_a_silent_process_drops_out() -> None:
    """A process that dies says nothing more: its last announcement expires."""
    async with Broadcast("memory://") as broadcast:
        survivor = Presence(broadcast, heartbeat=0.05)
        async with (
            broadcast.subscribe(presence_channel("r")) as heard,
            survivor.running(),
            survivor.join("r", "ada") as room,
        ):
            await until_following(heard, survivor)
            said = {"node": "doomed", "seq": 1, "members": ["bob"], "ttl": 0.3}
            await broadcast.publish_json(presence_channel("r"), said)
            await wait_for_members(room, ["ada", "bob"])
            started = anyio.current_time()
            # Nothing more from "doomed": bob is dropped once its word runs out.
            await wait_for_members(room, ["ada"], timeout=5)
    assert anyio.current_time() - started > 0.1


@pytest.mark.anyio
async def test_late_and_foreign_announcements_are_ignored() -> None:
    async with Broadcast("memory://") as broadcast:
        channel = presence_channel("r")
        presence = Presence(broadcast, heartbeat=60)
        async with (
            broadcast.subscribe(channel) as heard,
            presence.running(),
            presence.join("r", "ada") as room,
        ):
            await until_following(heard, presence)

            async def announce(node: str, seq: int, members: list[Any], **extra: Any) -> None:
                said = {"node": node, "seq": seq, "members": members, "ttl": 30, **extra}
                await broadcast.publish_json(channel, said)

            await announce("elsewhere", 5, ["bob", "<b>", 7])  # invalid names are left out
            await wait_for_members(room, ["ada", "bob"])
            await announce("elsewhere", 4, [])  # older than what we know: ignored
            await broadcast.publish(channel, "garbage")
            await broadcast.publish_json(channel, {"node": "x", "seq": "one"})
            await announce("other", 1, ["cy"], ttl=10**9)  # held three heartbeats at most
            # Announcements are handled in order: cy is in, and bob is still there.
            await wait_for_members(room, ["ada", "bob", "cy"])
            assert room.remote["other"].expires < anyio.current_time() + 181
            await announce("elsewhere", 6, [])
            await wait_for_members(room, ["ada", "cy"])


@pytest.mark.anyio
async def test_a_process_answers_a_sync_request_at_once() -> None:
    async with Broadcast("memory://") as broadcast:
        presence = Presence(broadcast, heartbeat=60)
        async with (
            broadcast.subscribe(presence_channel("r")) as heard,
            presence.running(),
            presence.join("r", "ada"),
        ):
            await until_following(heard, presence)
            request = {"node": "new", "seq": 1, "members": ["bob"], "ttl": 30, "sync": True}
            await broadcast.publish_json(presence_channel("r"), request)
            assert await next_from(heard, "new") == request
            answer = await next_from(heard, presence.node)
    assert answer["members"] == ["ada"]
    assert answer["sync"] is False


@pytest.mark.anyio
async def test_presence_stops_quietly_when_the_broadcast_goes() -> None:
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    presence = Presence(broadcast, heartbeat=60)
    with anyio.fail_after(5):
        async with presence.running():
            async with (
                broadcast.subscribe(presence_channel("r")) as heard,
                presence.join("r", "ada"),
            ):
                await until_following(heard, presence)
                await broadcast.disconnect()
            # Joining a room now: nothing to follow, nothing to announce, and no error.
            async with presence.join("other", "bob") as other:
                assert other.members == ["bob"]
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_joining_needs_the_lifespan() -> None:
    presence = Presence(Broadcast("memory://"))
    with pytest.raises(RuntimeError, match="lifespan"):
        async with presence.join("r", "ada"):
            pass


def test_the_app_takes_its_broadcast_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:secret@127.0.0.1:1/0")
    # Built, not started: nothing connects until the lifespan runs.
    assert create_app().state.chat.broadcast.url == "redis://:***@127.0.0.1:1/0"
    assert create_app("memory://").state.chat.broadcast.url == "memory://"
    monkeypatch.delenv("REDIS_URL")
    assert create_app().state.chat.broadcast.url == "memory://"
