"""ASGI types shared by every module: scopes, messages and callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

# NOTE: scopes and messages are plain dicts at run time; TypedDicts would not add checks
# at the ASGI boundary, where servers build them, so they stay open mappings here.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AppT = TypeVar("AppT")
Lifespan = Callable[[AppT], AbstractAsyncContextManager[Any]]

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
"""A user handler; decorators return it unchanged."""

RawHeaders = list[tuple[bytes, bytes]]
