"""Self-metrics: counters logged at INFO every interval, and once more when the agent stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edge.stats import EdgeStats, StatsLogger


async def test_the_counters_are_logged_periodically_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.stats")
    stats = EdgeStats()
    backlog = [0]
    async with StatsLogger(stats, lambda: backlog[0], interval_s=0.1):
        stats.readings_sent += 12
        stats.reconnects += 1
        backlog[0] = 3
        await asyncio.sleep(0.35)
        stats.readings_dropped += 2
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.stats"]
    assert 3 <= len(lines) <= 5
    assert "readings_sent=12" in lines[0]
    assert "reconnects=1" in lines[0]
    assert lines[0].endswith("outbox=3")
    assert "readings_dropped=2" in lines[-1]
