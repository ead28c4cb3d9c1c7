"""The intake's counters, in one dataclass that the pipeline updates and the API reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    ingest_latency: LatencySummary = field(default_factory=LatencySummary)

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
        data["dead_letters_total"] = self.dead_letters_total
        return data
