"""Byte ranges (RFC 9110 §14): the `Range` header parser and `multipart/byteranges` framing.

Nothing here knows about ASGI: `FileResponse` asks `parse_range` which bytes to send and
`multipart_framing` how to wrap them when there are several ranges.
"""

from __future__ import annotations

import secrets

from ._utils import ascii_int

__all__ = ["ByteRange", "Framing", "multipart_framing", "parse_range"]

ByteRange = tuple[int, int]
"""A half-open byte range ``(start, stop)``: the bytes ``start`` to ``stop - 1``."""

# NOTE: a position past this is past the end of any real file: it is clamped, so a
# 10,000-digit position costs no big-int arithmetic.
_HUGE = 10**18


def _position(text: str) -> int | None:
    """Return the value of a run of ASCII digits, ``None`` for anything else."""
    return ascii_int(text, _HUGE)


def parse_range(value: str, size: int, max_ranges: int | None) -> list[ByteRange] | None:
    """Return the byte ranges a `Range` header asks for, sorted and merged.

    ``None`` means "ignore the header and send the whole representation": a unit other
    than ``bytes``, a malformed or invalid ranges-specifier (``bytes=abc``, ``bytes=10-5``),
    more than ``max_ranges`` ranges, or an empty file. An empty list means that no range
    is satisfiable (answer 416). Otherwise the ranges lie within ``0..size``, in ascending
    order, with overlapping and adjacent ones merged. Linear in the length of ``value``.
    """
    unit, equals, specifier = value.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes" or size <= 0:
        return None
    if max_ranges is None:
        parts = specifier.split(",")
    else:
        # SECURITY: split no further than one element past the cap, so a header of 5,000
        # ranges costs no more than one of max_ranges + 1 before it is refused.
        parts = specifier.split(",", max_ranges)
        if len(parts) > max_ranges:
            return None
    ranges: list[ByteRange] = []
    requested = 0
    for part in parts:
        spec = part.strip(" \t")
        if not spec:
            continue  # NOTE: RFC 9110 §5.6.1: recipients accept empty list elements.
        requested += 1
        first, dash, last = spec.partition("-")
        if not dash:
            return None
        if not first:
            suffix = _position(last)
            if suffix is None:
                return None
            if suffix > 0:  # NOTE: "bytes=-0" is valid but unsatisfiable.
                ranges.append((max(size - suffix, 0), size))
            continue
        start = _position(first)
        end = _position(last) if last else _HUGE
        if start is None or end is None or end < start:
            return None
        if start < size:
            ranges.append((start, min(end + 1, size)))
    if not requested:
        return None
    return _merged(ranges)


def _merged(ranges: list[ByteRange]) -> list[ByteRange]:
    """Sort ``ranges`` and merge the ones that overlap or touch."""
    if len(ranges) < 2:
        return ranges
    ranges.sort()
    merged = [ranges[0]]
    for start, stop in ranges[1:]:
        last_start, last_stop = merged[-1]
        if start <= last_stop:
            merged[-1] = (last_start, max(last_stop, stop))
        else:
            merged.append((start, stop))
    return merged


class Framing:
    """The bytes around each part of a `multipart/byteranges` body, and its length.

    ``headers[i]`` goes before the bytes of range ``i`` and ``trailer`` after the last one;
    ``content_type`` is the value of the response's `Content-Type`.
    """

    __slots__ = ("content_length", "content_type", "headers", "trailer")

    def __init__(self, headers: list[bytes], trailer: bytes, content_type: str, length: int):
        self.headers = headers
        self.trailer = trailer
        self.content_type = content_type
        self.content_length = length


def multipart_framing(ranges: list[ByteRange], size: int, media_type: str | None) -> Framing:
    """Frame ``ranges`` of a ``size``-byte file as `multipart/byteranges` (RFC 9110 §14.6).

    The boundary is random, so a file cannot contain it by accident or design.
    """
    boundary = secrets.token_hex(16)
    type_line = f"Content-Type: {media_type}\r\n" if media_type else ""
    headers = []
    length = 0
    for index, (start, stop) in enumerate(ranges):
        # NOTE: the CRLF ending each part's bytes belongs to the next delimiter.
        delimiter = f"\r\n--{boundary}\r\n" if index else f"--{boundary}\r\n"
        header = (
            f"{delimiter}{type_line}Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
        ).encode("latin-1")
        headers.append(header)
        length += len(header) + stop - start
    trailer = f"\r\n--{boundary}--\r\n".encode("latin-1")
    length += len(trailer)
    return Framing(headers, trailer, f"multipart/byteranges; boundary={boundary}", length)
