"""Results: one sample per run, median / min / max per metric, a text table and a JSON report."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: How each metric is shown: its label and the format of one value.
_FORMATS: Final[dict[str, tuple[str, str]]] = {
    "readings_per_s": ("readings/s", "{:,.0f}"),
    "messages_per_s": ("messages/s", "{:,.0f}"),
    "points_per_s": ("points/s", "{:,.0f}"),
    "seconds": ("s per run", "{:.3f}"),
    "stats_seconds": ("s until hub stats done", "{:.3f}"),
    "hub_peak_rss_mib": ("hub peak RSS MiB", "{:.1f}"),
    "hub_cpu_pct": ("hub CPU % of one core", "{:.0f}"),
    "mosquitto_cpu_pct": ("mosquitto CPU %", "{:.0f}"),
    "influxd_cpu_pct": ("influxd CPU %", "{:.0f}"),
    "publisher_cpu_pct": ("publisher CPU %", "{:.0f}"),
    "p50_ms": ("publish->queryable p50 ms", "{:,.0f}"),
    "p99_ms": ("publish->queryable p99 ms", "{:,.0f}"),
    "publish_rate": ("publisher reached msgs/s", "{:,.0f}"),
    "hub_cpu_us_per_message": ("hub CPU µs per message", "{:,.0f}"),
}


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class RunSample:
    """One run: the metrics to summarise (rates, times, sizes) and the counts that prove it measured something."""

    metrics: dict[str, float]
    counts: dict[str, int]


@dataclass(slots=True)
class BenchmarkResult:
    """Every run of one benchmark, with the parameters it ran with and the failure that stopped it, if any."""

    name: str
    params: dict[str, Any]
    samples: list[RunSample] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.samples)

    def summary(self) -> dict[str, Stat]:
        """metric -> median, min and max over the runs."""
        names = list(self.samples[0].metrics) if self.samples else []
        out: dict[str, Stat] = {}
        for name in names:
            values = [s.metrics[name] for s in self.samples if name in s.metrics]
            out[name] = Stat(statistics.median(values), min(values), max(values))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "error": self.error,
            "params": self.params,
            "runs": len(self.samples),
            "summary": {k: {"median": v.median, "min": v.min, "max": v.max} for k, v in self.summary().items()},
            "samples": [{"metrics": s.metrics, "counts": s.counts} for s in self.samples],
        }


def format_table(results: Sequence[BenchmarkResult]) -> str:
    """A plain-text table: benchmark, metric, median, min, max, runs."""
    rows: list[tuple[str, ...]] = [("benchmark", "metric", "median", "min", "max", "runs")]
    for result in results:
        for name, stat in result.summary().items():
            label, fmt = _FORMATS.get(name, (name, "{:.3f}"))
            rows.append(
                (
                    result.name,
                    label,
                    fmt.format(stat.median),
                    fmt.format(stat.min),
                    fmt.format(stat.max),
                    str(len(result.samples)),
                )
            )
        if result.error:
            rows.append((result.name, "FAILED", result.error.splitlines()[0][:100], "", "", str(len(result.samples))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPUs, load, Python, OS."""
    try:
        load: tuple[float, ...] = os.getloadavg()
    except OSError:
        load = ()
    return {
        "cpus": os.cpu_count(),
        "loadavg": list(load),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_report(
    results: Sequence[BenchmarkResult], directory: Path, *, command: str, started: dt.datetime, settings: dict[str, Any]
) -> Path:
    """Write ``results-<timestamp>.json`` under ``directory`` (created) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"results-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "settings": settings,
        "machine_at_end": machine(),
        "benchmarks": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
