"""The lanes: the hub shared between gateways, so that one gateway sending too much cannot delay the others.

The intake hands every message to :class:`FairQueue`, which keeps one *lane* per gateway (the topic's
``site/gateway``; anything else shares one lane of its own) and gives the pipeline their messages in turns:

- **Deficit round robin by bytes** (Shreedhar and Varghese, 1995): each lane with messages gets ``quantum_bytes``
  of credit per round and hands over messages while its credit lasts, so over time every busy gateway gets the
  same share of the pipeline in payload bytes, whatever its message sizes, and a gateway with one reading waits
  at most one round behind a flooding one.
- **A share of the unacknowledged**: a lane whose messages taken by the pipeline and not yet stored add up to
  ``lane_max_pending_bytes`` waits for some of them to be stored, so one gateway cannot fill the pipeline's
  pending cap or the write queue in front of the others' readings.
- **Overflow to disk** (:mod:`hub.ingest.overflow`): a lane holding ``lane_max_bytes`` in memory sends the rest
  of its messages to its overflow file and acknowledges them to the broker once fsynced, then feeds them back in
  order at its share. The broker's queue for the hub, first in first out for every gateway, therefore stays
  short, and so does the broker's memory. Bounded per gateway (``overflow_lane_max_bytes``) and in all
  (``overflow_max_bytes``); at a bound the lane's messages wait in memory and, past the queue's bounds, the
  intake stops reading (back-pressure: the broker keeps them), as it does without an overflow folder.

Order: a gateway's messages reach the pipeline in the order the broker delivered them (a lane's memory, then its
overflow file; a message arriving while the file has unread records goes to the file too), which the sequence
tracking, births before data, and the health state machines rely on. Across gateways there is no order.

Acknowledgements: the pipeline acknowledges through :meth:`FairQueue.ack`; a message from the broker is
acknowledged to the broker there (:class:`~hub.ingest.messages.Acker`), one read back from an overflow file
advances that file's committed offset instead (it was acknowledged to the broker when written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from common.tasks import cancel_and_wait
from hub.ingest.messages import Acker, InboundMessage, RetryPolicy
from hub.ingest.overflow import OverflowFile, OverflowFileError, encode_record, lane_file_name, recover

log = logging.getLogger("hub.ingest")

_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: The lane of messages whose topic names no gateway (dead-lettered by the pipeline): memory only.
MISC_LANE: Final = ""
#: A lane's overflow file is closed at this size and a new one started, so that stored parts are freed while a
#: long flood goes on.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
#: Bytes read back from an overflow file at a time (from the page cache, on the event loop).
READ_BACK_BYTES: Final = 1024 * 1024
#: How often the committed offsets are saved (a crash handles at most this much again).
SAVE_EVERY_S: Final = 1.0
_TOPIC_CACHE_SIZE: Final = 10_000


class _Lane:
    """One gateway's messages: in memory, being written to its overflow, and in its overflow files."""

    __slots__ = (
        "deficit",
        "disk_bytes",
        "disk_out",
        "files",
        "inflight",
        "key",
        "memory",
        "memory_bytes",
        "read_offset",
        "readback",
        "reading",
        "scheduled",
        "to_write",
        "to_write_bytes",
        "unread",
        "writing",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.memory: deque[InboundMessage] = deque()
        self.memory_bytes = 0
        self.deficit = 0
        #: Payload bytes handed to the pipeline and not yet acknowledged by it.
        self.inflight = 0
        #: In the round of :class:`FairQueue` (has messages and room in its pending share).
        self.scheduled = False
        #: Overflow files, oldest first; the last is appended to.
        self.files: deque[OverflowFile] = deque()
        #: Where reading back is: a file of ``files`` and an offset in it.
        self.reading: OverflowFile | None = None
        self.read_offset = 0
        #: Bytes written to the overflow and not yet read back; bytes of the lane's files on disk.
        self.unread = 0
        self.disk_bytes = 0
        #: Messages bound for the overflow, not yet written (unacknowledged), and their payload bytes.
        self.to_write: deque[InboundMessage] = deque()
        self.to_write_bytes = 0
        self.writing = False
        #: Read-back messages in ``memory`` (in order), then handed over: (message, file, end of its record).
        self.readback: deque[tuple[InboundMessage, OverflowFile, int]] = deque()
        self.disk_out: deque[tuple[InboundMessage, OverflowFile, int]] = deque()

    def has_messages(self) -> bool:
        return bool(self.memory) or self.unread > 0


def lane_key(topic: str) -> str:
    """``site/gateway`` of a v1 topic (``ioc/v1/{site}/{gateway}/...``), else :data:`MISC_LANE`."""
    parts = topic.split("/", 4)
    if (
        len(parts) == 5
        and parts[0] == "ioc"
        and parts[1] == "v1"
        and _ID.fullmatch(parts[2])
        and _ID.fullmatch(parts[3])
    ):
        return f"{parts[2]}/{parts[3]}"
    return MISC_LANE


class FairQueue:
    """The hand-over from the intake to the pipeline, shared fairly between gateways (see the module doc).

    The intake's side: :meth:`put_many` (allowed past the bounds: already read), :attr:`full` (stop reading) and
    :meth:`on_space`. The pipeline's: :meth:`get_nowait`, :meth:`get`, :meth:`qsize` and :meth:`ack` (it is the
    pipeline's :class:`~hub.ingest.messages.Acker`). ``async with`` runs the overflow's writer and recovers what
    an earlier run left in ``overflow_dir``; without ``overflow_dir`` there is no overflow.
    """

    def __init__(
        self,
        maxsize: int,
        max_bytes: int,
        *,
        quantum_bytes: int = 256 * 1024,
        lane_max_bytes: int = 4 * 1024 * 1024,
        lane_max_pending_bytes: int = 0,
        overflow_dir: Path | None = None,
        overflow_lane_max_bytes: int = 1024**3,
        overflow_max_bytes: int = 8 * 1024**3,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._quantum = quantum_bytes
        self._lane_max_bytes = lane_max_bytes
        #: 0: no share (every lane may fill the pipeline).
        self._lane_max_pending = lane_max_pending_bytes
        self._overflow_dir = overflow_dir
        self._overflow_lane_max = overflow_lane_max_bytes
        self._overflow_max = overflow_max_bytes
        self._acker: Acker | None = None
        self._lanes: dict[str, _Lane] = {}
        self._by_topic: dict[str, _Lane] = {}
        self._active: deque[_Lane] = deque()
        #: Messages and payload bytes in the lanes' memory (read-back ones included).
        self._count = 0
        self.bytes = 0
        #: Payload bytes waiting to be written to the overflow (in memory, unacknowledged).
        self.writing_bytes = 0
        #: Bytes of every overflow file on disk.
        self.overflow_bytes = 0
        self._episodes: dict[str, int] = {}
        self._getter: asyncio.Future[None] | None = None
        self._space_callback: Callable[[], None] | None = None
        self._write_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reading_back = True
        #: Backoff after a failed overflow write (the messages wait in memory meanwhile, unacknowledged).
        self._retry = RetryPolicy()
        self.counters: dict[str, int] = {
            "overflowed_messages": 0,
            "overflowed_bytes": 0,
            "read_back_messages": 0,
            "overflow_write_errors": 0,
            "overflow_corrupt_files": 0,
        }

    # ------------------------------------------------------------------------------------------ lifecycle

    def bind(self, acker: Acker) -> None:
        """Acknowledge broker messages through ``acker`` (the intake, which is made after this queue)."""
        self._acker = acker

    async def __aenter__(self) -> Self:
        if self._overflow_dir is not None:
            found = await asyncio.to_thread(recover, self._overflow_dir)
            for key, files in found.items():
                lane = self._lane(key)
                lane.files.extend(files)
                lane.reading, lane.read_offset = files[0], files[0].committed
                lane.unread = sum(f.written - f.committed for f in files)
                lane.disk_bytes = sum(f.written for f in files)
                self.overflow_bytes += lane.disk_bytes
                self._episodes[key] = files[-1].episode
                self._schedule(lane)
            self._tasks = [
                asyncio.create_task(self._write_loop(), name="hub-overflow-writer"),
                asyncio.create_task(self._save_loop(), name="hub-overflow-progress"),
            ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._tasks)
        files = [f for lane in self._lanes.values() for f in lane.files]
        await asyncio.to_thread(self._save_and_close, files)
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.result()  # a loop that crashed is an error of the hub; raised once the progress is saved

    @staticmethod
    def _save_and_close(files: list[OverflowFile]) -> None:
        for f in files:
            try:
                f.save_committed()
            except OverflowFileError as exc:
                log.error("%s", exc)  # noqa: TRY400 - the message says it all; no traceback
            f.close()

    def stop_reading_back(self) -> None:
        """The hub is stopping: hand over no more from the overflow files (what they hold waits for the next
        start; the pipeline drains only what is in memory)."""
        self._reading_back = False

    # ------------------------------------------------------------------------------------------ intake side

    @property
    def full(self) -> bool:
        return self._count >= self.maxsize or self.bytes >= self.max_bytes or self.writing_bytes >= 2 * self.max_bytes

    def on_space(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once when the queue is down to half its bounds (None: forget it)."""
        self._space_callback = callback
        self._check_space()

    def put_nowait(self, item: InboundMessage) -> None:
        self.put_many([item])

    def put_many(self, items: list[InboundMessage]) -> None:
        overflow = self._overflow_dir is not None
        wake_writer = False
        for message in items:
            lane = self._by_topic.get(message.topic)
            if lane is None:
                lane = self._lane_of(message.topic)
            size = len(message.payload)
            if overflow and lane.key and (lane.to_write or lane.unread or lane.memory_bytes >= self._lane_max_bytes):
                lane.to_write.append(message)
                lane.to_write_bytes += size
                self.writing_bytes += size
                wake_writer = True
                continue
            lane.memory.append(message)
            lane.memory_bytes += size
            self._count += 1
            self.bytes += size
            if not lane.scheduled:
                self._schedule(lane)
        if wake_writer:
            self._write_wake.set()
        self._wake()

    # ------------------------------------------------------------------------------------------ pipeline side

    def qsize(self) -> int:
        """Messages in memory, ready or waiting for their lane's turn."""
        return self._count

    def get_nowait(self) -> InboundMessage:
        """The next message in the lanes' turns; :class:`asyncio.QueueEmpty` when no lane may hand one over."""
        active = self._active
        while active:
            lane = active[0]
            if lane.deficit <= 0:
                lane.deficit += self._quantum
                active.rotate(-1)
                continue
            message = self._pop(lane)
            if message is None:
                active.popleft()
                lane.scheduled = False
                lane.deficit = 0
                continue
            size = len(message.payload)
            lane.deficit -= size
            lane.inflight += size
            if not lane.has_messages() or not self._has_room(lane):
                active.popleft()
                lane.scheduled = False
                lane.deficit = 0
            self._check_space()
            return message
        raise asyncio.QueueEmpty

    async def get(self) -> InboundMessage:
        """The next message, waiting for one. Cancelling it never loses a message (taken only here)."""
        while True:
            with contextlib.suppress(asyncio.QueueEmpty):
                return self.get_nowait()
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None

    def ack(self, message: InboundMessage) -> bool:
        """The pipeline is done with ``message`` (stored or dead-lettered): acknowledge it to the broker, or commit
        it in its overflow file. Called in each lane's hand-over order."""
        lane = self._by_topic.get(message.topic) or self._lane_of(message.topic)
        lane.inflight -= len(message.payload)
        out = lane.disk_out
        if out and out[0][0] is message:
            _, file, end = out.popleft()
            file.committed = end
            self._release_files(lane)
            acked = True
        else:
            acked = self._acker.ack(message) if self._acker is not None else True
        if not lane.scheduled and lane.has_messages() and self._has_room(lane):
            self._schedule(lane)
            self._wake()
        return acked

    # ------------------------------------------------------------------------------------------ status

    def gauges(self) -> dict[str, int]:
        return {
            "lanes_waiting": len(self._active),
            "queued_bytes": self.bytes,
            "overflow_writing_bytes": self.writing_bytes,
            "overflow_bytes": self.overflow_bytes,
            "overflow_unread_bytes": sum(lane.unread for lane in self._lanes.values()),
        }

    def overflow_by_gateway(self) -> dict[str, int]:
        """Bytes on disk per gateway (``site/gateway``) with an overflow: who sends more than its share."""
        return {key: lane.disk_bytes for key, lane in self._lanes.items() if lane.disk_bytes}

    # ------------------------------------------------------------------------------------------ lanes

    def _lane_of(self, topic: str) -> _Lane:
        lane = self._lane(lane_key(topic))
        if len(self._by_topic) >= _TOPIC_CACHE_SIZE:
            self._by_topic.clear()
        self._by_topic[topic] = lane
        return lane

    def _lane(self, key: str) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        return lane

    def _has_room(self, lane: _Lane) -> bool:
        return not self._lane_max_pending or lane.inflight < self._lane_max_pending

    def _schedule(self, lane: _Lane) -> None:
        if lane.has_messages() and self._has_room(lane):
            lane.scheduled = True
            self._active.append(lane)

    def _pop(self, lane: _Lane) -> InboundMessage | None:
        """The lane's next message: from memory, else read back from its overflow; None if it has none now."""
        if not lane.memory and lane.unread and self._reading_back:
            self._read_back(lane)
        if not lane.memory:
            return None
        message = lane.memory.popleft()
        size = len(message.payload)
        lane.memory_bytes -= size
        self._count -= 1
        self.bytes -= size
        readback = lane.readback
        if readback and readback[0][0] is message:
            lane.disk_out.append(readback.popleft())
        return message

    def _read_back(self, lane: _Lane) -> None:
        file = lane.reading
        while file is not None and lane.read_offset >= file.written:
            later = [f for f in lane.files if f.episode > file.episode]
            if not later:
                return  # everything written is read; the rest is being written
            file, lane.read_offset = later[0], later[0].committed
            lane.reading = file
        if file is None:
            return
        try:
            records = file.read(lane.read_offset, READ_BACK_BYTES)
        except OverflowFileError as exc:
            # Written and fsynced by us: the disk is failing. What is left of the file is lost; say so once.
            self.counters["overflow_corrupt_files"] += 1
            lost = file.written - lane.read_offset
            log.error("%s; skipping the rest of it (%d bytes of %s's messages lost)", exc, lost, lane.key)  # noqa: TRY400
            lane.unread -= lost
            lane.read_offset = file.committed = file.written
            self._release_files(lane)
            return
        start = lane.read_offset
        for message, end in records:
            lane.memory.append(message)
            lane.readback.append((message, file, end))
            size = len(message.payload)
            lane.memory_bytes += size
            self._count += 1
            self.bytes += size
        lane.read_offset = records[-1][1]
        lane.unread -= lane.read_offset - start
        self.counters["read_back_messages"] += len(records)

    def _release_files(self, lane: _Lane) -> None:
        """Delete the lane's oldest files once every message in them is stored (and nothing is appended)."""
        files = lane.files
        while files:
            oldest = files[0]
            if oldest.committed < oldest.written:
                return
            if oldest is files[-1] and lane.writing:
                return  # being appended to: the next round frees it
            files.popleft()
            lane.disk_bytes -= oldest.written
            self.overflow_bytes -= oldest.written
            if lane.reading is oldest:
                lane.reading = files[0] if files else None
                lane.read_offset = 0
            try:
                oldest.remove()
            except OSError as exc:
                log.error("overflow file %s: cannot delete: %s", oldest.path, exc)  # noqa: TRY400
            if lane.to_write:
                self._write_wake.set()  # room on disk for what waited at the bound

    # ------------------------------------------------------------------------------------------ overflow

    async def _write_loop(self) -> None:
        failures = 0
        while True:
            await self._write_wake.wait()
            self._write_wake.clear()
            for lane in [lane for lane in self._lanes.values() if lane.to_write]:
                try:
                    await self._write(lane)
                except OverflowFileError as exc:
                    self.counters["overflow_write_errors"] += 1
                    if failures == 0:
                        log.error("%s; the messages wait unacknowledged and the write is retried", exc)  # noqa: TRY400
                    await asyncio.sleep(self._retry.delay(failures))
                    failures += 1
                    self._write_wake.set()
                    break
                if failures:
                    log.warning("overflow writes work again")
                    failures = 0
            self._check_space()

    async def _write(self, lane: _Lane) -> None:
        """Write what of ``lane.to_write`` fits the bounds to its overflow file; then acknowledge it."""
        room = min(self._overflow_lane_max - lane.disk_bytes, self._overflow_max - self.overflow_bytes)
        take: list[InboundMessage] = []
        size = 0
        for message in lane.to_write:
            if size + len(message.payload) > room:
                break
            take.append(message)
            size += len(message.payload)
        if not take:
            return  # at a bound: they wait until stored messages free room (the intake pauses if it fills)
        file = self._append_target(lane)
        records = b"".join([encode_record(m) for m in take])
        lane.writing = True
        try:
            end = await asyncio.to_thread(file.append, records)
        finally:
            lane.writing = False
        added = end - file.written
        file.written = end
        if lane.reading is None:
            lane.reading, lane.read_offset = file, 0
        for _ in take:
            lane.to_write.popleft()
        lane.to_write_bytes -= size
        self.writing_bytes -= size
        lane.unread += added
        lane.disk_bytes += added
        self.overflow_bytes += added
        self.counters["overflowed_messages"] += len(take)
        self.counters["overflowed_bytes"] += size
        if self._acker is not None:
            for message in take:
                self._acker.ack(message)
        if not lane.scheduled:
            self._schedule(lane)
            self._wake()

    def _append_target(self, lane: _Lane) -> OverflowFile:
        assert self._overflow_dir is not None
        if lane.files and lane.files[-1].written < SEGMENT_BYTES:
            return lane.files[-1]
        episode = self._episodes.get(lane.key, 0) + 1
        self._episodes[lane.key] = episode
        file = OverflowFile(self._overflow_dir / lane_file_name(lane.key, episode), lane.key, episode)
        lane.files.append(file)
        return file

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            files = [f for lane in self._lanes.values() for f in lane.files if f.committed != f.saved]
            if files:
                try:
                    await asyncio.to_thread(_save_all, files)
                except OverflowFileError as exc:
                    log.error("%s", exc)  # noqa: TRY400

    # ------------------------------------------------------------------------------------------ wake-ups

    def _wake(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done() and self._active:
            getter.set_result(None)

    def _check_space(self) -> None:
        if (
            self._space_callback is not None
            and self._count <= self.maxsize // 2
            and self.bytes <= self.max_bytes // 2
            and self.writing_bytes <= self.max_bytes
        ):
            callback, self._space_callback = self._space_callback, None
            callback()


def _save_all(files: list[OverflowFile]) -> None:
    for f in files:
        f.save_committed()
