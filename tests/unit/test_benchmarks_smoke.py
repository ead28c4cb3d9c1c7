"""The codec benchmark runs, measures real work (one line per reading fed) and reports it; its guard can fail.

Tiny sizes: this checks the benchmark's plumbing, not the hub's speed (``make bench`` does that).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

import benchmarks.codec
from benchmarks import BenchmarkError
from benchmarks.codec import run_codec
from benchmarks.results import format_table, write_report
from benchmarks.workload import KINDS, Workload
from hub.ingest.points import reading_lines
from wire.v1 import DataBatch


def test_codec_benchmark_counts_one_line_per_reading_fed() -> None:
    result = run_codec(runs=3, messages=4, readings_per_message=7, devices=3)

    assert result.name == "codec"
    assert result.ok
    assert result.error == ""
    assert result.params["messages"] == 4
    assert result.params["readings_per_message"] == 7
    assert len(result.samples) == 3
    for sample in result.samples:
        assert sample.counts == {"messages": 4, "readings": 28, "lines": 28, "values_dropped": 0}
        assert sample.metrics["seconds"] > 0
        assert sample.metrics["readings_per_s"] > 0
        # Both rates come from the same clock reading: readings/s is messages/s times readings per message.
        assert sample.metrics["readings_per_s"] == pytest.approx(7 * sample.metrics["messages_per_s"])

    summary = result.summary()
    assert set(summary) == {"readings_per_s", "messages_per_s", "seconds"}
    rates = sorted(s.metrics["readings_per_s"] for s in result.samples)
    assert summary["readings_per_s"].min == rates[0]
    assert summary["readings_per_s"].median == rates[1]
    assert summary["readings_per_s"].max == rates[2]


def test_codec_benchmark_fails_when_lines_go_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection into the measured path, to show the guard works: a codec that loses the last line of
    # every batch must fail the run, not report a (faster) rate.
    def lossy(site: str, gateway: str, batch: DataBatch) -> tuple[list[str], int]:
        lines, dropped = reading_lines(site, gateway, batch)
        return lines[:-1], dropped

    monkeypatch.setattr(benchmarks.codec, "reading_lines", lossy)
    with pytest.raises(BenchmarkError, match=r"fed 10 readings, decoded 10, got 8 lines"):
        run_codec(runs=1, messages=2, readings_per_message=5)


def test_workload_counts_match_its_batches_and_no_point_overwrites_another() -> None:
    workload = Workload(messages=7, readings_per_message=11, devices=5)
    batches = workload.batches()

    readings = [r for b in batches for r in b.readings]
    assert len(readings) == 77
    assert [b.seq for b in batches] == list(range(1, 8))
    assert dict(Counter(r.kind for r in readings)) == workload.kind_counts()
    assert sum(workload.kind_counts().values()) == 77
    # InfluxDB identifies a point by series (measurement + tags) and time: all distinct here.
    assert len({(r.kind, r.device, r.ts) for r in readings}) == 77
    assert max(r.ts for r in readings) - min(r.ts for r in readings) == workload.span_ms
    # Six metrics per reading, floats and bools mixed, as the table says.
    kinds = {k.kind: k for k in KINDS}
    for r in readings:
        assert list(r.metrics) == [name for name, _ in kinds[r.kind].metrics]
    values = [v for r in readings for v in r.metrics.values()]
    assert any(isinstance(v, bool) for v in values)
    assert any(isinstance(v, float) for v in values)
    assert len(workload.payloads()) == 7


def test_report_is_written_as_json_and_tabled(tmp_path: Path) -> None:
    result = run_codec(runs=1, messages=2, readings_per_message=3)
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    path = write_report([result], tmp_path, command="python -m benchmarks --quick", started=started, settings={})

    assert path == tmp_path / "results-20260102T030405Z.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["command"] == "python -m benchmarks --quick"
    (bench,) = report["benchmarks"]
    assert bench["name"] == "codec"
    assert bench["ok"] is True
    assert bench["samples"][0]["counts"]["lines"] == 6
    assert set(bench["summary"]["readings_per_s"]) == {"median", "min", "max"}
    table = format_table([result])
    assert "readings/s" in table
    assert table.splitlines()[0].split() == ["benchmark", "metric", "median", "min", "max", "runs"]
