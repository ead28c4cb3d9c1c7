"""The intake's counters, in one dataclass that the pipeline updates, and the typed snapshots the API,
``GET /metrics`` and the ``hub_health`` points read (hub/metrics.py).

:class:`IngestStats` is the live, mutable set of counters (updated from the event loop, per message). A snapshot
is an immutable pydantic model: :class:`IngestCounters` (the counters), :class:`PipelineStats` (with the
pipeline's gauges) and :class:`HubStats` (with the intake, lanes, storage, observer connection and the camera
snapshots' store), which is the body of ``GET /api/v1/ingest/stats`` and is documented by its schema in the
OpenAPI.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields

from pydantic import BaseModel, ConfigDict

#: Buckets (upper bounds) of the write latency histogram, in seconds.
WRITE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets of the lines-per-write histogram.
BATCH_LINES_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000)


@dataclass(slots=True)
class Histogram:
    """A Prometheus-style cumulative histogram: counts per upper bound, plus sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(count=self.count, sum=round(self.total, 6), buckets=dict(self.cumulative()))


@dataclass(slots=True)
class LatencySummary:
    """Ingest latency: when InfluxDB accepted a message's lines minus its newest reading's sample time.

    Replayed batches (``replay: true``, held back while the uplink was down) are left out: their age says
    nothing about the hub.
    """

    count: int = 0
    last_ms: int = 0
    max_ms: int = 0
    total_ms: int = 0

    def observe(self, latency_ms: int) -> None:
        self.count += 1
        self.last_ms = latency_ms
        self.max_ms = max(self.max_ms, latency_ms)
        self.total_ms += latency_ms

    def snapshot(self) -> LatencySnapshot:
        return LatencySnapshot(
            count=self.count,
            last_ms=self.last_ms,
            avg_ms=round(self.total_ms / self.count, 1) if self.count else 0.0,
            max_ms=self.max_ms,
        )


@dataclass(slots=True)
class IngestStats:
    """Counters since the hub started. Updated from the event loop only, so no locking."""

    messages_received: int = 0
    messages_by_channel: dict[str, int] = field(default_factory=dict)
    readings: int = 0
    lines_written: int = 0
    write_batches: int = 0
    write_errors: int = 0
    write_retries: int = 0
    acks: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    values_dropped: int = 0
    """Metric values that cannot be written (an integer beyond the float range); the rest of the reading is."""
    seq_gaps: int = 0
    seq_repeats: int = 0
    stale_states_ignored: int = 0
    observer_errors: int = 0
    """Observers (registry, health) that raised; the messages were stored all the same."""
    batches_spilled: int = 0
    lines_spilled: int = 0
    spill_full: int = 0
    """Batches the spill could not take because it was full (their acks were held instead)."""
    batches_written_back: int = 0
    lines_written_back: int = 0
    ingest_latency: LatencySummary = field(default_factory=LatencySummary)
    write_seconds: Histogram = field(default_factory=lambda: Histogram(WRITE_SECONDS_BUCKETS))
    """Duration of each successful InfluxDB write (live and write-back)."""
    batch_size_lines: Histogram = field(default_factory=lambda: Histogram(BATCH_LINES_BUCKETS))
    """Lines per batch (written or spilled)."""

    def count_channel(self, channel: str) -> None:
        self.messages_by_channel[channel] = self.messages_by_channel.get(channel, 0) + 1

    def count_dead_letter(self, kind: str) -> None:
        self.dead_letters[kind] = self.dead_letters.get(kind, 0) + 1

    @property
    def dead_letters_total(self) -> int:
        return sum(self.dead_letters.values())

    def snapshot(self) -> IngestCounters:
        """An immutable copy of every counter."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SUMMARIES}
        return IngestCounters(
            **plain,
            messages_by_channel=dict(self.messages_by_channel),
            dead_letters=dict(self.dead_letters),
            ingest_latency=self.ingest_latency.snapshot(),
            write_seconds=self.write_seconds.snapshot(),
            batch_size_lines=self.batch_size_lines.snapshot(),
            dead_letters_total=self.dead_letters_total,
        )


#: The fields of :class:`IngestStats` that its snapshot copies or summarises itself.
_SUMMARIES = frozenset({"messages_by_channel", "dead_letters", "ingest_latency", "write_seconds", "batch_size_lines"})


class Snapshot(BaseModel):
    """A figure as the API shows it: immutable, every field declared (an unknown one is an error, so the
    snapshot and its schema cannot drift apart), field docstrings as the schema's descriptions."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class HistogramSnapshot(Snapshot):
    """A cumulative histogram: ``buckets`` maps each upper bound (``"+Inf"`` last) to the count at or below it."""

    count: int
    sum: float
    buckets: dict[str, int]


class LatencySnapshot(Snapshot):
    """Sample-to-stored latency of live data messages since start (replayed batches left out)."""

    count: int
    last_ms: int
    avg_ms: float
    max_ms: int


class IngestCounters(Snapshot):
    """The intake's counters since the hub started (:class:`IngestStats`)."""

    messages_received: int
    messages_by_channel: dict[str, int]
    """Messages by topic channel (``data``, ``state``, ``event``, ``cmd/ack``)."""
    readings: int
    lines_written: int
    write_batches: int
    write_errors: int
    write_retries: int
    acks: int
    dead_letters: dict[str, int]
    """Dead letters by kind."""
    values_dropped: int
    seq_gaps: int
    seq_repeats: int
    stale_states_ignored: int
    observer_errors: int
    batches_spilled: int
    lines_spilled: int
    spill_full: int
    batches_written_back: int
    lines_written_back: int
    ingest_latency: LatencySnapshot
    write_seconds: HistogramSnapshot
    """Duration of each successful InfluxDB write, in seconds."""
    batch_size_lines: HistogramSnapshot
    """Lines per batch (written or spilled)."""
    dead_letters_total: int


class GatewayCounts(Snapshot):
    known: int
    """Gateways the hub has had a state message of since it started."""
    online: int
    """Of those, the ones whose last state is online."""


class PipelineStats(IngestCounters):
    """The counters with the pipeline's gauges, sequence gaps, gateways and admission refusals."""

    seq_gaps_by_gateway: dict[str, int]
    """``site/gateway`` -> data messages missing so far."""
    pending_messages: int
    """Messages received, not yet acknowledged."""
    pending_bytes: int
    queued_messages: int
    batch_lines: int
    """Lines in the batch being filled."""
    ready_lines: int
    """Lines of closed batches waiting for a write slot."""
    writes_in_flight: int
    spill_batches: int
    spill_lines: int
    spill_bytes: int
    dead_letters_unsaved: int
    gateways: GatewayCounts
    refusals_by_gateway: dict[str, dict[str, int]]
    """``site/gateway`` -> {refusal reason: count} of the ingest admission."""


class MqttStats(Snapshot):
    """The MQTT intake's connection and counters."""

    connected: bool
    received: int
    connects: int
    disconnects: int
    acks_sent: int
    acks_of_old_connection: int
    """Acknowledgements dropped: their message came on a connection that has since closed."""
    not_handed_over: int
    refused_packets: int


class LaneStats(Snapshot):
    """The per-gateway lanes between the intake and the pipeline (hub/ingest/lanes.py): gauges and counters."""

    lanes_waiting: int
    queued_bytes: int
    overflow_writing_bytes: int
    overflow_bytes: int
    overflow_unread_bytes: int
    overflowed_messages: int
    overflowed_bytes: int
    read_back_messages: int
    overflow_write_errors: int
    overflow_corrupt_files: int


class InfluxStats(Snapshot):
    writes_failing: bool
    """True while InfluxDB writes fail (batches go to the spill)."""


class ObserverStats(Snapshot):
    """The observer connection of an operations hub in a group (``mqtt.observe: all``)."""

    connected: bool
    received: int
    observed: int
    undecodable: int
    refused: int
    observer_errors: int


class SnapshotStats(Snapshot):
    """The camera snapshots kept on disk (hub/snapshots/store.py): what is kept now, and what the store did since
    the hub started. Snapshots the intake refused are not here: they are refusals (``refusals_by_gateway``) and
    dead letters."""

    files: int
    """Snapshots kept now."""
    bytes: int
    """Their bytes (the JPEGs' sizes)."""
    cameras: int
    """Cameras with a snapshot kept."""
    queued: int
    """Snapshots admitted and waiting to be written."""
    stored: int
    """Snapshots written."""
    stored_bytes: int
    """Bytes of the snapshots written."""
    replaced: int
    """Snapshots written over a kept one of the same camera and time."""
    dropped_queue_full: int
    """Admitted snapshots dropped, not written: the write queue was full (``snapshots.queue_size``)."""
    write_errors: int
    """Snapshots that could not be written (the disk refused them)."""
    removed_age: int
    """Snapshots removed by retention for their age (``snapshots.max_age_days``)."""
    removed_total_bytes: int
    """Snapshots removed by retention while the kept bytes passed ``snapshots.max_total_bytes``: the oldest of the
    camera holding the most within the gateway holding the most."""
    removed_camera_bound: int
    """Snapshots removed, the camera's oldest, past ``snapshots.max_per_device`` or
    ``snapshots.max_bytes_per_device`` (at a write or a retention check)."""


class HubStats(PipelineStats):
    """Everything ``GET /api/v1/ingest/stats`` answers; ``GET /metrics`` and ``hub_health`` are made from it.
    ``lanes`` and ``overflow_by_gateway`` are left out of the answer for a hub without lanes, ``observer`` for a
    hub without an observer connection, ``snapshots`` for a hub without a snapshot store."""

    mqtt: MqttStats
    lanes: LaneStats | None = None
    overflow_by_gateway: dict[str, int] | None = None
    """``site/gateway`` -> bytes of its overflow file on disk: who sends more than its share."""
    influx: InfluxStats
    observer: ObserverStats | None = None
    snapshots: SnapshotStats | None = None
