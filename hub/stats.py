"""The intake's counters, in one dataclass that the pipeline updates and the API reads."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

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

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.total, 6), "buckets": dict(self.cumulative())}


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

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "last_ms": self.last_ms,
            "avg_ms": round(self.total_ms / self.count, 1) if self.count else 0.0,
            "max_ms": self.max_ms,
        }


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

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        data = asdict(self)
        data["ingest_latency"] = self.ingest_latency.as_dict()
        data["write_seconds"] = self.write_seconds.as_dict()
        data["batch_size_lines"] = self.batch_size_lines.as_dict()
        data["dead_letters_total"] = self.dead_letters_total
        return data
