"""The storage side of the pipeline: batches, writes to InfluxDB, the spill and its write-back, and the
acknowledgements, in arrival order, once messages are stored (see :mod:`hub.ingest`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from hub.errors import StorageRejected, StorageUnavailable
from hub.ingest.messages import Acker, LineWriter, Pending, RetryPolicy
from hub.stats import IngestStats
from hub.storage.deadletter import DeadLetterKind, DeadLetterRing, OncePerKindLog
from hub.storage.spill import Spill, SpillError, SpillRecord

log = logging.getLogger("hub.ingest")

#: The write-back wakes this often to look at the spill.
_TICK_S = 0.5
#: Batches that waited for a write slot are merged into writes of up to this many times ``max_lines`` lines.
_MERGE_BATCHES = 4


class StorageSide:
    """Mixin of :class:`~hub.ingest.pipeline.Pipeline`: everything after a message's lines are built."""

    # Set by Pipeline.__init__.
    _acker: Acker
    _writer: LineWriter
    _max_delay_s: float
    _max_pending: int
    _max_pending_bytes: int
    _pending_bytes: int
    _retry: RetryPolicy
    _clock: Any
    stats: IngestStats
    dead_letters: DeadLetterRing
    _quarantine_saves: bool
    _save_wake: asyncio.Event
    spill: Spill | None
    _spill_wake: asyncio.Event
    _spill_full_logged: bool
    _spill_after_s: float
    _write_started: dict[asyncio.Task[Any], float]
    _slow_logged: bool
    _dead_letter_log: OncePerKindLog
    _pending: deque[Pending]
    _room: asyncio.Event
    _batch: list[Pending]
    _batch_lines: int
    _batch_deadline: float | None
    _max_lines: int
    _max_in_flight: int
    _running: int
    _ready: deque[tuple[list[Pending], int]]
    _ready_lines: int
    _max_ready_lines: int
    _closed_for_good: bool
    _writes: set[asyncio.Task[None]]
    _failure: BaseException | None
    _storage_down: bool

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ storage side

    async def _flush(self) -> None:
        """Close the open batch (it waits in the ready queue for a write slot) and start what can start.

        Never waits for a slot: while every slot is taken the intake side goes on decoding and building lines,
        bounded by ``max_pending_messages`` and by the ready queue's line cap (:meth:`_full`); the batches that
        queued up meanwhile go out merged into fewer, larger writes (up to ``_MERGE_BATCHES`` x ``max_lines``
        lines) when slots come free.
        """
        if self._batch:
            self._ready.append((self._batch, self._batch_lines))
            self._ready_lines += self._batch_lines
            self._batch, self._batch_lines, self._batch_deadline = [], 0, None
        self._dispatch()

    def _dispatch(self) -> None:
        """Start writes of the ready batches while slots are free; spill them when InfluxDB is slow."""
        ready = self._ready
        while ready:
            if self._running >= self._max_in_flight:
                if not self._influx_slow():
                    return
                # Every slot is taken by a write running for spill_after_s: spill what waits, do not wait.
                self._start(self._take_ready(all_of_it=True), spill_only=True)
                continue
            self._start(self._take_ready(), spill_only=False)

    def _take_ready(self, *, all_of_it: bool = False) -> list[Pending]:
        """The oldest ready batch, merged with the next ones while the write stays within its line budget."""
        ready = self._ready
        entries, lines = ready.popleft()
        budget = self._max_lines * _MERGE_BATCHES
        while ready and (all_of_it or lines + ready[0][1] <= budget):
            more, count = ready.popleft()
            entries.extend(more)
            lines += count
        self._ready_lines -= lines
        if not self._full():
            self._room.set()
        return entries

    def _start(self, entries: list[Pending], *, spill_only: bool) -> None:
        if spill_only:
            task = asyncio.create_task(self._store(entries, spill_only=True), name="hub-spill")
        else:
            self._running += 1
            task = asyncio.create_task(self._store_batch(entries), name="hub-write")
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("a write task failed unexpectedly") from self._failure

    def _influx_slow(self) -> bool:
        if self.spill is None or self._running < self._max_in_flight or not self._write_started:
            return False
        running_s = asyncio.get_running_loop().time() - min(self._write_started.values())
        slow = running_s >= self._spill_after_s
        if slow and not self._slow_logged:
            self._slow_logged = True
            log.warning("InfluxDB is slow (a write has been running for %.1f s): spilling batches meanwhile", running_s)
        elif not slow:
            self._slow_logged = False
        return slow

    async def _store_batch(self, entries: list[Pending]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._write_started[task] = asyncio.get_running_loop().time()
        try:
            await self._store(entries)
        finally:
            del self._write_started[task]
            self._running -= 1
            if not self._closed_for_good:
                self._dispatch()

    async def _store(self, entries: list[Pending], *, spill_only: bool = False) -> None:
        line_count = sum(len(e.lines) for e in entries)
        body = "\n".join([line for e in entries for line in e.lines]).encode()
        try:
            spilled = await self._write_or_spill(body, line_count, spill_only=spill_only)
        except StorageRejected as exc:
            if len(entries) > 1:
                # Narrow down to the message(s) InfluxDB refuses; the others are written (again) and acked.
                half = len(entries) // 2
                await self._store(entries[:half])
                await self._store(entries[half:])
                return
            entry = entries[0]
            self.dead_letters.add(
                entry.message.topic,
                entry.message.payload,
                DeadLetterKind.REJECTED,
                exc.reason,
                int((entry.message.received or self._clock()) * 1000),
            )
            self.stats.count_dead_letter(DeadLetterKind.REJECTED.value)
            self._dead_letter_log.record(DeadLetterKind.REJECTED.value, f"{entry.message.topic}: {exc.reason}")
        else:
            self.stats.batch_size_lines.observe(line_count)
            if spilled:
                self.stats.lines_spilled += line_count
                self.stats.batches_spilled += 1
            else:
                self.stats.lines_written += line_count
                self.stats.write_batches += 1
            now_ms = int(self._clock() * 1000)
            for entry in entries:
                if entry.newest_ts is not None:
                    self.stats.ingest_latency.observe(now_ms - entry.newest_ts)
        for entry in entries:
            entry.done = True
            entry.lines = []
        self._release()

    async def _write_or_spill(self, body: bytes, lines: int, *, spill_only: bool = False) -> bool:
        """Store ``body`` in InfluxDB or, if it cannot take it now, in the spill; True if it was spilled.

        Without a spill, or with a full one, retry InfluxDB until it takes the batch (holding the acks).
        ``spill_only``: InfluxDB is slow, go to the spill straight away.
        """
        if self.spill is None:
            await self._write_retrying(body)
            return False
        if not self._storage_down and not spill_only:
            try:
                await self._timed_write(body)
            except StorageUnavailable as exc:
                self.stats.write_errors += 1
                self._mark_down(exc, "spilling batches to disk until it recovers")
            else:
                return False
        if await self._spill_append(body, lines):
            return True
        await self._write_retrying(body)
        return False

    async def _spill_append(self, body: bytes, lines: int) -> bool:
        spill = self.spill
        assert spill is not None
        problem = ""
        try:
            await asyncio.to_thread(spill.append, body, lines)
        except SpillError as exc:  # SpillFull included
            problem = str(exc)
        if problem:
            self.stats.spill_full += 1
            if not self._spill_full_logged:
                self._spill_full_logged = True
                log.error("%s; holding acknowledgements (the broker keeps the messages) until it drains", problem)
            return False
        if self._spill_full_logged:
            self._spill_full_logged = False
            log.warning("the spill takes batches again")
        self._spill_wake.set()
        return True

    def _mark_down(self, exc: BaseException, doing: str) -> None:
        if not self._storage_down:
            self._storage_down = True
            log.warning("InfluxDB write failed (%s); %s", exc, doing)

    def _mark_up(self) -> None:
        if self._storage_down:
            self._storage_down = False
            log.warning("InfluxDB accepts writes again")

    async def _timed_write(self, body: bytes) -> None:
        started = time.monotonic()
        await self._writer.write(body)
        self.stats.write_seconds.observe(time.monotonic() - started)

    async def _write_back(self) -> None:
        """Write the spill back to InfluxDB, oldest first, one batch at a time, with backoff while it fails."""
        spill = self.spill
        assert spill is not None
        attempt = 0
        while True:
            record = await asyncio.to_thread(spill.oldest)
            if record is None:
                self._spill_wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TICK_S):
                        await self._spill_wake.wait()
                continue
            try:
                await self._write_back_lines(record, record.body.split(b"\n"))
            except StorageUnavailable as exc:
                self.stats.write_errors += 1
                self._mark_down(exc, "spilling batches to disk until it recovers")
                await asyncio.sleep(self._retry.delay(attempt))
                attempt += 1
                continue
            await asyncio.to_thread(spill.commit, record)
            self.stats.batches_written_back += 1
            self.stats.lines_written_back += record.lines
            self.stats.lines_written += record.lines
            attempt = 0
            self._mark_up()
            if spill.empty:
                log.info("the spill is written back to InfluxDB")

    async def _write_back_lines(self, record: SpillRecord, lines: list[bytes]) -> None:
        """Write ``lines`` of a spilled batch; a refused one is narrowed down by halves and quarantined."""
        try:
            await self._timed_write(b"\n".join(lines))
        except StorageRejected as exc:
            if len(lines) > 1:
                half = len(lines) // 2
                await self._write_back_lines(record, lines[:half])
                await self._write_back_lines(record, lines[half:])
                return
            topic = f"(spill segment {record.segment} offset {record.offset})"
            self.dead_letters.add(topic, lines[0], DeadLetterKind.REJECTED, exc.reason, int(self._clock() * 1000))
            self.stats.count_dead_letter(DeadLetterKind.REJECTED.value)
            self._dead_letter_log.record(DeadLetterKind.REJECTED.value, f"{topic}: {exc.reason}")
            if self._quarantine_saves:
                self._save_wake.set()

    async def _write_retrying(self, body: bytes) -> None:
        attempt = 0
        while True:
            try:
                await self._timed_write(body)
            except StorageUnavailable as exc:
                self.stats.write_errors += 1
                self._mark_down(exc, "holding acknowledgements and retrying with backoff")
                delay = self._retry.delay(attempt)
                attempt += 1
                self.stats.write_retries += 1
                await asyncio.sleep(delay)
            except StorageRejected:
                self.stats.write_errors += 1
                raise
            else:
                self._mark_up()
                return

    def _release(self) -> None:
        """Acknowledge the done messages at the head of the pending queue, in arrival order."""
        pending = self._pending
        while pending and pending[0].done and not pending[0].held:
            entry = pending.popleft()
            self._pending_bytes -= len(entry.message.payload)
            if self._acker.ack(entry.message):
                self.stats.acks += 1
        if not self._full():
            self._room.set()

    def _full(self) -> bool:
        """No more messages now: ``max_pending_messages`` or ``max_pending_bytes`` unacknowledged, or the ready
        queue at its line cap."""
        return (
            len(self._pending) >= self._max_pending
            or self._pending_bytes >= self._max_pending_bytes
            or self._ready_lines >= self._max_ready_lines
        )
