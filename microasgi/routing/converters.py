"""Path parameter converters: how one path segment becomes a typed value, and back."""

from __future__ import annotations

import itertools
import math
import re
import uuid
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

from microasgi.exceptions import RouteTemplateError

__all__ = [
    "NO_MATCH",
    "Converter",
    "get_converter",
    "quote_path",
    "quote_segment",
    "register_converter",
]


class _NoMatch:
    """The type of ``NO_MATCH``; a sentinel, since ``None`` can be a converted value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_MATCH"


NO_MATCH: Final = _NoMatch()
"""Returned by ``Converter.match`` when the segment does not match."""

# NOTE: lower priorities are tried first at a segment; custom converters sit between the
# typed built-ins and ``str`` in registration order, and ``path`` is always last.
_INT_PRIORITY: Final = 10
_FLOAT_PRIORITY: Final = 20
_UUID_PRIORITY: Final = 30
_CUSTOM_FIRST_PRIORITY: Final = 100
_STR_PRIORITY: Final = 1_000_000
_PATH_PRIORITY: Final = 2_000_000


# --- percent-encoding for URL building -------------------------------------------------------

# NOTE: request paths reach the router percent-decoded, so a value must be encoded on its way
# into a URL for the URL to route back to it. The characters kept are RFC 3986 pchars, the set
# request.url keeps (datastructures._PATH_SAFE); everything else is encoded, `%` included.
_SEGMENT_SAFE: Final = ":@!$&'()*+,;="
# PERF: most values need no encoding; one regex tells them apart faster than quote() does.
_is_plain_segment: Final = re.compile(r"[A-Za-z0-9\-._~:@!$&'()*+,;=]+", re.ASCII).fullmatch
# NOTE: a plain path also neither starts with "/" nor has a "." or ".." segment.
_is_plain_path: Final = re.compile(
    r"(?!/)(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~:@!$&'()*+,;=]*"
    r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~:@!$&'()*+,;=]*)*",
    re.ASCII,
).fullmatch
_DOT_SEGMENTS: Final = {".": "%2E", "..": "%2E%2E"}


def quote_segment(text: str) -> str:
    """Percent-encode ``text`` as one path segment (a ``/`` in it is encoded too).

    ``.`` and ``..`` become ``%2E`` and ``%2E%2E``: written plainly, clients would resolve
    them as dot segments instead of sending them.
    """
    if _is_plain_segment(text) is None:
        text = quote(text, safe=_SEGMENT_SAFE)
    return _DOT_SEGMENTS.get(text, text)


def quote_path(text: str) -> str:
    """Percent-encode ``text`` as a run of path segments, keeping its slashes.

    A leading slash is encoded (``%2F``), so that no built path starts with ``//``, which a
    browser reads as another host; dot segments are encoded as in ``quote_segment``.
    """
    if _is_plain_path(text) is not None:
        return text
    text = "/".join([quote_segment(part) if part else "" for part in text.split("/")])
    return "%2F" + text[1:] if text.startswith("/") else text


class Converter:
    """A path parameter type: matches one segment and converts it both ways.

    ``name`` is what templates write after the colon (``{id:int}``), ``regex`` the text it
    accepts, and ``priority`` orders converters at one segment: lower is tried first.
    """

    __slots__ = ("name", "priority", "regex")

    def __init__(self, name: str, regex: str, priority: int) -> None:
        self.name = name
        self.regex = regex
        self.priority = priority

    # Any: each converter has its own value type (int, float, UUID, a user type...).
    def match(self, segment: str) -> Any:
        """Return the converted value of ``segment``, or ``NO_MATCH``."""
        raise NotImplementedError

    def to_string(self, value: Any) -> str:
        """Return the percent-encoded path text for ``value``; ``ValueError`` if there is none."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Converter {self.name!r} {self.regex!r}>"


class _StrConverter(Converter):
    def match(self, segment: str) -> Any:
        return segment if segment and "/" not in segment else NO_MATCH

    def to_string(self, value: Any) -> str:
        text = str(value)
        # PERF: the common case first: a non-empty segment with nothing to encode.
        if _is_plain_segment(text) is not None and text not in _DOT_SEGMENTS:
            return text
        if not text:
            raise ValueError("a str parameter must not be empty")
        if "/" in text:
            raise ValueError(f"a str parameter must not contain '/' (got {text!r}); use :path")
        return quote_segment(text)


class _IntConverter(Converter):
    def match(self, segment: str) -> Any:
        # PERF: str methods instead of a regex; isascii() rules out digits such as "²".
        if segment.isascii() and segment.isdigit():
            try:
                return int(segment)
            except ValueError:
                # NOTE: more digits than sys.get_int_max_str_digits() allows (4300 by default).
                return NO_MATCH
        return NO_MATCH

    def to_string(self, value: Any) -> str:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"an int parameter cannot be {value!r}")
        number = int(value)
        if number < 0:
            raise ValueError(f"an int parameter must not be negative (got {number})")
        return str(number)


class _FloatConverter(Converter):
    def match(self, segment: str) -> Any:
        whole, dot, fraction = segment.partition(".")
        if segment.isascii() and whole.isdigit() and (not dot or fraction.isdigit()):
            value = float(segment)
            # NOTE: hundreds of digits overflow to inf, which no handler expects.
            if value != math.inf:
                return value
        return NO_MATCH

    def to_string(self, value: Any) -> str:
        number = float(value)
        if not (number >= 0 and math.isfinite(number)):
            raise ValueError(f"a float parameter must be finite and not negative (got {number})")
        # NOTE: repr() is the shortest text that reads back as the same float, and Decimal
        # spells it without an exponent, which the float pattern does not accept. The ".0"
        # stays so that 1.0 is not written "1", which an int route would take first.
        # abs() turns -0.0 into 0.0.
        from decimal import Decimal  # PERF: imported on first use

        text = format(Decimal(repr(abs(number))), "f")
        return text if "." in text else text + ".0"


_UUID_PATTERN: Final = re.compile(
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class _UUIDConverter(Converter):
    def match(self, segment: str) -> Any:
        # NOTE: uuid.UUID() alone would also take braces, "urn:uuid:" and undashed forms.
        if len(segment) == 36 and _UUID_PATTERN.fullmatch(segment) is not None:
            return uuid.UUID(segment)
        return NO_MATCH

    def to_string(self, value: Any) -> str:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


class _PathConverter(Converter):
    def match(self, segment: str) -> Any:
        return segment

    def to_string(self, value: Any) -> str:
        return quote_path(str(value))


class _CustomConverter(Converter):
    __slots__ = ("_pattern", "_to_python", "_to_string")

    def __init__(
        self,
        name: str,
        pattern: re.Pattern[str],
        priority: int,
        to_python: Callable[[str], Any],
        to_string: Callable[[Any], str],
    ) -> None:
        super().__init__(name, pattern.pattern, priority)
        self._pattern = pattern
        self._to_python = to_python
        self._to_string = to_string

    def match(self, segment: str) -> Any:
        if self._pattern.fullmatch(segment) is None:
            return NO_MATCH
        try:
            return self._to_python(segment)
        except ValueError:
            # NOTE: text that fits the pattern but not the type (a "2024-02-30" date) is a
            # path that does not match, so the next route may take it, or the answer is 404.
            return NO_MATCH

    def to_string(self, value: Any) -> str:
        text = self._to_string(value)
        if "/" in text or self._pattern.fullmatch(text) is None:
            raise ValueError(
                f"converter {self.name!r} wrote {value!r} as {text!r}, "
                f"which does not match its pattern {self.regex!r}"
            )
        return quote_segment(text)


STR: Final[Converter] = _StrConverter("str", "[^/]+", _STR_PRIORITY)
INT: Final[Converter] = _IntConverter("int", "[0-9]+", _INT_PRIORITY)
FLOAT: Final[Converter] = _FloatConverter("float", r"[0-9]+(\.[0-9]+)?", _FLOAT_PRIORITY)
UUID: Final[Converter] = _UUIDConverter("uuid", _UUID_PATTERN.pattern, _UUID_PRIORITY)
PATH: Final[Converter] = _PathConverter("path", ".*", _PATH_PRIORITY)
"""The converter of ``{name:path}``; the route tree gives it the rest of the path."""

_converters: dict[str, Converter] = {c.name: c for c in (STR, INT, FLOAT, UUID, PATH)}
_custom_priorities = itertools.count(_CUSTOM_FIRST_PRIORITY)


def register_converter(
    name: str,
    regex: str,
    to_python: Callable[[str], Any],
    to_string: Callable[[Any], str],
) -> Converter:
    """Add a path converter usable as ``{param:name}`` in templates parsed afterwards.

    A segment matches when ``regex`` matches all of it; ``to_python`` turns the segment into
    the value (raising ``ValueError`` counts as no match) and ``to_string`` turns a value back
    into the segment for URL building (plain text: it must match ``regex``, and is then
    percent-encoded). Registering a name again replaces that converter and
    keeps its place in the matching order; custom converters are tried after ``int``,
    ``float`` and ``uuid`` and before ``str``, in registration order.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"Converter name {name!r} must be a Python identifier, as in {{id:name}}")
    if name == PATH.name:
        raise ValueError("The 'path' converter spans segments and cannot be replaced")
    if not isinstance(regex, str):
        raise ValueError(f"The regex of converter {name!r} must be a str, got {regex!r}")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"Converter {name!r} has an invalid regex {regex!r}: {exc}") from exc
    if not callable(to_python) or not callable(to_string):
        raise TypeError(f"Converter {name!r} needs callable to_python and to_string")
    existing = _converters.get(name)
    priority = next(_custom_priorities) if existing is None else existing.priority
    converter = _CustomConverter(name, pattern, priority, to_python, to_string)
    _converters[name] = converter
    return converter


def get_converter(name: str) -> Converter:
    """Return the converter registered as ``name``; ``RouteTemplateError`` if there is none."""
    try:
        return _converters[name]
    except KeyError:
        known = ", ".join(_converters)
        raise RouteTemplateError(
            f"Unknown converter {name!r} (known: {known}); "
            "add it with microasgi.routing.register_converter() first"
        ) from None
