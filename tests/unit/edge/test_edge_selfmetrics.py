"""The agent's own figures (edge/selfmetrics.py): readings of kind ``agent`` for the gateway's id."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from devices.driver import MetricValue
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.scheduler import Scheduler
from edge.selfmetrics import AGENT_KIND, AgentMetrics
from edge.stats import EdgeStats

PROCESS = {"rss_bytes", "cpu_pct", "threads", "uptime_s"}


async def test_a_sample_has_every_counter_the_process_and_the_sources() -> None:
    stats = EdgeStats(polls_ok=7, readings_dropped=3, reconnects=2)
    outbox = MemoryOutbox(100, stats)
    scheduler = Scheduler([], outbox, EventQueue(stats), stats)
    metrics = AgentMetrics("gw-1", outbox, stats, interval_s=60, sources=[scheduler.figures])
    [reading] = metrics.sample()
    assert (reading.device, reading.kind) == ("gw-1", AGENT_KIND)
    assert set(stats.snapshot()) | PROCESS | set(scheduler.figures()) == set(reading.metrics)
    assert (reading.metrics["polls_ok"], reading.metrics["readings_dropped"], reading.metrics["reconnects"]) == (
        7,
        3,
        2,
    )
    assert reading.metrics["devices"] == 0
    assert int(reading.metrics["rss_bytes"]) > 10 * 1024 * 1024  # this test process: tens of MB
    assert int(reading.metrics["threads"]) >= 1


async def test_samples_go_to_the_outbox_every_interval() -> None:
    stats = EdgeStats()
    outbox = MemoryOutbox(100, stats)
    async with AgentMetrics("gw-1", outbox, stats, interval_s=0.1):
        await asyncio.sleep(0.35)
    queued = [q.reading for q in await outbox.peek(100)]
    assert len(queued) == 4  # every 0.1 s, and one more when leaving
    assert all(r.kind == AGENT_KIND and r.device == "gw-1" for r in queued)
    assert [r.metrics["readings_queued"] for r in queued] == [0, 1, 2, 3]  # each counts the ones before it


async def test_a_failing_source_costs_only_its_own_figures(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, MetricValue]:
        raise RuntimeError("boom")

    def bad_names() -> dict[str, MetricValue]:
        return {"Bad Name": 1, "fine": 2, "nan_value": float("nan")}

    stats = EdgeStats()
    metrics = AgentMetrics("gw-1", MemoryOutbox(10, stats), stats, interval_s=60, sources=[broken, bad_names])
    with caplog.at_level(logging.ERROR, logger="edge.selfmetrics"):
        [reading] = metrics.sample()
    assert reading.metrics["fine"] == 2
    assert "Bad Name" not in reading.metrics
    assert "nan_value" not in reading.metrics
    assert "polls_ok" in reading.metrics
    assert [r.getMessage() for r in caplog.records] == ["a self-metrics source failed"]


async def test_cpu_pct_is_the_share_of_one_core_since_the_previous_sample() -> None:
    stats = EdgeStats()
    metrics = AgentMetrics("gw-1", MemoryOutbox(10, stats), stats, interval_s=60)
    metrics.sample()
    cpu0, wall0 = time.process_time(), time.monotonic()
    while time.process_time() - cpu0 < 0.2:  # busy for 0.2 s of CPU (longer in wall time on a shared machine)
        pass
    cpu1, wall1 = time.process_time(), time.monotonic()
    [busy] = metrics.sample()
    expected = 100 * (cpu1 - cpu0) / (wall1 - wall0)
    assert expected > 10
    assert abs(float(busy.metrics["cpu_pct"]) - expected) < max(10.0, expected * 0.2)
    await asyncio.sleep(0.3)  # idle
    [idle] = metrics.sample()
    assert float(idle.metrics["cpu_pct"]) < 20
