"""The on-disk spill: batches of line protocol kept durably while InfluxDB is down or too slow.

Why: the hub acknowledges a message once its readings are *durably stored*, in InfluxDB or here. With a spill,
an InfluxDB outage no longer stops intake: batches are appended to the spill (fsync before the acks go out) and
written back, oldest first, once InfluxDB accepts writes again.

Layout: a folder of append-only segment files ``{number:016d}.seg``. A record is a 16-byte header
(magic ``IOCS``, compressed length, line count, CRC-32 of the compressed bytes; little endian) followed by the
zlib-compressed body. A segment is closed at ``segment_bytes`` and deleted once every record in it is written
back. The folder is one hub process's own: two hubs must not share it.

Crash safety: a record is acknowledged to the broker only after ``fsync`` of the segment (and of the folder
when a segment is created), so a record the broker saw acknowledged survives ``kill -9`` and power loss. A torn
record at the end of the newest segment (a crash mid-append, never acknowledged) is cut off at start. How far
the oldest segment was written back is kept in memory only: after a crash its records are written again, which
is harmless (a point with the same series and time overwrites itself in InfluxDB).

Bound: ``max_bytes`` on disk. When full, :meth:`Spill.append` raises :class:`SpillFull`; the pipeline then holds
the acknowledgements and retries InfluxDB, its pending cap fills and the MQTT intake stops taking messages: the
broker keeps them in the hub's persistent session (bounded there by Mosquitto's ``max_queued_messages``).

All methods are blocking (file I/O, fsync) and thread-safe; the pipeline calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hub.errors import HubError

log = logging.getLogger(__name__)

_MAGIC: Final = b"IOCS"
_HEADER: Final = struct.Struct("<4sIII")  # magic, compressed length, lines, crc32
_SUFFIX: Final = ".seg"
#: zlib level 1: most of the size gain on line protocol for little CPU.
_LEVEL: Final = 1


class SpillError(HubError):
    """The spill folder cannot be used (permissions, disk error)."""


class SpillFull(SpillError):
    """The spill holds ``max_bytes``: nothing more is taken until it drains."""


@dataclass(frozen=True, slots=True)
class SpillRecord:
    """One spilled batch, as read back for writing to InfluxDB."""

    segment: int
    offset: int
    end: int
    lines: int
    body: bytes


def _segment_number(path: Path) -> int | None:
    if path.suffix != _SUFFIX:
        return None
    try:
        return int(path.stem)
    except ValueError:
        return None


def fsync_dir(path: Path) -> None:
    """Make a new file's entry in ``path`` durable (its own fsync does not cover the folder)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(f: io.FileIO, data: bytes, end: int) -> int:
    """Append ``data`` to ``f`` (unbuffered, opened ``"ab"``, ``end`` bytes long) and fsync; return the new end.

    On any error (a full disk) the file is cut back to ``end``: a part of ``data`` left in it would be followed by
    the next append and read back as a corrupt record, taking the acknowledged records after it with it. (A
    buffered file would also keep the rest of ``data`` in its buffer and write it with the next append.)
    """
    try:
        _write_all(f, data)
        os.fsync(f.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(f.fileno(), end)
        raise
    return end + len(data)


def _write_all(f: io.FileIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = f.write(view)
        if not written:
            raise OSError(errno.EIO, f"the file took none of {len(view)} bytes")
        view = view[written:]


class Spill:
    """A bounded, durable FIFO of line-protocol batches in ``folder``."""

    def __init__(self, folder: Path, *, max_bytes: int, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes))
        self._lock = threading.Lock()
        self._segments: dict[int, int] = {}  # number -> size on disk
        self._writer: io.FileIO | None = None
        self._writer_number = 0
        self._read_segment = 0
        self._read_offset = 0
        self.records = 0
        """Records held (written back ones excluded)."""
        self.lines = 0
        """Lines held."""
        self.appended = 0
        self.written_back = 0
        self.corrupt_skipped = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._recover()
        except OSError as exc:
            raise SpillError(f"spill folder {folder}: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------------------------------ status

    @property
    def size_bytes(self) -> int:
        """Bytes on disk, written-back records of the oldest segment included (freed with the segment)."""
        return sum(self._segments.values())

    @property
    def empty(self) -> bool:
        return self.records == 0

    # ------------------------------------------------------------------------------------------ start

    def _recover(self) -> None:
        numbers = sorted(n for p in self.folder.iterdir() if (n := _segment_number(p)) is not None)
        for number in numbers:
            path = self._path(number)
            valid, records, lines = self._scan(path)
            size = path.stat().st_size
            if valid < size:
                log.warning("spill %s: cut off %d bytes of a torn or corrupt record at %d", path, size - valid, valid)
                with path.open("r+b") as f:
                    f.truncate(valid)
                    f.flush()
                    os.fsync(f.fileno())
            if records == 0:
                path.unlink()
                continue
            self._segments[number] = valid
            self.records += records
            self.lines += lines
        if self._segments:
            self._read_segment = min(self._segments)
            self._writer_number = max(self._segments)
            log.warning(
                "spill %s: %d batches (%d lines, %d bytes) from before the restart; writing them back to InfluxDB",
                self.folder,
                self.records,
                self.lines,
                self.size_bytes,
            )

    @staticmethod
    def _scan(path: Path) -> tuple[int, int, int]:
        """(bytes of whole valid records from the start, records, lines)."""
        valid = records = lines = 0
        with path.open("rb") as f:
            while True:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                magic, length, count, crc = _HEADER.unpack(header)
                data = f.read(length)
                if magic != _MAGIC or len(data) < length or zlib.crc32(data) != crc:
                    break
                valid += _HEADER.size + length
                records += 1
                lines += count
        return valid, records, lines

    def _path(self, number: int) -> Path:
        return self.folder / f"{number:016d}{_SUFFIX}"

    # ------------------------------------------------------------------------------------------ append

    def append(self, body: bytes, lines: int) -> None:
        """Store one batch durably (fsync) or raise :class:`SpillFull` / :class:`SpillError`."""
        data = zlib.compress(body, _LEVEL)
        record = _HEADER.pack(_MAGIC, len(data), lines, zlib.crc32(data)) + data
        with self._lock:
            if self.size_bytes + len(record) > self.max_bytes:
                raise SpillFull(f"spill {self.folder} is full ({self.size_bytes} of {self.max_bytes} bytes)")
            try:
                writer = self._writable(len(record))
                append_durably(writer, record, self._segments[self._writer_number])
            except OSError as exc:
                raise SpillError(f"spill {self.folder}: cannot write: {exc.strerror or exc}") from exc
            self._segments[self._writer_number] += len(record)
            self.records += 1
            self.lines += lines
            self.appended += 1

    def _writable(self, size: int) -> io.FileIO:
        current = self._segments.get(self._writer_number)
        if self._writer is not None and current is not None and current + size <= self.segment_bytes:
            return self._writer
        if self._writer is not None and current is not None and current == 0:
            return self._writer  # a record larger than a segment gets a segment of its own
        self._close_writer()
        self._writer_number = max(self._segments, default=self._writer_number) + 1
        if not self._segments:
            self._read_segment, self._read_offset = self._writer_number, 0
        path = self._path(self._writer_number)
        self._writer = path.open("ab", buffering=0)
        self._segments[self._writer_number] = 0
        fsync_dir(self.folder)
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------------------------------ read back

    def oldest(self) -> SpillRecord | None:
        """The oldest batch not yet written back, or None when the spill is empty."""
        with self._lock:
            while self._segments:
                number = self._read_segment
                if number not in self._segments:
                    self._read_segment, self._read_offset = min(self._segments), 0
                    continue
                size = self._segments[number]
                if self._read_offset >= size:
                    if not self._drop_segment(number):
                        return None
                    continue
                try:
                    record = self._read(number, self._read_offset)
                except OSError as exc:
                    raise SpillError(f"spill {self.folder}: cannot read: {exc.strerror or exc}") from exc
                if record is None:
                    # Written and fsynced by us, so this is disk corruption: skip the rest of the segment.
                    self.corrupt_skipped += 1
                    path = self._path(number)
                    log.error("spill %s: corrupt record at %d; skipping the rest", path, self._read_offset)
                    self._read_offset = size
                    continue
                return record
            return None

    def _read(self, number: int, offset: int) -> SpillRecord | None:
        with self._path(number).open("rb") as f:
            f.seek(offset)
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return None
            magic, length, lines, crc = _HEADER.unpack(header)
            data = f.read(length)
        if magic != _MAGIC or len(data) < length or zlib.crc32(data) != crc:
            return None
        return SpillRecord(number, offset, offset + _HEADER.size + length, lines, zlib.decompress(data))

    def commit(self, record: SpillRecord) -> None:
        """Mark ``record`` (the one :meth:`oldest` returned) as written back; free its segment when done."""
        with self._lock:
            if record.segment != self._read_segment or record.offset != self._read_offset:
                return
            self._read_offset = record.end
            self.records -= 1
            self.lines -= record.lines
            self.written_back += 1
            if self._read_offset >= self._segments.get(record.segment, 0):
                self._drop_segment(record.segment)

    def _drop_segment(self, number: int) -> bool:
        """Delete a fully written-back segment; False if it is the one being appended to and still open."""
        if number == self._writer_number and self._writer is not None:
            if self.records:
                return False
            self._close_writer()
        self._path(number).unlink(missing_ok=True)
        del self._segments[number]
        self._read_offset = 0
        if self._segments:
            self._read_segment = min(self._segments)
        return True

    def close(self) -> None:
        with self._lock:
            self._close_writer()
