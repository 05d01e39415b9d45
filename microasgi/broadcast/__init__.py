"""Publish/subscribe across connections, processes and machines.

::

    broadcast = Broadcast("redis://127.0.0.1:6379/0")  # or "memory://"
    app = App(lifespan=broadcast.lifespan)

    await broadcast.publish("room:1", "hello")
    async with broadcast.subscribe("room:1") as subscription:
        async for event in subscription:
            ...

A ``Broadcast`` holds one connection to its backend and fans events out to the local
subscribers. Each subscriber has its own bounded buffer, filled without waiting, so a
slow subscriber never delays the publisher or the other subscribers.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import anyio

from microasgi._json import dump_json

from ._base import (
    Backend,
    BroadcastError,
    BroadcastUnavailable,
    Deliver,
    Event,
    SubscriberTooSlow,
    id_key,
)
from ._memory import MemoryBackend

__all__ = [
    "Broadcast",
    "BroadcastError",
    "BroadcastUnavailable",
    "Event",
    "SubscriberTooSlow",
    "Subscription",
]

Overflow = Literal["drop_oldest", "disconnect"]
_OVERFLOWS = ("drop_oldest", "disconnect")


class _LifespanHost(Protocol):
    def add_lifespan(
        self, lifespan: Callable[[Any], AbstractAsyncContextManager[Any]], /
    ) -> None: ...


class _State(enum.Enum):
    IDLE = "idle"  # created by subscribe(), not entered yet
    ACTIVE = "active"  # entered: events are buffered for the reader
    CLOSED = "closed"  # exited, or the broadcast disconnected: iteration ends


class Subscription:
    """The events of one or more channels, buffered for one reader.

    Made by ``Broadcast.subscribe``; enter it with ``async with``, then iterate it. The
    iteration ends when the ``async with`` is left or the broadcast disconnects, and
    raises ``SubscriberTooSlow`` if the buffer overflowed with ``overflow="disconnect"``.
    ``dropped`` counts the events lost to ``overflow="drop_oldest"``.
    """

    def __init__(
        self, broadcast: Broadcast, channels: tuple[str, ...], last_id: str | None
    ) -> None:
        self.channels = channels
        self.dropped = 0
        self._broadcast = broadcast
        self._last_id = last_id
        self._disconnect_on_overflow = broadcast.overflow == "disconnect"
        self._queue: deque[Event] = deque(maxlen=broadcast.buffer_size)
        self._replay: deque[Event] = deque()
        # Resuming only: the newest replayed id per channel, to drop live duplicates.
        self._seen: dict[str, tuple[int, ...]] = {}
        self._state = _State.IDLE
        self._too_slow = False
        self._wakeup: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<Subscription channels={list(self.channels)!r} {self._state.value}>"

    async def __aenter__(self) -> Subscription:
        if self._state is not _State.IDLE:
            raise RuntimeError(
                "a subscription can be entered once; call broadcast.subscribe() for a new one"
            )
        await self._broadcast._attach(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._broadcast._detach(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._replay:
                return self._replay.popleft()
            if self._too_slow:
                raise SubscriberTooSlow(self.buffer_size)
            if self._queue:
                event = self._queue.popleft()
                if not self._seen or self._is_new(event):
                    return event
            elif self._state is _State.ACTIVE:
                await self._wait()
            elif self._state is _State.IDLE:
                raise RuntimeError(
                    "enter the subscription before reading it: "
                    "async with broadcast.subscribe(...) as subscription"
                )
            else:
                raise StopAsyncIteration

    @property
    def buffer_size(self) -> int:
        """How many events may wait for the reader."""
        return self._queue.maxlen or 0

    async def _wait(self) -> None:
        if self._wakeup is not None:
            raise RuntimeError("another task is already reading this subscription")
        self._wakeup = anyio.Event()
        try:
            await self._wakeup.wait()
        finally:
            self._wakeup = None

    def _is_new(self, event: Event) -> bool:
        # NOTE: a live event that the replay already gave has an id no newer than the
        # replay's last one for its channel; ids grow within a channel, so the first newer
        # event marks the end of the overlap.
        last = self._seen.get(event.channel)
        if last is None or event.id is None:
            return True
        if id_key(event.id) <= last:
            return False
        del self._seen[event.channel]
        return True

    def _put(self, event: Event) -> bool:
        """Buffer ``event``; return whether it filled the buffer."""
        # PERF: runs once per subscriber per event, inside publish; it never waits.
        if self._too_slow:
            return False
        queue = self._queue
        full = len(queue) == queue.maxlen
        if full:
            if self._disconnect_on_overflow:
                self._too_slow = True
                queue.clear()  # SECURITY: memory stays bounded, whoever stops reading
            else:
                self.dropped += 1  # the deque drops the oldest on append
        if not self._too_slow:
            queue.append(event)
        if self._wakeup is not None:
            self._wakeup.set()
        # NOTE: only the event that fills the buffer asks the backend to let the reader run:
        # a reader that keeps up then empties it, and one that is stuck costs nothing more.
        return not full and len(queue) == queue.maxlen

    def _close(self) -> None:
        self._state = _State.CLOSED
        if self._wakeup is not None:
            self._wakeup.set()


class Broadcast:
    """A publish/subscribe hub, in one process or across many.

    ``url`` is ``"memory://"`` (one process; asyncio or trio) or
    ``"redis://host:port/db"`` (many processes and machines; needs the ``redis`` extra and
    runs on asyncio only). ``buffer_size`` is how many events each subscriber may have
    waiting. When a subscriber's buffer is full, ``overflow="drop_oldest"`` drops its
    oldest waiting event (counted in ``subscription.dropped``), and
    ``overflow="disconnect"`` ends its iteration with ``SubscriberTooSlow``. ``history``
    is how many events each channel keeps for ``subscribe(..., last_id=...)`` and
    ``history()``; with it, every event gets an ``id``. ``0`` keeps none.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        buffer_size: int = 1000,
        overflow: Overflow = "drop_oldest",
        history: int = 0,
    ) -> None:
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        if overflow not in _OVERFLOWS:
            raise ValueError(f"overflow must be one of {_OVERFLOWS}, got {overflow!r}")
        if not isinstance(history, int) or history < 0:
            raise ValueError(f"history must be an int >= 0 (0 keeps none), got {history!r}")
        self.url = _redact(url)
        self.buffer_size = buffer_size
        self.overflow = overflow
        self.history_size = history
        self._backend = _make_backend(url, self._deliver, history)
        self._subscribers: dict[str, set[Subscription]] = {}
        self._connected = False
        self._connecting = False

    def __repr__(self) -> str:
        return f"Broadcast({self.url!r})"

    # Life cycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect to the backend; ``BroadcastUnavailable`` if it cannot be reached."""
        if self._connected or self._connecting:
            raise RuntimeError(f"{self!r} is already connected")
        # NOTE: a second connect() while the first waits on Redis would open a second
        # reader and pool, and disconnect() would close only one of them.
        self._connecting = True
        try:
            await self._backend.connect()
        finally:
            self._connecting = False
        self._connected = True

    async def disconnect(self) -> None:
        """End every subscription's iteration and close the backend connection."""
        if not self._connected:
            return
        self._connected = False
        subscriptions = {sub for group in self._subscribers.values() for sub in group}
        self._subscribers.clear()
        for subscription in subscriptions:
            subscription._close()
        with anyio.CancelScope(shield=True):
            await self._backend.disconnect()

    async def __aenter__(self) -> Broadcast:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Connect for the life of an app: ``App(lifespan=broadcast.lifespan)``."""
        await self.connect()
        try:
            yield
        finally:
            await self.disconnect()

    def setup(self, app: _LifespanHost) -> None:
        """Plug into ``app.install(broadcast)``: connect during the app's lifespan."""
        app.add_lifespan(self.lifespan)

    # Publishing ---------------------------------------------------------------------------

    async def publish(self, channel: str, message: str | bytes) -> str | None:
        """Send ``message`` to every subscriber of ``channel``; return its history id."""
        self._check_connected("publish")
        _check_channel(channel)
        if not isinstance(message, (str, bytes)):
            raise TypeError(
                f"publish() sends str or bytes, got {type(message).__name__}; "
                "use publish_json() for other objects"
            )
        if isinstance(message, str) and not message.isascii():  # PERF: isascii() is O(1)
            _check_message(message)
        return await self._backend.publish(channel, message)

    async def publish_json(self, channel: str, obj: Any) -> str | None:
        """Send ``obj`` as JSON (encoded like ``JSONResponse``); read it with ``event.json()``."""
        return await self.publish(channel, dump_json(obj).decode())

    # Subscribing --------------------------------------------------------------------------

    def subscribe(self, *channels: str, last_id: str | None = None) -> Subscription:
        """Return a subscription to ``channels``, live once its ``async with`` is entered.

        With ``last_id`` (needs ``history``), the events published after that id come
        first, then live ones, without gap or duplicate.
        """
        if not channels:
            raise TypeError("subscribe() needs at least one channel")
        for channel in channels:
            _check_channel(channel)
        if last_id is not None:
            self._check_history("subscribe(last_id=...)")
            self._backend.check_id(last_id)
        return Subscription(self, tuple(dict.fromkeys(channels)), last_id)

    async def history(self, channel: str, last_id: str | None = None) -> list[Event]:
        """Return the events ``channel`` still keeps (after ``last_id``), oldest first."""
        self._check_connected("history")
        self._check_history("history()")
        _check_channel(channel)
        if last_id is not None:
            self._backend.check_id(last_id)
        return await self._backend.history(channel, last_id)

    async def _attach(self, subscription: Subscription) -> None:
        self._check_connected("subscribe")
        channels = subscription.channels
        for channel in channels:
            self._subscribers.setdefault(channel, set()).add(subscription)
        subscription._state = _State.ACTIVE
        try:
            await self._backend.subscribe(channels)
        except BaseException:
            self._forget(subscription)  # the backend has undone its part
            raise
        last_id = subscription._last_id
        if last_id is None or subscription._state is not _State.ACTIVE:
            return
        try:
            replay = [
                event
                for channel in channels
                for event in await self._backend.history(channel, last_id)
            ]
        except BaseException:
            await self._detach(subscription)
            raise
        replay.sort(key=lambda event: id_key(event.id or "0"))
        subscription._replay.extend(replay)
        subscription._seen = {event.channel: id_key(event.id or "0") for event in replay}

    async def _detach(self, subscription: Subscription) -> None:
        if subscription._state is not _State.ACTIVE:
            return  # closed by disconnect(), which let go of the backend
        self._forget(subscription)
        subscription._queue.clear()
        subscription._replay.clear()  # iteration ends when the `async with` is left
        await self._backend.unsubscribe(subscription.channels)

    def _forget(self, subscription: Subscription) -> None:
        for channel in subscription.channels:
            group = self._subscribers.get(channel)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._subscribers[channel]
        subscription._close()

    def _deliver(self, event: Event) -> bool:
        filled = False
        group = self._subscribers.get(event.channel)
        if group:
            for subscription in group:
                filled = subscription._put(event) or filled
        return filled

    def _check_connected(self, what: str) -> None:
        if not self._connected:
            raise RuntimeError(
                f"{what}() needs a connected broadcast: run it in the app's lifespan "
                "(App(lifespan=broadcast.lifespan) or app.install(broadcast)), "
                "or inside `async with broadcast:`"
            )

    def _check_history(self, what: str) -> None:
        if not self.history_size:
            raise RuntimeError(
                f"{what} needs history, and {self!r} keeps none: "
                "create it with Broadcast(url, history=N)"
            )


def _check_channel(channel: str) -> None:
    # NOTE: Redis names channels by their UTF-8 bytes, and hands back str: a bytes or int
    # name, or one with a lone surrogate, would never match its subscribers there. Refused on
    # every backend, so code that works on memory:// works on redis:// too.
    if not isinstance(channel, str):
        raise TypeError(f"a channel name is a str, got {type(channel).__name__}: {channel!r}")
    if not channel.isascii():  # PERF: isascii() is O(1); most names stop here
        try:
            channel.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"a channel name must be encodable as UTF-8, got {channel!r}"
            ) from None


def _check_message(message: str) -> None:
    # NOTE: Redis carries text as UTF-8, which has no lone surrogates; the memory backend
    # would pass one on, for the subscriber's send to fail. Refused on every backend.
    try:
        message.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"publish() sends a str as UTF-8, and this one has a lone surrogate "
            f"{message[exc.start]!r} at index {exc.start}; publish bytes to send other data"
        ) from None


def _make_backend(url: str, deliver: Deliver, history: int) -> Backend:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend(deliver, history)
    if scheme in ("redis", "rediss"):
        try:
            from ._redis import RedisBackend
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "Broadcast with a redis:// URL needs the redis package: "
                "pip install 'microasgi[redis]'"
            ) from exc
        return RedisBackend(url, deliver, history)
    raise ValueError(
        f'unsupported broadcast URL {_redact(url)!r}: use "memory://" or "redis://host:port/db"'
    )


def _redact(url: str) -> str:
    # SECURITY: the URL may carry a Redis password; keep it out of reprs and messages.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
