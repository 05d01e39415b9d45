"""The memory:// backend, on asyncio and trio."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from microasgi.broadcast import Broadcast, Event, SubscriberTooSlow

pytestmark = pytest.mark.anyio


async def test_ids_are_one_increasing_counter_across_channels() -> None:
    async with Broadcast(history=10) as broadcast, broadcast.subscribe("a", "b") as sub:
        ids = [
            await broadcast.publish("a", "1"),
            await broadcast.publish("b", "2"),
            await broadcast.publish("a", "3"),
        ]
        assert ids == ["1", "2", "3"]
        events = [await sub.__anext__() for _ in ids]
    assert [event.id for event in events] == ids


async def test_without_history_events_have_no_id() -> None:
    async with Broadcast() as broadcast, broadcast.subscribe("c") as sub:
        assert await broadcast.publish("c", "x") is None
        assert await sub.__anext__() == Event("c", "x")


async def test_the_ring_buffer_keeps_the_newest_events_per_channel() -> None:
    async with Broadcast(history=2) as broadcast:
        for number in range(4):
            await broadcast.publish("a", f"a{number}")
            await broadcast.publish("b", f"b{number}")
        assert [e.message for e in await broadcast.history("a")] == ["a2", "a3"]
        assert [e.message for e in await broadcast.history("b")] == ["b2", "b3"]
        assert [e.id for e in await broadcast.history("b")] == ["6", "8"]
        assert await broadcast.history("unknown") == []
        # An id older than the ring gives what is left; the gap cannot be filled.
        assert [e.message for e in await broadcast.history("a", last_id="1")] == ["a2", "a3"]


async def test_replay_of_several_channels_comes_in_publish_order() -> None:
    async with Broadcast(history=10) as broadcast:
        for message in ["a1", "b1", "a2", "c1", "b2"]:
            await broadcast.publish(message[0], message)
        async with broadcast.subscribe("a", "b", last_id="1") as sub:
            await broadcast.publish("b", "b3")
            events = [await sub.__anext__() for _ in range(4)]
    assert [e.message for e in events] == ["b1", "a2", "b2", "b3"]


async def test_resume_with_a_channel_that_missed_nothing() -> None:
    async with Broadcast(history=10) as broadcast:
        await broadcast.publish("a", "a1")
        await broadcast.publish("a", "a2")
        async with broadcast.subscribe("a", "b", last_id="1") as sub:
            await broadcast.publish("b", "b1")
            await broadcast.publish("a", "a3")
            events = [await sub.__anext__() for _ in range(3)]
    assert [e.message for e in events] == ["a2", "b1", "a3"]


async def test_a_last_id_from_before_a_restart_does_not_hide_live_events() -> None:
    # The counter starts again at 1 in a new process; a client may still send a larger id.
    async with Broadcast(history=10) as broadcast, broadcast.subscribe("c", last_id="500") as sub:
        await broadcast.publish("c", "new")
        assert (await sub.__anext__()).message == "new"


async def test_history_survives_reconnect() -> None:
    broadcast = Broadcast(history=5)
    async with broadcast:
        await broadcast.publish("c", "kept")
    async with broadcast:
        assert [e.message for e in await broadcast.history("c")] == ["kept"]
        assert await broadcast.publish("c", "next") == "2"


async def test_publish_never_waits_for_a_subscriber_and_memory_stays_bounded() -> None:
    async with (
        Broadcast(buffer_size=10) as broadcast,
        broadcast.subscribe("c") as dropping,
    ):
        with anyio.fail_after(5):
            for number in range(10_000):
                await broadcast.publish("c", str(number))
        assert dropping.dropped == 10_000 - 10
        assert len(dropping._queue) == 10
        assert (await dropping.__anext__()).message == "9990"

    async with (
        Broadcast(buffer_size=10, overflow="disconnect") as broadcast,
        broadcast.subscribe("c") as disconnected,
    ):
        for number in range(10_000):
            await broadcast.publish("c", str(number))
        assert len(disconnected._queue) == 0
        with pytest.raises(SubscriberTooSlow):
            await disconnected.__anext__()


async def test_a_waiting_reader_is_woken_by_a_publish() -> None:
    async with Broadcast() as broadcast, broadcast.subscribe("c") as sub:
        received: list[Event] = []

        async def read() -> None:
            received.append(await sub.__anext__())

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.05)
            await broadcast.publish("c", "wake up")
    assert received == [Event("c", "wake up")]


async def test_too_slow_after_replay_still_gives_the_replay_first() -> None:
    async with Broadcast(history=5, buffer_size=1, overflow="disconnect") as broadcast:
        await broadcast.publish("c", "old")
        async with broadcast.subscribe("c", last_id="0") as sub:
            await broadcast.publish("c", "live 1")
            await broadcast.publish("c", "live 2")
            assert (await sub.__anext__()).message == "old"
            with pytest.raises(SubscriberTooSlow):
                await sub.__anext__()


async def test_a_reader_that_keeps_up_misses_nothing_of_a_burst() -> None:
    # Publish is a checkpoint: the reader runs between publishes, so a burst larger than
    # its buffer reaches it whole, as it does over Redis.
    async with Broadcast(buffer_size=10) as broadcast, broadcast.subscribe("c") as sub:
        received: list[str | bytes] = []

        async def read() -> None:
            async for event in sub:
                received.append(event.message)
                if len(received) == 1000:
                    return

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await anyio.sleep(0.01)
                for number in range(1000):
                    await broadcast.publish("c", str(number))
        assert received == [str(number) for number in range(1000)]
        assert sub.dropped == 0


@pytest.mark.parametrize("buffer_size", [10, 1000])
async def test_publishes_yield_when_a_buffer_fills_and_every_64(buffer_size: int) -> None:
    # A reader woken once takes many events at a time: publishes that fill no buffer do not
    # hand the loop over each time, but one that fills a buffer does, and so does every 64th.
    # NOTE: trio runs a batch of ready tasks in random order, so one yield of the publisher
    # may come back before the counter runs; two in a row cannot.
    async with Broadcast(buffer_size=buffer_size) as broadcast, broadcast.subscribe("c") as sub:
        switches = 0

        async def count_switches() -> None:
            nonlocal switches
            while True:
                await anyio.lowlevel.checkpoint()
                switches += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(count_switches)
            await anyio.sleep(0.01)
            before = switches
            for number in range(9):
                await broadcast.publish("c", str(number))
            assert switches == before
            # The 10th fills the small buffer; the 64th and the 128th yield in any case.
            more = 1 if buffer_size == 10 else 128 - 9
            for number in range(more):
                await broadcast.publish("c", str(number))
            assert switches > before
            tg.cancel_scope.cancel()
        assert sub.dropped == 0


async def test_a_cancelled_publish_delivers_nothing() -> None:
    async with Broadcast(history=5) as broadcast, broadcast.subscribe("c") as sub:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await broadcast.publish("c", "cancelled")
            pytest.fail("publish is not a checkpoint")
        # A publishing loop stops at a timeout.
        with anyio.move_on_after(0.05) as scope:
            while True:
                await broadcast.publish("loop", "x")
        assert scope.cancelled_caught
        await broadcast.publish("c", "sent")
        assert (await sub.__anext__()).message == "sent"
        assert [e.message for e in await broadcast.history("c")] == ["sent"]
