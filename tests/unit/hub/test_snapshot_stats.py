"""The camera snapshot store's figures in the hub's stats: what it keeps (files, bytes, cameras) follows the folder
through writes, replacements, every retention bound and a restart; its counters and gauges reach ``/metrics``
as ``ioc_hub_snapshots_*``, and a hub without a store has none of those metrics."""

from __future__ import annotations

from pathlib import Path

from test_hub_metrics import snapshot as hub_stats

from hub.metrics import render_prometheus
from hub.snapshots.store import GATEWAY_FILE, RetentionPolicy, SnapshotStore, StoredSnapshot
from hub.stats import SnapshotStats

NOW = 1_800_000_000_000  # ms; the store is given its "now", it never reads the clock in these tests
DAY = 86_400_000


def snap(device: str, ts: int, size: int) -> StoredSnapshot:
    return StoredSnapshot(device, ts, "periodic", 320, 180, size, ())


async def put_all(store: SnapshotStore, *snaps: StoredSnapshot) -> None:
    for s in snaps:
        assert store.put("site-a", "gw-1", s, b"\xff" * s.size)
    await store._queue.join()


def on_disk(folder: Path) -> tuple[int, int, int]:
    """(files, bytes, cameras) as the folder holds them (each camera's ``.gateway`` is no snapshot)."""
    files = [f for d in folder.iterdir() if d.is_dir() for f in d.iterdir() if f.name != GATEWAY_FILE]
    cameras = {f.parent.name for f in files}
    return len(files), sum(f.stat().st_size for f in files), len(cameras)


def kept(store: SnapshotStore) -> tuple[int, int, int]:
    return store.total_files, store.total_bytes, store.cameras


async def test_what_the_store_keeps_follows_the_folder_through_every_change(tmp_path: Path) -> None:
    policy = RetentionPolicy(max_age_days=1, max_total_bytes=600, max_per_device=3)
    async with SnapshotStore(tmp_path, policy) as store:
        assert kept(store) == (0, 0, 0)
        await put_all(store, snap("cam-1", NOW - 2 * DAY, 100), snap("cam-1", NOW - 1000, 200))
        await put_all(store, snap("cam-2", NOW - 900, 300))
        assert kept(store) == on_disk(tmp_path) == (3, 600, 2)
        # The same camera and time again: one file, its new size.
        await put_all(store, snap("cam-2", NOW - 900, 350))
        assert kept(store) == on_disk(tmp_path) == (3, 650, 2)
        # A fourth of cam-1 passes max_per_device 3: its oldest goes at the write.
        await put_all(store, snap("cam-1", NOW - 500, 10), snap("cam-1", NOW - 400, 10))
        assert kept(store) == on_disk(tmp_path) == (4, 570, 2)
        # Age: nothing is a day old (cam-1's oldest went at the write). Bytes: 570 + 100 passes 600, so the oldest
        # picture of the camera holding the most goes (cam-2's one, 350 bytes; cam-1 holds 220) and the rest is under.
        await put_all(store, snap("cam-3", NOW - 100, 100))
        assert await store.enforce(NOW) == 1
        assert kept(store) == on_disk(tmp_path) == (4, 320, 2)
        assert store.queued == 0
        counters = store.counters
        assert (counters.stored, counters.stored_bytes, counters.replaced) == (7, 1070, 1)
        assert (counters.removed_age, counters.removed_bytes, counters.removed_device_bound) == (0, 1, 1)
        # A day later only cam-3's is younger than a day: cam-1's three go.
        assert await store.enforce(NOW + DAY - 200) == 3
        assert kept(store) == on_disk(tmp_path) == (1, 100, 1)
        assert store.counters.removed_age == 3
    async with SnapshotStore(tmp_path, policy) as store:  # a restart counts the folder again
        assert kept(store) == on_disk(tmp_path) == (1, 100, 1)
        assert store.counters.stored == 0


def test_metrics_carry_the_snapshot_store_and_a_hub_without_one_has_none() -> None:
    figures = SnapshotStats(
        files=4,
        bytes=820,
        cameras=3,
        queued=2,
        stored=7,
        stored_bytes=1420,
        replaced=1,
        dropped_queue_full=5,
        write_errors=6,
        removed_age=8,
        removed_total_bytes=9,
        removed_camera_bound=10,
    )
    without = render_prometheus(hub_stats(100, 1000))
    text = render_prometheus(hub_stats(100, 1000).model_copy(update={"snapshots": figures}))
    assert "snapshots" not in without
    # Every metric of the hub without a store is there unchanged; the store's come on top.
    added = [line for line in text.splitlines() if line not in without.splitlines()]
    assert added == [
        "# HELP ioc_hub_snapshots_stored_total Camera snapshots written to disk",
        "# TYPE ioc_hub_snapshots_stored_total counter",
        "ioc_hub_snapshots_stored_total 7",
        "# HELP ioc_hub_snapshots_stored_bytes_total Bytes of the camera snapshots written to disk",
        "# TYPE ioc_hub_snapshots_stored_bytes_total counter",
        "ioc_hub_snapshots_stored_bytes_total 1420",
        "# HELP ioc_hub_snapshots_replaced_total Camera snapshots written over a kept one of the same camera and time",
        "# TYPE ioc_hub_snapshots_replaced_total counter",
        "ioc_hub_snapshots_replaced_total 1",
        "# HELP ioc_hub_snapshots_dropped_total Admitted camera snapshots dropped because the write queue was full",
        "# TYPE ioc_hub_snapshots_dropped_total counter",
        "ioc_hub_snapshots_dropped_total 5",
        "# HELP ioc_hub_snapshots_write_errors_total Camera snapshots the disk refused to take",
        "# TYPE ioc_hub_snapshots_write_errors_total counter",
        "ioc_hub_snapshots_write_errors_total 6",
        "# HELP ioc_hub_snapshots_removed_total Camera snapshots removed, by the retention bound that removed them",
        "# TYPE ioc_hub_snapshots_removed_total counter",
        'ioc_hub_snapshots_removed_total{reason="age"} 8',
        'ioc_hub_snapshots_removed_total{reason="total_bytes"} 9',
        'ioc_hub_snapshots_removed_total{reason="camera_bound"} 10',
        "# HELP ioc_hub_snapshots_files Camera snapshots kept on disk",
        "# TYPE ioc_hub_snapshots_files gauge",
        "ioc_hub_snapshots_files 4",
        "# HELP ioc_hub_snapshots_bytes Bytes of the camera snapshots kept on disk",
        "# TYPE ioc_hub_snapshots_bytes gauge",
        "ioc_hub_snapshots_bytes 820",
        "# HELP ioc_hub_snapshots_cameras Cameras with a snapshot kept",
        "# TYPE ioc_hub_snapshots_cameras gauge",
        "ioc_hub_snapshots_cameras 3",
        "# HELP ioc_hub_snapshots_queued Camera snapshots admitted and waiting to be written",
        "# TYPE ioc_hub_snapshots_queued gauge",
        "ioc_hub_snapshots_queued 2",
    ]
    assert len(text.splitlines()) == len(without.splitlines()) + len(added)
