"""One temporary file shared by the uploads of a form that go to disk, each in a region.

A form of many files holds one descriptor at most, however many files it has; each
upload still reads, seeks, writes and truncates as a file of its own. Only an upload whose
``fileno()`` is asked for leaves the shared file, for a temporary file of its own.
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
            if self._regions == 0 and self._file is not None:
                file, self._file = self._file, None
                file.close()
            elif self.tail is region and self._file is not None:
                # NOTE: nothing follows the tail, so its disk space is given back at once.
                self._file.truncate(region.start)
                self.end = region.start
            if self.tail is region:
                self.tail = None

    def read_at(self, offset: int, size: int) -> bytes:
        with self._lock:
            file = cast(BinaryIO, self._file)
            file.seek(offset)
            return file.read(size)

    def write(self, region: SpoolRegion, position: int, pieces: list[Any], size: int) -> None:
        """Write at a position of a region, moving the region to the end first if it grows."""
        # NOTE: the tail check, the move and the write are one step under the lock: were the
        # check made outside, another region could move to the end in between, and this
        # write would land in the bytes that region now holds.
        with self._lock:
            file = cast(BinaryIO, self._file)
            end = position + size
            if end > region.length and self.tail is not region:
                self._move_to_end(file, region)
            # NOTE: a region grows only as the tail, and nothing lies past the tail's length
            # (truncate() cuts the file there), so a write past its length leaves a gap that
            # reads as zeros, as in a file of its own.
            file.seek(region.start + position)
            # PERF: one call for the whole batch; the parser hands over 256 KiB of views.
            file.writelines(pieces)
            region.length = max(region.length, end)
            if region is self.tail:
                self.end = region.start + region.length

    def truncate(self, region: SpoolRegion, size: int) -> None:
        """Resize a region; the tail resizes the file, so no old bytes remain past it."""
        with self._lock:
            file = cast(BinaryIO, self._file)
            if size > region.length and self.tail is not region:
                self._move_to_end(file, region)
            if region is self.tail:
                file.truncate(region.start + size)
                self.end = region.start + size
            region.length = size

    def _move_to_end(self, file: BinaryIO, region: SpoolRegion) -> None:
        # Copy a region that must grow to the end of the file, where it becomes the tail.
        start, length, new_start = region.start, region.length, self.end
        for done in range(0, length, _COPY_SIZE):
            size = min(_COPY_SIZE, length - done)
            file.seek(start + done)
            chunk = file.read(size)
            file.seek(new_start + done)
            file.write(chunk.ljust(size, b"\0"))
        region.start = new_start
        self.end = new_start + length
        self.tail = region


class SpoolRegion(io.RawIOBase):
    """A file whose bytes are one region of a SharedSpool, with its own position."""

    def __init__(self, spool: SharedSpool) -> None:
        super().__init__()
        self._spool = spool
        self.length = 0
        """The size of the region; written by the spool, under its lock."""
        self._position = 0
        self.start = spool.allocate(self)
        """Where the region starts in the spool's file; written by the spool, under its lock."""

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
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.length}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        position = bases[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        available = self.length - self._position
        if size is not None and size >= 0:
            available = min(size, available)
        if available <= 0:
            return b""
        data = self._spool.read_at(self.start + self._position, available)
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
        limit = self.length if size is None or size < 0 else self._position + size
        limit = min(limit, self.length)
        pieces: list[bytes] = []
        while self._position < limit:
            piece = self._spool.read_at(
                self.start + self._position, min(8 * KiB, limit - self._position)
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
        if size:
            # NOTE: as in a file, an empty write does not grow the region, even past its end.
            self._spool.write(self, self._position, pieces, size)
            self._position += size

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        size = self._position if size is None else size
        if size < 0:
            raise ValueError(f"negative size value {size}")
        self._spool.truncate(self, size)
        return size

    def close(self) -> None:
        if not self.closed:
            self._spool.release(self)
        super().close()


class SharedSpooledFile(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """A SpooledTemporaryFile that rolls over into a region of its form's shared spool.

    ``fileno()`` moves it to a temporary file of its own, as a descriptor needs one.
    """

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
        """The descriptor of a temporary file that holds this upload alone.

        Made on the first call: the data moves out of memory, or out of the shared spool,
        into a temporary file of the upload's own, at the same position. Only the uploads
        whose ``fileno()`` is asked for hold a descriptor of their own.
        """
        file = self._file
        if self._rolled and not isinstance(file, SpoolRegion):
            return cast(BinaryIO, file).fileno()
        # NOTE: closed by close(), as the file of any SpooledTemporaryFile.
        own = cast(BinaryIO, tempfile.TemporaryFile())  # noqa: SIM115
        try:
            position = file.tell()
            file.seek(0)
            while chunk := file.read(_COPY_SIZE):
                own.write(chunk)
            own.seek(position)
        except BaseException:
            own.close()
            raise
        self._file = own
        self._rolled = True
        file.close()
        return own.fileno()
