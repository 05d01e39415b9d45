"""The ``memory://`` backend: one process, any anyio event loop.

Publishing hands the event straight to the local subscribers. With history, each channel
keeps a ring buffer of its last ``history`` events, and ids come from one counter shared by
all channels (``"1"``, ``"2"``, ...), so an id also orders events across channels.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Sequence

from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._base import Backend, Deliver, Event, check_id

_ID = re.compile(r"[0-9]{1,20}")


class MemoryBackend(Backend):
    """Pub/sub inside one process."""

    def __init__(self, deliver: Deliver, history: int) -> None:
        super().__init__(deliver, history)
        self._ids = itertools.count(1)
        self._rings: dict[str, deque[tuple[int, Event]]] = {}

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def publish(self, channel: str, message: str | bytes) -> str | None:
        # NOTE: a checkpoint, as a publish over the network is: in a loop of publishes the
        # readers get to run in between (else a burst past buffer_size is dropped even for
        # a reader that keeps up), and a timeout can stop the loop. Cancelled, a publish
        # delivers nothing; once delivered, it is not cancelled.
        await checkpoint_if_cancelled()
        event_id = self._publish(channel, message)
        await cancel_shielded_checkpoint()
        return event_id

    def _publish(self, channel: str, message: str | bytes) -> str | None:
        if not self.history_size:
            self.deliver(Event(channel, message))
            return None
        number = next(self._ids)
        event = Event(channel, message, str(number))
        ring = self._rings.get(channel)
        if ring is None:
            ring = self._rings[channel] = deque(maxlen=self.history_size)
        ring.append((number, event))
        self.deliver(event)
        return event.id

    async def subscribe(self, channels: Sequence[str]) -> None:
        # NOTE: delivery is a direct call, so a subscription is live as soon as the front
        # end has registered it; there is nothing to wait for.
        pass

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        pass

    async def history(self, channel: str, last_id: str | None) -> list[Event]:
        after = 0 if last_id is None else int(last_id)
        return [event for number, event in self._rings.get(channel, ()) if number > after]

    def check_id(self, event_id: str) -> str:
        return check_id(event_id, _ID, '"<counter>" (digits)')
