"""The snapshot folder (hub/snapshots/store.py): atomic files named by time, the index rebuilt from the names,
retention by age, by total bytes (oldest of all cameras first) and per camera, in a real temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.snapshots.store import MAX_PROBLEMS_CHARS, RetentionPolicy, SnapshotStore, StoredSnapshot

NOW = 1_800_000_000_000  # ms; the store is given its "now", it never reads the clock in these tests
DAY = 86_400_000


def snap(device: str, ts: int, size: int = 100, problems: tuple[str, ...] | None = ()) -> StoredSnapshot:
    return StoredSnapshot(device, ts, "periodic", 320, 180, size, problems)


async def put_all(store: SnapshotStore, *snaps: StoredSnapshot) -> None:
    for s in snaps:
        assert store.put("site-a", "gw-1", s, bytes([s.ts % 251]) * s.size)
    await store._queue.join()


def names(folder: Path, device: str) -> list[str]:
    path = folder / device
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def test_files_are_named_by_time_and_read_back(tmp_path: Path) -> None:
    seen: list[tuple[str, str, int]] = []
    async with SnapshotStore(tmp_path) as store:
        store.subscribe(lambda site, gateway, s: seen.append((site, gateway, s.ts)))
        await put_all(
            store, snap("cam-1", NOW - 2000, problems=("image_black", "image_frozen")), snap("cam-1", NOW - 1000)
        )
        assert names(tmp_path, "cam-1") == [
            f"{NOW - 2000}-periodic-320x180-image_black+image_frozen.jpg",
            f"{NOW - 1000}-periodic-320x180.jpg",
        ]
        latest = store.latest("cam-1")
        assert latest is not None
        assert latest.ts == NOW - 1000
        assert await store.read(latest) == bytes([(NOW - 1000) % 251]) * 100
        total, items = store.history("cam-1", 10)
        assert (total, [s.ts for s in items]) == (2, [NOW - 1000, NOW - 2000])
        assert [s.ts for s in store.history("cam-1", 10, before_ts=NOW - 1000)[1]] == [NOW - 2000]
        assert store.get("cam-1", NOW - 2000) == snap("cam-1", NOW - 2000, problems=("image_black", "image_frozen"))
        assert store.get("cam-1", NOW) is None
        assert store.total_bytes == 200
    assert seen == [("site-a", "gw-1", NOW - 2000), ("site-a", "gw-1", NOW - 1000)]
    assert not [p for p in (tmp_path / "cam-1").iterdir() if p.name.startswith(".")]


async def test_a_restart_rebuilds_the_index_from_the_names(tmp_path: Path) -> None:
    many = tuple(f"problem_{i:02d}_with_a_long_name_to_fill_the_file_name" for i in range(6))
    assert len("+".join(many)) > MAX_PROBLEMS_CHARS
    async with SnapshotStore(tmp_path) as store:
        await put_all(store, snap("cam-1", NOW - 1, problems=("image_covered",)), snap("cam-2", NOW, problems=many))
    (tmp_path / "cam-1" / ".tmp-0123-left-by-a-crash.jpg").write_bytes(b"half")
    (tmp_path / "cam-1" / "notes.txt").write_text("not ours")
    async with SnapshotStore(tmp_path) as store:
        assert store.devices() == ["cam-1", "cam-2"]
        assert store.latest("cam-1") == snap("cam-1", NOW - 1, problems=("image_covered",))
        assert store.latest("cam-2") == snap("cam-2", NOW, problems=None)  # too many to name: unknown
        assert store.total_bytes == 200
    assert sorted(p.name for p in (tmp_path / "cam-1").iterdir()) == [
        f"{NOW - 1}-periodic-320x180-image_covered.jpg",
        "notes.txt",
    ]


async def test_the_same_time_again_replaces_the_file(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path) as store:
        await put_all(store, snap("cam-1", NOW, 100), snap("cam-1", NOW, 300, problems=("image_black",)))
        assert names(tmp_path, "cam-1") == [f"{NOW}-periodic-320x180-image_black.jpg"]
        assert store.total_bytes == 300
        assert store.counters.replaced == 1


async def test_retention_by_age(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path, RetentionPolicy(max_age_days=1)) as store:
        await put_all(store, snap("cam-1", NOW - 2 * DAY), snap("cam-1", NOW - DAY - 1), snap("cam-1", NOW - DAY))
        await put_all(store, snap("cam-2", NOW - 3 * DAY))
        assert await store.enforce(NOW) == 3
        assert [s.ts for s in store.history("cam-1", 10)[1]] == [NOW - DAY]
        assert names(tmp_path, "cam-1") == [f"{NOW - DAY}-periodic-320x180.jpg"]
        assert not (tmp_path / "cam-2").exists()  # its folder went with its last snapshot
        assert store.devices() == ["cam-1"]
        assert (store.total_bytes, store.counters.removed_age) == (100, 3)
        assert await store.enforce(NOW) == 0


async def test_retention_by_bytes_takes_the_oldest_of_all_cameras_first(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path, RetentionPolicy(max_total_bytes=1024**2)) as store:
        # 40 snapshots of 64 KiB = 2.5 MiB over 4 cameras, interleaved in time.
        for i in range(40):
            await put_all(store, snap(f"cam-{i % 4}", NOW - (40 - i) * 1000, 64 * 1024))
        assert store.total_bytes == 40 * 64 * 1024
        removed = await store.enforce(NOW)
        assert removed == 24  # 16 x 64 KiB = 1 MiB kept
        assert store.total_bytes == 1024**2
        kept = sorted(s.ts for d in store.devices() for s in store.history(d, 100)[1])
        assert kept == [NOW - (40 - i) * 1000 for i in range(24, 40)]  # the newest 16, whichever camera
        on_disk = sum(len(names(tmp_path, f"cam-{c}")) for c in range(4))
        assert on_disk == 16
        assert store.counters.removed_bytes == 24


async def test_each_camera_is_bounded_in_files_at_every_write(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path, RetentionPolicy(max_per_device=3)) as store:
        await put_all(store, *(snap("cam-1", NOW - (10 - i) * 1000) for i in range(10)))
        await put_all(store, snap("cam-2", NOW))
        assert [s.ts for s in store.history("cam-1", 10)[1]] == [NOW - 1000, NOW - 2000, NOW - 3000]
        assert len(names(tmp_path, "cam-1")) == 3
        assert store.counters.removed_device_bound == 7
        assert store.history("cam-2", 10)[0] == 1


async def test_a_full_queue_drops_counts_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with SnapshotStore(tmp_path, queue_size=2) as store:
        # Four put in one go, before the writer task runs: the third and fourth find the queue full.
        results = [store.put("site-a", "gw-1", snap("cam-1", NOW - i), b"\xff\xd8\xff\xd9") for i in range(4)]
        assert results == [True, True, False, False]
        await store._queue.join()
        assert store.counters.dropped_queue_full == 2
        assert store.history("cam-1", 10)[0] == 2
        assert store.put("site-a", "gw-1", snap("cam-1", NOW - 10), b"\xff\xd8\xff\xd9")
        await store._queue.join()
    logged = [r.getMessage() for r in caplog.records if r.name == "hub.snapshots.store"]
    assert [m for m in logged if "queue" in m] == [
        "snapshots: the write queue is full (2): dropping snapshots until it has room (counted)",
        "snapshots: the write queue has room again (2 dropped)",
    ]


async def test_a_write_that_fails_is_counted_and_not_indexed(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path) as store:
        (tmp_path / "cam-1").write_text("a file where the camera's folder should be")
        await put_all(store, snap("cam-1", NOW))
        assert store.counters.write_errors == 1
        assert store.latest("cam-1") is None
        await put_all(store, snap("cam-2", NOW))
        assert store.latest("cam-2") is not None


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_history_is_bounded_newest_first(tmp_path: Path, limit: int) -> None:
    async with SnapshotStore(tmp_path) as store:
        await put_all(store, *(snap("cam-1", NOW - i * 1000) for i in range(4)))
        total, items = store.history("cam-1", limit)
        assert total == 4
        assert [s.ts for s in items] == [NOW - i * 1000 for i in range(min(limit, 4))]
