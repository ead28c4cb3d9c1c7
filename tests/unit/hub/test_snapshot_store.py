"""The snapshot folder (hub/snapshots/store.py): atomic files named by time, each camera's folder naming its
gateway, the index and every camera's and gateway's bytes rebuilt from the folder, retention by age, by total bytes
(the oldest of the camera holding the most within the gateway holding the most first) and per camera in files and
bytes, in a real temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.snapshots.store import GATEWAY_FILE, MAX_PROBLEMS_CHARS, RetentionPolicy, SnapshotStore, StoredSnapshot

NOW = 1_800_000_000_000  # ms; the store is given its "now", it never reads the clock in these tests
DAY = 86_400_000


def snap(device: str, ts: int, size: int = 100, problems: tuple[str, ...] | None = ()) -> StoredSnapshot:
    return StoredSnapshot(device, ts, "periodic", 320, 180, size, problems)


async def put_all(store: SnapshotStore, *snaps: StoredSnapshot, site: str = "site-a", gateway: str = "gw-1") -> None:
    for s in snaps:
        assert store.put(site, gateway, s, bytes([s.ts % 251]) * s.size)
    await store._queue.join()


def names(folder: Path, device: str) -> list[str]:
    """The snapshot files of a camera's folder (its ``.gateway`` left out)."""
    path = folder / device
    return sorted(p.name for p in path.iterdir() if p.name != GATEWAY_FILE) if path.exists() else []


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
    # No temporary file is left; the folder says whose camera it is.
    assert [p.name for p in (tmp_path / "cam-1").iterdir() if p.name.startswith(".")] == [GATEWAY_FILE]
    assert (tmp_path / "cam-1" / GATEWAY_FILE).read_text() == "site-a/gw-1\n"


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
        GATEWAY_FILE,
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
        assert not (tmp_path / "cam-2").exists()  # its folder went with its last snapshot, and its .gateway
        assert store.devices() == ["cam-1"]
        assert (store.total_bytes, store.counters.removed_age) == (100, 3)
        assert await store.enforce(NOW) == 0


async def test_retention_by_bytes_among_equal_cameras_keeps_the_newest(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path, RetentionPolicy(max_total_bytes=1024**2)) as store:
        # 40 snapshots of 64 KiB = 2.5 MiB over 4 cameras, interleaved in time.
        for i in range(40):
            await put_all(store, snap(f"cam-{i % 4}", NOW - (40 - i) * 1000, 64 * 1024))
        assert store.total_bytes == 40 * 64 * 1024
        removed = await store.enforce(NOW)
        assert removed == 24  # 16 x 64 KiB = 1 MiB kept
        assert store.total_bytes == 1024**2
        kept = sorted(s.ts for d in store.devices() for s in store.history(d, 100)[1])
        # Equal cameras of one gateway: the oldest picture of the cameras holding the most goes first, so the
        # newest 16 stay, four of each camera.
        assert kept == [NOW - (40 - i) * 1000 for i in range(24, 40)]
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


async def test_retention_by_bytes_takes_from_the_gateway_then_the_camera_holding_the_most(tmp_path: Path) -> None:
    kib = 1024
    async with SnapshotStore(tmp_path, RetentionPolicy(max_total_bytes=40 * kib)) as store:
        # gw-1: cam-1 holds 20 KiB in 10 pictures, cam-2 6 KiB in 2; gw-2: cam-3 holds 18 KiB in 3 (the largest
        # camera, the oldest pictures). 44 KiB over 40: gw-1 (26 KiB) loses first, from cam-1 (its largest).
        await put_all(store, *(snap("cam-1", NOW - (10 - i) * 1000, 2 * kib) for i in range(10)))
        await put_all(store, *(snap("cam-2", NOW - (10 - i) * 1000, 3 * kib) for i in range(2)))
        await put_all(store, *(snap("cam-3", NOW - DAY + i, 6 * kib) for i in range(3)), gateway="gw-2")
        assert store.gateway_bytes() == {"site-a/gw-1": 26 * kib, "site-a/gw-2": 18 * kib}
        assert await store.enforce(NOW) == 2
        assert [s.ts for s in store.history("cam-1", 10)[1]] == [NOW - i * 1000 for i in range(1, 9)]
        assert (store.history("cam-2", 10)[0], store.history("cam-3", 10)[0]) == (2, 3)
        assert store.gateway_bytes() == {"site-a/gw-1": 22 * kib, "site-a/gw-2": 18 * kib}
        # 12 KiB more at gw-1's cam-2: 52 over 40. gw-1 (34 KiB) gives 12 KiB, each time from its camera holding
        # the most: cam-2 (18 KiB), cam-1 (16), cam-2 (15), cam-1 (14), then at 12 each the older picture, cam-1's.
        await put_all(store, *(snap("cam-2", NOW - 500 + i, 3 * kib) for i in range(4)))
        assert store.gateway_bytes() == {"site-a/gw-1": 34 * kib, "site-a/gw-2": 18 * kib}
        assert await store.enforce(NOW) == 5
        assert store.total_bytes == 40 * kib
        assert store.gateway_bytes() == {"site-a/gw-1": 22 * kib, "site-a/gw-2": 18 * kib}
        assert (store.device_bytes("cam-1"), store.device_bytes("cam-2")) == (10 * kib, 12 * kib)
        assert store.history("cam-3", 10)[0] == 3  # the other gateway kept all its pictures, its oldest too
        assert names(tmp_path, "cam-3") == [f"{NOW - DAY + i}-periodic-320x180.jpg" for i in range(3)]
        assert store.counters.removed_bytes == 7


async def test_each_camera_is_bounded_in_bytes_at_every_write_and_retention(tmp_path: Path) -> None:
    policy = RetentionPolicy(max_bytes_per_device=1000)
    async with SnapshotStore(tmp_path, policy) as store:
        await put_all(store, *(snap("cam-1", NOW - (10 - i) * 1000, 300) for i in range(10)))
        # 3 x 300 = 900 fit in 1000, a fourth would not: the oldest went at each write.
        assert [s.ts for s in store.history("cam-1", 10)[1]] == [NOW - 1000, NOW - 2000, NOW - 3000]
        assert names(tmp_path, "cam-1") == [f"{NOW - i * 1000}-periodic-320x180.jpg" for i in (3, 2, 1)]
        assert (store.device_bytes("cam-1"), store.counters.removed_device_bound) == (900, 7)
        # One picture larger than the bound stays alone: a camera always keeps its newest.
        await put_all(store, snap("cam-1", NOW, 1200))
        assert [s.ts for s in store.history("cam-1", 10)[1]] == [NOW]
        assert store.counters.removed_device_bound == 10
    # A lower bound after a restart is applied by the next retention check, without waiting for a write.
    async with SnapshotStore(tmp_path, policy) as store:
        await put_all(store, *(snap("cam-2", NOW - (3 - i) * 1000, 300) for i in range(3)))
    async with SnapshotStore(tmp_path, RetentionPolicy(max_bytes_per_device=600)) as store:
        assert store.device_bytes("cam-2") == 900
        assert await store.enforce(NOW) == 1  # cam-2's oldest; cam-1's one picture stays
        assert (store.device_bytes("cam-1"), store.device_bytes("cam-2")) == (1200, 600)
        assert [s.ts for s in store.history("cam-2", 10)[1]] == [NOW - 1000, NOW - 2000]
        assert store.counters.removed_device_bound == 1


async def test_a_restart_rebuilds_every_cameras_and_gateways_bytes(tmp_path: Path) -> None:
    async with SnapshotStore(tmp_path) as store:
        await put_all(store, snap("cam-1", NOW - 2000, 100), snap("cam-1", NOW - 1000, 200))
        await put_all(store, snap("cam-2", NOW - 1000, 300), site="site-b", gateway="gw-2")
        await put_all(store, snap("cam-3", NOW - 1000, 400), site="site-b", gateway="gw-2")
        # A camera moved by a technician: its next picture comes from its new gateway, which takes its bytes.
        await put_all(store, snap("cam-3", NOW, 50), site="site-a", gateway="gw-1")
        before = (store.gateway_bytes(), [store.device_bytes(d) for d in store.devices()], store.total_bytes)
        assert before == ({"site-a/gw-1": 750, "site-b/gw-2": 300}, [300, 300, 450], 1050)
    assert (tmp_path / "cam-3" / GATEWAY_FILE).read_text() == "site-a/gw-1\n"
    async with SnapshotStore(tmp_path) as store:
        assert (store.gateway_bytes(), [store.device_bytes(d) for d in store.devices()], store.total_bytes) == before
    # A folder that does not say whose it is (written before .gateway, or a .gateway that names no gateway)
    # counts as a gateway of its own until its next picture.
    (tmp_path / "cam-2" / GATEWAY_FILE).unlink()
    (tmp_path / "cam-3" / GATEWAY_FILE).write_text("../../etc/passwd\n")
    async with SnapshotStore(tmp_path) as store:
        assert store.gateway_bytes() == {"site-a/gw-1": 300, "?cam-2": 300, "?cam-3": 450}
        await put_all(store, snap("cam-2", NOW, 10), site="site-b", gateway="gw-2")
        assert store.gateway_bytes() == {"site-a/gw-1": 300, "site-b/gw-2": 310, "?cam-3": 450}
    assert (tmp_path / "cam-2" / GATEWAY_FILE).read_text() == "site-b/gw-2\n"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 50)), min_size=1, max_size=60),
    st.integers(1, 1500),
)
def test_over_the_total_the_gateway_holding_the_most_loses_first(
    pictures: list[tuple[int, int, int]], bound: int
) -> None:
    # The index alone (no folder, no writer): what retention takes out is decided there, before any disk work.
    store = SnapshotStore(Path("/nonexistent"), RetentionPolicy(max_total_bytes=bound))
    for i, (gateway, camera, size) in enumerate(pictures):
        store._index(snap(f"cam-{gateway}-{camera}", NOW - 10_000 + i, size), f"site-a/gw-{gateway}")
    before = store.gateway_bytes()
    newest_first = {d: [s.ts for s in store.history(d, 100)[1]] for d in store.devices()}
    gone = store.expired(NOW)
    after = store.gateway_bytes()
    assert store.total_bytes <= bound
    assert not gone or store.total_bytes + gone[-1].size > bound  # no more than needed
    # A gateway holding no more than an even share of the total keeps everything.
    for key, held in before.items():
        if held <= bound / len(before):
            assert after.get(key) == held
    # A gateway that lost was the largest when it lost its last picture.
    last_lost = {f"site-a/gw-{s.device.split('-')[1]}": s.size for s in gone}
    for key, lost in last_lost.items():
        assert all(after.get(key, 0) + lost >= other for other in after.values())
    # Each camera keeps its newest.
    for device, ts in newest_first.items():
        kept = [s.ts for s in store.history(device, 100)[1]]
        assert kept == ts[: len(kept)]
