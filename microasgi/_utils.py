"""Small helpers with no framework knowledge."""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "ascii_int",
    "callable_name",
    "check_arity",
    "escape_for_log",
    "is_async_callable",
    "lazy_attributes",
    "unfinalized",
]

T = TypeVar("T")


def is_async_callable(obj: Any) -> bool:
    """Return True for a coroutine function, also behind partials, ``functools.wraps``
    decorators or as ``__call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    # NOTE: a plain `def` decorator made with functools.wraps around an `async def` returns
    # the coroutine: it must be awaited on the loop, not run in a worker thread (where it
    # would never run, and which trio refuses).
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and wrapped is not obj:
        return is_async_callable(wrapped)
    return callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004


def callable_name(obj: Callable[..., Any], *, qualified: bool = True) -> str:
    """Return a readable name for a function, partial or callable object."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    name = (qualified and getattr(obj, "__qualname__", None)) or getattr(obj, "__name__", None)
    return str(name) if name else type(obj).__name__


def check_arity(func: Callable[..., Any], count: int, why: str) -> None:
    """Raise ``TypeError`` unless ``func`` can be called with ``count`` positional arguments.

    The message is ``why``, then the callable's name and parameters. At registration, so
    that a handler that cannot take what it is given fails where it is written.
    """
    try:
        signature = inspect.signature(func)
    except ValueError:  # builtins and some C callables have no signature
        return
    try:
        signature.bind(*[None] * count)
    except TypeError:
        parameters = signature.replace(return_annotation=inspect.Signature.empty)
        raise TypeError(f"{why}; {callable_name(func)}{parameters} cannot take that") from None


def escape_for_log(text: str, limit: int = 1024) -> str:
    """Make client-controlled text safe for one log line: no control chars, bounded length."""
    # SECURITY: CR/LF and ANSI escapes from a client must never reach a log line raw.
    escaped = text[:limit].encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` importing ``names`` (name -> submodule) on first use."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def ascii_int(text: str, most: int) -> int | None:
    """The value of ``text`` if it is ASCII digits alone, at most ``most``; else None.

    Unlike ``int()``, which takes signs, spaces, ``_`` and non-ASCII digits (and refuses
    "²", which ``isdigit()`` takes), only ``0-9`` are read. A value above ``most`` comes
    back as ``most``, and a long run of digits is never converted, so a 5,000-digit header
    costs no big-int work and stays clear of CPython's int-from-str digit limit.
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0")
    if len(digits) > len(str(most)):
        return most
    return min(int(digits or "0"), most)


def unfinalized(generator: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """Return ``generator``, stepped to its first ``yield`` with no event-loop hooks.

    The generator's first ``yield`` is that step's alone; its caller never sees the value.
    A caller may leave ``async for`` early, and the generator is then collected
    unfinished: the event loop's finalizer would schedule an ``aclose()`` (trio also warns).
    For a generator that holds nothing to clean up, Python's own closing is enough. A
    generator takes the hooks in force at its first step, which needs no event loop here.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(None, None)
    try:
        generator.asend(None).send(None)
    except StopIteration:
        pass
    finally:
        sys.set_asyncgen_hooks(*hooks)
    return generator
