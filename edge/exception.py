"""Report-by-exception: between a device's polls and the outbox, send a metric only when it is news.

A metric is sent when it is seen for the first time, when it moved beyond its deadband since the value last
*sent* (not last read: a slow drift adds up and is sent once it crosses the band), or when it was last sent
``max_silence_s`` or more ago, changed or not, so a quiet sensor still shows it is alive. The deadband is
absolute (``deadband``) or a percentage of the value last sent (``deadband_pct``; any change when that value
was 0); without one, and for every bool or string, any change is news. Times are the readings' own sampling
stamps, so the filter does not depend on when it runs; a stamp earlier than the last one sent (the clock was
set back) sends the metric and starts afresh.

A reading keeps the metrics that are due and its timestamp; a reading with none left is not sent at all.
Settings: :class:`edge.config.ReportConfig` (``devices[].report``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devices.driver import MetricValue
from edge.config import ReportConfig
from wire.v1 import Reading

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Sent:
    value: MetricValue
    ts_ms: int


def _is_number(value: MetricValue) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ExceptionFilter:
    """One device's report-by-exception state: the value and time each metric was last sent."""

    def __init__(self, device: str, config: ReportConfig) -> None:
        self.device = device
        self.config = config
        self._max_silence_ms = config.max_silence_s * 1000.0
        self._last: dict[str, _Sent] = {}
        #: Metric values held back since the agent started.
        self.suppressed = 0

    def filter(self, readings: Sequence[Reading]) -> list[Reading]:
        """The readings (or the part of each) that are due; remembers what is sent."""
        out: list[Reading] = []
        for reading in readings:
            kept = {name: value for name, value in reading.metrics.items() if self._due(name, value, reading.ts)}
            self.suppressed += len(reading.metrics) - len(kept)
            if not kept:
                continue
            if len(kept) == len(reading.metrics):
                out.append(reading)
            else:
                out.append(Reading(device=reading.device, kind=reading.kind, ts=reading.ts, metrics=kept))
            for name, value in kept.items():
                self._last[name] = _Sent(value, reading.ts)
        return out

    def note_reported(self, readings: Iterable[Reading]) -> None:
        """Readings sent whole by another way (``read_now``): they count as sent."""
        for reading in readings:
            for name, value in reading.metrics.items():
                self._last[name] = _Sent(value, reading.ts)

    def _due(self, name: str, value: MetricValue, ts_ms: int) -> bool:
        last = self._last.get(name)
        if last is None:
            return True
        if ts_ms < last.ts_ms or ts_ms - last.ts_ms >= self._max_silence_ms:
            return True
        if not (_is_number(value) and _is_number(last.value)):
            return value != last.value or type(value) is not type(last.value)
        delta = abs(float(value) - float(last.value))
        absolute = self.config.deadband.get(name)
        if absolute is not None:
            return delta > absolute
        percent = self.config.deadband_pct.get(name)
        if percent is not None and last.value != 0:
            return delta > abs(float(last.value)) * percent / 100.0
        return delta > 0
