"""The redis:// backend against a real redis-server: wire format, faults, cleanup."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from microasgi.broadcast import Broadcast, BroadcastUnavailable, Event, Subscription
from microasgi.broadcast import _redis as redis_backend
from tests.broadcast.test_broadcast import take
from tests.support import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio runs on asyncio only


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain redis-py client, to look at the server and publish as a stranger would."""
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def numsub(raw: Redis, channel: str) -> int:
    [(_, count)] = await raw.pubsub_numsub(channel)
    return int(count)


async def wait_for_numsub(raw: Redis, channel: str, expected: int, timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while await numsub(raw, channel) != expected:
            await anyio.sleep(0.02)


async def test_several_processes_share_channels(redis_server: RedisServer) -> None:
    async with (
        Broadcast(redis_server.url) as one,
        Broadcast(redis_server.url) as other,
        one.subscribe("c") as sub,
    ):
        await other.publish("c", "from another process")
        await other.publish("c", b"\x00")
        events = await take(sub, 2)
    assert [e.message for e in events] == ["from another process", b"\x00"]


async def test_a_stranger_s_payload_arrives_as_bytes(redis_server: RedisServer, raw: Redis) -> None:
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("c") as sub:
        await raw.publish("c", b"plain")
        await raw.publish("c", b"\x01no space")
        await raw.publish("c", b"\x01 \xff not utf-8")
        events = await take(sub, 3)
    assert [e.message for e in events] == [b"plain", b"\x01no space", b"\x01 \xff not utf-8"]
    assert {e.id for e in events} == {None}


async def test_a_reader_that_keeps_up_misses_nothing_of_a_burst(
    redis_server: RedisServer, raw: Redis
) -> None:
    # A burst reaches the pub/sub socket faster than one event per read: the reader lets
    # the subscribers run whenever a buffer fills, so one that keeps up is never too slow.
    total = 2000
    async with (
        Broadcast(redis_server.url, buffer_size=10, overflow="disconnect") as broadcast,
        broadcast.subscribe("c") as sub,
        broadcast.subscribe("c") as other,
    ):
        received: list[list[Event]] = []

        async def read(subscription: Subscription) -> None:
            received.append(await take(subscription, total))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, sub)
            tg.start_soon(read, other)
            await anyio.sleep(0.05)  # both wait for their first event
            async with raw.pipeline(transaction=False) as pipe:
                for number in range(total):
                    pipe.publish("c", b"\x01 %d" % number)
                await pipe.execute()
    for events in received:
        assert [e.message for e in events] == [str(number) for number in range(total)]
    assert len(received) == 2


async def test_history_lives_in_a_redis_stream(redis_server: RedisServer, raw: Redis) -> None:
    async with Broadcast(redis_server.url, history=2) as broadcast:
        first = await broadcast.publish("c", "text")
        second = await broadcast.publish("c", b"bytes")
        entries: Any = await raw.xrange("c")  # redis-py types stream entries loosely
        assert [(i.decode(), f) for i, f in entries] == [
            (first, {b"t": b"s", b"d": b"text"}),
            (second, {b"t": b"b", b"d": b"bytes"}),
        ]
        history = await broadcast.history("c")
        assert [(e.message, e.id) for e in history] == [("text", first), (b"bytes", second)]
        assert await broadcast.history("c", last_id="0") == history
        async with broadcast.subscribe("c", last_id="0") as sub:
            assert await take(sub, 2) == history
        with pytest.raises(ValueError, match="Redis stream id"):
            await broadcast.history("c", last_id="5")


async def test_a_burst_of_publishes_shares_a_bounded_pool(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("c") as sub:
        async with anyio.create_task_group() as tg:
            for number in range(500):
                tg.start_soon(broadcast.publish, "c", str(number))
        events = await take(sub, 500)
        clients = await raw.client_list()
    assert sorted(int(e.message) for e in events) == list(range(500))
    # The pool, the pub/sub connection and this test's own client.
    assert len(clients) <= redis_backend._POOL_SIZE + 2


async def test_subscription_is_on_redis_while_entered(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        async with broadcast.subscribe("c") as first, broadcast.subscribe("c", "d"):
            # One Redis subscription per channel, however many local subscribers.
            assert await numsub(raw, "c") == 1
            assert await numsub(raw, "d") == 1
            assert first.channels == ("c",)
        await wait_for_numsub(raw, "c", 0)
        await wait_for_numsub(raw, "d", 0)


async def test_cancelled_subscriber_leaves_no_task_and_no_redis_subscription(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        tasks_before = asyncio.all_tasks()
        entered = anyio.Event()

        async def listen() -> None:
            async with broadcast.subscribe("c") as sub:
                entered.set()
                async for _ in sub:
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            with anyio.fail_after(5):
                await entered.wait()
            assert await numsub(raw, "c") == 1
            tg.cancel_scope.cancel()
        await wait_for_numsub(raw, "c", 0)
        assert asyncio.all_tasks() == tasks_before
    assert asyncio.all_tasks() == tasks_before - {
        task for task in tasks_before if task.get_name() == "microasgi.broadcast"
    }


async def acl_setuser_default(raw: Redis, rule: str) -> None:
    await raw.execute_command("ACL", "SETUSER", "default", rule)  # type: ignore[no-untyped-call]


async def warm_up(broadcast: Broadcast) -> None:
    """Return once the pub/sub connection is up (a round trip through it)."""
    async with broadcast.subscribe("warm-up") as sub:
        await broadcast.publish("warm-up", "")
        await take(sub, 1)


async def test_cancelled_while_subscribing_leaves_nothing(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        await warm_up(broadcast)
        redis_server.pause()  # the SUBSCRIBE goes out, its confirmation does not come back
        try:
            with anyio.move_on_after(0.2) as scope:
                async with broadcast.subscribe("c"):
                    pytest.fail("entered without a confirmation")
            assert scope.cancelled_caught
        finally:
            redis_server.resume()
        await wait_for_numsub(raw, "c", 0)
        assert broadcast._subscribers == {}
        async with broadcast.subscribe("c") as sub:
            await broadcast.publish("c", "fine")
            assert [e.message for e in await take(sub, 1)] == ["fine"]


async def test_subscribe_again_before_redis_answered_the_first(
    redis_server: RedisServer, raw: Redis
) -> None:
    # SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE all in flight: only the last confirmation counts.
    async with Broadcast(redis_server.url) as broadcast:
        await warm_up(broadcast)
        redis_server.pause()
        entered = anyio.Event()
        try:
            with anyio.move_on_after(0.1):
                async with broadcast.subscribe("c"):
                    pytest.fail("entered without a confirmation")

            async def subscribe_again() -> None:
                async with broadcast.subscribe("c") as sub:
                    entered.set()
                    assert [e.message for e in await take(sub, 1)] == ["second"]

            async with anyio.create_task_group() as tg:
                tg.start_soon(subscribe_again)
                await anyio.sleep(0.1)
                assert not entered.is_set()
                redis_server.resume()
                with anyio.fail_after(5):
                    await entered.wait()
                await broadcast.publish("c", "second")
        finally:
            redis_server.resume()
        await wait_for_numsub(raw, "c", 0)


async def test_resume_drops_live_events_the_replay_already_gave(redis_server: RedisServer) -> None:
    async with (
        Broadcast(redis_server.url, history=10) as broadcast,
        broadcast.subscribe("c") as watcher,
    ):
        first = await broadcast.publish("c", "first")
        await take(watcher, 1)
        events = []
        entered = anyio.Event()

        async def resume() -> None:
            async with broadcast.subscribe("c", last_id=first) as sub:
                entered.set()
                events.extend(await take(sub, 2))

        # NOTE: with Redis frozen, the publish is queued before the resuming subscriber
        # registers and reads the stream, so "both ways" reaches it live and in the replay.
        redis_server.pause()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(broadcast.publish, "c", "both ways")
                await anyio.sleep(0.05)
                tg.start_soon(resume)
                await anyio.sleep(0.05)
                redis_server.resume()
                with anyio.fail_after(5):
                    await entered.wait()
                await broadcast.publish("c", "live")
        finally:
            redis_server.resume()
        assert [e.message for e in events] == ["both ways", "live"]


async def test_resume_fails_cleanly_when_the_stream_cannot_be_read(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with (
        Broadcast(redis_server.url, history=10) as broadcast,
        broadcast.subscribe("c") as watcher,
    ):
        first = await broadcast.publish("c", "first")
        await take(watcher, 1)
        redis_server.pause()  # "c" is already live, so only the stream read is left to fail
        try:
            with pytest.raises(BroadcastUnavailable, match="history failed"):
                async with broadcast.subscribe("c", last_id=first):
                    pytest.fail("entered without the replay")
        finally:
            redis_server.resume()
        assert broadcast._subscribers == {"c": {watcher}}
        assert await numsub(raw, "c") == 1
        await broadcast.publish("c", "watcher still hears")
        assert [e.message for e in await take(watcher, 1)] == ["watcher still hears"]


# Faults ----------------------------------------------------------------------------------------


async def test_publish_raises_broadcast_unavailable_when_redis_is_gone(
    redis_server: RedisServer,
) -> None:
    async with Broadcast(redis_server.url, history=5) as broadcast:
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(BroadcastUnavailable) as caught:
            await broadcast.publish("c", "lost")
        assert time.monotonic() - started < 2.5
        message = str(caught.value)
        assert f"127.0.0.1:{redis_server.port} is unavailable: publish failed" in message
        with pytest.raises(BroadcastUnavailable, match="history failed"):
            await broadcast.history("c")
        started = time.monotonic()
    assert time.monotonic() - started < 2  # disconnect does not wait for Redis


async def test_publish_to_a_frozen_redis_gives_up_within_the_budget(
    redis_server: RedisServer,
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        redis_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BroadcastUnavailable):
                await broadcast.publish("c", "stuck")
            assert time.monotonic() - started < 2.5
        finally:
            started = time.monotonic()
            await broadcast.disconnect()
            assert time.monotonic() - started < 2
            redis_server.resume()


async def test_connect_raises_broadcast_unavailable_without_redis(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    broadcast = Broadcast(redis_server.url)
    with pytest.raises(
        BroadcastUnavailable, match=r"connect failed after 3 attempt\(s\) within 2 s"
    ):
        await broadcast.connect()
    redis_server.start()
    async with broadcast:  # nothing was left half-connected
        assert await broadcast.publish("c", "up") is None


async def test_subscribe_raises_broadcast_unavailable_while_redis_is_gone(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(BroadcastUnavailable, match="did not confirm SUBSCRIBE"):
            async with broadcast.subscribe("c"):
                pass
        assert time.monotonic() - started < 3
        assert broadcast._subscribers == {}
        redis_server.start()
        async with broadcast.subscribe("c") as sub:
            await broadcast.publish("c", "back")
            assert [e.message for e in await take(sub, 1)] == ["back"]


async def test_subscriber_survives_a_redis_restart(redis_server: RedisServer, raw: Redis) -> None:
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("c", "d") as sub:
        await broadcast.publish("c", "before")
        assert [e.message for e in await take(sub, 1)] == ["before"]
        redis_server.stop()
        redis_server.start()  # a new process on the same port, with no subscriptions
        await wait_for_numsub(raw, "c", 1)
        await wait_for_numsub(raw, "d", 1)
        await broadcast.publish("d", "after")
        assert [e.message for e in await take(sub, 1)] == ["after"]


async def test_subscriber_survives_a_killed_connection(
    redis_server: RedisServer, raw: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("c") as sub:
        with caplog.at_level(logging.WARNING, logger="microasgi.broadcast"):
            assert await raw.client_kill_filter(_type="pubsub") == 1
            await wait_for_numsub(raw, "c", 1)
        assert "pub/sub connection to Redis at 127.0.0.1" in caplog.text
        await broadcast.publish("c", "after")
        assert [e.message for e in await take(sub, 1)] == ["after"]


async def test_a_silent_connection_is_pinged_and_replaced(
    redis_server: RedisServer,
    raw: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(redis_backend, "_PING_INTERVAL", 0.1)
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("c") as sub:
        with caplog.at_level(logging.WARNING, logger="microasgi.broadcast"):
            await anyio.sleep(0.35)  # idle: pinged and answered, the connection stays
            assert caplog.text == ""
            await broadcast.publish("c", "idle but alive")
            assert [e.message for e in await take(sub, 1)] == ["idle but alive"]
            redis_server.pause()  # the PING goes unanswered: the reader drops the connection
            await anyio.sleep(0.5)
            redis_server.resume()
            await wait_for_numsub(raw, "c", 1)
        assert "no answer to PING within 0.1 s" in caplog.text
        await broadcast.publish("c", "after the freeze")
        assert [e.message for e in await take(sub, 1)] == ["after the freeze"]


async def test_an_error_reply_on_the_pubsub_connection_is_logged_and_survived(
    redis_server: RedisServer, raw: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        await warm_up(broadcast)
        await acl_setuser_default(raw, "resetchannels")
        with (
            caplog.at_level(logging.ERROR, logger="microasgi.broadcast"),
            pytest.raises(BroadcastUnavailable, match="did not confirm SUBSCRIBE"),
        ):
            async with broadcast.subscribe("forbidden"):
                pass
        assert "the Redis reader failed; reconnecting" in caplog.text
        assert "NoPermissionError" in caplog.text
        # A server that fails every connection is retried with a growing delay.
        assert "in 0.1 s" in caplog.text
        assert "in 0.2 s" in caplog.text
        await acl_setuser_default(raw, "allchannels")
        async with broadcast.subscribe("allowed") as sub:
            await broadcast.publish("allowed", "again")
            assert [e.message for e in await take(sub, 1)] == ["again"]


async def test_resubscribing_while_the_unsubscribe_is_in_flight(
    redis_server: RedisServer, raw: Redis
) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        for _ in range(20):
            async with broadcast.subscribe("c"):
                pass
            async with broadcast.subscribe("c") as sub:
                await broadcast.publish("c", "x")
                assert [e.message for e in await take(sub, 1)] == ["x"]
        await wait_for_numsub(raw, "c", 0)


async def test_disconnect_while_a_subscribe_waits(redis_server: RedisServer) -> None:
    broadcast = Broadcast(redis_server.url)
    await broadcast.connect()
    redis_server.pause()
    try:
        subscription: Subscription | None = None

        async def enter() -> None:
            nonlocal subscription
            async with broadcast.subscribe("c") as subscription:
                assert [e async for e in subscription] == []

        async with anyio.create_task_group() as tg:
            tg.start_soon(enter)
            await anyio.sleep(0.1)
            with anyio.fail_after(2):
                await broadcast.disconnect()
        assert subscription is not None
    finally:
        redis_server.resume()


async def disconnect_within(broadcast: Broadcast, seconds: float) -> None:
    """Fail, instead of hanging, if ``disconnect()`` (shielded) does not return in time."""
    task = asyncio.ensure_future(broadcast.disconnect())
    done, _ = await asyncio.wait([task], timeout=seconds)
    assert done, f"disconnect() did not return within {seconds:g} s"
    task.result()


async def test_disconnect_ends_the_reader_whatever_it_is_doing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader is caught connecting, reading, or writing a PING (every 2 ms here): a
    # cancellation that lands as a write completes must not leave it running.
    monkeypatch.setattr(redis_backend, "_PING_INTERVAL", 0.002)
    for attempt in range(150):
        broadcast = Broadcast(redis_server.url)
        await broadcast.connect()
        try:
            if attempt % 3:
                async with broadcast.subscribe("c"):
                    await anyio.sleep(0.001 * (attempt % 7))
        finally:
            await disconnect_within(broadcast, 2)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "microasgi.broadcast"]


async def test_connect_while_connecting_is_refused_and_leaves_one_reader(
    redis_server: RedisServer, raw: Redis
) -> None:
    broadcast = Broadcast(redis_server.url)
    outcomes: list[str] = []

    async def connect() -> None:
        try:
            await broadcast.connect()
        except RuntimeError as exc:
            outcomes.append(str(exc))
        else:
            outcomes.append("connected")

    async with anyio.create_task_group() as tg:
        tg.start_soon(connect)
        tg.start_soon(connect)  # while the first waits for Redis to answer its PING
    assert sorted(outcomes) == [f"{broadcast!r} is already connected", "connected"]
    readers = [t for t in asyncio.all_tasks() if t.get_name() == "microasgi.broadcast"]
    assert len(readers) == 1
    await broadcast.disconnect()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "microasgi.broadcast"]
    with anyio.fail_after(5):
        while len(await raw.client_list()) > 1:  # this test's own client
            await anyio.sleep(0.02)
    # The refused connect left nothing behind: the broadcast connects again.
    async with broadcast:
        await broadcast.publish("c", "fine")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_redis_backend_refuses_trio(redis_server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="asyncio only"):
        await Broadcast(redis_server.url).connect()


async def test_disconnect_with_publishes_in_flight_leaves_no_connection(
    redis_server: RedisServer, raw: Redis
) -> None:
    # More publishes than pool connections: some are on the wire, others wait for a
    # connection, when disconnect() closes the pool. None may reopen a connection for good.
    await raw.ping()
    outcomes: list[str] = []

    async def publish(broadcast: Broadcast, number: int) -> None:
        try:
            await broadcast.publish("c", str(number))
        except BroadcastUnavailable:
            outcomes.append("unavailable")
        else:
            outcomes.append("sent")

    broadcast = Broadcast(redis_server.url)
    await broadcast.connect()
    async with anyio.create_task_group() as tg:
        for number in range(3 * redis_backend._POOL_SIZE):
            tg.start_soon(publish, broadcast, number)
        await anyio.sleep(0)
        await broadcast.disconnect()
    assert len(outcomes) == 3 * redis_backend._POOL_SIZE
    with anyio.fail_after(5):
        while len(await raw.client_list()) > 1:  # this test's own client
            await anyio.sleep(0.02)
