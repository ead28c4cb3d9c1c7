"""The agent's self-metrics: plain counters, logged every minute (published as a ``gateway`` reading later)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: How often the counters are logged at INFO.
STATS_LOG_INTERVAL_S: Final = 60.0


@dataclass
class EdgeStats:
    """Counters since the agent started, only ever incremented, and the outbox's levels (gauges, set by the
    outbox after every operation). All from the event loop's thread."""

    polls_ok: int = 0
    polls_failed: int = 0
    readings_queued: int = 0
    readings_sent: int = 0
    #: Readings dropped by the outbox: the oldest, when it reached its bounds; and any it could not store
    #: (``outbox_write_errors``) or read back. Exact: every reading put is sent, queued or counted here.
    readings_dropped: int = 0
    #: Readings sent in batches marked ``replay`` (held while the uplink was down, or restored from disk).
    readings_replayed: int = 0
    #: Metric values (or whole readings) that broke the wire contract (bad name, NaN, out-of-range time).
    values_dropped: int = 0
    #: Readings stamped a millisecond after their device's previous one instead of at or before it (the wall
    #: clock stepped back): kept instead of overwriting a stored reading (edge.readings).
    readings_restamped: int = 0
    batches_sent: int = 0
    events_sent: int = 0
    events_dropped: int = 0
    reconnects: int = 0
    #: Messages received on the gateway's ``cmd`` topic (handed to the command handler undecoded).
    commands_received: int = 0
    #: Command acks the broker acknowledged.
    acks_sent: int = 0
    #: Retained births published: one per connect, and one more each time the devices served changed.
    births_sent: int = 0
    #: Heartbeat readings queued to keep the keep-alive promise (no other data message for a keep-alive).
    heartbeats_sent: int = 0
    #: Camera snapshots the broker acknowledged (edge.snapshots); those replaced while waiting by a newer one of
    #: the same camera (the uplink was down); and frames refused at the edge (over the contract's size, not a JPEG).
    snapshots_sent: int = 0
    snapshots_replaced: int = 0
    snapshots_refused: int = 0
    #: Outbox writes that failed (disk full, read-only...); their readings are in ``readings_dropped``.
    outbox_write_errors: int = 0
    #: Gauges: readings queued in the outbox, their bytes (as bounded by ``publish.outbox_max_bytes``), and how
    #: many of them are the backlog of the current broker session (sent under ``publish.replay_rate``).
    outbox_readings: int = 0
    outbox_bytes: int = 0
    outbox_backlog: int = 0

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class StatsLogger:
    """``async with StatsLogger(stats, backlog):`` logs the counters and the outbox backlog every interval."""

    def __init__(self, stats: EdgeStats, backlog: Callable[[], int], interval_s: float = STATS_LOG_INTERVAL_S) -> None:
        self._stats = stats
        self._backlog = backlog
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def line(self) -> str:
        counters = " ".join(f"{k}={v}" for k, v in self._stats.snapshot().items())
        return f"stats: {counters} outbox={self._backlog()}"

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            log.info("%s", self.line())

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop(), name="edge-stats")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task], 5.0)
        log.info("%s", self.line())
