"""The agent's own figures, published like any device's: readings of kind ``agent`` for the gateway's own id.

Every ``self_metrics.interval_s`` (default 60 s), and once more on a clean shutdown, one reading goes into the
outbox with:

- every counter and gauge of :class:`edge.stats.EdgeStats` under its own name (``polls_ok``, ``readings_sent``,
  ``readings_dropped``, ``reconnects``, ``outbox_readings``, ``outbox_bytes``...): counters count since the
  agent started, so a restart shows as a reset, as with any Prometheus-style counter;
- the process: ``uptime_s`` (since the agent started), ``rss_bytes`` (resident memory, from
  ``/proc/self/statm``; absent where there is no ``/proc``), ``cpu_pct`` (CPU time of all its threads since the
  previous sample, in % of one core), ``threads`` (Python threads);
- what the other parts add through ``sources``: the agent passes the command counts, the devices' health and
  the publish latency of the live readings since the previous sample (:mod:`edge.latency`:
  ``publish_latency_p50_ms``, ``publish_latency_max_ms``, ``publish_latency_readings``).

Names that break the wire contract are dropped by :class:`edge.readings.ReadingFilter` like any device's. The
gateway host itself (CPU, memory, disk of the machine) is a device of its own: the ``host`` driver.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from common.tasks import cancel_and_wait
from devices.driver import MetricValue, now_ms
from devices.driver import Reading as DriverReading
from edge.outbox import Outbox
from edge.readings import ReadingFilter
from edge.stats import EdgeStats
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
        self._started = time.monotonic()
        self._cpu_at = (self._started, time.process_time())
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> list[Reading]:
        """One reading of the agent's figures, now."""
        metrics: dict[str, MetricValue] = dict(self._stats.snapshot())
        rss = _rss_bytes()
        if rss is not None:
            metrics["rss_bytes"] = rss
        now, cpu = time.monotonic(), time.process_time()
        (then, cpu_then), self._cpu_at = self._cpu_at, (now, cpu)
        metrics["cpu_pct"] = round(100.0 * (cpu - cpu_then) / max(now - then, 1e-6), 3)
        metrics["threads"] = threading.active_count()
        metrics["uptime_s"] = round(now - self._started, 3)
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
        self._cpu_at = (time.monotonic(), time.process_time())
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


_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM: Final = Path("/proc/self/statm")


def _rss_bytes() -> int | None:
    """Resident memory of this process (``/proc/self/statm``, second field, in pages; proc(5)), or None."""
    try:
        return int(_STATM.read_bytes().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None
