"""The agent's own figures, published like any device's: readings of kind ``agent`` for the gateway's own id.

Every ``self_metrics.interval_s`` (default 60 s), and once more on a clean shutdown, one reading goes into the
outbox with:

- every counter and gauge of :class:`edge.stats.EdgeStats` under its own name (``polls_ok``, ``readings_sent``,
  ``readings_dropped``, ``reconnects``, ``outbox_readings``, ``outbox_bytes``...): counters count since the
  agent started, so a restart shows as a reset, as with any Prometheus-style counter;
- the process: ``uptime_s`` (since the agent started), ``rss_bytes`` (resident memory), ``cpu_pct`` (CPU time
  since the previous sample, in % of one core), ``threads``;
- what the other parts add through ``sources`` (the agent passes the command counts and the devices' health).

Names that break the wire contract are dropped by :class:`edge.readings.ReadingFilter` like any device's. The
gateway host itself (CPU, memory, disk of the machine) is a device of its own: the ``host`` driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Final, Self

import psutil

from devices.driver import MetricValue, now_ms
from devices.driver import Reading as DriverReading
from edge.outbox import Outbox
from edge.readings import ReadingFilter
from edge.stats import EdgeStats
from edge.tasks import cancel_and_wait
from wire.v1 import Reading

log = logging.getLogger(__name__)

#: The measurement of the agent's readings.
AGENT_KIND: Final = "agent"
#: Adds figures to each sample (name -> value); called on the event loop, must be quick.
MetricSource = Callable[[], Mapping[str, MetricValue]]


class AgentMetrics:
    """``async with AgentMetrics(...):`` samples every ``interval_s`` into the outbox; leaving stops it."""

    def __init__(
        self,
        gateway: str,
        outbox: Outbox,
        stats: EdgeStats,
        *,
        interval_s: float,
        sources: Sequence[MetricSource] = (),
    ) -> None:
        self.gateway = gateway
        self._outbox = outbox
        self._stats = stats
        self._interval_s = interval_s
        self._sources = list(sources)
        self._filter = ReadingFilter(gateway, AGENT_KIND, stats)
        self._process = psutil.Process()
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> list[Reading]:
        """One reading of the agent's figures, now."""
        metrics: dict[str, MetricValue] = dict(self._stats.snapshot())
        with self._process.oneshot():
            metrics["rss_bytes"] = int(self._process.memory_info().rss)
            metrics["cpu_pct"] = float(self._process.cpu_percent(interval=None))
            metrics["threads"] = int(self._process.num_threads())
        metrics["uptime_s"] = round(time.monotonic() - self._started, 3)
        for source in self._sources:
            try:
                metrics.update(source())
            except Exception:  # a broken source costs its own figures, not the others'
                log.exception("a self-metrics source failed")
        return self._filter.convert([DriverReading(ts_ms=now_ms(), metrics=metrics)])

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._outbox.put(self.sample())

    async def __aenter__(self) -> Self:
        self._process.cpu_percent(interval=None)  # starts the CPU measurement of the first sample
        self._task = asyncio.create_task(self._loop(), name="edge-self-metrics")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task], 5.0)
        # A last sample on the way out: the publisher's drain sends it before the death message.
        try:
            await self._outbox.put(self.sample())
        except Exception:
            log.warning("could not queue the last self-metrics sample", exc_info=True)
