"""The hub's own health: the Prometheus text at ``GET /metrics`` and the periodic ``hub_health`` points.

Both are built from one snapshot (``Hub.ingest_stats()``: the pipeline's counters and gauges, the intake's
counters, the camera snapshot store's), so they always agree. The camera snapshot store's figures are in
``/metrics`` only (``ioc_hub_snapshots_*``), not in ``hub_health``. Prometheus text format 0.0.4:
https://prometheus.io/docs/instrumenting/exposition_formats/

InfluxDB schema (docs/storage.md, "The hub's own measurements"), written every ``metrics.interval_s``:

- ``hub_health``, tag ``hub`` (``metrics.instance``, default the MQTT client id); fields: ``messages_per_s``,
  ``readings_per_s``, ``lines_per_s`` (rates over the interval), ``messages_received``, ``readings``,
  ``lines_written``, ``write_batches``, ``write_errors``, ``acks``, ``dead_letters``, ``seq_gaps``,
  ``pending_messages``, ``queued_messages``, ``writes_in_flight``, ``spill_batches``, ``spill_lines``,
  ``spill_bytes``, ``lines_spilled``, ``lines_written_back``, ``write_avg_ms`` (mean write latency over the
  interval), ``batch_lines_avg`` (mean lines per batch over the interval), ``ingest_latency_max_ms``,
  ``mqtt_connected``, ``storage_ok`` (booleans). Counters are totals since the hub started.
- ``hub_seq_gaps``, tags ``hub``, ``site``, ``gateway``; field ``seq_gaps`` (messages missing so far), one point
  per gateway that has had a gap.

Writing them is best effort: when InfluxDB is down the points of that interval are skipped (logged once), not
spilled; ``/metrics`` is the live view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from hub.errors import StorageError
from hub.ingest import LineWriter
from hub.stats import HistogramSnapshot, HubStats, SnapshotStats
from hub.storage.lineproto import format_tags, line

log = logging.getLogger(__name__)

PREFIX: Final = "ioc_hub_"
HEALTH_MEASUREMENT: Final = "hub_health"
GAPS_MEASUREMENT: Final = "hub_seq_gaps"

Sample = Callable[[HubStats], int | float | bool]

#: (metric name, help, value) of the plain counters.
_COUNTERS: Final[tuple[tuple[str, str, Sample], ...]] = (
    ("messages_received_total", "MQTT messages taken from the intake", lambda s: s.messages_received),
    ("readings_total", "Readings in decoded data messages", lambda s: s.readings),
    (
        "lines_written_total",
        "Lines InfluxDB accepted (live and written back from the spill)",
        lambda s: s.lines_written,
    ),
    ("write_batches_total", "Batches InfluxDB accepted", lambda s: s.write_batches),
    ("write_errors_total", "Failed InfluxDB writes", lambda s: s.write_errors),
    ("write_retries_total", "Retried InfluxDB writes", lambda s: s.write_retries),
    ("acks_total", "MQTT acknowledgements sent", lambda s: s.acks),
    ("values_dropped_total", "Metric values that cannot be represented", lambda s: s.values_dropped),
    ("seq_repeats_total", "Data messages seen again (redelivery, late replay)", lambda s: s.seq_repeats),
    ("stale_states_ignored_total", "Late deaths of an older gateway session", lambda s: s.stale_states_ignored),
    ("observer_errors_total", "Observer calls that raised", lambda s: s.observer_errors),
    ("batches_spilled_total", "Batches written to the on-disk spill", lambda s: s.batches_spilled),
    ("lines_spilled_total", "Lines written to the on-disk spill", lambda s: s.lines_spilled),
    ("batches_written_back_total", "Spilled batches written back to InfluxDB", lambda s: s.batches_written_back),
    ("lines_written_back_total", "Spilled lines written back to InfluxDB", lambda s: s.lines_written_back),
    ("spill_full_total", "Batches the spill could not take (full or failing)", lambda s: s.spill_full),
)
#: (metric name, help, value) of the gauges.
_GAUGES: Final[tuple[tuple[str, str, Sample], ...]] = (
    ("pending_messages", "Messages received, not yet acknowledged", lambda s: s.pending_messages),
    (
        "queued_messages",
        "Messages in the lanes from the MQTT intake to the pipeline, in memory",
        lambda s: s.queued_messages,
    ),
    ("open_batch_lines", "Lines in the batch being filled", lambda s: s.batch_lines),
    ("ready_lines", "Lines of closed batches waiting for a write slot", lambda s: s.ready_lines),
    ("writes_in_flight", "InfluxDB writes running", lambda s: s.writes_in_flight),
    ("spill_batches", "Batches held in the spill", lambda s: s.spill_batches),
    ("spill_lines", "Lines held in the spill", lambda s: s.spill_lines),
    ("spill_bytes", "Bytes of the spill on disk", lambda s: s.spill_bytes),
    ("dead_letters_unsaved", "Dead letters waiting to be saved", lambda s: s.dead_letters_unsaved),
    ("mqtt_connected", "1 while connected to the broker", lambda s: s.mqtt.connected),
    ("storage_ok", "0 while InfluxDB writes fail", lambda s: not s.influx.writes_failing),
    ("gateways_online", "Gateways whose last state is online", lambda s: s.gateways.online),
    (
        "ingest_latency_max_ms",
        "Largest sample-to-stored latency of a live data message since start",
        lambda s: s.ingest_latency.max_ms,
    ),
    (
        "ingest_latency_avg_ms",
        "Mean sample-to-stored latency of live data messages since start",
        lambda s: s.ingest_latency.avg_ms,
    ),
)
#: (metric name, help, value) of the camera snapshot store's counters and gauges (``HubStats.snapshots``; a hub
#: without a snapshot store has none of these metrics).
_SNAPSHOT_COUNTERS: Final[tuple[tuple[str, str, Callable[[SnapshotStats], int]], ...]] = (
    ("snapshots_stored_total", "Camera snapshots written to disk", lambda s: s.stored),
    ("snapshots_stored_bytes_total", "Bytes of the camera snapshots written to disk", lambda s: s.stored_bytes),
    (
        "snapshots_replaced_total",
        "Camera snapshots written over a kept one of the same camera and time",
        lambda s: s.replaced,
    ),
    (
        "snapshots_dropped_total",
        "Admitted camera snapshots dropped because the write queue was full",
        lambda s: s.dropped_queue_full,
    ),
    ("snapshots_write_errors_total", "Camera snapshots the disk refused to take", lambda s: s.write_errors),
)
_SNAPSHOT_GAUGES: Final[tuple[tuple[str, str, Callable[[SnapshotStats], int]], ...]] = (
    ("snapshots_files", "Camera snapshots kept on disk", lambda s: s.files),
    ("snapshots_bytes", "Bytes of the camera snapshots kept on disk", lambda s: s.bytes),
    ("snapshots_cameras", "Cameras with a snapshot kept", lambda s: s.cameras),
    ("snapshots_queued", "Camera snapshots admitted and waiting to be written", lambda s: s.queued),
)
#: The ``reason`` label of ``snapshots_removed_total``: which bound of the retention removed them.
_SNAPSHOT_REMOVALS: Final[tuple[tuple[str, Callable[[SnapshotStats], int]], ...]] = (
    ("age", lambda s: s.removed_age),
    ("total_bytes", lambda s: s.removed_total_bytes),
    ("camera_bound", lambda s: s.removed_camera_bound),
)
#: The integer fields of ``hub_health`` copied from the snapshot as they are (totals and levels).
_HEALTH_FIELDS: Final[tuple[tuple[str, Callable[[HubStats], int]], ...]] = (
    ("messages_received", lambda s: s.messages_received),
    ("readings", lambda s: s.readings),
    ("lines_written", lambda s: s.lines_written),
    ("write_batches", lambda s: s.write_batches),
    ("write_errors", lambda s: s.write_errors),
    ("acks", lambda s: s.acks),
    ("seq_gaps", lambda s: s.seq_gaps),
    ("pending_messages", lambda s: s.pending_messages),
    ("queued_messages", lambda s: s.queued_messages),
    ("writes_in_flight", lambda s: s.writes_in_flight),
    ("spill_batches", lambda s: s.spill_batches),
    ("spill_lines", lambda s: s.spill_lines),
    ("spill_bytes", lambda s: s.spill_bytes),
    ("lines_spilled", lambda s: s.lines_spilled),
    ("lines_written_back", lambda s: s.lines_written_back),
)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{PREFIX}{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, data: HistogramSnapshot) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}{name} histogram")
        for bound, count in data.buckets.items():
            self.lines.append(f'{PREFIX}{name}_bucket{{le="{bound}"}} {count}')
        self.lines.append(f"{PREFIX}{name}_sum {_number(data.sum)}")
        self.lines.append(f"{PREFIX}{name}_count {data.count}")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def render_prometheus(stats: HubStats) -> str:
    """The Prometheus text exposition of a ``Hub.ingest_stats()`` snapshot."""
    out = _Text()
    for name, help_text, value in _COUNTERS:
        out.family(name, "counter", help_text, [({}, value(stats))])
    out.family(
        "messages_by_channel_total",
        "counter",
        "Messages by topic channel",
        [({"channel": c}, n) for c, n in sorted(stats.messages_by_channel.items())],
    )
    out.family(
        "dead_letters_total",
        "counter",
        "Dead letters by kind (quarantined messages)",
        [({"kind": k}, n) for k, n in sorted(stats.dead_letters.items())],
    )
    out.family(
        "seq_gaps_total",
        "counter",
        "Data messages missing by sequence number, per gateway",
        [({"gateway": g}, n) for g, n in sorted(stats.seq_gaps_by_gateway.items())],
    )
    for name, help_text, value in _GAUGES:
        out.family(name, "gauge", help_text, [({}, value(stats))])
    snapshots = stats.snapshots
    if snapshots is not None:
        for name, help_text, count in _SNAPSHOT_COUNTERS:
            out.family(name, "counter", help_text, [({}, count(snapshots))])
        out.family(
            "snapshots_removed_total",
            "counter",
            "Camera snapshots removed, by the retention bound that removed them",
            [({"reason": reason}, count(snapshots)) for reason, count in _SNAPSHOT_REMOVALS],
        )
        for name, help_text, count in _SNAPSHOT_GAUGES:
            out.family(name, "gauge", help_text, [({}, count(snapshots))])
    out.histogram("write_seconds", "Duration of successful InfluxDB writes", stats.write_seconds)
    out.histogram("batch_size_lines", "Lines per batch (written or spilled)", stats.batch_size_lines)
    return "\n".join(out.lines) + "\n"


class HealthReporter:
    """Writes ``hub_health`` and ``hub_seq_gaps`` points every ``interval_s`` (see the module docstring)."""

    def __init__(
        self,
        snapshot: Callable[[], HubStats],
        writer: LineWriter,
        *,
        instance: str,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._writer = writer
        self._instance = instance
        self._interval_s = interval_s
        self._clock = clock
        self._previous: tuple[float, HubStats] | None = None
        self._failing = False
        self.points_written = 0

    def lines(self, stats: HubStats, now: float) -> list[str]:
        """The points of one report at ``now`` (s); rates are over the time since the previous report."""
        previous = self._previous
        self._previous = (now, stats)
        elapsed = now - previous[0] if previous else 0.0

        def rate(value: Callable[[HubStats], int]) -> float:
            if previous is None or elapsed <= 0:
                return 0.0
            return round(float(value(stats) - value(previous[1])) / elapsed, 3)

        def interval_mean(histogram: Callable[[HubStats], HistogramSnapshot]) -> float:
            now_h = histogram(stats)
            count, total = now_h.count, now_h.sum
            if previous is not None:
                before_h = histogram(previous[1])
                count, total = count - before_h.count, total - before_h.sum
            return round(float(total) / count, 3) if count else 0.0

        fields: dict[str, bool | int | float | str] = {
            "messages_per_s": rate(lambda s: s.messages_received),
            "readings_per_s": rate(lambda s: s.readings),
            "lines_per_s": rate(lambda s: s.lines_written),
            "dead_letters": stats.dead_letters_total,
            "write_avg_ms": round(interval_mean(lambda s: s.write_seconds) * 1000, 3),
            "batch_lines_avg": interval_mean(lambda s: s.batch_size_lines),
            "ingest_latency_max_ms": stats.ingest_latency.max_ms,
            "mqtt_connected": stats.mqtt.connected,
            "storage_ok": not stats.influx.writes_failing,
        }
        for key, value in _HEALTH_FIELDS:
            fields[key] = value(stats)
        ts_ms = int(now * 1000)
        lines = [line(HEALTH_MEASUREMENT, {"hub": self._instance}, fields, ts_ms)]
        for name, gaps in sorted(stats.seq_gaps_by_gateway.items()):
            site, _, gateway = name.partition("/")
            tags = format_tags([("hub", self._instance), ("site", site), ("gateway", gateway)])
            lines.append(f"{GAPS_MEASUREMENT}{tags} seq_gaps={float(gaps)!r} {ts_ms}")
        return lines

    async def report_once(self) -> bool:
        """Write one report; False (logged once until it works again) if InfluxDB did not take it."""
        body = "\n".join(self.lines(self._snapshot(), self._clock())).encode()
        problem = ""
        try:
            await self._writer.write(body)
        except StorageError as exc:
            problem = str(exc)
        if problem:
            if not self._failing:
                self._failing = True
                log.warning(
                    "could not write %s points (%s); skipping them until InfluxDB takes them",
                    HEALTH_MEASUREMENT,
                    problem,
                )
            return False
        if self._failing:
            self._failing = False
            log.info("%s points are written again", HEALTH_MEASUREMENT)
        self.points_written += body.count(b"\n") + 1
        return True

    async def run(self) -> None:
        """Report every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.report_once()
            except Exception:
                log.exception("the %s report failed", HEALTH_MEASUREMENT)
