"""Driver readings -> contract readings: what the wire contract refuses is dropped here, never sent.

msgspec checks constraints only when decoding, so a ``wire.v1.Reading`` built by hand is not validated: this
module is the edge's check. A bad metric name, a NaN or infinite float, an over-long string or an integer
JSON cannot carry drops that value (warned once per device and metric); a reading left with no metric, or
stamped outside the contract's time range, is dropped whole (warned once per device). A device's stamps only
go forward: a reading stamped at or before the device's previous one (the wall clock stepped back) is stamped a
millisecond after it, so that it cannot overwrite a stored reading (counted in ``readings_restamped``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from devices.driver import MetricValue
from devices.driver import Reading as DriverReading
from edge.stats import EdgeStats
from wire.v1 import MAX_METRICS_PER_READING, MAX_STRING_VALUE, METRIC_PATTERN, Reading, clean_text

log = logging.getLogger(__name__)

_METRIC_RE: Final = re.compile(METRIC_PATTERN)
#: The contract's ``TimestampMs`` range: 2000-01-01 .. 2100-01-01 in milliseconds.
TS_MIN_MS: Final = 946_684_800_000
TS_MAX_MS: Final = 4_102_444_800_000
#: msgspec encodes integers up to 64 bits.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def _value_problem(value: object) -> str | None:
    """Why ``value`` cannot be sent, or None if it can."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else "integer out of 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        return None if len(value) <= MAX_STRING_VALUE else f"string longer than {MAX_STRING_VALUE} characters"
    return f"type {type(value).__name__} is not a number, bool or string"


class ReadingFilter:
    """Turns one device's driver readings into :class:`wire.v1.Reading`; one instance per device."""

    def __init__(self, device: str, kind: str, stats: EdgeStats) -> None:
        self.device = device
        self.kind = kind
        self._stats = stats
        self._good_names: set[str] = set()
        self._warned: set[str] = set()
        self._warned_readings: set[str] = set()
        #: The newest stamp given to this device's readings (ms).
        self._last_ts = 0

    def convert(self, readings: Iterable[DriverReading]) -> list[Reading]:
        out: list[Reading] = []
        for reading in readings:
            if not TS_MIN_MS <= reading.ts_ms < TS_MAX_MS:
                self._drop_reading("timestamp", f"timestamp {reading.ts_ms} is not milliseconds in 2000..2100")
                continue
            metrics = self._metrics(reading.metrics)
            if not metrics:
                self._drop_reading("empty", "no metric left to send")
                continue
            ts = reading.ts_ms
            if ts <= self._last_ts:
                # The wall clock stepped back (or a driver gave one instant twice): InfluxDB keeps one point per
                # (series, millisecond), so a repeated stamp would overwrite a stored reading. A device's stamps
                # only go forward, by a millisecond each, until the clock has caught up.
                ts = self._last_ts + 1
                self._stats.readings_restamped += 1
            self._last_ts = ts
            out.append(Reading(device=self.device, kind=self.kind, ts=ts, metrics=metrics))
        return out

    def _metrics(self, metrics: Mapping[str, MetricValue]) -> dict[str, MetricValue]:
        clean: dict[str, MetricValue] = {}
        for name, value in metrics.items():
            if name not in self._good_names:
                if not isinstance(name, str) or not _METRIC_RE.fullmatch(name):
                    self._drop_value(str(name), f"name does not match {METRIC_PATTERN}")
                    continue
                self._good_names.add(name)
            problem = _value_problem(value)
            if problem is not None:
                self._drop_value(name, problem)
                continue
            if len(clean) >= MAX_METRICS_PER_READING:
                self._drop_value(name, f"more than {MAX_METRICS_PER_READING} metrics in one reading")
                continue
            # A device's text may hold a newline or a control character, which the contract refuses.
            clean[name] = clean_text(value, MAX_STRING_VALUE) if isinstance(value, str) else value
        return clean

    def _drop_value(self, name: str, why: str) -> None:
        self._stats.values_dropped += 1
        if name not in self._warned:
            self._warned.add(name)
            log.warning("device %s: metric %r dropped (%s); further drops of it are not logged", self.device, name, why)

    def _drop_reading(self, key: str, why: str) -> None:
        self._stats.values_dropped += 1
        if key not in self._warned_readings:
            self._warned_readings.add(key)
            log.warning("device %s: reading dropped (%s); further drops like it are not logged", self.device, why)
