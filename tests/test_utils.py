from __future__ import annotations

import functools
from typing import Any

import pytest

from microasgi._utils import ascii_int, callable_name, escape_for_log, is_async_callable


async def coroutine_function() -> None: ...


def plain_function() -> None: ...


class AsyncCallable:
    async def __call__(self) -> None: ...


def test_is_async_callable() -> None:
    assert is_async_callable(coroutine_function)
    assert is_async_callable(functools.partial(functools.partial(coroutine_function)))
    assert is_async_callable(AsyncCallable())
    assert not is_async_callable(plain_function)
    assert not is_async_callable(functools.partial(plain_function))
    assert not is_async_callable(3)


def test_callable_name() -> None:
    assert callable_name(plain_function) == "plain_function"
    assert callable_name(functools.partial(plain_function)) == "plain_function"
    assert callable_name(AsyncCallable()) == "AsyncCallable"
    assert callable_name(AsyncCallable.__call__) == "AsyncCallable.__call__"
    assert callable_name(AsyncCallable.__call__, qualified=False) == "__call__"
    nameless: Any = type("Nameless", (), {"__call__": lambda self: None, "__name__": ""})()
    assert callable_name(nameless) == "Nameless"


def test_escape_for_log() -> None:
    assert escape_for_log("/a\r\nb\x1b[31m") == "/a\\r\\nb\\x1b[31m"
    assert escape_for_log("é") == "\\xe9"
    assert escape_for_log("x" * 20, limit=5) == "xxxxx..."


def test_is_async_callable_sees_through_functools_wraps() -> None:
    @functools.wraps(coroutine_function)
    def sync_wrapper() -> Any:
        return coroutine_function()

    @functools.wraps(plain_function)
    def wraps_sync() -> None: ...

    class SelfWrapped:
        def __call__(self) -> None: ...

    self_wrapped = SelfWrapped()
    self_wrapped.__wrapped__ = self_wrapped  # type: ignore[attr-defined]
    assert is_async_callable(sync_wrapper)
    assert is_async_callable(functools.partial(sync_wrapper))
    assert not is_async_callable(wraps_sync)
    assert not is_async_callable(self_wrapped)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("007", 7),
        ("65535", 65535),
        ("65536", 65536),
        ("70001", 70000),
        ("9" * 5000, 70000),
        ("", None),
        ("+1", None),
        (" 1", None),
        ("1_0", None),
        ("\u00b2", None),
        ("\u0663", None),
    ],
)
def test_ascii_int_reads_ascii_digits_only_and_caps(text: str, value: int | None) -> None:
    assert ascii_int(text, 70000) == value
