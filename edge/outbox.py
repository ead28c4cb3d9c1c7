"""The outbox: readings waiting to be published, in sampling order, bounded.

The publisher *peeks* a batch, publishes it, and only then *commits* it: a reading leaves the outbox after the
broker acknowledged it, so nothing is lost when the link drops mid-publish (it goes out after the reconnect,
at least once). :class:`Outbox` is the interface; :class:`MemoryOutbox` keeps readings in memory for now, and a
disk-backed store-and-forward outbox can replace it without touching the scheduler or the publisher.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.stats import EdgeStats
from wire.v1 import Reading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Queued:
    """A reading in the outbox. ``position`` increases by one per reading ever put; commit uses it."""

    position: int
    reading: Reading
    #: ``time.monotonic()`` when it was put (a restored reading of a disk outbox may use 0: "long ago").
    enqueued_at: float


class Outbox(Protocol):
    """A bounded FIFO of readings with peek / commit."""

    def __len__(self) -> int: ...

    async def put(self, readings: Sequence[Reading]) -> None:
        """Append readings; when full, the oldest are dropped (and counted)."""

    async def peek(self, limit: int) -> list[Queued]:
        """Up to ``limit`` of the oldest readings, left in place."""
        ...

    async def commit(self, through: int) -> None:
        """Remove every reading up to and including position ``through`` (those still present)."""

    async def wait(self, min_items: int, timeout_s: float | None) -> bool:
        """Wait until at least ``min_items`` readings are queued, or ``timeout_s`` passed. True if they are."""
        ...

    def oldest_enqueued_at(self) -> float | None:
        """When the oldest queued reading was put (monotonic), or None when empty."""
        ...


class MemoryOutbox:
    """:class:`Outbox` in memory: a deque of at most ``max_readings``; the oldest go first when it is full."""

    def __init__(self, max_readings: int, stats: EdgeStats) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        self.max_readings = max_readings
        self._stats = stats
        self._items: deque[Queued] = deque()
        self._next_position = 0
        self._changed = asyncio.Event()
        self._overflowing = False
        self._dropped_in_episode = 0

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        now = time.monotonic()
        for reading in readings:
            self._items.append(Queued(self._next_position, reading, now))
            self._next_position += 1
        self._stats.readings_queued += len(readings)
        overflow = len(self._items) - self.max_readings
        if overflow > 0:
            for _ in range(overflow):
                self._items.popleft()
            self._stats.readings_dropped += overflow
            self._dropped_in_episode += overflow
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "outbox full (%d readings): dropping the oldest until the broker takes readings again",
                    self.max_readings,
                )
        self._changed.set()

    async def peek(self, limit: int) -> list[Queued]:
        return list(itertools.islice(self._items, limit))

    async def commit(self, through: int) -> None:
        items = self._items
        while items and items[0].position <= through:
            items.popleft()
        if self._overflowing and len(items) < self.max_readings:
            log.warning("outbox no longer full; %d readings were dropped meanwhile", self._dropped_in_episode)
            self._overflowing = False
            self._dropped_in_episode = 0

    async def wait(self, min_items: int, timeout_s: float | None) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                while len(self._items) < min_items:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return len(self._items) >= min_items
        return True

    def oldest_enqueued_at(self) -> float | None:
        return self._items[0].enqueued_at if self._items else None
