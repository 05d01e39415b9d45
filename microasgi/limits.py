"""Limits: one settings object for every resource bound a client can push against."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any

from ._utils import ascii_int
from .exceptions import HTTPException

__all__ = ["LIMITS_KEY", "Limits", "announces_more", "body_too_large", "limits_for"]

KiB = 1024
MiB = 1024 * KiB

LIMITS_KEY = "microasgi.limits"
"""Scope key of the limits in force for a request, set where a route or mount overrides them."""


@dataclass(frozen=True)
class Limits:
    """Resource limits, set on the App and overridable per Router and per route.

    Only the fields given explicitly override the enclosing level, so
    ``@app.post("/upload", limits=Limits(max_body_size=None))`` lifts the body limit for
    that route and keeps every other limit of the app. ``None`` means unbounded, except for
    ``spool_max_size``, which must be a number (``ValueError`` otherwise).

    - ``max_body_size``: request body bytes (413 above it; also bounds uploaded files).
    - ``max_fields`` / ``max_files``: form fields and files (400 above them).
    - ``max_part_size``: bytes of one non-file form part or urlencoded value (413).
    - ``max_part_headers`` / ``max_part_header_size``: headers per multipart part, and
      bytes per header line (400).
    - ``spool_max_size``: bytes of an uploaded file kept in memory before it spools to disk.
    - ``max_ranges``: parts of a multi-range request (more are answered with the whole file).
    - ``max_decompressed_size``: bytes a compressed request body may inflate to (413),
      enforced by ``RequestDecompressionMiddleware``.
    - ``max_message_size``: bytes of one WebSocket message (close 1009).
    - ``websocket_idle_timeout``: seconds without a message before the socket is closed.
    - ``websocket_max_rate``: messages per second a client may send (close 1008).
    """

    max_body_size: int | None = 10 * MiB
    max_fields: int | None = 1000
    max_files: int | None = 1000
    max_part_size: int | None = 1 * MiB
    max_part_headers: int | None = 32
    max_part_header_size: int | None = 8 * KiB
    spool_max_size: int = 1 * MiB
    max_ranges: int | None = 16
    max_decompressed_size: int | None = 10 * MiB
    max_message_size: int | None = 1 * MiB
    websocket_idle_timeout: float | None = None
    websocket_max_rate: float | None = None
    _explicit: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(_DEFAULTS))
        if unknown:
            raise TypeError(f"Limits() got unknown limits: {', '.join(unknown)}")
        for name, default in _DEFAULTS.items():
            value = values.get(name, default)
            if value is None and name in _REQUIRED:
                raise ValueError(_REQUIRED[name])
            # NOTE: bool is an int, and NaN compares false with everything, so neither would
            # be caught by the sign test; both are mistakes, not limits.
            if value is not None and (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or value != value
                or value < 0
            ):
                raise ValueError(f"Limits.{name} must be a non-negative number or None")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_explicit", frozenset(values))

    @property
    def explicit(self) -> frozenset[str]:
        """The names of the fields given explicitly: those that override an enclosing level."""
        return self._explicit

    def merged(self, override: Limits | None) -> Limits:
        """Return these limits with the fields ``override`` set explicitly replaced."""
        if override is None or not override._explicit:
            return self
        values = {name: getattr(self, name) for name in _NAMES}
        values.update({name: getattr(override, name) for name in override._explicit})
        merged = Limits(**values)
        object.__setattr__(merged, "_explicit", self._explicit | override._explicit)
        return merged


_REQUIRED = {
    # SECURITY: an unbounded spool would hold every upload whole in memory.
    "spool_max_size": (
        "Limits.spool_max_size cannot be None: it is the number of bytes of an upload kept in "
        "memory before it goes to disk (0 puts every file on disk)"
    ),
}
"""The limits that have no unbounded setting, with the reason None is refused."""

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Limits) if f.name != "_explicit"}
_NAMES = tuple(_DEFAULTS)
LIMIT_NAMES = frozenset(_NAMES)
"""The keyword names App accepts as shortcuts for a Limits field."""


def limits_for(scope: MutableMapping[str, Any]) -> Limits:
    """Return the limits in force for a request: the route's, else the app's, else defaults."""
    limits = scope.get(LIMITS_KEY)
    if limits is not None:
        return limits  # type: ignore[no-any-return]
    app = scope.get("app")
    app_limits = getattr(app, "limits", None)
    return app_limits if isinstance(app_limits, Limits) else _DEFAULT_LIMITS


_DEFAULT_LIMITS = Limits()


def announces_more(length: str | bytes, limit: int) -> bool:
    """Whether a `Content-Length` value is a number above ``limit``; other values are ignored."""
    if isinstance(length, bytes):
        length = length.decode("latin-1")
    value = ascii_int(length, limit + 1)
    return value is not None and value > limit


def body_too_large(limit: int) -> HTTPException:
    """The 413 for a request body over ``max_body_size``."""
    return HTTPException(413, f"Request body exceeds the limit of {limit} bytes")
