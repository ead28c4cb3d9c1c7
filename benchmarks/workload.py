"""The synthetic telemetry both benchmarks feed the hub: a table of device kinds, a plan, and its encoded batches.

A :class:`Workload` is pure arithmetic until :meth:`Workload.payloads` builds the messages, so the side that
checks the result (counts per measurement) and the side that publishes (another process) agree without
passing the data around.

Reading ``g`` (0-based, across all messages) comes from device ``g % devices`` at
``base_ts_ms + (g // devices) * interval_ms``: every device samples once per interval, and no two readings of a
device share a timestamp, so in InfluxDB no point overwrites another (series = measurement + tags, then time).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from wire.v1 import DataBatch, MetricValue, Reading, encode

MetricSpec = tuple[str, Callable[[random.Random], MetricValue]]


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One device kind: its measurement name, the prefix of its device IDs, and its six metrics."""

    kind: str
    device_prefix: str
    metrics: tuple[MetricSpec, ...]


def _f(low: float, high: float, digits: int = 2) -> Callable[[random.Random], MetricValue]:
    return lambda rng: round(rng.uniform(low, high), digits)


def _i(low: int, high: int) -> Callable[[random.Random], MetricValue]:
    return lambda rng: rng.randint(low, high)


def _b(p_true: float) -> Callable[[random.Random], MetricValue]:
    return lambda rng: rng.random() < p_true


#: What a city gateway typically serves: mostly float measurements, a flag or two, a counter.
KINDS: Final[tuple[KindSpec, ...]] = (
    KindSpec(
        "air_quality",
        "aq",
        (
            ("pm25", _f(0, 150)),
            ("pm10", _f(0, 250)),
            ("no2", _f(0, 200, 1)),
            ("temperature_c", _f(-10, 40, 1)),
            ("humidity_pct", _f(10, 100, 1)),
            ("alarm", _b(0.05)),
        ),
    ),
    KindSpec(
        "water_level",
        "wl",
        (
            ("level_m", _f(0, 5, 3)),
            ("flow_m3s", _f(0, 30, 2)),
            ("battery_v", _f(3.2, 4.2, 2)),
            ("rssi_dbm", _i(-110, -50)),
            ("pump_on", _b(0.3)),
            ("alarm", _b(0.02)),
        ),
    ),
    KindSpec(
        "traffic_counter",
        "tc",
        (
            ("vehicles", _i(0, 120)),
            ("speed_kmh", _f(0, 90, 1)),
            ("occupancy_pct", _f(0, 100, 1)),
            ("headway_s", _f(0.5, 60, 1)),
            ("congested", _b(0.1)),
            ("lane_closed", _b(0.01)),
        ),
    ),
)

#: A fixed instant (2025-11-28T12:00:00Z) for workloads that never reach a database.
FIXED_BASE_TS_MS: Final = 1_764_331_200_000


@dataclass(frozen=True, slots=True)
class Workload:
    """``messages`` data batches of ``readings_per_message`` readings from ``devices`` devices of :data:`KINDS`."""

    messages: int
    readings_per_message: int
    devices: int = 20
    base_ts_ms: int = FIXED_BASE_TS_MS
    interval_ms: int = 1000
    session: str = "bench-session-1"
    first_seq: int = 1
    seed: int = 1

    def __post_init__(self) -> None:
        if self.messages < 1 or self.readings_per_message < 1 or self.devices < 1:
            raise ValueError(f"a workload needs at least one message, reading and device: {self}")

    @property
    def readings(self) -> int:
        return self.messages * self.readings_per_message

    def device(self, index: int) -> tuple[str, KindSpec]:
        """The ID and kind of device ``index`` (kinds alternate, so every kind has devices)."""
        spec = KINDS[index % len(KINDS)]
        return f"{spec.device_prefix}-{index:03d}", spec

    def kind_counts(self) -> dict[str, int]:
        """How many readings (points) each kind (measurement) gets in total."""
        full, rest = divmod(self.readings, self.devices)
        counts: dict[str, int] = {}
        for index in range(self.devices):
            kind = self.device(index)[1].kind
            counts[kind] = counts.get(kind, 0) + full + (1 if index < rest else 0)
        return {kind: n for kind, n in counts.items() if n}

    @property
    def span_ms(self) -> int:
        """Time from the first to the last reading."""
        return ((self.readings - 1) // self.devices) * self.interval_ms

    def batches(self) -> list[DataBatch]:
        rng = random.Random(self.seed)
        devices = [self.device(i) for i in range(self.devices)]
        result: list[DataBatch] = []
        g = 0
        for n in range(self.messages):
            readings: list[Reading] = []
            for _ in range(self.readings_per_message):
                device_id, spec = devices[g % self.devices]
                readings.append(
                    Reading(
                        device=device_id,
                        kind=spec.kind,
                        ts=self.base_ts_ms + (g // self.devices) * self.interval_ms,
                        metrics={name: value(rng) for name, value in spec.metrics},
                    )
                )
                g += 1
            result.append(DataBatch(session=self.session, seq=self.first_seq + n, readings=readings))
        return result

    def payloads(self) -> list[bytes]:
        """The batches as the edge would publish them (compact JSON of the v1 contract)."""
        return [encode(batch) for batch in self.batches()]
