"""The ``redis://`` backend: Redis pub/sub for live delivery, Redis Streams for history.

It runs on asyncio only, because ``redis.asyncio`` does.

Design:

- Live delivery always goes through pub/sub: one dedicated connection per ``Broadcast``,
  read by one reader task, subscribed to every channel that has a local subscriber. A
  local subscription is active once Redis has confirmed its ``SUBSCRIBE``. When an event
  fills a subscriber's buffer, the reader yields before it reads on, so that a burst does
  not overflow the buffer of a subscriber that keeps up.
- Publishing uses a small pool of ordinary connections. Without history it is one
  ``PUBLISH``. With history, a Lua script runs ``XADD <channel> MAXLEN ~ <history> * ...``
  and then ``PUBLISH`` with the new stream id inside the payload. The script runs
  atomically, so a message is in the stream and on the wire, or in neither, and both see
  the messages of a channel in the same order. The stream key is the channel name.
- Replay (``subscribe(channel, last_id=...)``): the subscription first becomes active,
  then reads the stream after ``last_id`` (``XREVRANGE <channel> + (<last_id> COUNT
  <history>``). A message published in between arrives both ways; the front end drops
  live events whose id it has already replayed, so the boundary has no gap and no
  duplicate.
- Wire format of a pub/sub payload: one type byte (``\\x01`` str, ``\\x02`` bytes), the
  stream id (empty without history), a space, the data. Stream entries hold the fields
  ``t`` (``s`` or ``b``) and ``d``. A payload published by another Redis client arrives as
  ``bytes``, untouched.

Faults:

- ``publish``, ``history``, and the first ``connect`` make up to 3 attempts, 0.1 s then
  0.2 s apart, each bounded by 0.5 s connect and command timeouts, all within 2 s; then
  they raise ``BroadcastUnavailable``. (A retried publish may reach subscribers twice if
  Redis ran it but the reply was lost.)
- The reader task reconnects with exponential backoff (0.1 s doubling to 2 s) and
  resubscribes to every live channel. A connection that stays silent is checked with a
  ``PING`` after 5 s and dropped if the ``PING`` gets no answer within 5 s more.
  Messages published while the connection is down are lost for live subscribers (pub/sub
  keeps nothing); with history, a client can resume from its last id.
- A ``subscribe`` that Redis does not confirm within 2 s raises ``BroadcastUnavailable``.
- ``disconnect`` cancels the reader and closes every connection without waiting on Redis.

The pub/sub connection has no redis-py socket timeout; anyio deadlines bound its connect,
writes and reads instead. redis-py enforces that timeout with ``asyncio.wait_for``, which on
Python 3.11 writes in another task and can swallow a cancellation that lands as the write
completes: the reader would outlive ``disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import anyio
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._base import Backend, BroadcastUnavailable, Deliver, Event, check_id

T = TypeVar("T")

logger = logging.getLogger("microasgi.broadcast")

# NOTE: the fault budget documented above; tests shorten _PING_INTERVAL.
_CONNECT_TIMEOUT = 0.5
_COMMAND_TIMEOUT = 0.5
_RETRY_DELAYS = (0.1, 0.2)  # between the three attempts
_RETRY_DEADLINE = 2.0
_RECONNECT_MIN = 0.1
_RECONNECT_MAX = 2.0
_PING_INTERVAL = 5.0
_SUBSCRIBE_TIMEOUT = 2.0
_CANCEL_RETRY = 0.1  # disconnect repeats the reader's cancellation this often
# NOTE: publishers wait for one of these connections rather than open one each: a burst
# of a thousand publishes must not become a thousand connections to Redis.
_POOL_SIZE = 32

_FAULTS = (RedisConnectionError, RedisTimeoutError, OSError)

_STR = b"\x01"
_BYTES = b"\x02"
_STREAM_TAGS = {_STR: b"s", _BYTES: b"b"}
# NOTE: "0" (before every id) replays all that is kept, as on the memory backend.
_ID = re.compile(r"0|[0-9]{1,20}-[0-9]{1,20}")
_RAW_ID = re.compile(rb"[0-9]+-[0-9]+")

# NOTE: XADD and PUBLISH in one script so that the stream and live delivery agree.
_PUBLISH_WITH_HISTORY = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[2], 'd', ARGV[4])
redis.call('PUBLISH', KEYS[1], ARGV[3] .. id .. ' ' .. ARGV[4])
return id
"""


def _encode(message: str | bytes) -> tuple[bytes, bytes]:
    if isinstance(message, str):
        return _STR, message.encode()
    return _BYTES, message


def _decode(channel: str, payload: bytes) -> Event:
    tag, space = payload[:1], payload.find(b" ", 1)
    if tag in _STREAM_TAGS and space != -1:
        raw_id = payload[1:space]
        if not raw_id or _RAW_ID.fullmatch(raw_id):
            data = payload[space + 1 :]
            try:
                message = data.decode() if tag == _STR else data
            except UnicodeDecodeError:
                pass
            else:
                return Event(channel, message, raw_id.decode("ascii") or None)
    return Event(channel, payload)  # published by another kind of client


def _where(url: str) -> str:
    # SECURITY: error messages name the server, never the credentials in the URL.
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


class RedisBackend(Backend):
    """Pub/sub across processes and machines through one Redis server."""

    def __init__(self, url: str, deliver: Deliver, history: int) -> None:
        super().__init__(deliver, history)
        self.url = url
        self.where = _where(url)
        self._client: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._backoff = _RECONNECT_MIN
        # Pub/sub state, shared by the reader task and the subscribers (one event loop).
        self._conn: AbstractConnection | None = None
        self._refs: dict[str, int] = {}  # local subscriptions per channel
        self._pending: dict[str, int] = {}  # SUBSCRIBEs sent and not yet confirmed
        self._confirmed: set[str] = set()
        self._waiters: dict[str, anyio.Event] = {}
        self._publish_script: AsyncScript | None = None

    async def connect(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the Redis broadcast backend runs on asyncio only (redis.asyncio); "
                'on trio use Broadcast("memory://")'
            ) from None
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=_POOL_SIZE,
            timeout=_RETRY_DEADLINE,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_COMMAND_TIMEOUT,
            # NOTE: our own retry budget replaces redis-py's (seconds of backoff by default),
            # and RESP2 keeps pub/sub replies plain lists on every server version.
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self._client = Redis(connection_pool=pool)
        self._publish_script = self._client.register_script(_PUBLISH_WITH_HISTORY)
        try:
            await self._call("connect", self._client.ping)
        except BaseException:
            await self._close()
            raise
        # NOTE: a plain asyncio task, not an anyio task group: the reader must outlive the
        # lifespan's yield, and connect/disconnect need not run in one task.
        self._reader = asyncio.create_task(self._read_forever(pool), name="microasgi.broadcast")

    async def disconnect(self) -> None:
        reader, self._reader = self._reader, None
        # NOTE: a cancellation can be lost inside a dependency (see the module docstring),
        # so it is repeated until the reader has ended; disconnect must never hang on it.
        while reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader], timeout=_CANCEL_RETRY)
        await self._close()
        self._refs.clear()
        self._pending.clear()
        self._confirmed.clear()
        for waiter in self._waiters.values():
            waiter.set()  # a subscribe in flight returns; its subscription is closed
        self._waiters.clear()

    async def _close(self) -> None:
        client, self._client = self._redis(), None
        await client.aclose()
        await client.connection_pool.disconnect()

    def _redis(self) -> Redis:
        assert self._client is not None, "used before connect()"
        return self._client

    async def _call(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        """Run ``command``, retrying connection faults within the budget."""
        client = self._redis()
        try:
            return await self._retry(what, command)
        finally:
            if self._client is not client:
                # NOTE: disconnect() closed the pool while this command ran or waited for a
                # connection, and redis-py reopens a closed one on use: close it again, or
                # it outlives the broadcast.
                with anyio.CancelScope(shield=True):
                    await client.connection_pool.disconnect(inuse_connections=False)

    async def _retry(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        attempts = 0
        error: BaseException | None = None
        with anyio.move_on_after(_RETRY_DEADLINE):
            for delay in (*_RETRY_DELAYS, None):
                attempts += 1
                try:
                    return await command()
                except _FAULTS as exc:
                    error = exc
                if delay is not None:
                    await anyio.sleep(delay)
        raise BroadcastUnavailable(
            f"Redis at {self.where} is unavailable: {what} failed after {attempts} "
            f"attempt(s) within {_RETRY_DEADLINE:g} s ({error or 'timed out'})"
        ) from error

    # Publishing and history ---------------------------------------------------------------

    async def publish(self, channel: str, message: str | bytes) -> str | None:
        tag, data = _encode(message)
        client, script = self._redis(), self._publish_script
        if not self.history_size:
            await self._call("publish", lambda: client.publish(channel, tag + b" " + data))
            return None
        assert script is not None, "registered by connect()"
        args: list[bytes | int] = [self.history_size, _STREAM_TAGS[tag], tag, data]
        event_id: bytes = await self._call("publish", lambda: script([channel], args))
        return event_id.decode("ascii")

    async def history(self, channel: str, last_id: str | None) -> list[Event]:
        client = self._redis()
        start = "-" if last_id is None else f"({last_id}"
        # NOTE: redis-py types stream entries loosely (str | bytes | None); without
        # decode_responses they are (bytes id, {bytes: bytes}).
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await self._call(
                "history", lambda: client.xrevrange(channel, "+", start, count=self.history_size)
            ),
        )
        return [
            Event(
                channel,
                fields[b"d"].decode() if fields.get(b"t") == b"s" else fields[b"d"],
                raw_id.decode("ascii"),
            )
            for raw_id, fields in reversed(entries)
        ]

    def check_id(self, event_id: str) -> str:
        return check_id(event_id, _ID, '"<milliseconds>-<sequence>" (a Redis stream id) or "0"')

    # Subscriptions ------------------------------------------------------------------------

    async def subscribe(self, channels: Sequence[str]) -> None:
        new = []
        for channel in channels:
            count = self._refs.get(channel, 0) + 1
            self._refs[channel] = count
            if count == 1:
                new.append(channel)
        try:
            if new:
                await self._send_subscribe(new)
            with anyio.fail_after(_SUBSCRIBE_TIMEOUT):
                for channel in channels:
                    if channel not in self._confirmed and self._client is not None:
                        await self._waiters.setdefault(channel, anyio.Event()).wait()
        except TimeoutError:
            await self.unsubscribe(channels)
            raise BroadcastUnavailable(
                f"Redis at {self.where} did not confirm SUBSCRIBE within {_SUBSCRIBE_TIMEOUT:g} s"
            ) from None
        except BaseException:
            await self.unsubscribe(channels)
            raise

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        gone = []
        for channel in channels:
            count = self._refs.get(channel, 0) - 1
            if count > 0:
                self._refs[channel] = count
                continue
            self._refs.pop(channel, None)
            # NOTE: forget the confirmation now, not when Redis answers: a subscriber that
            # comes back before the answer must wait for its own SUBSCRIBE.
            self._confirmed.discard(channel)
            self._waiters.pop(channel, None)
            gone.append(channel)
        if gone:
            await self._send("UNSUBSCRIBE", *gone)

    async def _send_subscribe(self, channels: Sequence[str]) -> None:
        if not channels or self._conn is None:
            return  # the reader subscribes to every live channel once it is connected
        for channel in channels:
            self._pending[channel] = self._pending.get(channel, 0) + 1
        await self._send("SUBSCRIBE", *channels)

    async def _send(self, *args: Any) -> None:
        """Write a command on the pub/sub connection, if there is a healthy one."""
        conn = self._conn
        # NOTE: redis-py reconnects a closed connection on send; that one must stay closed
        # until the reader replaces it and resubscribes.
        if conn is None or not conn.is_connected:
            return
        # NOTE: shielded because redis-py closes a connection whose write is interrupted,
        # which would cut off every subscriber; bounded because a write that stalls that
        # long means a dead connection, which redis-py then closes for the reader to replace.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_COMMAND_TIMEOUT):
            try:
                await conn.send_command(*args, check_health=False)
            except _FAULTS:
                pass  # the reader sees the broken connection, reconnects and resubscribes

    def _confirm(self, channel: str) -> None:
        pending = self._pending.pop(channel, 0) - 1
        if pending > 0:
            self._pending[channel] = pending
        elif channel in self._refs:
            self._confirmed.add(channel)
            waiter = self._waiters.pop(channel, None)
            if waiter is not None:
                waiter.set()

    # The reader task ----------------------------------------------------------------------

    async def _read_forever(self, pool: ConnectionPool) -> None:
        self._backoff = _RECONNECT_MIN
        # NOTE: no socket timeout on this connection, so that redis-py neither wraps its
        # writes in asyncio.wait_for nor bounds its reads; our own deadlines do.
        kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        while True:
            conn = pool.connection_class(**kwargs)
            try:
                with anyio.fail_after(_CONNECT_TIMEOUT + _COMMAND_TIMEOUT):
                    await conn.connect()  # type: ignore[no-untyped-call]  # unannotated upstream
                logger.debug("broadcast: pub/sub connection to Redis at %s open", self.where)
                await self._serve(conn)
            except _FAULTS as exc:
                logger.warning(
                    "broadcast: pub/sub connection to Redis at %s lost (%s); reconnecting in %g s",
                    self.where,
                    exc,
                    self._backoff,
                )
            except Exception:
                logger.exception(
                    "broadcast: the Redis reader failed; reconnecting to %s in %g s",
                    self.where,
                    self._backoff,
                )
            finally:
                self._conn = None
                self._pending.clear()
                self._confirmed.clear()
                await conn.disconnect(nowait=True)
            await anyio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _RECONNECT_MAX)

    async def _serve(self, conn: AbstractConnection) -> None:
        # NOTE: publish the connection and snapshot the live channels with no await in
        # between: a subscriber that arrives later sends its own SUBSCRIBE on it.
        self._conn = conn
        await self._send_subscribe(list(self._refs))
        awaiting_pong = False
        while True:
            reply = None
            # NOTE: redis-py's parser keeps a half-read reply when a read is cancelled, so
            # the next read picks it up; math.inf opts out of the socket timeout.
            with anyio.move_on_after(_PING_INTERVAL) as idle:
                reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            if not idle.cancelled_caught:
                # NOTE: the backoff starts again only once a connection has proved useful, so
                # a server that accepts and then fails every time is not retried in a loop.
                self._backoff = _RECONNECT_MIN
                awaiting_pong = False
                if self._dispatch(reply):
                    # NOTE: a read from the socket buffer does not yield, so a burst would be
                    # fanned out whole before any subscriber runs, and overflow the buffer of
                    # one that keeps up. PERF: only a buffer just filled costs this yield.
                    await anyio.lowlevel.checkpoint()
            elif awaiting_pong:
                raise RedisTimeoutError(f"no answer to PING within {_PING_INTERVAL:g} s")
            else:
                awaiting_pong = True
                await self._send("PING")

    def _dispatch(self, reply: Any) -> bool:
        """Act on one reply; return whether it filled a subscriber's buffer."""
        if not isinstance(reply, list) or len(reply) != 3:
            return False  # PONG
        kind, channel, payload = reply
        if kind == b"message":
            return self.deliver(_decode(channel.decode(), payload))
        if kind == b"subscribe":
            self._confirm(channel.decode())
        return False
