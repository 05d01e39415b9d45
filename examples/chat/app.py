"""A chat: rooms, nicknames, a member list, WebSockets, a read-only event stream, replay.

Run it with ``python -m microasgi run examples.chat.app:app`` and open
http://127.0.0.1:8000 in two windows. It keeps its rooms in memory (``memory://``), in one
process. Set ``REDIS_URL`` and every process using that Redis shares the rooms, so the
chat runs in several workers and on several machines::

    REDIS_URL=redis://127.0.0.1:6379/0 microasgi run examples.chat.app:app --workers 4

The page talks to three endpoints:

- ``/ws/<room>?nick=<nick>`` (WebSocket). The client sends
  ``{"type": "message", "text": "..."}`` and receives JSON objects:
  ``{"type": "message", "id", "nick", "text", "time"}``,
  ``{"type": "join" | "leave", "id", "nick", "time"}``,
  ``{"type": "members", "members": [...]}`` and
  ``{"type": "error", "detail"}`` (a message that could not be sent). A new client first
  gets the room's recent events; one that reconnects adds ``&last_id=<id>`` (the ``id`` of
  the last event it saw) and gets what it missed. A nickname, room or message that breaks
  the rules below closes the connection with 1008 and a reason.
- ``/rooms/<room>/events``: the same room events as server-sent events, read-only,
  resuming after the ``Last-Event-ID`` a browser sends when it reconnects.
- ``/`` and ``/static/``: the page (``static/``; plain JavaScript, no build step).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson

from microasgi import (
    App,
    HTTPException,
    Limits,
    Request,
    WebSocket,
    WebSocketDisconnect,
    WebSocketException,
)
from microasgi.broadcast import (
    Broadcast,
    BroadcastUnavailable,
    Event,
    SubscriberTooSlow,
    Subscription,
)
from microasgi.sse import EventSourceResponse, ServerSentEvent
from microasgi.staticfiles import FileResponse, StaticFiles
from microasgi.websockets import WebSocketState

__all__ = ["Chat", "Presence", "Room", "RoomEvent", "RoomFeed", "app", "create_app"]

logger = logging.getLogger("examples.chat")

STATIC = Path(__file__).resolve().parent / "static"

HISTORY = 100
"""Events each room keeps for replay."""
RECENT = 50
"""Events a new client gets when it enters a room."""
MAX_TEXT = 500
"""Characters in one message."""
HEARTBEAT = 10.0
"""Seconds between two presence announcements of a process (see ``Presence``)."""
MEMBERS_INTERVAL = 0.5
"""Seconds at least between two member lists sent to one client."""
RETRY_MS = 2000
"""How long a browser waits before it reconnects a lost event stream."""

NICK = re.compile(r"\w[\w.-]{0,23}")  # Unicode letters and digits: "Zoë" and "李" are fine
ROOM = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # ASCII: rooms are in URLs and channel names
NICK_RULE = "Nickname: 1 to 24 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
ROOM_RULE = "Room: 1 to 32 lowercase letters, digits or '-', not starting with '-'"

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013

# SECURITY: the page loads nothing but its own files and runs no inline script, so text
# that somehow reached the markup still could not run.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

ROOM_EVENTS = frozenset({"message", "join", "leave"})
UNAVAILABLE = '{"type": "error", "detail": "Not sent: the chat is unavailable. Try again."}'


def nick_problem(nick: str) -> str | None:
    """Return why ``nick`` is not a valid nickname, or None."""
    return None if NICK.fullmatch(nick) else NICK_RULE


def room_problem(room: str) -> str | None:
    """Return why ``room`` is not a valid room name, or None."""
    return None if ROOM.fullmatch(room) else ROOM_RULE


def text_problem(text: str) -> str | None:
    """Return why ``text`` (already stripped) cannot be said, or None."""
    if not text:
        return "Empty message"
    if len(text) > MAX_TEXT:
        return f"Message longer than {MAX_TEXT} characters"
    # NOTE: control characters (NUL, escape sequences, line breaks) have no place in a
    # one-line message and could garble a terminal that tails a log of the room.
    if any(unicodedata.category(char) == "Cc" for char in text):
        return "Message with control characters"
    return None


def chat_channel(room: str) -> str:
    return f"chat:{room}"


def presence_channel(room: str) -> str:
    return f"presence:{room}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RoomEvent:
    """A room event as clients get it: its history ``id`` and its JSON text (with the id)."""

    id: str | None
    json: str


class _Encoder:
    """Turns broadcast events into ``RoomEvent``, or None for what is not a room event.

    PERF: every subscriber of a room gets the same ``Event`` object, one after another, so
    the last one is remembered: a thousand members cost one decoding and one encoding.
    (Holding it also keeps its ``id()`` from being reused by a new object.)
    """

    def __init__(self) -> None:
        self._event: Event | None = None
        self._encoded: RoomEvent | None = None

    def __call__(self, event: Event) -> RoomEvent | None:
        if event is not self._event:
            self._event, self._encoded = event, self._encode(event)
        return self._encoded

    @staticmethod
    def _encode(event: Event) -> RoomEvent | None:
        try:
            data = event.json()
        except ValueError:
            return None  # NOTE: on a shared Redis anybody may publish on "chat:<room>"
        if not isinstance(data, dict) or data.get("type") not in ROOM_EVENTS:
            return None
        data["id"] = event.id
        return RoomEvent(event.id, orjson.dumps(data).decode())


room_event = _Encoder()


# -- replay --------------------------------------------------------------------------


class RoomFeed:
    """The events of a room for one reader, as ``RoomEvent``.

    A reader that resumes (its subscription was made with ``last_id``) gets what it
    missed from the subscription itself. A new reader first gets the room's recent
    history; live events that the history already held (those published between the
    subscription and the reading of the history) are skipped, so there is neither gap nor
    duplicate. A plain async iterator rather than an async generator, so a reader that is
    cancelled leaves nothing to finalize.
    """

    def __init__(self, broadcast: Broadcast, subscription: Subscription, *, resume: bool) -> None:
        self._broadcast = broadcast
        self._subscription = subscription
        self._recent: deque[Event] | None = deque() if resume else None
        self._overlap: set[str | None] = set()

    def __aiter__(self) -> RoomFeed:
        return self

    async def __anext__(self) -> RoomEvent:
        if self._recent is None:
            history = await self._broadcast.history(self._subscription.channels[0])
            self._recent = deque(history[-RECENT:])
            self._overlap = {event.id for event in history}
        while True:
            if self._recent:
                event = self._recent.popleft()
            else:
                event = await self._subscription.__anext__()
                if self._overlap:
                    if event.id in self._overlap:
                        continue
                    # NOTE: live events come in history order, so the first one the history
                    # did not hold ends the overlap.
                    self._overlap.clear()
            encoded = room_event(event)
            if encoded is not None:
                return encoded


# -- presence ------------------------------------------------------------------------


@dataclass
class _Announcement:
    seq: int
    members: frozenset[str]
    expires: float


class Room:
    """A room as one process sees it: its own members and the other processes' ones."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.local: dict[object, str] = {}  # one entry per connection in this process
        self.remote: dict[str, _Announcement] = {}  # the last word of each other process
        self.members: list[str] = []
        self.dirty = anyio.Event()  # set: this process should announce its members now
        self.sync = False  # ask the others to announce themselves with the next announcement
        self._changed = anyio.Event()

    def refresh(self) -> None:
        """Recompute the member list and wake who waits for a change."""
        names = set(self.local.values())
        for announcement in self.remote.values():
            names |= announcement.members
        members = sorted(names, key=lambda name: (name.casefold(), name))
        if members != self.members:
            self.members = members
            self._changed.set()
            self._changed = anyio.Event()

    async def next_members(self, seen: list[str] | None) -> list[str]:
        """Return the member list as soon as it differs from ``seen``."""
        while self.members == seen:
            await self._changed.wait()
        return self.members

    def expire(self, at: float) -> None:
        """Forget the processes whose last announcement is too old."""
        stale = [node for node, said in self.remote.items() if said.expires <= at]
        for node in stale:
            del self.remote[node]
        if stale:
            self.refresh()


class Presence:
    """Who is in each room, across every process that shares the broadcast.

    Each process announces its own members of a room on the channel ``presence:<room>``:
    at once when they change, and every ``heartbeat`` seconds while it has any. An
    announcement holds for three heartbeats, so a process that dies without a word drops
    out of the member lists by itself. A process that starts following a room asks the
    others to announce themselves at once (``"sync": true``). Announcements carry a
    sequence number, so one that arrives late never overrides a newer one. The same code
    runs on ``memory://`` (one process) and ``redis://``.
    """

    def __init__(self, broadcast: Broadcast, heartbeat: float = HEARTBEAT) -> None:
        self.broadcast = broadcast
        self.heartbeat = heartbeat
        self.node = ""
        self._rooms: dict[str, Room] = {}
        self._sequence = itertools.count(1)
        self._tasks: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the rooms for the life of the app (inside the broadcast's lifespan)."""
        # NOTE: made here, not at import, so that worker processes forked from one parent
        # get different names.
        self.node = secrets.token_hex(8)
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()

    @asynccontextmanager
    async def join(self, name: str, nick: str) -> AsyncIterator[Room]:
        """Count ``nick`` in the room ``name`` while the block runs."""
        if self._tasks is None:
            raise RuntimeError("Presence.join() needs the app's lifespan (Presence.running())")
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name)
            self._tasks.start_soon(self._keep, room, name=f"presence {name}")
        key = object()
        room.local[key] = nick
        room.refresh()
        room.dirty.set()
        try:
            yield room
        finally:
            del room.local[key]
            room.refresh()
            room.dirty.set()

    async def _keep(self, room: Room) -> None:
        """Follow and announce ``room`` until this process has no member in it, or stops."""
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._follow, room, tasks.cancel_scope)
                await self._announce(room)
                tasks.cancel_scope.cancel()
        finally:
            if self._rooms.get(room.name) is room:
                del self._rooms[room.name]

    async def _announce(self, room: Room) -> None:
        """Announce this process's members of ``room`` until it has none left."""
        channel = presence_channel(room.name)
        while True:
            with anyio.move_on_after(self.heartbeat):
                await room.dirty.wait()
            room.dirty = anyio.Event()
            room.expire(anyio.current_time())
            members = sorted(set(room.local.values()))
            said = {
                "node": self.node,
                "seq": next(self._sequence),
                "members": members,
                "ttl": 3 * self.heartbeat,
                "sync": room.sync,
            }
            room.sync = False
            if not members:
                # NOTE: in the same step as the empty snapshot: a member who joins from
                # now on gets a new Room, whose announcements have higher numbers.
                del self._rooms[room.name]
            try:
                await self.broadcast.publish_json(channel, said)
            except BroadcastUnavailable as exc:
                logger.warning("presence of room %s not announced: %s", room.name, exc)
            except RuntimeError:
                return  # NOTE: the broadcast is disconnected: the app is stopping
            if not members:
                return

    async def _follow(self, room: Room, keeper: anyio.CancelScope) -> None:
        """Keep track of the other processes' announcements for ``room``."""
        while True:
            try:
                async with self.broadcast.subscribe(presence_channel(room.name)) as subscription:
                    room.sync = True
                    room.dirty.set()
                    async for event in subscription:
                        self._hear(room, event)
                keeper.cancel()  # the broadcast disconnected: the app is stopping
                return
            except RuntimeError:
                keeper.cancel()  # NOTE: the broadcast was disconnected already
                return
            except SubscriberTooSlow:
                pass  # subscribe again, asking everyone to announce themselves again
            except BroadcastUnavailable as exc:
                logger.warning("presence of room %s not followed: %s", room.name, exc)
                await anyio.sleep(min(1.0, self.heartbeat))

    def _hear(self, room: Room, event: Event) -> None:
        try:
            said = event.json()
            node, seq, ttl = str(said["node"]), int(said["seq"]), float(said["ttl"])
            members = frozenset(
                nick for nick in said["members"] if isinstance(nick, str) and NICK.fullmatch(nick)
            )
        except (ValueError, TypeError, KeyError):
            return  # not an announcement
        if node == self.node:
            return
        if not 0 < ttl <= 3600:
            ttl = 3 * self.heartbeat
        last = room.remote.get(node)
        if last is None or seq > last.seq:
            room.remote[node] = _Announcement(seq, members, anyio.current_time() + ttl)
            room.refresh()
        if said.get("sync") is True:
            room.dirty.set()


# -- the app -------------------------------------------------------------------------


class Chat:
    """The chat's state and handlers; ``create_app()`` wires them into an ``App``.

    Each client gets the member list at once when it enters, then after each change but
    ``members_interval`` seconds apart at most, the changes meanwhile coalesced.
    """

    def __init__(
        self,
        broadcast: Broadcast,
        heartbeat: float = HEARTBEAT,
        members_interval: float = MEMBERS_INTERVAL,
    ) -> None:
        self.broadcast = broadcast
        self.presence = Presence(broadcast, heartbeat)
        self.members_interval = members_interval

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        async with self.broadcast.lifespan(app), self.presence.running():
            logger.info("chat rooms on %s", self.broadcast.url)  # the URL without password
            yield

    async def index(self, request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def say(self, room: str, kind: str, nick: str, text: str | None = None) -> None:
        """Publish a room event."""
        event: dict[str, str] = {"type": kind, "nick": nick, "time": now()}
        if text is not None:
            event["text"] = text
        await self.broadcast.publish_json(chat_channel(room), event)

    # -- the read-only event stream ---------------------------------------------------

    async def room_events(self, request: Request, room: str) -> EventSourceResponse:
        problem = room_problem(room)
        if problem is not None:
            raise HTTPException(400, problem)
        last_id = request.headers.get("last-event-id") or None
        try:
            subscription = self.broadcast.subscribe(chat_channel(room), last_id=last_id)
        except ValueError:
            raise HTTPException(400, "Last-Event-ID is not an event id of this server") from None
        return EventSourceResponse(self._stream(subscription, resume=last_id is not None))

    async def _stream(
        self, subscription: Subscription, *, resume: bool
    ) -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(retry=RETRY_MS)
        try:
            async with subscription:
                async for event in RoomFeed(self.broadcast, subscription, resume=resume):
                    yield ServerSentEvent(event.json, id=event.id)
        except (SubscriberTooSlow, BroadcastUnavailable):
            pass  # NOTE: the stream ends; the browser reconnects and resumes after its last id

    # -- the WebSocket ----------------------------------------------------------------

    async def socket(self, ws: WebSocket, room: str) -> None:
        nick = ws.query_params.get("nick", "")
        last_id = ws.query_params.get("last_id") or None
        # NOTE: accept first, so that a refusal reaches the page as a close code and a reason
        # (a close before accept is an HTTP 403, which browsers do not show to scripts).
        await ws.accept()
        problem = room_problem(room) or nick_problem(nick)
        if problem is not None:
            await ws.close(CLOSE_POLICY_VIOLATION, problem)
            return
        try:
            subscription = self.broadcast.subscribe(chat_channel(room), last_id=last_id)
        except ValueError:
            await ws.close(CLOSE_POLICY_VIOLATION, "last_id is not an event id of this server")
            return
        try:
            async with subscription, self.presence.join(room, nick) as members:
                await self.say(room, "join", nick)
                try:
                    await _Conversation(self, ws, room, nick).run(
                        RoomFeed(self.broadcast, subscription, resume=last_id is not None), members
                    )
                finally:
                    await self._say_left(room, nick)
        except BroadcastUnavailable:
            await _close(ws, CLOSE_TRY_AGAIN_LATER, "The chat is unavailable; try again later")

    async def _say_left(self, room: str, nick: str) -> None:
        # NOTE: shielded, because a handler cancelled at shutdown still says goodbye, and
        # bounded, because Redis may be gone.
        with anyio.CancelScope(shield=True), anyio.move_on_after(3):
            try:
                await self.say(room, "leave", nick)
            except (BroadcastUnavailable, RuntimeError) as exc:  # RuntimeError: disconnected
                logger.info("%s leaving %s went unsaid: %s", nick, room, exc)


class _Conversation:
    """One WebSocket in a room: three tasks share the socket.

    One forwards the room's events, one the member list, and the handler's own task
    reads what the client says and publishes it. Each catches what it expects, so the
    task group only ever ends by cancellation.
    """

    def __init__(self, chat: Chat, ws: WebSocket, room: str, nick: str) -> None:
        self.chat = chat
        self.ws = ws
        self.room = room
        self.nick = nick
        self._lock = anyio.Lock()  # NOTE: one message at a time on the socket
        self._close: tuple[int, str] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None

    async def run(self, feed: RoomFeed, members: Room) -> None:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._guard, self._forward_events, feed)
            tasks.start_soon(self._guard, self._forward_members, members)
            await self._guard(self._listen)
        if self._close is not None:
            await _close(self.ws, *self._close)

    async def _guard(self, work: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``work``; whichever way it ends, the conversation is over."""
        try:
            await work(*args)
        except WebSocketDisconnect:
            pass  # the client has gone
        except WebSocketException as exc:  # e.g. a binary message: 1003
            self._close = exc.code, exc.reason
        except SubscriberTooSlow:
            self._close = CLOSE_TRY_AGAIN_LATER, "Fell behind; reconnect to catch up"
        except BroadcastUnavailable:
            self._close = CLOSE_TRY_AGAIN_LATER, "The chat is unavailable; try again later"
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()

    async def _send(self, text: str) -> None:
        lock = self._lock
        try:
            # PERF: a free lock is taken without the scheduling round that acquire() makes;
            # for a room of a thousand that is a thousand task switches per message.
            lock.acquire_nowait()
        except anyio.WouldBlock:
            await lock.acquire()
        try:
            # NOTE: another task may have found the client gone (or closed the socket) while
            # this one waited for the lock; a send now would be a RuntimeError.
            if self.ws.application_state is not WebSocketState.CONNECTED:
                raise WebSocketDisconnect(CLOSE_GOING_AWAY)
            await self.ws.send_text(text)
        finally:
            lock.release()

    async def _forward_events(self, feed: RoomFeed) -> None:
        async for event in feed:
            await self._send(event.json)
        self._close = CLOSE_SERVICE_RESTART, "The server is restarting"

    async def _forward_members(self, room: Room) -> None:
        members = None
        while True:
            members = await room.next_members(members)
            await self._send(orjson.dumps({"type": "members", "members": members}).decode())
            # PERF: the list goes out whole, so in a room of N members a burst of N joins
            # would be N² lists; pausing between two lets the changes meanwhile coalesce.
            await anyio.sleep(self.chat.members_interval)

    async def _listen(self) -> None:
        async for text in self.ws.iter_text():
            problem = await self._hear(text)
            if problem is not None:
                self._close = CLOSE_POLICY_VIOLATION, problem
                return

    async def _hear(self, raw: str) -> str | None:
        """Publish what the client said; return why it broke the rules, if it did."""
        try:
            said = orjson.loads(raw)
        except orjson.JSONDecodeError:
            said = None
        if not isinstance(said, dict) or said.get("type") != "message":
            return 'Expected {"type": "message", "text": "..."}'
        text = said.get("text")
        if not isinstance(text, str):
            return "Text must be a string"
        text = text.strip()
        problem = text_problem(text)
        if problem is not None:
            return problem
        try:
            await self.chat.say(self.room, "message", self.nick, text)
        except BroadcastUnavailable:
            await self._send(UNAVAILABLE)
        return None


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state is WebSocketState.CONNECTED:
        try:
            await ws.close(code, reason)
        except WebSocketDisconnect:
            pass  # gone already


def create_app(
    broadcast_url: str | None = None,
    *,
    heartbeat: float = HEARTBEAT,
    members_interval: float = MEMBERS_INTERVAL,
    history: int = HISTORY,
) -> App:
    """Build the chat; ``broadcast_url`` defaults to ``$REDIS_URL``, then ``memory://``.

    ``heartbeat`` and ``members_interval`` are those of ``Presence`` and ``Chat``;
    ``history`` is how many events each room keeps for replay.
    """
    url = broadcast_url or os.environ.get("REDIS_URL") or "memory://"
    # NOTE: a client that falls a whole buffer behind is disconnected rather than silently
    # missing messages; it reconnects with its last id and the history fills the gap.
    broadcast = Broadcast(url, history=history, overflow="disconnect")
    chat = Chat(broadcast, heartbeat, members_interval)
    app = App(lifespan=chat.lifespan)
    app.state.chat = chat  # for tests and tools: app.state.chat.broadcast
    app.add_route("/", chat.index, name="index")
    app.add_route("/rooms/{room}/events", chat.room_events, name="room_events")
    app.add_websocket_route(
        "/ws/{room}",
        chat.socket,
        name="socket",
        # SECURITY: a message is at most MAX_TEXT characters of up to 4 bytes, plus JSON;
        # nobody types more than a few messages a second.
        limits=Limits(max_message_size=4 * MAX_TEXT + 1024, websocket_max_rate=5),
    )
    app.mount("/static", StaticFiles(directory=STATIC, cache_control="no-cache"), name="static")
    return app


app = create_app()
