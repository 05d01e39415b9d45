"""JSON in and out: orjson, with the standard library's ``json`` results where orjson differs.

orjson writes only 64-bit integers and reads longer ones as floats; the standard library
keeps every integer exact, and so does microasgi, on a slower path taken only when needed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import orjson

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
# Longer runs of digits may hold an integer orjson reads as a float.
_LONG_DIGITS = b"0" * 19
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
# What orjson raises (a TypeError) for content nested more than 255 levels deep.
_TOO_DEEP = "Recursion limit reached"


Fallback = Callable[[Any], Any]
"""Turns an object JSON cannot hold into one it can (``str``, say)."""


def _json_default(obj: Any, fallback: Fallback | None = None) -> Any:
    # NOTE: orjson refuses tuple subclasses (named tuples, such as `request.client`), which
    # the standard library's `json` writes as arrays.
    if isinstance(obj, tuple):
        return list(obj)
    if fallback is not None:
        return fallback(obj)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dump_json(content: Any, *, option: int = 0, fallback: Fallback | None = None) -> bytes:
    """Serialise ``content`` with orjson, accepting what the standard library's ``json``
    accepts too: named tuples, dict keys that are not ``str`` (ints, UUIDs, ...) and
    integers of any size.

    ``option`` adds orjson options (``OPT_SORT_KEYS``); ``fallback`` is called for an
    object that cannot be serialised, which otherwise raises ``TypeError``.
    """
    default: Fallback = _json_default
    if fallback is not None:
        default = functools.partial(_json_default, fallback=fallback)
    try:
        return orjson.dumps(content, default=default, option=option)
    except TypeError:
        pass
    try:
        return _dump_wider(content, default, option, fallback)
    except TypeError as exc:
        if str(exc) != _TOO_DEEP:
            raise
    # NOTE: orjson writes 255 levels of nesting, fewer than it reads (1024) and than the
    # standard library writes, so a JSON body could not be echoed: the standard library
    # writes what is this deep, and orjson each object it cannot write itself.
    try:
        text = json.dumps(
            content,
            default=functools.partial(_leaf, option=option, fallback=fallback),
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=bool(option & orjson.OPT_SORT_KEYS),
            allow_nan=False,  # NOTE: an error rather than "NaN", which is no JSON
        )
    except RecursionError:
        raise TypeError(_TOO_DEEP) from None
    return text.encode("utf-8")


def _leaf(obj: Any, *, option: int, fallback: Fallback | None) -> Any:
    return load_json(dump_json(obj, option=option, fallback=fallback))


def _dump_wider(content: Any, default: Fallback, option: int, fallback: Fallback | None) -> bytes:
    # PERF: OPT_NON_STR_KEYS slows every dict down, so it is only the fallback.
    try:
        return orjson.dumps(content, default=default, option=option | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
    return orjson.dumps(
        _exact_ints(content),
        default=functools.partial(_exact_default, fallback=fallback),
        option=option | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS,
    )


def _exact_ints(value: Any) -> Any:
    """Return ``value`` with integers orjson cannot write replaced by their digits."""
    value_type = type(value)
    if value_type is int:
        return value if _INT_MIN <= value <= _INT_MAX else orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {
            (str(key) if type(key) is int else key): _exact_ints(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_exact_ints(item) for item in value]
    return value


def _exact_default(obj: Any, fallback: Fallback | None = None) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _exact_ints(
            {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
        )
    if fallback is not None:
        return _exact_ints(fallback(obj))
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def load_json(data: bytes | str) -> Any:
    """Parse JSON with orjson (strict: no NaN, lone surrogates or deep nesting), keeping
    integers past 64 bits exact as the standard library's ``json`` does.

    Raises ``orjson.JSONDecodeError`` (a ``ValueError``) for malformed JSON.
    """
    value = orjson.loads(data)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    # PERF: find() costs half of `in` on bytes (no buffer set-up).
    if raw.translate(_DIGITS_AS_ZEROS).find(_LONG_DIGITS) < 0:
        return value
    # NOTE: orjson refused numbers past a double's range (309 digits), so int() takes them.
    try:
        return json.loads(raw)
    except RecursionError:
        # SECURITY: orjson takes 1024 levels of nesting, the standard library's recursive
        # decoder fewer (what the stack leaves it): refused as orjson refuses deeper ones,
        # not a RecursionError (a 500, or a 1011 close) that a client can cause at will.
        raise orjson.JSONDecodeError("depth limit exceeded", "", 0) from None
