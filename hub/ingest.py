"""The ingest pipeline: decode -> lines -> batch -> write -> acknowledge.

Messages arrive on a bounded queue from the intake (the MQTT adapter), unacknowledged. Each is decoded against
the wire contract by its channel, turned into InfluxDB lines (:mod:`hub.points`), and added to the current batch;
a batch is written when it holds ``max_lines`` lines or its first message has waited ``max_delay_ms``, with up to
``max_in_flight`` writes at once.

Acknowledgements go back to the broker **only after storage** (InfluxDB answered 204), and in the order the
messages arrived (MQTT 5 section 4.6 asks a receiver to send PUBACKs in order): a message that needs no write
(a bad payload, a command ack, a stale will) is acknowledged once everything received before it is.

- Retryable write failures (:class:`~hub.errors.StorageUnavailable`) are retried with capped exponential backoff
  and jitter, holding the acknowledgements; memory stays bounded because the pipeline stops taking messages at
  ``max_pending_messages`` unacknowledged messages, the queue fills, and the MQTT thread blocks (back-pressure to
  the broker, which keeps the messages in the hub's session).
- A refused write (:class:`~hub.errors.StorageRejected`, HTTP 400/413) is split in halves by message until the
  message that causes it is found; that one is dead-lettered and acknowledged. Lines InfluxDB already stored
  from a partial write are written again, which is harmless: a point with the same series and time overwrites.
- Bad topics and payloads are dead-lettered, counted by kind, logged once per kind, and acknowledged once the
  quarantine (:class:`~hub.deadletter.Quarantine`) has saved them when it is persistent.
- With a spill (:mod:`hub.spill`), a batch InfluxDB cannot take (down, timing out) is appended to the spill
  instead, and its messages are acknowledged once it is fsynced there; while InfluxDB is down every batch goes
  straight to the spill, and so does a batch that finds every write slot taken by writes running for
  ``spill_after_s`` (InfluxDB slow but answering). A write-back task writes the spill back to InfluxDB
  oldest first (its first success is what ends the outage), while intake goes on. A full spill falls back to
  holding the acknowledgements.
- Cardinality guard (:class:`~hub.points.MetricCap`): metric names beyond the per-device cap are left out of
  the lines and the message is also quarantined with what was refused; the rest of it is stored.

Hooks for the rest of the hub (the device registry, health tracking):

- :meth:`Pipeline.add_observer`: called synchronously, in the event loop, with ``(site, gateway, payload)`` for
  every message that decodes (state, event, data, cmd/ack), before it is stored. Observers must be cheap (a dict
  update, no I/O, no awaiting): they run on the hot path. One that raises is logged (once per observer and error
  type) and counted in ``observer_errors``; the message is stored all the same.
- :meth:`Pipeline.set_enrichment`: ``device -> {tag: value}`` (e.g. the district), checked against the tag
  allow-list and swapped in atomically; every line built afterwards carries the device's tags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from hub.deadletter import DeadLetterKind, DeadLetterRing, OncePerKindLog, Quarantine, QuarantineError
from hub.errors import StorageRejected, StorageUnavailable
from hub.points import (
    DEFAULT_ENRICHMENT_TAGS,
    NO_ENRICHMENT,
    Enrichment,
    MetricCap,
    build_enrichment,
    device_event_line,
    gateway_state_line,
    reading_lines,
)
from hub.spill import Spill, SpillError, SpillRecord
from hub.stats import IngestStats
from hub.tracking import GatewayStates, SeqTracker
from wire.v1 import ContractError, DataBatch, Event, Payload, State, Topic, decode_for, parse_topic

log = logging.getLogger(__name__)

#: The idle loop wakes this often to notice a stop and to log dead-letter summaries.
_TICK_S = 0.5
#: Parsed topics kept (cleared when full; bounded by gateways x channels in practice).
_TOPIC_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message as the intake hands it over: not yet acknowledged to the broker."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool = False
    received: float = 0.0
    """Unix time (s) when the intake received it."""
    connection: int = 0
    """Which broker connection delivered it (the intake's counter); acks of an older connection are moot."""


class MessageSource(Protocol):
    """Where the pipeline takes messages from: the intake's hand-over (or an :class:`asyncio.Queue` in tests)."""

    def get_nowait(self) -> InboundMessage: ...

    async def get(self) -> InboundMessage: ...

    def qsize(self) -> int: ...


class Acker(Protocol):
    """Acknowledges a message to the broker (the intake)."""

    def ack(self, message: InboundMessage) -> bool:
        """Acknowledge; False if the ack could not be sent (the broker will redeliver the message)."""
        ...


Observer = Callable[[str, str, Payload], None]
"""Called with ``(site, gateway, decoded payload)`` for each decoded message; must be cheap (see the module doc)."""


class LineWriter(Protocol):
    """Stores line protocol (the InfluxDB writer)."""

    async def write(self, body: bytes) -> None:
        """Store ``body``; raise StorageUnavailable (retry) or StorageRejected (the data is refused)."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: attempt n waits a random time in [d/2, d], d = min(max, initial*2^n)."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(attempt, 32)))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True, eq=False)
class _Pending:
    message: InboundMessage
    lines: list[str] = field(default_factory=list)
    newest_ts: int | None = None
    done: bool = False
    held: bool = False
    """Waiting for the quarantine to save its dead letter (acked after that too)."""


class Pipeline:
    """Consumes the intake queue until :meth:`close`, then drains it, writes what is pending and returns."""

    def __init__(
        self,
        queue: MessageSource,
        acker: Acker,
        writer: LineWriter,
        *,
        max_lines: int = 5000,
        max_delay_ms: int = 250,
        max_in_flight: int = 2,
        max_pending_messages: int = 20_000,
        retry: RetryPolicy | None = None,
        dead_letters: DeadLetterRing | None = None,
        stats: IngestStats | None = None,
        clock: Callable[[], float] = time.time,
        enrichment_tags: Collection[str] = DEFAULT_ENRICHMENT_TAGS,
        spill: Spill | None = None,
        max_metrics_per_device: int | None = None,
        spill_after_s: float = 5.0,
    ) -> None:
        self._queue = queue
        self._acker = acker
        self._writer = writer
        self._max_lines = max_lines
        self._max_delay_s = max_delay_ms / 1000
        self._max_pending = max_pending_messages
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self.stats = stats or IngestStats()
        # Not ``or``: an empty ring is falsy.
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterRing(1000, 1024)
        self._quarantine_saves = isinstance(self.dead_letters, Quarantine) and self.dead_letters.persistent
        self._held: list[_Pending] = []
        self._save_wake = asyncio.Event()
        self.spill = spill
        self._spill_wake = asyncio.Event()
        self._spill_full_logged = False
        self._spill_after_s = spill_after_s
        self._write_started: dict[asyncio.Task[Any], float] = {}
        self._slow_logged = False
        self.metric_cap = MetricCap(max_metrics_per_device) if max_metrics_per_device else None
        self.states = GatewayStates()
        self.seqs = SeqTracker()
        self._dead_letter_log = OncePerKindLog(log)

        self._pending: deque[_Pending] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._batch: list[_Pending] = []
        self._batch_lines = 0
        self._batch_deadline: float | None = None  # loop time
        self._slots = asyncio.Semaphore(max_in_flight)
        self._writes: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._closing = False
        self._wait_cm: asyncio.Timeout | None = None
        self._storage_down = False
        #: Parsed topics: a few per gateway, so a small map saves a regex check per message.
        self._topics: dict[str, Topic] = {}
        self._observers: tuple[Observer, ...] = ()
        self._observer_failures: set[tuple[int, type[BaseException]]] = set()
        self._enrichment_tags = frozenset(enrichment_tags)
        self._enrichment: Enrichment = NO_ENRICHMENT

    # ------------------------------------------------------------------------------------------ control

    def close(self) -> None:
        """Stop waiting for new messages: :meth:`run` drains the queue, writes what is pending and returns."""
        self._closing = True
        if self._wait_cm is not None:
            self._wait_cm.reschedule(asyncio.get_running_loop().time())

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(site, gateway, payload)`` for every decoded message from now on (see the module doc)."""
        self._observers = (*self._observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)

    def set_enrichment(self, mapping: Mapping[str, Mapping[str, str]]) -> None:
        """Replace the enrichment map ``device -> {tag: value}`` as a whole (atomically, for lines built next).

        Raise ``ValueError`` (``TypeError`` for a non-string value) naming the device and tag if a tag is not
        on the allow-list or cannot be written; the previous map stays in force then.
        """
        self._enrichment = build_enrichment(mapping, self._enrichment_tags)

    @property
    def enrichment_tags(self) -> frozenset[str]:
        """The tag names an enrichment may use."""
        return self._enrichment_tags

    def gauges(self) -> dict[str, int]:
        """Current levels: unacknowledged messages, queued messages, lines in the open batch, writes running,
        and the spill's batches, lines and bytes (0 without a spill)."""
        spill = self.spill
        return {
            "pending_messages": len(self._pending),
            "queued_messages": self._queue.qsize(),
            "batch_lines": self._batch_lines,
            "writes_in_flight": len(self._writes),
            "spill_batches": spill.records if spill else 0,
            "spill_lines": spill.lines if spill else 0,
            "spill_bytes": spill.size_bytes if spill else 0,
            "dead_letters_unsaved": len(self._held),
        }

    @property
    def storage_ok(self) -> bool:
        """False while writes are failing with a retryable error."""
        return not self._storage_down

    async def run(self) -> None:
        """Run until :meth:`close`; on cancellation the writes in flight are cancelled (nothing more is acked)."""
        helpers: list[asyncio.Task[None]] = []
        if self._quarantine_saves:
            helpers.append(asyncio.create_task(self._save_dead_letters(), name="hub-quarantine"))
        if self.spill is not None:
            helpers.append(asyncio.create_task(self._write_back(), name="hub-spill-write-back"))
        try:
            await self._consume()
            await self._drain()
        finally:
            for task in (*self._writes, *helpers):
                task.cancel()
            if self._writes or helpers:
                await asyncio.wait({*self._writes, *helpers})

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        next_housekeeping = loop.time() + _TICK_S
        while not self._closing:
            self._raise_failure()
            if len(self._pending) >= self._max_pending:
                await self._wait_for_room()
                continue
            message = await self._next_message(self._wait_s(loop.time()))
            if message is not None:
                self._handle(message)
            now = loop.time()
            if self._batch_lines >= self._max_lines or (
                self._batch_deadline is not None and now >= self._batch_deadline
            ):
                await self._flush()
            if now >= next_housekeeping:
                next_housekeeping = now + _TICK_S
                self._dead_letter_log.flush()

    async def _drain(self) -> None:
        """Everything the intake handed over before it stopped, then the open batch, then the writes."""
        while True:
            self._raise_failure()
            if len(self._pending) >= self._max_pending:
                await self._wait_for_room()
                continue
            try:
                message = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._handle(message)
            if self._batch_lines >= self._max_lines:
                await self._flush()
        await self._flush()
        while self._writes:
            await asyncio.wait(set(self._writes))
        while self._held:
            self._raise_failure()
            self._save_wake.set()
            await asyncio.sleep(0.01)
        self._raise_failure()
        self._dead_letter_log.flush()

    # ------------------------------------------------------------------------------------------ intake side

    def _wait_s(self, now: float) -> float:
        if self._batch_deadline is None:
            return _TICK_S
        return max(0.0, min(_TICK_S, self._batch_deadline - now))

    async def _next_message(self, wait_s: float) -> InboundMessage | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        if wait_s <= 0:
            return None
        try:
            # Cancelling Queue.get never loses an item: it is only taken once the getter resumes.
            async with asyncio.timeout(wait_s) as cm:
                self._wait_cm = cm
                return await self._queue.get()
        except TimeoutError:
            return None
        finally:
            self._wait_cm = None

    async def _wait_for_room(self) -> None:
        # The open batch may hold the oldest pending messages: write it, or room would never come.
        await self._flush()
        if len(self._pending) >= self._max_pending:
            self._room.clear()
            # Bounded wait, so that run() notices a failed write task or a stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK_S):
                    await self._room.wait()

    def _handle(self, message: InboundMessage) -> None:
        """Decode one message and file it: into the open batch, or straight to done (acked in order)."""
        try:
            self._file(message)
        except Exception as exc:
            if not any(e.message is message for e in self._pending):
                self._dead_letter(message, DeadLetterKind.INTERNAL, f"{type(exc).__name__}: {exc}")
            log.exception("internal error while handling a message on %s", message.topic)

    def _file(self, message: InboundMessage) -> None:
        stats = self.stats
        stats.messages_received += 1
        topic = self._topics.get(message.topic)
        if topic is None:
            try:
                topic = parse_topic(message.topic)
            except ContractError as exc:
                self._dead_letter(message, DeadLetterKind.BAD_TOPIC, str(exc))
                return
            if len(self._topics) >= _TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[message.topic] = topic
        stats.count_channel(topic.channel.value)
        try:
            payload = decode_for(topic.channel, message.payload)
        except ContractError as exc:
            malformed = not isinstance(exc.__cause__, msgspec.ValidationError)
            self._dead_letter(message, DeadLetterKind.MALFORMED if malformed else DeadLetterKind.CONTRACT, str(exc))
            return
        if self._observers:
            self._notify(topic.site, topic.gateway, payload)
        entry = _Pending(message)
        if isinstance(payload, DataBatch):
            if not self._data_lines(entry, topic.site, topic.gateway, payload):
                return
        elif isinstance(payload, State):
            self._state_lines(entry, topic.site, topic.gateway, payload)
        elif isinstance(payload, Event):
            entry.lines = [device_event_line(topic.site, topic.gateway, payload, self._enrichment)]
        # A CommandAck is counted only; command tracking comes with the command API.
        self._pending.append(entry)
        if entry.lines:
            self._add_to_batch(entry)
        else:
            entry.done = True
            self._release()

    def _data_lines(self, entry: _Pending, site: str, gateway: str, batch: DataBatch) -> bool:
        """Fill ``entry`` with the lines of ``batch``; False if it was dead-lettered instead."""
        stats = self.stats
        stats.readings += len(batch.readings)
        stats.seq_gaps += self.seqs.observe(site, gateway, batch.session, batch.seq)
        stats.seq_repeats = self.seqs.repeats
        if self.metric_cap is not None:
            batch, refused = self.metric_cap.check(site, gateway, batch)
            if refused:
                self._quarantine(entry, DeadLetterKind.CARDINALITY, refused)
                if not batch.readings:
                    return True  # nothing left to write; acked once the quarantine has it
        entry.lines, dropped = reading_lines(site, gateway, batch, self._enrichment)
        stats.values_dropped += dropped
        if not entry.lines:
            if entry.held:  # already quarantined for its refused names
                return True
            self._dead_letter(entry.message, DeadLetterKind.UNREPRESENTABLE, "no metric value can be written")
            return False
        if not batch.replay:
            entry.newest_ts = max(r.ts for r in batch.readings)
        return True

    def _notify(self, site: str, gateway: str, payload: Payload) -> None:
        for observer in self._observers:
            try:
                observer(site, gateway, payload)
            except Exception as exc:
                self.stats.observer_errors += 1
                key = (id(observer), type(exc))
                if key not in self._observer_failures:
                    self._observer_failures.add(key)
                    log.exception(
                        "observer %r failed on a message of %s/%s (logged once per observer and error type; "
                        "the message is stored all the same)",
                        observer,
                        site,
                        gateway,
                    )

    def _state_lines(self, entry: _Pending, site: str, gateway: str, state: State) -> None:
        message = entry.message
        received_ms = int((message.received or self._clock()) * 1000)
        if not self.states.apply(site, gateway, state, received_ms):
            self.stats.stale_states_ignored += 1
            log.info("ignored a late death of %s/%s: session %s is not the current one", site, gateway, state.session)
        elif state.ts is not None or not message.retain:
            # A retained will replayed on subscribe has no time of its own: it was stored when it happened.
            entry.lines = [gateway_state_line(site, gateway, state, state.ts or received_ms)]

    def _dead_letter(self, message: InboundMessage, kind: DeadLetterKind, error: str) -> None:
        entry = _Pending(message, done=True)
        self._quarantine(entry, kind, error)
        self._pending.append(entry)
        self._release()

    def _quarantine(self, entry: _Pending, kind: DeadLetterKind, error: str) -> None:
        """Add ``entry``'s message to the dead letters; with a persistent quarantine, hold its ack until saved."""
        message = entry.message
        received_ms = int((message.received or self._clock()) * 1000)
        self.dead_letters.add(message.topic, message.payload, kind, error, received_ms)
        self.stats.count_dead_letter(kind.value)
        self._dead_letter_log.record(kind.value, f"{message.topic}: {error}")
        if self._quarantine_saves:
            entry.held = True
            self._held.append(entry)
            self._save_wake.set()

    async def _save_dead_letters(self) -> None:
        """Commit the quarantine in rounds (one transaction each), then release the messages it holds."""
        quarantine = self.dead_letters
        assert isinstance(quarantine, Quarantine)
        failures = 0
        while True:
            await self._save_wake.wait()
            self._save_wake.clear()
            held, self._held = self._held, []
            if not held:
                continue
            problem = ""
            try:
                await asyncio.to_thread(quarantine.save)
            except QuarantineError as exc:
                problem = str(exc)
            if problem:
                # The messages stay unacknowledged (the broker keeps them) until the file takes them.
                self._held[:0] = held
                if failures == 0:
                    log.error("cannot save dead letters: %s; holding their acknowledgements and retrying", problem)
                await asyncio.sleep(self._retry.delay(failures))
                failures += 1
                self._save_wake.set()
                continue
            if failures:
                log.warning("dead letters are saved again")
                failures = 0
            for entry in held:
                entry.held = False
            self._release()

    def _add_to_batch(self, entry: _Pending) -> None:
        if not self._batch:
            self._batch_deadline = asyncio.get_running_loop().time() + self._max_delay_s
        self._batch.append(entry)
        self._batch_lines += len(entry.lines)

    # ------------------------------------------------------------------------------------------ storage side

    async def _flush(self) -> None:
        if not self._batch:
            return
        entries, self._batch, self._batch_lines, self._batch_deadline = self._batch, [], 0, None
        if self._influx_slow():
            # Every write slot is taken by a write running for spill_after_s: do not wait, spill this batch.
            task = asyncio.create_task(self._store(entries, spill_only=True), name="hub-spill")
            self._writes.add(task)
            task.add_done_callback(self._write_done)
            return
        await self._slots.acquire()
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
        if self.spill is None or not self._slots.locked() or not self._write_started:
            return False
        running_s = asyncio.get_running_loop().time() - min(self._write_started.values())
        slow = running_s >= self._spill_after_s
        if slow and not self._slow_logged:
            self._slow_logged = True
            log.warning("InfluxDB is slow (a write has been running for %.1f s): spilling batches meanwhile", running_s)
        elif not slow:
            self._slow_logged = False
        return slow

    async def _store_batch(self, entries: list[_Pending]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._write_started[task] = asyncio.get_running_loop().time()
        try:
            await self._store(entries)
        finally:
            del self._write_started[task]
            self._slots.release()

    async def _store(self, entries: list[_Pending], *, spill_only: bool = False) -> None:
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
            if self._acker.ack(entry.message):
                self.stats.acks += 1
        if len(pending) < self._max_pending:
            self._room.set()

    # ------------------------------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """Counters, gauges, sequence gaps per gateway and the gateway states, JSON-ready."""
        data = self.stats.snapshot()
        data["seq_gaps_by_gateway"] = dict(self.seqs.gaps)
        data.update(self.gauges())
        data["gateways"] = {"known": len(self.states), "online": self.states.online_count}
        return data
