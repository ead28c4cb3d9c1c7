"""The intake side of the pipeline: take messages, decode them against the contract, build their lines, file
them in the open batch or straight to done; dead letters, observers, control and status (see :mod:`hub.ingest`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import msgspec

from hub.ingest.admission import Admission, Refusal, RefusalObserver, describe
from hub.ingest.decode import DataDecoder
from hub.ingest.messages import Acker, InboundMessage, LineWriter, MessageSource, Observer, Pending, RetryPolicy
from hub.ingest.points import (
    DEFAULT_ENRICHMENT_TAGS,
    NO_ENRICHMENT,
    Enrichment,
    MetricCap,
    build_enrichment,
    device_event_line,
    gateway_state_line,
    reading_lines,
)
from hub.ingest.storage import BatchWriter
from hub.ingest.tracking import GatewayStates, SeqTracker
from hub.stats import GatewayCounts, IngestStats, PipelineStats
from hub.storage.deadletter import DeadLetterKind, DeadLetterRing, OncePerKindLog, Quarantine, QuarantineError
from hub.storage.spill import Spill
from wire.v1 import Channel, ContractError, DataBatch, Event, Payload, Snapshot, State, Topic, decode_for, parse_topic

if TYPE_CHECKING:
    from hub.snapshots.intake import SnapshotIntake

log = logging.getLogger("hub.ingest")

#: The idle loop wakes this often to notice a stop and to log dead-letter summaries.
_TICK_S = 0.5
#: Lines of closed batches allowed to wait for a write slot, in batches of ``max_lines``: past it the intake
#: waits too, so that the lines held in memory stay bounded whatever the size of the messages (10,000-reading
#: replays included), not only the number of unacknowledged messages.
_READY_BATCHES = 8
#: The longest the pipeline works without giving the event loop a turn, so that the intake reads (up to 4 MiB a
#: turn, hub/mqtt/intake.py) while messages keep coming.
_YIELD_EVERY_S = 0.002
#: Parsed topics kept (cleared when full; bounded by gateways x channels in practice).
_TOPIC_CACHE_SIZE = 10_000


class Pipeline:
    """Consumes the intake queue until :meth:`close`, then drains it, writes what is pending and returns.

    Everything after a message's lines are built (batches, writes, spill, acknowledgements) is its
    :class:`~hub.ingest.storage.BatchWriter`'s.
    """

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
        max_pending_bytes: int = 256 * 1024 * 1024,
        retry: RetryPolicy | None = None,
        dead_letters: DeadLetterRing | None = None,
        stats: IngestStats | None = None,
        clock: Callable[[], float] = time.time,
        enrichment_tags: Collection[str] = DEFAULT_ENRICHMENT_TAGS,
        spill: Spill | None = None,
        max_metrics_per_device: int | None = None,
        spill_after_s: float = 5.0,
        admission: Admission | None = None,
    ) -> None:
        self._queue = queue
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self.stats = stats or IngestStats()
        # Not ``or``: an empty ring is falsy.
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterRing(1000, 1024)
        self._quarantine_saves = isinstance(self.dead_letters, Quarantine) and self.dead_letters.persistent
        self._held: list[Pending] = []
        self._save_wake = asyncio.Event()
        self.metric_cap = MetricCap(max_metrics_per_device) if max_metrics_per_device else None
        #: What each gateway may write (None: everything the contract accepts, as in tests of the storage side).
        self.admission = admission
        #: Where admitted snapshots go (hub/snapshots/intake.py checks and queues them); None: acked, not kept.
        self.snapshots: SnapshotIntake | None = None
        self._refusal_observers: tuple[RefusalObserver, ...] = ()
        self.states = GatewayStates()
        self.seqs = SeqTracker()
        self._dead_letter_log = OncePerKindLog(log)
        self._storage = BatchWriter(
            acker,
            writer,
            max_lines=max_lines,
            max_delay_s=max_delay_ms / 1000,
            max_in_flight=max_in_flight,
            max_pending_messages=max_pending_messages,
            max_pending_bytes=max_pending_bytes,
            max_ready_lines=max_lines * _READY_BATCHES,
            retry=self._retry,
            clock=clock,
            stats=self.stats,
            dead_letters=self.dead_letters,
            dead_letter_log=self._dead_letter_log,
            spill=spill,
            spill_after_s=spill_after_s,
            on_failure=self.close,
            save_dead_letters=self._save_wake if self._quarantine_saves else None,
        )
        self._closing = False
        self._wait_cm: asyncio.Timeout | None = None
        #: Parsed topics: a few per gateway, so a small map saves a regex check per message.
        self._topics: dict[str, Topic] = {}
        self._data_decoder = DataDecoder()
        self._observers: tuple[Observer, ...] = ()
        self._observer_failures: set[tuple[int, type[BaseException]]] = set()
        self._enrichment_tags = frozenset(enrichment_tags)
        self._enrichment: Enrichment = NO_ENRICHMENT
        #: (site, gateway) -> that gateway's line prefixes (points.reading_lines), rebuilt after an enrichment.
        self._prefixes: dict[tuple[str, str], dict[tuple[str, str], str]] = {}

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

    def add_refusal_observer(self, observer: RefusalObserver) -> None:
        """Call ``observer(refusal)`` for every refusal of admission from now on (see hub.ingest.admission)."""
        self._refusal_observers = (*self._refusal_observers, observer)

    def set_owners(self, owners: Mapping[str, tuple[str, str]]) -> None:
        """Replace the registry's map ``device -> (site, gateway)`` that admission checks ownership against."""
        if self.admission is not None:
            self.admission.set_owners(owners)

    def update_owners(self, changes: Mapping[str, tuple[str, str] | None]) -> None:
        """Apply the registry's owner changes (``None``: no owner any more) to that map."""
        if self.admission is not None:
            self.admission.update_owners(changes)

    def set_enrichment(self, mapping: Mapping[str, Mapping[str, str]]) -> None:
        """Replace the enrichment map ``device -> {tag: value}`` as a whole (atomically, for lines built next).

        Raise ``ValueError`` (``TypeError`` for a non-string value) naming the device and tag if a tag is not
        on the allow-list or cannot be written; the previous map stays in force then.
        """
        self._enrichment = build_enrichment(mapping, self._enrichment_tags)
        self._prefixes = {}

    @property
    def enrichment_tags(self) -> frozenset[str]:
        """The tag names an enrichment may use."""
        return self._enrichment_tags

    @property
    def pending_messages(self) -> int:
        """Messages received and not yet acknowledged."""
        return self._storage.pending_messages

    def gauges(self) -> dict[str, int]:
        """Current levels: unacknowledged messages, queued messages, lines in the open batch, writes running,
        and the spill's batches, lines and bytes (0 without a spill)."""
        storage = self._storage.gauges()
        return {
            "pending_messages": storage["pending_messages"],
            "pending_bytes": storage["pending_bytes"],
            "queued_messages": self._queue.qsize(),
            "batch_lines": storage["batch_lines"],
            "ready_lines": storage["ready_lines"],
            "writes_in_flight": storage["writes_in_flight"],
            "spill_batches": storage["spill_batches"],
            "spill_lines": storage["spill_lines"],
            "spill_bytes": storage["spill_bytes"],
            "dead_letters_unsaved": len(self._held),
        }

    @property
    def storage_ok(self) -> bool:
        """False while writes are failing with a retryable error."""
        return self._storage.storage_ok

    async def run(self) -> None:
        """Run until :meth:`close`; on cancellation the writes in flight are cancelled (nothing more is acked)."""
        helpers: list[asyncio.Task[None]] = []
        if self._quarantine_saves:
            helpers.append(asyncio.create_task(self._save_dead_letters(), name="hub-quarantine"))
        write_back = self._storage.start_write_back()
        if write_back is not None:
            helpers.append(write_back)
        try:
            await self._consume()
            await self._drain()
        finally:
            writes = self._storage.stop()
            for task in helpers:
                task.cancel()
            if writes or helpers:
                await asyncio.wait({*writes, *helpers})

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        storage = self._storage
        next_housekeeping = loop.time() + _TICK_S
        next_yield = loop.time() + _YIELD_EVERY_S
        while not self._closing:
            storage.raise_failure()
            if storage.full():
                await storage.wait_for_room()
                continue
            message = await self._next_message(self._wait_s(loop.time()))
            if message is not None:
                self._handle(message)
            now = loop.time()
            if now >= next_yield:
                # Messages keep coming without a wait: let the intake read meanwhile, so that the broker's queue
                # for the hub drains into the lanes (and their overflow) instead of growing at the broker.
                await asyncio.sleep(0)
                next_yield = loop.time() + _YIELD_EVERY_S
            if storage.batch_due(now):
                await storage.flush()
            if now >= next_housekeeping:
                next_housekeeping = now + _TICK_S
                self._dead_letter_log.flush()
                if storage.has_ready():
                    storage.dispatch()  # InfluxDB may have become slow meanwhile: spill what waits

    async def _drain(self) -> None:
        """Everything the intake handed over before it stopped, then the open batch, then the writes."""
        storage = self._storage
        while True:
            storage.raise_failure()
            if storage.full():
                await storage.wait_for_room()
                continue
            try:
                message = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._handle(message)
            if storage.batch_full():
                await storage.flush()
        await storage.flush()
        await storage.wait_for_writes()
        while self._held:
            storage.raise_failure()
            self._save_wake.set()
            await asyncio.sleep(0.01)
        storage.raise_failure()
        self._dead_letter_log.flush()

    # ------------------------------------------------------------------------------------------ intake side

    def _wait_s(self, now: float) -> float:
        deadline = self._storage.batch_deadline
        if deadline is None:
            return _TICK_S
        return max(0.0, min(_TICK_S, deadline - now))

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

    def _handle(self, message: InboundMessage) -> None:
        """Decode one message and file it: into the open batch, or straight to done (acked in order)."""
        try:
            self._file(message)
        except Exception as exc:
            if not self._storage.holds(message):
                self._dead_letter(message, DeadLetterKind.INTERNAL, f"{type(exc).__name__}: {exc}")
            log.exception("internal error while handling a message on %s", message.topic)

    def _file(self, message: InboundMessage) -> None:
        stats = self.stats
        stats.messages_received += 1
        topic = self._topics.get(message.topic) or self._parse_topic(message)
        if topic is None:
            return
        stats.count_channel(topic.channel.value)
        try:
            payload = self._decode(topic.channel, message.payload)
        except ContractError as exc:
            malformed = not isinstance(exc.__cause__, msgspec.ValidationError)
            self._dead_letter(message, DeadLetterKind.MALFORMED if malformed else DeadLetterKind.CONTRACT, str(exc))
            return
        entry = Pending(message)
        if self.admission is not None:
            admitted = self._admit(entry, topic, payload)
            if admitted is None:
                return
            payload = admitted
        if isinstance(payload, Snapshot) and not self._take_snapshot(message, topic, payload):
            return
        if self._observers:
            self._notify(topic.site, topic.gateway, payload)
        if isinstance(payload, DataBatch):
            if not self._data_lines(entry, topic.site, topic.gateway, payload):
                return
        elif isinstance(payload, State):
            self._state_lines(entry, topic.site, topic.gateway, payload)
        elif isinstance(payload, Event):
            entry.lines = [device_event_line(topic.site, topic.gateway, payload, self._enrichment)]
        # A CommandAck is counted only; command tracking comes with the command API.
        self._storage.take(entry)

    def _parse_topic(self, message: InboundMessage) -> Topic | None:
        """The parsed topic, remembered; None when it is not a v1 topic (dead-lettered)."""
        try:
            topic = parse_topic(message.topic)
        except ContractError as exc:
            self._dead_letter(message, DeadLetterKind.BAD_TOPIC, str(exc))
            return None
        if len(self._topics) >= _TOPIC_CACHE_SIZE:
            self._topics.clear()
        self._topics[message.topic] = topic
        return topic

    def _admit(self, entry: Pending, topic: Topic, payload: Payload) -> Payload | None:
        """What of ``payload`` the gateway may write; None when nothing (dead-lettered, acknowledged in order)."""
        admission = self.admission
        assert admission is not None
        admitted, refusals = admission.admit(topic.site, topic.gateway, payload)
        if admitted is None and isinstance(payload, DataBatch):
            # its sequence number still counts: a refused batch is no gap
            self.stats.seq_gaps += self.seqs.observe(topic.site, topic.gateway, payload.session, payload.seq)
        if not refusals:
            return admitted
        self._report_refusals(refusals)
        if admitted is None:
            self._dead_letter(entry.message, DeadLetterKind.REFUSED, describe(refusals))
            return None
        self._quarantine(entry, DeadLetterKind.REFUSED, describe(refusals))
        return admitted

    def _take_snapshot(self, message: InboundMessage, topic: Topic, snap: Snapshot) -> bool:
        """Hand a snapshot to the snapshot intake; False when it refused it (dead-lettered, acknowledged)."""
        if self.snapshots is None:
            return True
        refusals = self.snapshots.take(topic.site, topic.gateway, snap)
        if not refusals:
            return True
        self._report_refusals(refusals)
        self._dead_letter(message, DeadLetterKind.REFUSED, describe(refusals))
        return False

    def _report_refusals(self, refusals: list[Refusal]) -> None:
        for observer in self._refusal_observers:
            for refusal in refusals:
                try:
                    observer(refusal)
                except Exception as exc:
                    self.stats.observer_errors += 1
                    key = (id(observer), type(exc))
                    if key not in self._observer_failures:
                        self._observer_failures.add(key)
                        log.exception("refusal observer %r failed (logged once per observer and error type)", observer)

    def _decode(self, channel: Channel, payload: bytes) -> Payload:
        if channel is Channel.DATA:
            return self._data_decoder.decode(payload)
        return decode_for(channel, payload)

    def _data_lines(self, entry: Pending, site: str, gateway: str, batch: DataBatch) -> bool:
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
        prefixes = self._prefixes.get((site, gateway))
        if prefixes is None:
            if len(self._prefixes) >= _TOPIC_CACHE_SIZE:
                self._prefixes.clear()
            prefixes = self._prefixes[(site, gateway)] = {}
        entry.lines, dropped = reading_lines(site, gateway, batch, self._enrichment, prefixes)
        stats.values_dropped += dropped
        if not entry.lines:
            if entry.held:  # already quarantined for its refused names
                return True
            self._dead_letter(entry.message, DeadLetterKind.UNREPRESENTABLE, "no metric value can be written")
            return False
        if not batch.replay:
            entry.newest_ts = max([r.ts for r in batch.readings])
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

    def _state_lines(self, entry: Pending, site: str, gateway: str, state: State) -> None:
        message = entry.message
        received_ms = int((message.received or self._clock()) * 1000)
        if not self.states.apply(site, gateway, state, received_ms):
            self.stats.stale_states_ignored += 1
            log.info("ignored a late death of %s/%s: session %s is not the current one", site, gateway, state.session)
        elif state.ts is not None or not message.retain:
            # A retained will replayed on subscribe has no time of its own: it was stored when it happened.
            entry.lines = [gateway_state_line(site, gateway, state, state.ts or received_ms)]

    def _dead_letter(self, message: InboundMessage, kind: DeadLetterKind, error: str) -> None:
        entry = Pending(message, done=True)
        self._quarantine(entry, kind, error)
        self._storage.take(entry)

    def _quarantine(self, entry: Pending, kind: DeadLetterKind, error: str) -> None:
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
            self._storage.release()

    # ------------------------------------------------------------------------------------------ status

    def snapshot(self) -> PipelineStats:
        """Counters, gauges, sequence gaps per gateway and the gateway states."""
        return PipelineStats(
            **dict(self.stats.snapshot()),
            **self.gauges(),
            seq_gaps_by_gateway=dict(self.seqs.gaps),
            gateways=GatewayCounts(known=len(self.states), online=self.states.online_count),
            refusals_by_gateway=self.admission.refusals_by_gateway() if self.admission is not None else {},
        )
