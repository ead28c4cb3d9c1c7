"""The outbox: FIFO lanes, peek then commit, bounded in bytes (and readings if asked; oldest dropped, counted exactly),
on SQLite (in memory and on disk); and the plain in-memory stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from edge.config import PublishConfig
from edge.outbox import Lane, MemoryOutbox
from edge.outbox_sqlite import SqliteOutbox, describe_bounds, outbox_for
from edge.outbox_store import MEMORY, ROW_OVERHEAD, OutboxStore
from edge.stats import EdgeStats
from wire.v1 import Reading

TS = 1_764_331_200_000


def reading(i: int, device: str = "aq-1") -> Reading:
    return Reading(device=device, kind="air_quality", ts=TS + i, metrics={"n": i})


def size(r: Reading) -> int:
    return len(msgspec.json.encode(r)) + ROW_OVERHEAD


def ns(queued: list) -> list[int]:  # type: ignore[type-arg]
    return [q.reading.metrics["n"] for q in queued]


@pytest.fixture(params=["memory", "file"])
async def box(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteOutbox]:
    path = MEMORY if request.param == "memory" else tmp_path / "state" / "outbox.sqlite"
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=EdgeStats()) as outbox:
        yield outbox


async def test_peek_leaves_readings_until_commit(box: SqliteOutbox) -> None:
    await box.put([reading(i) for i in range(5)])
    first = await box.peek(3, Lane.LIVE)
    assert ns(first) == [0, 1, 2]
    assert len(box) == 5
    assert ns(await box.peek(3, Lane.LIVE)) == [0, 1, 2]  # still there: not committed
    await box.commit(first[-1].position, Lane.LIVE)
    assert ns(await box.peek(10, Lane.LIVE)) == [3, 4]
    assert (len(box), box.nbytes) == (2, size(reading(3)) + size(reading(4)))
    assert await box.peek(10, Lane.BACKLOG) == []


async def test_readings_come_back_unchanged(box: SqliteOutbox) -> None:
    odd = Reading(device="x-1", kind="weather", ts=TS, metrics={"a": 1.5, "b": True, "c": "text", "d": -3})
    await box.put([odd])
    [queued] = await box.peek(1, Lane.LIVE)
    assert queued.reading == odd


async def test_start_backlog_splits_the_lanes_and_each_is_fifo(box: SqliteOutbox) -> None:
    await box.put([reading(i) for i in range(4)])
    assert await box.start_backlog() == 4
    await box.put([reading(i) for i in range(4, 7)])
    assert (box.lane_len(Lane.BACKLOG), box.lane_len(Lane.LIVE)) == (4, 3)
    live = await box.peek(10, Lane.LIVE)
    assert ns(live) == [4, 5, 6]
    await box.commit(live[-1].position, Lane.LIVE)  # live first: the backlog stays
    backlog = await box.peek(2, Lane.BACKLOG)
    assert ns(backlog) == [0, 1]
    await box.commit(backlog[-1].position, Lane.BACKLOG)
    assert ns(await box.peek(10, Lane.BACKLOG)) == [2, 3]
    assert (len(box), box.lane_len(Lane.LIVE)) == (2, 0)
    # A new session: what is left, live or not, becomes the backlog.
    await box.put([reading(7)])
    assert await box.start_backlog() == 3
    assert ns(await box.peek(10, Lane.BACKLOG)) == [2, 3, 7]


async def test_commit_removes_only_its_lane(box: SqliteOutbox) -> None:
    await box.put([reading(i) for i in range(3)])
    await box.start_backlog()
    await box.put([reading(i) for i in range(3, 6)])
    live = await box.peek(10, Lane.LIVE)
    await box.commit(live[-1].position, Lane.BACKLOG)  # a backlog commit never reaches into the live lane
    assert ns(await box.peek(10, Lane.LIVE)) == [3, 4, 5]
    assert len(box) == 3


async def test_full_outbox_drops_the_oldest_first_and_counts_them_exactly(tmp_path: Path) -> None:
    stats = EdgeStats()
    per = size(reading(1000))  # every reading here (n = 1000..9999) encodes to the same size
    async with SqliteOutbox(tmp_path / "o.sqlite", max_bytes=65_536, stats=stats) as box:  # bytes only
        fits = 65_536 // per
        await box.put([reading(i) for i in range(1000, 1000 + fits)])
        assert stats.readings_dropped == 0
        await box.start_backlog()
        await box.put([reading(i) for i in range(1000 + fits, 1000 + fits + 25)])  # 25 too many
        assert stats.readings_dropped == box.dropped == 25
        assert len(box) == fits
        assert box.nbytes == fits * per <= 65_536
        assert (stats.outbox_readings, stats.outbox_bytes) == (fits, fits * per)
        assert ns(await box.peek(1, Lane.BACKLOG)) == [1025]  # 1000..1024 went, oldest first
        assert box.lane_len(Lane.BACKLOG) == fits - 25
        assert box.lane_len(Lane.LIVE) == 25
        assert stats.readings_queued == fits + 25


async def test_the_oldest_live_readings_go_when_there_is_no_backlog_left() -> None:
    stats = EdgeStats()
    async with SqliteOutbox(MEMORY, max_bytes=1 << 20, max_readings=5, stats=stats) as box:
        await box.put([reading(i) for i in range(3)])
        await box.start_backlog()
        await box.put([reading(i) for i in range(3, 9)])  # 9 > 5: the 3 of the backlog, then 3 of live
        assert ns(await box.peek(10, Lane.LIVE)) == [4, 5, 6, 7, 8]
        assert box.lane_len(Lane.BACKLOG) == 0
        assert stats.readings_dropped == 4
        assert len(box) == 5
        assert box.live_enqueued_at() is not None


async def test_the_batch_in_flight_is_not_dropped() -> None:
    """It is being published: dropping it would count as lost what the hub receives."""
    stats = EdgeStats()
    async with SqliteOutbox(MEMORY, max_bytes=1 << 20, max_readings=6, stats=stats) as box:
        await box.put([reading(i) for i in range(6)])
        await box.start_backlog()
        in_flight = await box.peek(2, Lane.BACKLOG)  # 0, 1 being published...
        await box.put([reading(i) for i in range(6, 9)])  # ...meanwhile 3 must go: 2, 3, 4
        await box.commit(in_flight[-1].position, Lane.BACKLOG)
        assert ns(await box.peek(10, Lane.BACKLOG)) == [5]
        assert ns(await box.peek(10, Lane.LIVE)) == [6, 7, 8]
        assert stats.readings_dropped == 3
        assert len(box) == 4


async def test_a_bound_reached_by_readings_count(box: SqliteOutbox) -> None:
    await box.put([reading(i) for i in range(1005)])
    assert len(box) == 1000
    assert box.dropped == 5
    assert ns(await box.peek(1, Lane.LIVE)) == [5]


async def test_what_was_queued_survives_a_restart_as_backlog(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    stats = EdgeStats()
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=stats) as box:
        await box.put([reading(i) for i in range(10)])
        await box.start_backlog()
        await box.put([reading(i) for i in range(10, 15)])
        sent = await box.peek(4, Lane.BACKLOG)
        await box.commit(sent[-1].position, Lane.BACKLOG)
    again = EdgeStats()
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=again) as box:
        assert (len(box), box.lane_len(Lane.BACKLOG), box.lane_len(Lane.LIVE)) == (11, 11, 0)
        assert box.nbytes == sum(size(reading(i)) for i in range(4, 15))
        assert (again.outbox_readings, again.outbox_backlog) == (11, 11)
        restored = await box.peek(100, Lane.BACKLOG)
        assert [q.reading for q in restored] == [reading(i) for i in range(4, 15)]  # same ts: duplicates collapse
        await box.put([reading(15)])
        [new] = await box.peek(1, Lane.LIVE)
        assert new.position > restored[-1].position


async def test_a_restart_with_smaller_bounds_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=EdgeStats()) as box:
        await box.put([reading(i) for i in range(10)])
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=4, stats=EdgeStats()) as box:
        assert ns(await box.peek(10, Lane.BACKLOG)) == [6, 7, 8, 9]
        assert box.dropped == 6


async def test_a_damaged_file_is_moved_aside_and_a_new_outbox_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database, just junk " * 200)
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=EdgeStats()) as box:
        assert len(box) == 0
        await box.put([reading(1)])
        assert len(box) == 1
    aside = sorted(p for p in tmp_path.iterdir() if p.name.startswith("o.sqlite.corrupt-"))  # noqa: ASYNC240
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    assert any("damaged" in r.getMessage() for r in caplog.records)


async def test_an_unreadable_row_is_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    stats = EdgeStats()
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=stats) as box:
        await box.put([reading(i) for i in range(3)])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE readings SET data = ? WHERE position = 1", (b'{"device": "BAD"}',))
    async with SqliteOutbox(path, max_bytes=1 << 20, max_readings=1000, stats=stats) as box:
        assert ns(await box.peek(10, Lane.BACKLOG)) == [0, 2]
        assert (len(box), box.dropped, stats.readings_dropped) == (2, 1, 1)


async def test_a_failing_disk_drops_and_counts_the_readings_without_raising(tmp_path: Path) -> None:
    stats = EdgeStats()
    async with SqliteOutbox(tmp_path / "o.sqlite", max_bytes=1 << 30, max_readings=10**7, stats=stats) as box:
        await box.put([reading(1)])
        store = box._store
        assert store is not None
        # SQLite's own way to make the disk "full": no page beyond the current ones.
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        big = [Reading(device="aq-1", kind="k", ts=TS + i, metrics={"s": "x" * 1000}) for i in range(50)]
        await box.put(big)  # does not raise
        assert (stats.outbox_write_errors, stats.readings_dropped) == (1, 50)
        assert len(box) == 1
        store._db.execute("PRAGMA max_page_count = 1073741823")
        await box.put([reading(2)])
        assert ns(await box.peek(10, Lane.LIVE)) == [1, 2]


async def test_concurrent_puts_keep_each_devices_order_and_all_arrive(tmp_path: Path) -> None:
    async with SqliteOutbox(tmp_path / "o.sqlite", max_bytes=1 << 24, max_readings=10**6, stats=EdgeStats()) as box:

        async def device(name: str) -> None:
            for i in range(40):
                await box.put([reading(i, name)])

        await asyncio.gather(*(device(f"d-{k}") for k in range(8)))
        queued = await box.peek(1000, Lane.LIVE)
        assert len(queued) == 320
        for k in range(8):
            assert [q.reading.metrics["n"] for q in queued if q.reading.device == f"d-{k}"] == list(range(40))
        assert [q.position for q in queued] == sorted(q.position for q in queued)


async def test_live_enqueued_at_follows_the_oldest_live_reading() -> None:
    async with SqliteOutbox(MEMORY, max_bytes=1 << 20, max_readings=1000, stats=EdgeStats()) as box:
        assert box.live_enqueued_at() is None
        before = time.monotonic()
        await box.put([reading(0)])
        first = box.live_enqueued_at()
        assert first is not None
        assert before <= first <= time.monotonic()
        await asyncio.sleep(0.02)
        await box.put([reading(1)])
        assert box.live_enqueued_at() == first
        [q, _] = await box.peek(10, Lane.LIVE)
        await box.commit(q.position, Lane.LIVE)
        second = box.live_enqueued_at()
        assert second is not None
        assert second > first
        await box.start_backlog()
        assert box.live_enqueued_at() is None


async def test_wait_returns_on_a_put_or_the_timeout() -> None:
    async with SqliteOutbox(MEMORY, max_bytes=1 << 20, max_readings=1000, stats=EdgeStats()) as box:
        started = time.monotonic()
        await box.wait(0.1)
        assert 0.08 <= time.monotonic() - started < 1.0

        async def later() -> None:
            await asyncio.sleep(0.05)
            await box.put([reading(1)])

        task = asyncio.create_task(later())
        await box.wait(5.0)
        assert len(box) == 1
        await task


def test_the_store_refuses_zero_bounds() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        OutboxStore(MEMORY, 0, 10)


async def test_using_a_closed_outbox_is_a_clear_error() -> None:
    box = SqliteOutbox(MEMORY, max_bytes=1 << 20, max_readings=10, stats=EdgeStats())
    with pytest.raises(RuntimeError, match="not open"):
        await box.put([reading(1)])


async def test_memory_outbox_drops_the_oldest_and_keeps_lanes() -> None:
    stats = EdgeStats()
    box = MemoryOutbox(4, stats)
    await box.put([reading(i) for i in range(3)])
    assert await box.start_backlog() == 3
    await box.put([reading(i) for i in range(3, 6)])
    assert ns(await box.peek(10)) == [2, 3, 4, 5]
    assert (stats.readings_queued, stats.readings_dropped) == (6, 2)
    live = await box.peek(10, Lane.LIVE)
    await box.commit(live[-1].position, Lane.LIVE)
    assert ns(await box.peek(10)) == [2]


async def test_the_default_outbox_is_bounded_by_bytes_alone_and_its_count_stays_exact(tmp_path: Path) -> None:
    """The config's defaults: ``outbox_max_bytes`` and no count cap. Readings of different sizes: the number
    held is whatever fits in the bytes, and the gauges say exactly how many and how big."""
    publish = PublishConfig(outbox_path=tmp_path / "o.sqlite", outbox_max_bytes=64 * 1024)
    assert publish.outbox_max is None
    stats = EdgeStats()
    small = [reading(i) for i in range(1000, 1500)]
    big = [
        Reading(device="pm-1", kind="power", ts=TS + i, metrics={f"m{k}": float(i) for k in range(20)})
        for i in range(200)
    ]
    async with outbox_for(publish, stats) as box:
        await box.put(small)
        await box.put(big)
        total = sum(size(r) for r in small + big)
        assert total > 64 * 1024
        assert stats.readings_dropped > 0
        # Oldest first, exactly enough of them to fit in the bytes.
        kept = (small + big)[stats.readings_dropped :]
        assert (
            sum(size(r) for r in kept) <= 64 * 1024 < sum(size(r) for r in (small + big)[stats.readings_dropped - 1 :])
        )
        assert (
            (stats.outbox_readings, stats.outbox_bytes)
            == (len(kept), sum(size(r) for r in kept))
            == (len(box), box.nbytes)
        )
        assert stats.readings_dropped + len(box) == len(small) + len(big)


@pytest.mark.parametrize(
    ("max_bytes", "max_readings", "text"),
    [
        (256 * 1024 * 1024, None, "256 MiB of readings"),
        (64 * 1024, 1000, "64 KiB of readings, 1000 readings"),
        (3 * 1024**3, None, "3 GiB of readings"),
        (1_500_000, None, "1.4 MiB of readings"),
        (1000, None, "1000 bytes of readings"),
    ],
)
def test_describe_bounds(max_bytes: int, max_readings: int | None, text: str) -> None:
    assert describe_bounds(max_bytes, max_readings) == text


async def test_settle_waits_for_a_put_whose_caller_was_cancelled(box: SqliteOutbox) -> None:
    # The outbox's one worker thread busy for a moment, so that the write below is surely still in flight.
    busy = asyncio.create_task(box._call(lambda: time.sleep(0.3)))
    await asyncio.sleep(0.01)
    # A device task stopped mid-put: its readings are counted as queued, and written in the background.
    put = asyncio.create_task(box.put([reading(i) for i in range(20)]))
    await asyncio.sleep(0.01)
    put.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await put
    assert box.lane_len(Lane.LIVE) == 0  # not written yet: a drain that looked now would find nothing
    await box.settle()
    # A shutdown drain that settles first sees (and sends) all of them.
    assert box.lane_len(Lane.LIVE) == 20
    assert busy.done()
    assert ns(await box.peek(100, Lane.LIVE)) == list(range(20))
    await box.settle()  # nothing pending: returns at once
