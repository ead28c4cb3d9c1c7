"""The outbox: readings waiting to be published, in sampling order, bounded; two lanes, live and backlog.

The publisher *peeks* a batch, publishes it, and only then *commits* it: a reading leaves the outbox after the
broker acknowledged it, so nothing is lost when the link drops mid-publish (it goes out after the reconnect,
at least once; a duplicate carries the same sampling ``ts`` and collapses in InfluxDB).

Lanes: when a connect attempt to the broker starts, the publisher calls :meth:`Outbox.start_backlog`; everything
queued at that moment is the *backlog* (held while the link was down, or restored from disk), everything put
afterwards is *live*. Each lane is FIFO by put order, which is each device's sampling order. The publisher sends live
readings first and the backlog under a rate limit (:mod:`edge.outbox_replay`), so the hub sees every device's
backlog in order and its live readings in order, the two interleaved.

:class:`edge.outbox_sqlite.SqliteOutbox` is the implementation (on disk, or in memory for tests and embedding);
:class:`MemoryOutbox` is a plain in-memory stand-in for unit tests of the code that only puts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from edge.stats import EdgeStats
from wire.v1 import Reading


class Lane(Enum):
    LIVE = "live"
    BACKLOG = "backlog"


@dataclass(frozen=True, slots=True)
class Queued:
    """A reading in the outbox. ``position`` increases by one per reading ever put; commit uses it."""

    position: int
    reading: Reading


class Outbox(Protocol):
    """A bounded FIFO of readings in two lanes, with peek / commit."""

    def __len__(self) -> int:
        """Readings queued (both lanes)."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes of the queued readings, as bounded by the outbox's byte limit."""
        ...

    def lane_len(self, lane: Lane) -> int:
        """Readings queued in ``lane``."""
        ...

    async def put(self, readings: Sequence[Reading]) -> None:
        """Append readings to the live lane; when full, the oldest are dropped (and counted). Never raises
        for a storage failure: the readings are then counted as dropped and the failure is logged."""

    async def start_backlog(self) -> int:
        """Make everything queued the backlog (a broker session starts); return how many readings that is."""
        ...

    async def peek(self, limit: int, lane: Lane) -> list[Queued]:
        """Up to ``limit`` of the oldest readings of ``lane``, left in place."""
        ...

    async def commit(self, through: int, lane: Lane) -> None:
        """Remove ``lane``'s readings up to and including position ``through`` (those still present)."""

    async def wait(self, timeout_s: float | None) -> None:
        """Return when readings were put (or ``timeout_s`` passed)."""

    async def settle(self) -> None:
        """Return once every reading put so far is written and readable (counted in :meth:`lane_len`): a put
        of a device task stopped mid-write goes on in the background, and a shutdown drain must see it."""

    def live_enqueued_at(self) -> float | None:
        """When the oldest live reading was put (``time.monotonic()``; 0 for "long ago"), None if none is."""
        ...


class MemoryOutbox:
    """:class:`Outbox` in plain memory, bounded in readings (oldest dropped and counted): for unit tests of the
    parts that only put. The agent uses :class:`edge.outbox_sqlite.SqliteOutbox` (``:memory:`` without a
    file), whose byte bounds and durability this one does not have."""

    def __init__(self, max_readings: int, stats: EdgeStats) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        self.max_readings = max_readings
        self._stats = stats
        self._lanes: dict[Lane, deque[tuple[Queued, float]]] = {Lane.BACKLOG: deque(), Lane.LIVE: deque()}
        self._next_position = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._lanes[Lane.BACKLOG]) + len(self._lanes[Lane.LIVE])

    @property
    def nbytes(self) -> int:
        return 0  # not measured

    def lane_len(self, lane: Lane) -> int:
        return len(self._lanes[lane])

    async def put(self, readings: Sequence[Reading]) -> None:
        now = time.monotonic()
        live = self._lanes[Lane.LIVE]
        for reading in readings:
            live.append((Queued(self._next_position, reading), now))
            self._next_position += 1
        self._stats.readings_queued += len(readings)
        for _ in range(len(self) - self.max_readings):
            (self._lanes[Lane.BACKLOG] or live).popleft()
            self._stats.readings_dropped += 1
        self._changed.set()

    async def start_backlog(self) -> int:
        self._lanes[Lane.BACKLOG].extend(self._lanes[Lane.LIVE])
        self._lanes[Lane.LIVE].clear()
        return len(self._lanes[Lane.BACKLOG])

    async def peek(self, limit: int, lane: Lane | None = None) -> list[Queued]:
        """``lane=None``: the oldest of both lanes (backlog first)."""
        lanes = [self._lanes[Lane.BACKLOG], self._lanes[Lane.LIVE]] if lane is None else [self._lanes[lane]]
        return [q for q, _ in itertools.islice(itertools.chain(*lanes), limit)]

    async def commit(self, through: int, lane: Lane) -> None:
        items = self._lanes[lane]
        while items and items[0][0].position <= through:
            items.popleft()

    async def wait(self, timeout_s: float | None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()

    async def settle(self) -> None:
        return  # put() is complete when it returns

    def live_enqueued_at(self) -> float | None:
        live = self._lanes[Lane.LIVE]
        return live[0][1] if live else None
