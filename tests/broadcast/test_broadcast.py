"""Broadcast behaviour that every backend shares, run on memory:// and redis://."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest

from microasgi.app import App
from microasgi.broadcast import (
    Broadcast,
    BroadcastError,
    BroadcastUnavailable,
    Event,
    SubscriberTooSlow,
    Subscription,
)
from microasgi.requests import Request
from microasgi.testing import AsyncTestClient

# memory:// runs on both event loops; redis.asyncio runs on asyncio only.
SETUPS = [
    pytest.param(("asyncio", "memory"), id="memory-asyncio"),
    pytest.param(("trio", "memory"), id="memory-trio"),
    pytest.param(("asyncio", "redis"), id="redis-asyncio"),
]


@pytest.fixture(params=SETUPS)
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(setup: tuple[str, str]) -> str:
    return setup[0]


@pytest.fixture
def url(setup: tuple[str, str], request: pytest.FixtureRequest) -> str:
    if setup[1] == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_server").url)


async def take(subscription: Subscription, count: int, timeout: float = 5) -> list[Event]:
    """Read ``count`` events, failing the test if they take longer than ``timeout``."""
    events = []
    with anyio.fail_after(timeout):
        async for event in subscription:
            events.append(event)
            if len(events) == count:
                break
    return events


async def nothing_more(subscription: Subscription, wait: float = 0.2) -> None:
    with anyio.move_on_after(wait):
        event = await subscription.__anext__()
        pytest.fail(f"unexpected event {event!r}")


pytestmark = pytest.mark.anyio


async def test_str_stays_str_and_bytes_stays_bytes(url: str) -> None:
    messages: list[str | bytes] = [
        "héllo wörld",
        "",
        "\x01 looks like a header",
        b"\x00\xff raw bytes",
        b"",
        b" leading space",
    ]
    async with Broadcast(url) as broadcast, broadcast.subscribe("c") as sub:
        for message in messages:
            await broadcast.publish("c", message)
        events = await take(sub, len(messages))
    assert [event.message for event in events] == messages
    assert [type(event.message) for event in events] == [type(m) for m in messages]
    assert {event.channel for event in events} == {"c"}
    assert {event.id for event in events} == {None}


async def test_publish_json_round_trips_through_event_json(url: str) -> None:
    async with Broadcast(url) as broadcast, broadcast.subscribe("c") as sub:
        await broadcast.publish_json("c", {"text": "hi", "n": [1, 2.5, None]})
        [event] = await take(sub, 1)
    assert event.message == '{"text":"hi","n":[1,2.5,null]}'
    assert event.json() == {"text": "hi", "n": [1, 2.5, None]}


async def test_one_subscription_receives_several_channels(url: str) -> None:
    # A repeated channel counts once.
    async with Broadcast(url) as broadcast, broadcast.subscribe("a", "b", "a") as sub:
        assert sub.channels == ("a", "b")
        await broadcast.publish("a", "1")
        await broadcast.publish("other", "ignored")
        await broadcast.publish("b", "2")
        await broadcast.publish("a", "3")
        events = await take(sub, 3)
        await nothing_more(sub)
    assert [(e.channel, e.message) for e in events] == [("a", "1"), ("b", "2"), ("a", "3")]


ODD_CHANNELS = ["", " ", "a b", "room:*", "[x]?", "line\nbreak\r\n", "nul\x00", "ünï😀", "x" * 1000]


async def test_odd_channel_names_are_plain_names(url: str) -> None:
    # SUBSCRIBE, not PSUBSCRIBE: glob characters match themselves only.
    async with Broadcast(url, history=5) as broadcast:
        async with broadcast.subscribe(*ODD_CHANNELS, "room:1") as sub:
            for channel in ODD_CHANNELS:
                await broadcast.publish(channel, channel)
            await broadcast.publish("room:1", "last")
            events = await take(sub, len(ODD_CHANNELS) + 1)
        assert [(e.channel, e.message) for e in events] == [
            *[(channel, channel) for channel in ODD_CHANNELS],
            ("room:1", "last"),
        ]
        assert [e.message for e in await broadcast.history("room:*")] == ["room:*"]


@pytest.mark.parametrize(
    ("channel", "error", "message"),
    [
        (b"c", TypeError, "a channel name is a str, got bytes"),
        (7, TypeError, "a channel name is a str, got int"),
        (None, TypeError, "a channel name is a str, got NoneType"),
        ("\ud800", ValueError, "encodable as UTF-8"),
    ],
)
async def test_a_channel_name_is_a_utf8_str(
    url: str, channel: Any, error: type[Exception], message: str
) -> None:
    # On Redis such a name would never match its subscribers; refused on every backend.
    async with Broadcast(url, history=5) as broadcast:
        with pytest.raises(error, match=message):
            await broadcast.publish(channel, "x")
        with pytest.raises(error, match=message):
            broadcast.subscribe("fine", channel)
        with pytest.raises(error, match=message):
            await broadcast.history(channel)
        assert broadcast._subscribers == {}


async def test_a_str_message_is_utf8_text(url: str) -> None:
    # Redis carries a str as UTF-8: one with a lone surrogate is refused on every backend.
    async with Broadcast(url, history=5) as broadcast, broadcast.subscribe("c") as sub:
        with pytest.raises(ValueError, match=r"lone surrogate '\\udcff' at index 2"):
            await broadcast.publish("c", "ok\udcff")
        await broadcast.publish("c", "ünï😀")
        assert [e.message for e in await take(sub, 1)] == ["ünï😀"]
        assert [e.message for e in await broadcast.history("c")] == ["ünï😀"]


async def test_every_subscriber_receives_every_event(url: str) -> None:
    async with (
        Broadcast(url) as broadcast,
        broadcast.subscribe("c") as first,
        broadcast.subscribe("c") as second,
        broadcast.subscribe("c", "d") as third,
    ):
        await broadcast.publish("c", "x")
        await broadcast.publish("d", "y")
        assert [e.message for e in await take(first, 1)] == ["x"]
        assert [e.message for e in await take(second, 1)] == ["x"]
        assert [e.message for e in await take(third, 2)] == ["x", "y"]


async def test_leaving_unsubscribes_only_that_subscriber(url: str) -> None:
    async with Broadcast(url) as broadcast:
        async with broadcast.subscribe("c") as stays:
            async with broadcast.subscribe("c", "solo") as leaves:
                await broadcast.publish("c", "before")
                assert [e.message for e in await take(leaves, 1)] == ["before"]
            await broadcast.publish("c", "after")
            await broadcast.publish("solo", "to nobody")
            assert [e.message for e in await take(stays, 2)] == ["before", "after"]
            # A subscription that has been left ends its iteration.
            assert [e async for e in leaves] == []
        async with broadcast.subscribe("solo") as again:
            await broadcast.publish("solo", "new")
            assert [e.message for e in await take(again, 1)] == ["new"]
        assert broadcast._subscribers == {}


async def test_disconnect_ends_iteration_and_reconnect_works(url: str) -> None:
    broadcast = Broadcast(url)
    await broadcast.connect()
    ended = anyio.Event()

    async def read(sub: Subscription) -> None:
        async with sub:
            async for _ in sub:
                pytest.fail("no event was published")
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, broadcast.subscribe("c"))
        await anyio.sleep(0.1)
        await broadcast.disconnect()
        with anyio.fail_after(5):
            await ended.wait()
    await broadcast.disconnect()  # a second disconnect does nothing
    async with broadcast, broadcast.subscribe("c") as sub:
        await broadcast.publish("c", "again")
        assert [e.message for e in await take(sub, 1)] == ["again"]


async def test_cancelled_subscriber_leaves_nothing_behind(url: str) -> None:
    async with Broadcast(url) as broadcast:
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
            tg.cancel_scope.cancel()
        assert broadcast._subscribers == {}
        async with broadcast.subscribe("c") as sub:
            await broadcast.publish("c", "still works")
            assert [e.message for e in await take(sub, 1)] == ["still works"]


# Backpressure --------------------------------------------------------------------------------


async def test_drop_oldest_keeps_the_newest_and_counts_drops(url: str) -> None:
    async with (
        Broadcast(url, buffer_size=3) as broadcast,
        broadcast.subscribe("c") as slow,
        broadcast.subscribe("marker") as marker,
    ):
        for number in range(5):
            await broadcast.publish("c", str(number))
        # NOTE: one backend connection delivers in publish order, so once the marker is
        # here the five events have reached the slow subscriber.
        await broadcast.publish("marker", "done")
        await take(marker, 1)
        assert slow.dropped == 2
        assert [e.message for e in await take(slow, 3)] == ["2", "3", "4"]
        await broadcast.publish("c", "5")
        assert [e.message for e in await take(slow, 1)] == ["5"]
        assert slow.dropped == 2


async def test_disconnect_overflow_raises_subscriber_too_slow(url: str) -> None:
    async with (
        Broadcast(url, buffer_size=2, overflow="disconnect") as broadcast,
        broadcast.subscribe("c") as slow,
        broadcast.subscribe("c") as keeps_up,
        broadcast.subscribe("marker") as marker,
    ):
        await broadcast.publish("c", "1")
        assert [e.message for e in await take(keeps_up, 1)] == ["1"]
        await broadcast.publish("c", "2")
        assert [e.message for e in await take(keeps_up, 1)] == ["2"]
        await broadcast.publish("c", "3")  # the slow subscriber's third: one too many
        assert [e.message for e in await take(keeps_up, 1)] == ["3"]
        await broadcast.publish("marker", "done")
        await take(marker, 1)
        with pytest.raises(SubscriberTooSlow, match="buffer_size=2") as caught:
            await slow.__anext__()
        assert caught.value.buffer_size == 2
        assert isinstance(caught.value, BroadcastError)
        await broadcast.publish("c", "4")
        assert [e.message for e in await take(keeps_up, 1)] == ["4"]
        with pytest.raises(SubscriberTooSlow):
            await slow.__anext__()
        assert slow.dropped == 0


async def test_a_slow_subscriber_never_delays_the_others(url: str) -> None:
    total, batch = 200, 20
    async with (
        Broadcast(url, buffer_size=50) as broadcast,
        broadcast.subscribe("c") as slow,  # never read until the end
        broadcast.subscribe("c") as fast,
    ):
        received: list[str | bytes] = []
        for start in range(0, total, batch):
            for number in range(start, start + batch):
                await broadcast.publish("c", str(number))
            received += [e.message for e in await take(fast, batch)]
        assert received == [str(n) for n in range(total)]
        assert slow.dropped == total - 50
        assert len(await take(slow, 50)) == 50


# History ---------------------------------------------------------------------------------------


async def test_history_keeps_the_last_n_events(url: str) -> None:
    async with Broadcast(url, history=3) as broadcast:
        assert await broadcast.history("c") == []
        ids = [await broadcast.publish("c", f"m{n}") for n in range(5)]
        await broadcast.publish("other", b"elsewhere")
        assert all(isinstance(event_id, str) for event_id in ids)
        kept = await broadcast.history("c")
        assert [(e.message, e.id) for e in kept] == [(f"m{n}", ids[n]) for n in (2, 3, 4)]
        after = await broadcast.history("c", last_id=ids[3])
        assert [e.message for e in after] == ["m4"]
        assert await broadcast.history("c", last_id=ids[4]) == []
        [other] = await broadcast.history("other")
        assert other.message == b"elsewhere"


async def test_resume_replays_what_was_missed_then_continues_live(url: str) -> None:
    async with Broadcast(url, history=10) as broadcast:
        ids = [await broadcast.publish("c", f"m{n}") for n in range(5)]
        async with broadcast.subscribe("c", last_id=ids[1]) as sub:
            await broadcast.publish("c", "live")
            events = await take(sub, 4)
            await nothing_more(sub)
    assert [e.message for e in events] == ["m2", "m3", "m4", "live"]
    assert [e.id for e in events[:3]] == ids[2:]
    assert events[3].id is not None


async def test_leaving_a_resumed_subscription_drops_its_unread_replay(url: str) -> None:
    async with Broadcast(url, history=10) as broadcast:
        await broadcast.publish("c", "missed")
        async with broadcast.subscribe("c", last_id="0") as sub:
            await broadcast.publish("c", "live")
        # Iteration ends once the `async with` is left, replay or not.
        assert [e async for e in sub] == []


async def test_resume_while_publishing_has_no_gap_and_no_duplicate(url: str) -> None:
    total, resume_after = 120, 40
    async with Broadcast(url, history=total) as broadcast:
        for round_ in range(8):
            channel = f"race-{round_}"
            ids: list[str | None] = []
            halfway = anyio.Event()

            async def publisher(
                channel: str = channel, ids: list[str | None] = ids, halfway: anyio.Event = halfway
            ) -> None:
                for number in range(total):
                    ids.append(await broadcast.publish(channel, str(number)))
                    if number == resume_after:
                        halfway.set()
                    await anyio.sleep(0)

            async with anyio.create_task_group() as tg:
                tg.start_soon(publisher)
                await halfway.wait()
                async with broadcast.subscribe(channel, last_id=ids[resume_after]) as sub:
                    events = await take(sub, total - resume_after - 1)
            assert [e.message for e in events] == [str(n) for n in range(resume_after + 1, total)]
            assert [e.id for e in events] == ids[resume_after + 1 :]


# Life cycle and misuse: memory:// only, on both event loops -----------------------------------


class TestLifeCycle:
    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    async def test_lifespan_connects_and_disconnects(self) -> None:
        broadcast = Broadcast()
        async with broadcast.lifespan(None), broadcast.subscribe("c") as sub:
            await broadcast.publish("c", "up")
            assert [e.message for e in await take(sub, 1)] == ["up"]
        with pytest.raises(RuntimeError, match="lifespan"):
            await broadcast.publish("c", "down")

    async def test_app_lifespan_connects_the_broadcast(self) -> None:
        broadcast = Broadcast()
        app = App(lifespan=broadcast.lifespan)
        async with AsyncTestClient(app):
            assert await broadcast.publish("c", "up") is None
        with pytest.raises(RuntimeError, match="needs a connected broadcast"):
            await broadcast.publish("c", "down")

    async def test_install_connects_the_broadcast_for_handlers(self) -> None:
        broadcast = Broadcast()
        app = App()
        app.install(broadcast)

        @app.post("/say/{room}")
        async def say(request: Request, room: str) -> None:
            await broadcast.publish(room, await request.body())

        async with AsyncTestClient(app) as client, broadcast.subscribe("lobby") as sub:
            response = await client.post("/say/lobby", content=b"hi")
            assert response.status_code == 204
            assert await take(sub, 1) == [Event("lobby", b"hi")]
        with pytest.raises(RuntimeError, match="needs a connected broadcast"):
            await broadcast.publish("lobby", "down")

    async def test_use_before_connect_raises_a_clear_error(self) -> None:
        broadcast = Broadcast(history=5)
        message = r"needs a connected broadcast: run it in the app's lifespan"
        with pytest.raises(RuntimeError, match=message):
            await broadcast.publish("c", "x")
        with pytest.raises(RuntimeError, match=message):
            await broadcast.publish_json("c", {})
        with pytest.raises(RuntimeError, match=message):
            await broadcast.history("c")
        with pytest.raises(RuntimeError, match=message):
            async with broadcast.subscribe("c"):
                pass

    async def test_connect_twice_is_an_error(self) -> None:
        async with Broadcast() as broadcast:
            with pytest.raises(RuntimeError, match="already connected"):
                await broadcast.connect()

    async def test_publish_takes_str_or_bytes(self) -> None:
        async with Broadcast() as broadcast:
            with pytest.raises(TypeError, match="use publish_json"):
                await broadcast.publish("c", {"a": 1})  # type: ignore[arg-type]

    async def test_subscription_misuse(self) -> None:
        async with Broadcast() as broadcast:
            with pytest.raises(TypeError, match="at least one channel"):
                broadcast.subscribe()
            sub = broadcast.subscribe("c")
            assert repr(sub) == "<Subscription channels=['c'] idle>"
            with pytest.raises(RuntimeError, match="enter the subscription"):
                await sub.__anext__()
            async with sub:
                assert repr(sub) == "<Subscription channels=['c'] active>"
                with pytest.raises(RuntimeError, match="entered once"):
                    await sub.__aenter__()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sub.__anext__)
                    await anyio.sleep(0.05)
                    with pytest.raises(RuntimeError, match="another task"):
                        await sub.__anext__()
                    tg.cancel_scope.cancel()
            assert repr(sub) == "<Subscription channels=['c'] closed>"
            with pytest.raises(RuntimeError, match="entered once"):
                await sub.__aenter__()

    async def test_history_needs_history(self) -> None:
        async with Broadcast() as broadcast:
            with pytest.raises(RuntimeError, match=r"history=N"):
                await broadcast.history("c")
            with pytest.raises(RuntimeError, match=r"history=N"):
                broadcast.subscribe("c", last_id="1")

    @pytest.mark.parametrize(
        "last_id", ["", "abc", "-1", "1-0", " 1", "1\n", "1" * 21, str(2**64), "١٢"]
    )
    async def test_malformed_last_id_is_refused(self, last_id: str) -> None:
        async with Broadcast(history=5) as broadcast:
            with pytest.raises(ValueError, match="last_id must be a history id"):
                broadcast.subscribe("c", last_id=last_id)
            with pytest.raises(ValueError, match="last_id must be a history id"):
                await broadcast.history("c", last_id=last_id)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"buffer_size": 0}, "buffer_size must be a positive int"),
        ({"buffer_size": 1.5}, "buffer_size must be a positive int"),
        ({"overflow": "block"}, "overflow must be one of"),
        ({"history": -1}, "history must be an int >= 0"),
        ({"url": "kafka://host"}, "unsupported broadcast URL 'kafka://host'"),
    ],
)
def test_invalid_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Broadcast(**options)


def test_repr_and_errors_hide_the_password() -> None:
    broadcast = Broadcast("redis://user:s3cret@example.com:6380/1")
    assert repr(broadcast) == "Broadcast('redis://user:***@example.com:6380/1')"
    assert broadcast.url == "redis://user:***@example.com:6380/1"
    with pytest.raises(ValueError) as caught:
        Broadcast("nats://:s3cret@example.com")
    assert "s3cret" not in str(caught.value)
    assert repr(Broadcast()) == "Broadcast('memory://')"


def test_redis_url_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.partition(".")[0] == "redis"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "microasgi.broadcast._redis", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'microasgi\[redis\]'"):
        Broadcast("redis://127.0.0.1:6379/0")


def test_public_names() -> None:
    import microasgi.broadcast as module

    assert module.__all__ == sorted(module.__all__)
    assert issubclass(BroadcastUnavailable, BroadcastError)
    assert issubclass(SubscriberTooSlow, BroadcastError)
    event = Event("c", b"[1]", "7")
    assert event.json() == [1]
    assert event == Event("c", b"[1]", "7")
    assert Event("c", "x").id is None
