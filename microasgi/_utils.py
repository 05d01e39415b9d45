"""Small helpers with no framework knowledge."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["callable_name", "escape_for_log", "is_async_callable"]


def is_async_callable(obj: Any) -> bool:
    """Return True for a coroutine function, also behind partials or as ``__call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    )


def callable_name(obj: Callable[..., Any], *, qualified: bool = True) -> str:
    """Return a readable name for a function, partial or callable object."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    name = (qualified and getattr(obj, "__qualname__", None)) or getattr(obj, "__name__", None)
    return str(name) if name else type(obj).__name__


def escape_for_log(text: str, limit: int = 1024) -> str:
    """Make client-controlled text safe for one log line: no control chars, bounded length."""
    # SECURITY: CR/LF and ANSI escapes from a client must never reach a log line raw.
    escaped = text[:limit].encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")
