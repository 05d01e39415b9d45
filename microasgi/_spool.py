"""One temporary file shared by the uploads of a form that go to disk, each in a region.

A form of many files holds one descriptor at most, however many files it has; each
upload still reads, seeks and writes as a file of its own.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO, cast

from .limits import KiB

__all__ = ["SharedSpool", "SharedSpooledFile", "SpoolRegion"]

# PERF: the most copied at once when a file on disk moves to the end of the shared spool.
_COPY_SIZE = 1024 * KiB


class SharedSpool:
    """The one temporary file on disk that the uploads of a form share, each in a region.

    Regions are appended as uploads roll over; the upload being parsed is always the last
    one, so a region grows in place while it is written. The file is created with the first
    region and closed with the last one, so a form holds one descriptor at most, however
    many files it has. Every access seeks and reads or writes under one lock, since worker
    threads may read several uploads of the form at once.
    """

    __slots__ = ("_file", "_lock", "_regions", "end", "tail")

    def __init__(self) -> None:
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()
        self._regions = 0
        self.end = 0
        """Where the next region starts."""
        self.tail: SpoolRegion | None = None
        """The region that ends the file, the only one that may grow in place."""

    @property
    def name(self) -> Any:
        return None if self._file is None else self._file.name

    def allocate(self, region: SpoolRegion) -> int:
        """Open a region at the end of the file (creating the file) and return its offset."""
        with self._lock:
            if self._file is None:
                # NOTE: closed by release() with the last region (or by its finaliser).
                self._file = cast(BinaryIO, tempfile.TemporaryFile())  # noqa: SIM115
                self.end = 0
            self._regions += 1
            self.tail = region
            return self.end

    def release(self, region: SpoolRegion) -> None:
        """Close a region; the file goes with the last one."""
        with self._lock:
            self._regions -= 1
            if self.tail is region:
                self.tail = None
            if self._regions == 0 and self._file is not None:
                file, self._file = self._file, None
                file.close()

    def read_at(self, offset: int, size: int) -> bytes:
        with self._lock:
            file = cast(BinaryIO, self._file)
            file.seek(offset)
            return file.read(size)

    def write_at(self, region: SpoolRegion, offset: int, pieces: list[Any], size: int) -> None:
        with self._lock:
            file = cast(BinaryIO, self._file)
            file.seek(offset)
            # PERF: one call for the whole batch; the parser hands over 256 KiB of views.
            file.writelines(pieces)
            if region is self.tail:
                self.end = max(self.end, offset + size)

    def move_to_end(self, region: SpoolRegion, start: int, length: int) -> int:
        """Copy a region that must grow to the end of the file, and return its new offset."""
        with self._lock:
            file = cast(BinaryIO, self._file)
            new_start = self.end
            for done in range(0, length, _COPY_SIZE):
                size = min(_COPY_SIZE, length - done)
                file.seek(start + done)
                chunk = file.read(size)
                file.seek(new_start + done)
                file.write(chunk.ljust(size, b"\0"))
            self.end = new_start + length
            self.tail = region
            return new_start


class SpoolRegion(io.RawIOBase):
    """A file whose bytes are one region of a SharedSpool, with its own position."""

    def __init__(self, spool: SharedSpool) -> None:
        super().__init__()
        self._spool = spool
        self._start = spool.allocate(self)
        self._length = 0
        self._position = 0

    @property
    def name(self) -> Any:
        return self._spool.name

    @property
    def mode(self) -> str:
        return "rb+"

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation(
            "an uploaded file shares its temporary file with the other files of the form, "
            "so it has no descriptor of its own: read it with read()"
        )

    def tell(self) -> int:
        self._checkClosed()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        position = bases[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        available = self._length - self._position
        if size is not None and size >= 0:
            available = min(size, available)
        if available <= 0:
            return b""
        data = self._spool.read_at(self._start + self._position, available)
        self._position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read()

    read1 = read

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    readinto1 = readinto

    def readline(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        limit = self._length if size is None or size < 0 else self._position + size
        limit = min(limit, self._length)
        pieces: list[bytes] = []
        while self._position < limit:
            piece = self._spool.read_at(
                self._start + self._position, min(8 * KiB, limit - self._position)
            )
            newline = piece.find(b"\n")
            if newline >= 0:
                piece = piece[: newline + 1]
            pieces.append(piece)
            self._position += len(piece)
            if newline >= 0 or not piece:
                break
        return b"".join(pieces)

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._write([data], size)
        return size

    def writelines(self, lines: Iterable[Any]) -> None:
        pieces = list(lines)
        self._write(pieces, sum(memoryview(piece).nbytes for piece in pieces))

    def _write(self, pieces: list[Any], size: int) -> None:
        self._checkClosed()
        end = self._position + size
        if end > self._length and self._spool.tail is not self:
            # NOTE: another region follows this one, so it moves to the end to grow.
            self._start = self._spool.move_to_end(self, self._start, self._length)
        self._spool.write_at(self, self._start + self._position, pieces, size)
        self._position = end
        self._length = max(self._length, end)

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        size = self._position if size is None else size
        if size < 0:
            raise ValueError(f"negative size value {size}")
        if size > self._length:
            position = self._position
            self._position = self._length
            for done in range(self._length, size, _COPY_SIZE):
                self.write(bytes(min(_COPY_SIZE, size - done)))
            self._position = position
        self._length = size
        return size

    def close(self) -> None:
        if not self.closed:
            self._spool.release(self)
        super().close()


class SharedSpooledFile(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """A SpooledTemporaryFile that rolls over into a region of its form's shared spool."""

    def __init__(self, spool: SharedSpool, max_size: int) -> None:
        super().__init__(max_size=max_size)
        self._spool = spool

    def rollover(self) -> None:
        if self._rolled:  # type: ignore[has-type]
            return
        memory = cast(io.BytesIO, self._file)
        region = SpoolRegion(self._spool)
        with memory.getbuffer() as view:
            region.write(view)
        region.seek(memory.tell())
        self._file = cast(BinaryIO, region)
        self._rolled = True
        memory.close()

    def fileno(self) -> int:
        # NOTE: SpooledTemporaryFile.fileno() rolls over first; there is no descriptor to
        # give, so that would only move the data to disk for nothing.
        raise io.UnsupportedOperation(
            "an uploaded file has no descriptor of its own: read it with read()"
        )
