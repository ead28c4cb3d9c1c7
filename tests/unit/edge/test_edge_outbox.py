"""The in-memory outbox: FIFO, peek then commit, bounded (oldest dropped and counted)."""

from __future__ import annotations

import asyncio
import time

from edge.outbox import MemoryOutbox
from edge.stats import EdgeStats
from wire.v1 import Reading

TS = 1_764_331_200_000


def reading(i: int) -> Reading:
    return Reading(device="aq-1", kind="air_quality", ts=TS + i, metrics={"n": i})


async def test_peek_leaves_readings_until_commit() -> None:
    box = MemoryOutbox(10, EdgeStats())
    await box.put([reading(i) for i in range(5)])
    first = await box.peek(3)
    assert [q.reading.metrics["n"] for q in first] == [0, 1, 2]
    assert len(box) == 5
    assert [q.reading.metrics["n"] for q in await box.peek(3)] == [0, 1, 2]  # still there: not committed
    await box.commit(first[-1].position)
    assert [q.reading.metrics["n"] for q in await box.peek(10)] == [3, 4]


async def test_full_outbox_drops_the_oldest_and_counts_them() -> None:
    stats = EdgeStats()
    box = MemoryOutbox(4, stats)
    await box.put([reading(i) for i in range(3)])
    await box.put([reading(i) for i in range(3, 7)])
    assert [q.reading.metrics["n"] for q in await box.peek(10)] == [3, 4, 5, 6]
    assert (stats.readings_queued, stats.readings_dropped) == (7, 3)


async def test_commit_after_an_overflow_removes_only_what_was_peeked() -> None:
    box = MemoryOutbox(4, EdgeStats())
    await box.put([reading(i) for i in range(4)])
    in_flight = await box.peek(2)  # 0, 1 being published...
    await box.put([reading(i) for i in range(4, 7)])  # ...meanwhile 0, 1, 2 are pushed out
    await box.commit(in_flight[-1].position)
    assert [q.reading.metrics["n"] for q in await box.peek(10)] == [3, 4, 5, 6]


async def test_wait_returns_when_enough_or_on_timeout() -> None:
    box = MemoryOutbox(100, EdgeStats())
    started = time.monotonic()
    assert await box.wait(1, 0.1) is False
    assert 0.08 <= time.monotonic() - started < 1.0

    async def fill() -> None:
        for i in range(3):
            await asyncio.sleep(0.02)
            await box.put([reading(i)])

    filler = asyncio.create_task(fill())
    assert await box.wait(3, 5.0) is True
    await filler
    assert len(box) == 3
    oldest = box.oldest_enqueued_at()
    assert oldest is not None
    assert started <= oldest <= time.monotonic()
