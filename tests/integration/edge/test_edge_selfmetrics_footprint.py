"""The edge footprint benchmark's plumbing (benchmarks/edge_footprint.py): it runs the real agent process
against the simulator and the broker, measures it, and its delivery guard can fail. Tiny sizes: this checks
the benchmark, not the agent's footprint (``python -m benchmarks --only edge_footprint`` does that)."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchmarks.edge_footprint as footprint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[3]


@pytest.mark.timeout(120)
def test_a_small_run_measures_the_agent(tmp_path: Path) -> None:
    result = footprint.run_edge_footprint(
        runs=1, work_dir=tmp_path, log_dir=tmp_path / "logs", cwd=ROOT, devices=3, window_s=3, settle_s=0.5
    )
    assert result.ok, result.error
    [sample] = result.samples
    assert sample.counts["readings_scheduled"] == 9
    assert sample.counts["readings_delivered"] >= 9 * footprint.MIN_DELIVERED
    assert sample.counts["rss_samples"] == 3
    m = sample.metrics
    assert 10 < m["agent_rss_anon_mib"] < m["agent_rss_mib"] <= m["agent_rss_max_mib"] <= m["agent_peak_rss_mib"]
    # 3 devices for 3 s may use less than one 10 ms clock tick of CPU: 0 is a measurement too.
    assert 0 <= m["agent_cpu_pct"] < 100
    assert (tmp_path / "logs" / "agent-run1.log").read_text().count("published birth") == 1


@pytest.mark.timeout(120)
def test_a_run_that_misses_readings_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(footprint, "MIN_DELIVERED", 1.5)  # more than the schedule can deliver
    result = footprint.run_edge_footprint(
        runs=2, work_dir=tmp_path, log_dir=tmp_path / "logs", cwd=ROOT, devices=2, window_s=2, settle_s=0
    )
    assert not result.ok
    assert result.samples == []
    assert result.error.startswith("run 1: ")
    assert "readings delivered in" in result.error
    assert "the schedule calls for 4" in result.error
