"""The overflow: a gateway's messages kept on disk while it sends faster than its share of the hub.

Why: the broker keeps one queue for the hub's session, first in first out for every gateway, so whatever one
gateway sends faster than the hub stores would pile up there in front of every other gateway's messages (and in
the broker's memory). The hub's lanes (:mod:`hub.ingest.lanes`) keep that queue short instead: past its share of
memory, a gateway's messages are appended to that gateway's overflow file and acknowledged to the broker once
``fsync`` returns, then fed to the pipeline at that gateway's share, in the order they came.

Layout: one file per gateway and episode, ``{site}~{gateway}~{episode:08d}.lane`` in the hub's own folder. A
record is a 24-byte header (magic ``IOCL``, CRC-32 of topic and payload, payload length, received time, topic
length, flags; little endian) followed by the topic and the payload, as the intake received them. How far the
pipeline has stored a file (its *committed* offset) is kept beside it in ``.done`` (written by replacement at
most every second, and at close); a file committed to its end is deleted.

Crash safety: a message is acknowledged to the broker only after the fsync of its record (and of the folder when
the file is new), so it survives ``kill -9`` and power loss. A torn record at the end of a file (a crash
mid-append, never acknowledged) is cut off at start. After a crash, the records after the last saved committed
offset are fed again: at most a second's worth handled twice, which stores nothing twice (a point with the same
series and time overwrites itself) and is the same as the broker's redelivery of unacknowledged messages.

Blocking file I/O: appends run in a worker thread (:meth:`OverflowFile.append`), reads of records already
written run on the event loop (bounded in bytes per call, usually from the page cache).
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from hub.errors import HubError
from hub.ingest.messages import InboundMessage
from hub.storage.spill import append_durably, fsync_dir

log = logging.getLogger(__name__)

_MAGIC: Final = b"IOCL"
#: magic, crc32 (topic + payload), payload length, received (unix s), topic length, flags (bit 0: retain).
_HEADER: Final = struct.Struct("<4sIIdHH")
_SUFFIX: Final = ".lane"
_DONE: Final = ".done"
_NAME: Final = re.compile(r"^([a-z0-9][a-z0-9-]{0,63})~([a-z0-9][a-z0-9-]{0,63})~(\d{8})\.lane$")


class OverflowFileError(HubError):
    """The overflow folder cannot be written or read (permissions, disk full, disk error)."""


def lane_file_name(key: str, episode: int) -> str:
    """``{site}~{gateway}~{episode}.lane`` for the lane ``key`` (``site/gateway``)."""
    site, gateway = key.split("/")
    return f"{site}~{gateway}~{episode:08d}{_SUFFIX}"


def encode_record(message: InboundMessage) -> bytes:
    """One message as a record: header, topic, payload."""
    topic = message.topic.encode()
    crc = zlib.crc32(message.payload, zlib.crc32(topic))
    header = _HEADER.pack(_MAGIC, crc, len(message.payload), message.received, len(topic), int(message.retain))
    return b"".join((header, topic, message.payload))


@dataclass(eq=False)
class OverflowFile:
    """One overflow file of one gateway: appended in a worker thread, read and committed on the event loop."""

    path: Path
    key: str
    episode: int
    #: Bytes of whole records written and fsynced: what may be read.
    written: int = 0
    #: Bytes whose messages the pipeline has stored (acknowledged): what a restart skips.
    committed: int = 0
    #: The committed offset last saved in ``.done``.
    saved: int = 0
    _writer: io.FileIO | None = field(default=None, repr=False)
    _reader: BinaryIO | None = field(default=None, repr=False)

    @property
    def done_path(self) -> Path:
        return self.path.with_suffix(_DONE)

    def append(self, records: bytes) -> int:
        """Append ``records`` (:func:`encode_record`'s, joined) and fsync; return the new end. Blocking: call it
        from a worker thread, with the records encoded beforehand (on the event loop: the thread then needs the
        interpreter lock only around the write and the fsync, not once per message while the loop holds it)."""
        try:
            created = self._writer is None
            if self._writer is None:
                self._writer = self.path.open("ab", buffering=0)
            end = append_durably(self._writer, records, self.written)
            if created:
                fsync_dir(self.path.parent)
        except OSError as exc:
            raise OverflowFileError(f"overflow file {self.path}: cannot write: {exc.strerror or exc}") from exc
        return end

    def read(self, offset: int, max_bytes: int) -> list[tuple[InboundMessage, int]]:
        """The messages of the records from ``offset`` (at least one, then up to ``max_bytes`` of them), each with
        the offset where its record ends. Only what is written is read. Raises :class:`OverflowFileError` on a
        corrupt record (written and fsynced by us: the disk is failing)."""
        out: list[tuple[InboundMessage, int]] = []
        try:
            if self._reader is None:
                self._reader = self.path.open("rb")
            reader = self._reader
            reader.seek(offset)
            start = offset
            while offset < self.written and (not out or offset - start < max_bytes):
                message, offset = _read_record(reader, offset, self.path)
                out.append((message, offset))
        except OSError as exc:
            raise OverflowFileError(f"overflow file {self.path}: cannot read: {exc.strerror or exc}") from exc
        return out

    def save_committed(self) -> None:
        """Write the committed offset to ``.done`` (by replacement; a crash keeps the old value or the new)."""
        committed = self.committed
        if committed == self.saved:
            return
        tmp = self.done_path.with_suffix(".tmp")
        try:
            tmp.write_text(str(committed))
            tmp.replace(self.done_path)
        except OSError as exc:
            raise OverflowFileError(f"overflow file {self.path}: cannot save progress: {exc.strerror or exc}") from exc
        self.saved = committed

    def close(self) -> None:
        for f in (self._writer, self._reader):
            if f is not None:
                f.close()
        self._writer = self._reader = None

    def remove(self) -> None:
        """Delete the file and its ``.done`` (every message in it is stored)."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.done_path.unlink(missing_ok=True)


def _read_record(reader: BinaryIO, offset: int, path: Path) -> tuple[InboundMessage, int]:
    header = reader.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise OverflowFileError(f"overflow file {path}: record at {offset} is cut short")
    magic, crc, length, received, topic_length, flags = _HEADER.unpack(header)
    topic = reader.read(topic_length)
    payload = reader.read(length)
    if magic != _MAGIC or len(topic) < topic_length or len(payload) < length:
        raise OverflowFileError(f"overflow file {path}: record at {offset} is corrupt")
    if zlib.crc32(payload, zlib.crc32(topic)) != crc:
        raise OverflowFileError(f"overflow file {path}: record at {offset} fails its checksum")
    end = offset + _HEADER.size + topic_length + length
    # QoS 0: acknowledged to the broker when it was written; the lanes commit it once stored.
    return InboundMessage(topic.decode("utf-8", errors="replace"), payload, 0, 0, bool(flags & 1), received), end


def _valid_end(path: Path) -> int:
    """Bytes of whole valid records from the start of ``path``."""
    valid = 0
    with path.open("rb") as f:
        while True:
            try:
                _, valid = _read_record(f, valid, path)
            except OverflowFileError:
                return valid


def recover(folder: Path) -> dict[str, list[OverflowFile]]:
    """The overflow files ``folder`` holds from before a restart, oldest episode first per lane key, each cut
    to its whole records and positioned at its saved committed offset; files committed to their end deleted."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        found: dict[str, list[OverflowFile]] = {}
        for path in sorted(folder.iterdir()):
            match = _NAME.match(path.name)
            if match is None:
                continue
            key, episode = f"{match[1]}/{match[2]}", int(match[3])
            valid = _valid_end(path)
            size = path.stat().st_size
            if valid < size:
                log.warning("overflow %s: cut off %d bytes of a torn record at %d", path, size - valid, valid)
                with path.open("r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            file = OverflowFile(path, key, episode, written=valid)
            try:
                file.committed = file.saved = min(valid, int(file.done_path.read_text() or 0))
            except (FileNotFoundError, ValueError):
                file.committed = file.saved = 0
            if file.committed >= file.written:
                file.remove()
                continue
            found.setdefault(key, []).append(file)
    except OSError as exc:
        raise OverflowFileError(f"overflow folder {folder}: {exc.strerror or exc}") from exc
    for files in found.values():
        files.sort(key=lambda f: f.episode)
    if found:
        held = sum(f.written - f.committed for files in found.values() for f in files)
        log.warning(
            "overflow %s: %d bytes of %d gateways' messages from before the restart; feeding them to the pipeline",
            folder,
            held,
            len(found),
        )
    return found
