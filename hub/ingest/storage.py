"""The storage half of the pipeline (:class:`BatchWriter`, which the pipeline owns): batches, writes to InfluxDB,
the spill and its write-back, and the acknowledgements, in arrival order, once messages are stored (see
:mod:`hub.ingest`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypedDict

from hub.errors import StorageRejected, StorageUnavailable
from hub.ingest.messages import Acker, InboundMessage, LineWriter, Pending, RetryPolicy
from hub.stats import IngestStats
from hub.storage.deadletter import DeadLetterKind, DeadLetterRing, OncePerKindLog
from hub.storage.spill import Spill, SpillError, SpillRecord

log = logging.getLogger("hub.ingest")

#: The write-back wakes this often to look at the spill.
_TICK_S = 0.5
#: Batches that waited for a write slot are merged into writes of up to this many times ``max_lines`` lines.
_MERGE_BATCHES = 4


class WriterGauges(TypedDict):
    """The writer's levels, part of the pipeline's gauges."""

    pending_messages: int
    pending_bytes: int
    batch_lines: int
    ready_lines: int
    writes_in_flight: int
    spill_batches: int
    spill_lines: int
    spill_bytes: int


class BatchWriter:
    """The storage half of :class:`~hub.ingest.pipeline.Pipeline`, which owns one: the unacknowledged messages
    in arrival order, the open batch, the ready queue, the writes in flight, the spill and its write-back.

    The pipeline hands over each filed message with :meth:`take` and asks :meth:`full` before taking more;
    ``stats``, the dead letters and their log are the pipeline's, shared so that both halves count in one place.
    """

    def __init__(
        self,
        acker: Acker,
        writer: LineWriter,
        *,
        max_lines: int,
        max_delay_s: float,
        max_in_flight: int,
        max_pending_messages: int,
        max_pending_bytes: int,
        max_ready_lines: int,
        retry: RetryPolicy,
        clock: Callable[[], float],
        stats: IngestStats,
        dead_letters: DeadLetterRing,
        dead_letter_log: OncePerKindLog,
        spill: Spill | None,
        spill_after_s: float,
        on_failure: Callable[[], None],
        save_dead_letters: asyncio.Event | None,
    ) -> None:
        self._acker = acker
        self._writer = writer
        self._max_lines = max_lines
        self._max_delay_s = max_delay_s
        self._max_pending = max_pending_messages
        #: Payload bytes of the unacknowledged messages, and their cap: with messages of up to the contract's
        #: largest size, a count alone would let a few gateways' big batches take gigabytes.
        self._pending_bytes = 0
        self._max_pending_bytes = max_pending_bytes
        self._retry = retry
        self._clock = clock
        self._stats = stats
        self._dead_letters = dead_letters
        self._dead_letter_log = dead_letter_log
        #: Called once when a write task fails unexpectedly (the pipeline stops; :meth:`raise_failure` raises).
        self._on_failure = on_failure
        #: Set after a refused spilled line is quarantined, so that a persistent quarantine saves it (None: none).
        self._save_wake = save_dead_letters
        self.spill = spill
        self._spill_wake = asyncio.Event()
        self._spill_full_logged = False
        self._spill_after_s = spill_after_s
        self._write_started: dict[asyncio.Task[Any], float] = {}
        self._slow_logged = False

        self._pending: deque[Pending] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._batch: list[Pending] = []
        self._batch_lines = 0
        self.batch_deadline: float | None = None  # loop time
        self._max_in_flight = max_in_flight
        self._running = 0  # InfluxDB writes running (spill-only tasks are not counted)
        #: Closed batches waiting for a write slot (merged when one comes free) and their lines.
        self._ready: deque[tuple[list[Pending], int]] = deque()
        self._ready_lines = 0
        self._max_ready_lines = max_ready_lines
        self._closed_for_good = False  # stop() was called: start no more writes
        self._writes: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._storage_down = False

    # ------------------------------------------------------------------------------------------ interface

    def take(self, entry: Pending) -> None:
        """Add a filed message to the unacknowledged ones: its lines to the open batch, or, with none, done
        (acknowledged once everything received before it is)."""
        self._pending.append(entry)
        self._pending_bytes += len(entry.message.payload)
        if entry.lines:
            if not self._batch:
                self.batch_deadline = asyncio.get_running_loop().time() + self._max_delay_s
            self._batch.append(entry)
            self._batch_lines += len(entry.lines)
        else:
            entry.done = True
            self.release()

    def holds(self, message: InboundMessage) -> bool:
        """Whether ``message`` is among the unacknowledged ones."""
        return any(e.message is message for e in self._pending)

    def batch_due(self, now: float) -> bool:
        """Whether the open batch is full or has waited ``max_delay_ms`` (``now`` in loop time)."""
        return self._batch_lines >= self._max_lines or (self.batch_deadline is not None and now >= self.batch_deadline)

    def batch_full(self) -> bool:
        """Whether the open batch holds ``max_lines`` lines."""
        return self._batch_lines >= self._max_lines

    def has_ready(self) -> bool:
        """Whether closed batches wait for a write slot."""
        return bool(self._ready)

    def start_write_back(self) -> asyncio.Task[None] | None:
        """The spill's write-back task (the caller cancels it when done); None without a spill."""
        if self.spill is None:
            return None
        return asyncio.create_task(self._write_back(), name="hub-spill-write-back")

    async def wait_for_room(self) -> None:
        """Write the open batch (it may hold the oldest pending messages, or room would never come), then wait a
        bounded time for room, so that the caller notices a failed write task or a stop."""
        await self.flush()
        if self.full():
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK_S):
                    await self._room.wait()

    async def wait_for_writes(self) -> None:
        """Until every closed batch is written (or spilled)."""
        while self._writes or self._ready:
            if not self._writes:
                self.dispatch()
            await asyncio.wait(set(self._writes))

    def stop(self) -> set[asyncio.Task[None]]:
        """Start no more writes and cancel those in flight (their messages stay unacknowledged); the caller
        waits for the returned tasks."""
        self._closed_for_good = True
        writes = set(self._writes)
        for task in writes:
            task.cancel()
        return writes

    @property
    def pending_messages(self) -> int:
        """Messages received and not yet acknowledged."""
        return len(self._pending)

    @property
    def storage_ok(self) -> bool:
        """False while writes are failing with a retryable error."""
        return not self._storage_down

    def gauges(self) -> WriterGauges:
        """The writer's levels (see :meth:`hub.ingest.pipeline.Pipeline.gauges`)."""
        spill = self.spill
        return {
            "pending_messages": len(self._pending),
            "pending_bytes": self._pending_bytes,
            "batch_lines": self._batch_lines,
            "ready_lines": self._ready_lines,
            "writes_in_flight": len(self._writes),
            "spill_batches": spill.records if spill else 0,
            "spill_lines": spill.lines if spill else 0,
            "spill_bytes": spill.size_bytes if spill else 0,
        }

    # ------------------------------------------------------------------------------------------ storage side

    async def flush(self) -> None:
        """Close the open batch (it waits in the ready queue for a write slot) and start what can start.

        Never waits for a slot: while every slot is taken the intake side goes on decoding and building lines,
        bounded by ``max_pending_messages`` and by the ready queue's line cap (:meth:`full`); the batches that
        queued up meanwhile go out merged into fewer, larger writes (up to ``_MERGE_BATCHES`` x ``max_lines``
        lines) when slots come free.
        """
        if self._batch:
            self._ready.append((self._batch, self._batch_lines))
            self._ready_lines += self._batch_lines
            self._batch, self._batch_lines, self.batch_deadline = [], 0, None
        self.dispatch()

    def dispatch(self) -> None:
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
        if not self.full():
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
            self._on_failure()

    def raise_failure(self) -> None:
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
                self.dispatch()

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
            self._dead_letters.add(
                entry.message.topic,
                entry.message.payload,
                DeadLetterKind.REJECTED,
                exc.reason,
                int((entry.message.received or self._clock()) * 1000),
            )
            self._stats.count_dead_letter(DeadLetterKind.REJECTED.value)
            self._dead_letter_log.record(DeadLetterKind.REJECTED.value, f"{entry.message.topic}: {exc.reason}")
        else:
            self._stats.batch_size_lines.observe(line_count)
            if spilled:
                self._stats.lines_spilled += line_count
                self._stats.batches_spilled += 1
            else:
                self._stats.lines_written += line_count
                self._stats.write_batches += 1
            now_ms = int(self._clock() * 1000)
            for entry in entries:
                if entry.newest_ts is not None:
                    self._stats.ingest_latency.observe(now_ms - entry.newest_ts)
        for entry in entries:
            entry.done = True
            entry.lines = []
        self.release()

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
                self._stats.write_errors += 1
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
            self._stats.spill_full += 1
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
        self._stats.write_seconds.observe(time.monotonic() - started)

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
                self._stats.write_errors += 1
                self._mark_down(exc, "spilling batches to disk until it recovers")
                await asyncio.sleep(self._retry.delay(attempt))
                attempt += 1
                continue
            await asyncio.to_thread(spill.commit, record)
            self._stats.batches_written_back += 1
            self._stats.lines_written_back += record.lines
            self._stats.lines_written += record.lines
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
            self._dead_letters.add(topic, lines[0], DeadLetterKind.REJECTED, exc.reason, int(self._clock() * 1000))
            self._stats.count_dead_letter(DeadLetterKind.REJECTED.value)
            self._dead_letter_log.record(DeadLetterKind.REJECTED.value, f"{topic}: {exc.reason}")
            if self._save_wake is not None:
                self._save_wake.set()

    async def _write_retrying(self, body: bytes) -> None:
        attempt = 0
        while True:
            try:
                await self._timed_write(body)
            except StorageUnavailable as exc:
                self._stats.write_errors += 1
                self._mark_down(exc, "holding acknowledgements and retrying with backoff")
                delay = self._retry.delay(attempt)
                attempt += 1
                self._stats.write_retries += 1
                await asyncio.sleep(delay)
            except StorageRejected:
                self._stats.write_errors += 1
                raise
            else:
                self._mark_up()
                return

    def release(self) -> None:
        """Acknowledge the done messages at the head of the pending queue, in arrival order."""
        pending = self._pending
        while pending and pending[0].done and not pending[0].held:
            entry = pending.popleft()
            self._pending_bytes -= len(entry.message.payload)
            if self._acker.ack(entry.message):
                self._stats.acks += 1
        if not self.full():
            self._room.set()

    def full(self) -> bool:
        """No more messages now: ``max_pending_messages`` or ``max_pending_bytes`` unacknowledged, or the ready
        queue at its line cap."""
        return (
            len(self._pending) >= self._max_pending
            or self._pending_bytes >= self._max_pending_bytes
            or self._ready_lines >= self._max_ready_lines
        )
