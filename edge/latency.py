"""Publish latency of the live readings: from sampling (``Reading.ts``) to the broker's PUBACK of their batch.

The publisher adds each live batch's latencies once the broker acknowledged it; the agent's self-metrics take
the figures of the interval since the previous sample (:meth:`LatencyWindow.take`): the median and the
maximum, in milliseconds, and how many readings they cover. Readings replayed after an outage are left out:
their "latency" is the outage. The median is taken from a bounded uniform sample (reservoir sampling), so a
long interval at a high rate costs bounded memory; the maximum and the count are exact.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Final

from devices.driver import MetricValue

#: Latencies kept per interval for the median (a uniform sample of them beyond this).
DEFAULT_SAMPLE_SIZE: Final = 2048


class LatencyWindow:
    """Latencies (ms) added since the last :meth:`take`."""

    def __init__(self, sample_size: int = DEFAULT_SAMPLE_SIZE, rng: random.Random | None = None) -> None:
        if sample_size < 1:
            raise ValueError("sample_size must be >= 1")
        self._size = sample_size
        self._rng = rng or random.Random()
        self._sample: list[int] = []
        self._count = 0
        self._max = 0

    def add(self, latencies_ms: Iterable[int]) -> None:
        for latency in latencies_ms:
            value = max(latency, 0)  # a wall clock stepped back between sampling and PUBACK
            self._count += 1
            self._max = max(self._max, value)
            if len(self._sample) < self._size:
                self._sample.append(value)
            else:
                slot = self._rng.randrange(self._count)
                if slot < self._size:
                    self._sample[slot] = value

    def take(self) -> dict[str, MetricValue]:
        """``publish_latency_p50_ms``, ``publish_latency_max_ms`` (absent when no reading was published) and
        ``publish_latency_readings`` over the interval, then start a new interval."""
        figures: dict[str, MetricValue] = {"publish_latency_readings": self._count}
        if self._count:
            ordered = sorted(self._sample)
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            figures["publish_latency_p50_ms"] = median
            figures["publish_latency_max_ms"] = self._max
        self._sample = []
        self._count = 0
        self._max = 0
        return figures
