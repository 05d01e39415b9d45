"""What the broadcast front end and its backends share: events, errors, the backend contract."""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

from microasgi._json import load_json

__all__ = [
    "Backend",
    "BroadcastError",
    "BroadcastUnavailable",
    "Deliver",
    "Event",
    "SubscriberTooSlow",
    "check_id",
    "id_key",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A message received on a channel.

    ``message`` is ``str`` or ``bytes``, as it was published. ``id`` is the message's
    place in the channel's history (``None`` when the broadcast keeps no history).
    """

    channel: str
    message: str | bytes
    id: str | None = None

    def json(self) -> Any:
        """Decode the message as JSON (``publish_json`` sends it that way)."""
        return load_json(self.message)


class BroadcastError(Exception):
    """Base class of the errors raised by ``microasgi.broadcast``."""


class BroadcastUnavailable(BroadcastError):
    """The pub/sub server could not be reached within the retry budget."""


class SubscriberTooSlow(BroadcastError):
    """A subscriber fell a whole buffer behind and was disconnected (``overflow="disconnect"``)."""

    def __init__(self, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        super().__init__(
            f"the subscriber fell more than buffer_size={buffer_size} events behind and was "
            'disconnected (overflow="disconnect"); read faster, raise buffer_size, or use '
            'overflow="drop_oldest"'
        )


Deliver = Callable[[Event], bool]
"""Hands an event received by a backend to the local subscribers; never blocks.

Returns whether the event filled a subscriber's buffer: before it delivers more, the backend
then lets the subscribers run (an anyio checkpoint), so that one that keeps up loses nothing.
"""


def id_key(event_id: str) -> tuple[int, ...]:
    """Return the ordering key of a history id (``"7"`` or a Redis stream id ``"1700-0"``)."""
    return tuple(int(part) for part in event_id.split("-"))


_MAX_ID_PART = 2**64 - 1


def check_id(event_id: str, pattern: re.Pattern[str], form: str) -> str:
    """Return ``event_id`` if it is a well-formed history id, else raise ``ValueError``."""
    # SECURITY: last_id usually comes from a client (a Last-Event-ID header): check its shape
    # and size before it reaches a ring buffer or a Redis command.
    if (
        not isinstance(event_id, str)
        or pattern.fullmatch(event_id) is None
        or max(id_key(event_id)) > _MAX_ID_PART
    ):
        raise ValueError(f"last_id must be a history id of the form {form}, got {event_id!r}")
    return event_id


class Backend(abc.ABC):
    """Moves messages between processes; the front end fans them out locally.

    A backend calls ``deliver`` with every event published on a channel that has local
    subscribers. ``subscribe`` and ``unsubscribe`` are called once per local subscription
    with all of its channels; ``subscribe`` returns once a message published afterwards is
    sure to be delivered.
    """

    def __init__(self, deliver: Deliver, history: int) -> None:
        self.deliver = deliver
        self.history_size = history

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def disconnect(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, channel: str, message: str | bytes) -> str | None:
        """Send ``message`` to ``channel``; return its history id, if history is kept."""

    @abc.abstractmethod
    async def subscribe(self, channels: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, channels: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def history(self, channel: str, last_id: str | None) -> list[Event]:
        """Return the retained events of ``channel`` after ``last_id``, oldest first."""

    @abc.abstractmethod
    def check_id(self, event_id: str) -> str:
        """Return ``event_id`` if this backend could have issued it, else raise ``ValueError``."""
