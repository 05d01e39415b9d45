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

from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._base import Backend, Deliver, Event, check_id

_ID = re.compile(r"[0-9]{1,20}")
_YIELD_EVERY = 64
"""A loop of publishes yields to the event loop at least this often."""


class MemoryBackend(Backend):
    """Pub/sub inside one process."""

    def __init__(self, deliver: Deliver, history: int) -> None:
        super().__init__(deliver, history)
        self._ids = itertools.count(1)
        self._rings: dict[str, deque[tuple[int, Event]]] = {}
        self._unyielded = 0

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def publish(self, channel: str, message: str | bytes) -> str | None:
        # NOTE: checked for cancellation first, so a cancelled publish delivers nothing,
        # and a checkpoint every _YIELD_EVERY publishes, so a loop of them cannot starve
        # the event loop and stops at a timeout.
        # PERF: not on every publish: a reader woken once then takes many events at a time.
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await checkpoint()
        else:
            await checkpoint_if_cancelled()
        event_id, filled = self._publish(channel, message)
        if filled:
            # NOTE: a subscriber's buffer is full: its reader runs before the next publish,
            # so that one that keeps up loses nothing of a burst. Twice, as trio runs the
            # ready tasks of a batch in random order: the reader was ready at the first.
            # Shielded: the event was delivered, so the publish is not cancelled.
            self._unyielded = 0
            await cancel_shielded_checkpoint()
            await cancel_shielded_checkpoint()
        return event_id

    def _publish(self, channel: str, message: str | bytes) -> tuple[str | None, bool]:
        """Deliver; return the event id and whether it filled a subscriber's buffer."""
        if not self.history_size:
            return None, self.deliver(Event(channel, message))
        number = next(self._ids)
        event = Event(channel, message, str(number))
        ring = self._rings.get(channel)
        if ring is None:
            ring = self._rings[channel] = deque(maxlen=self.history_size)
        ring.append((number, event))
        return event.id, self.deliver(event)

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
