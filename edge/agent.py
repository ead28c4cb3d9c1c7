"""The agent: the scheduler (one task per device) feeding the outbox, the publisher emptying it.

Commands received by the publisher go to the :class:`~edge.commands.CommandDispatcher`, which acts on the
scheduler (and, for ``reload_config``, the :class:`~edge.reload.ConfigReloader`) and answers through the
publisher; after a ``set_interval`` or ``reload_config`` the publisher announces the devices served now in a new
birth. The self-metrics sampler is also the publisher's keep-alive heartbeat, and takes the publish latency
it measures. The agent's own figures go into the outbox as readings of kind ``agent`` (:mod:`edge.selfmetrics`).
Camera snapshots go from the scheduler to the publisher through a :class:`~edge.snapshots.SnapshotBox`, beside the
outbox, not in it.

Composed with :class:`contextlib.AsyncExitStack`, so what starts is stopped in reverse order: on ``stop``
running commands are cancelled, the self-metrics stop, the device tasks end (no new readings), then the
publisher sends what is queued, publishes the death and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from edge import __version__
from edge.commands import CommandDispatcher
from edge.config import EdgeConfig
from edge.events import EventQueue
from edge.latency import LatencyWindow
from edge.outbox_sqlite import outbox_for
from edge.publisher import Publisher
from edge.reload import ConfigReloader
from edge.scheduler import Scheduler
from edge.selfmetrics import AgentMetrics
from edge.snapshots import SnapshotBox
from edge.stats import STATS_LOG_INTERVAL_S, EdgeStats, StatsLogger
from wire.v1 import CommandAck

log = logging.getLogger(__name__)


async def run_agent(
    config: EdgeConfig,
    stop: asyncio.Event,
    *,
    stats: EdgeStats | None = None,
    stats_interval_s: float = STATS_LOG_INTERVAL_S,
    config_path: Path | None = None,
) -> None:
    """Run the agent until ``stop`` is set, then shut down cleanly.

    ``config_path`` is the file ``config`` was loaded from: the ``reload_config`` command rereads it (without
    it, that command is answered ``unsupported``). Raises :class:`~edge.errors.ConfigError` if a device cannot
    be built (``load_config`` has already checked that for configs it loaded). An unreachable broker or device
    never ends it.
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
    report = {d.id: d.report for d in config.devices if d.report is not None}
    snapshots = SnapshotBox(config.snapshots, stats) if config.snapshots.enabled else None
    scheduler = Scheduler(plans, outbox, events, stats, report=report, snapshots=snapshots)
    reload = ConfigReloader(config_path, config, scheduler) if config_path is not None else None

    async def send_ack(ack: CommandAck) -> bool:
        return await publisher.publish_ack(ack)

    def announce_devices() -> None:
        publisher.set_devices([p.info() for p in scheduler.plans()])

    async def rebirth() -> str:
        return await publisher.rebirth()

    commands = CommandDispatcher(
        config.gateway, scheduler, send_ack, reload=reload, on_devices_changed=announce_devices, rebirth=rebirth
    )
    latency = LatencyWindow()
    metrics = AgentMetrics(
        config.gateway,
        outbox,
        stats,
        interval_s=config.self_metrics.interval_s,
        sources=[scheduler.figures, commands.figures, latency.take],
    )
    publisher = Publisher(
        site=config.site,
        gateway=config.gateway,
        broker=config.broker,
        publish=config.publish,
        devices=[p.info() for p in plans],
        outbox=outbox,
        events=events,
        stats=stats,
        agent_version=__version__,
        on_command=commands.handle,
        # The keep-alive promise is kept with self-metrics readings: without them, none is made.
        heartbeat=metrics.sample if config.self_metrics.enabled else None,
        latency=latency,
        snapshots=snapshots,
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(outbox)  # closed last, after the publisher's drain
        # Entered first, left last: its final line counts what the shutdown sent.
        await stack.enter_async_context(StatsLogger(stats, lambda: len(outbox), stats_interval_s))
        await stack.enter_async_context(publisher)
        await stack.enter_async_context(scheduler)
        if config.self_metrics.enabled:
            await stack.enter_async_context(metrics)
        # Left first: commands still running are cancelled before their devices stop.
        await stack.enter_async_context(commands)
        await stop.wait()
        log.info("stopping the edge agent")
    log.info("edge agent stopped")
