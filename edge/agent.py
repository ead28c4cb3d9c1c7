"""The agent: the scheduler (one task per device) feeding the outbox, the publisher emptying it.

Composed with :class:`contextlib.AsyncExitStack`, so what starts is stopped in reverse order: on ``stop`` the
device tasks end first (no new readings), then the publisher sends what is queued, publishes the death and
disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from edge import __version__
from edge.config import EdgeConfig
from edge.events import EventQueue
from edge.outbox_sqlite import outbox_for
from edge.publisher import Publisher
from edge.scheduler import Scheduler
from edge.stats import STATS_LOG_INTERVAL_S, EdgeStats, StatsLogger

log = logging.getLogger(__name__)


async def run_agent(
    config: EdgeConfig,
    stop: asyncio.Event,
    *,
    stats: EdgeStats | None = None,
    stats_interval_s: float = STATS_LOG_INTERVAL_S,
) -> None:
    """Run the agent until ``stop`` is set, then shut down cleanly.

    Raises :class:`~edge.errors.ConfigError` if a device cannot be built (``load_config`` has already
    checked that for configs it loaded). An unreachable broker or device never ends it.
    """
    plans = config.device_plans()
    stats = stats if stats is not None else EdgeStats()
    outbox = outbox_for(config.publish, stats)
    events = EventQueue(stats)
    log.info(
        "edge agent %s for %s/%s: %d devices, broker %s:%d",
        __version__,
        config.site,
        config.gateway,
        len(plans),
        config.broker.host,
        config.broker.port,
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(outbox)  # closed last, after the publisher's drain
        # Entered first, left last: its final line counts what the shutdown sent.
        await stack.enter_async_context(StatsLogger(stats, lambda: len(outbox), stats_interval_s))
        await stack.enter_async_context(
            Publisher(
                site=config.site,
                gateway=config.gateway,
                broker=config.broker,
                publish=config.publish,
                devices=[p.info() for p in plans],
                outbox=outbox,
                events=events,
                stats=stats,
                agent_version=__version__,
            )
        )
        await stack.enter_async_context(Scheduler(plans, outbox, events, stats))
        await stop.wait()
        log.info("stopping the edge agent")
    log.info("edge agent stopped")
