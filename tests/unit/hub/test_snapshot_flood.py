"""A captured gateway floods at the hub's default snapshot rate for a simulated half day, beside two honest
gateways whose cameras send a picture every 15 minutes, through the real intake (default ``SnapshotRules``, the
admission's own checks) into the real store in a temporary folder, retention checked every 5 simulated minutes.
The bounds are the defaults scaled down (4 KiB pictures, 256 KiB a camera, 2 MiB in all) so the flood passes both
within the test: the honest cameras keep every picture, the total is back within its bound at every check, the
flooding gateway's cameras share what is left, each keeping its newest, and a restart finds the same figures."""

from __future__ import annotations

from pathlib import Path

from clock_support import Clock

from hub.ingest.admission import Admission, RefusalReason
from hub.snapshots.intake import SnapshotIntake, SnapshotRules
from hub.snapshots.store import RetentionPolicy, SnapshotStore
from wire.v1 import DeviceInfo, Snapshot, SnapshotTrigger, State

START_S = 1_800_000_000.0
KIB = 1024
SIZE = 4 * KIB
SOF = b"\xff\xc0\x00\x0b\x08\x00\xb4\x01\x40\x01\x01\x11\x00"  # 320 x 180
SOS = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
HEAD = b"\xff\xd8" + SOF + SOS
#: A JPEG of exactly SIZE bytes: its scan data padded (no FF in it, so no marker).
JPEG = HEAD + b"\x12" * (SIZE - len(HEAD) - 2) + b"\xff\xd9"
POLICY = RetentionPolicy(max_total_bytes=2 * 1024 * KIB, max_bytes_per_device=256 * KIB)
MINUTES = 12 * 60
HONEST = {("site-a", "gw-1"): ["cam-a1", "cam-a2", "cam-a3"], ("site-b", "gw-2"): ["cam-b1", "cam-b2"]}
FLOOD = ("site-x", "gw-9")
FLOODING = [f"cam-x{i}" for i in range(6)]
#: What the flooding box tries each minute per camera: the old default rate.
TRIES_PER_MINUTE = 6


def snapshot(session: str, device: str, ts_ms: int) -> Snapshot:
    return Snapshot(session=session, device=device, ts=ts_ms, jpeg=JPEG, trigger=SnapshotTrigger.PERIODIC)


def bytes_on_disk(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*/*.jpg"))


async def test_a_flooding_gateway_evicts_only_its_own_pictures(tmp_path: Path) -> None:
    clock = Clock(START_S)
    admission = Admission(clock=clock)
    for (site, gateway), cameras in [*HONEST.items(), (FLOOD, FLOODING)]:
        devices = [DeviceInfo(cam, "camera", "camera-onvif-generic", 60.0) for cam in cameras]
        admission.state(site, gateway, State(online=True, session=f"s-{gateway}", devices=devices))
    rules = SnapshotRules()
    assert (rules.burst, rules.max_per_minute) == (10, 1.0)  # the defaults under test
    sent: dict[str, list[int]] = {}
    refused = 0
    async with SnapshotStore(tmp_path, POLICY) as store:
        intake = SnapshotIntake(admission, store, rules, clock)
        for minute in range(MINUTES):
            clock.now = START_S + minute * 60
            for second in range(TRIES_PER_MINUTE):
                ts = int(clock.now * 1000) + second * 10_000
                for cam in FLOODING:
                    refusals = intake.take(*FLOOD, snapshot("s-gw-9", cam, ts))
                    if refusals:
                        assert [r.reason for r in refusals] == [RefusalReason.SNAPSHOT_RATE]
                        refused += 1
                    else:
                        sent.setdefault(cam, []).append(ts)
            if minute % 15 == 0:  # an honest agent at its default snapshots.interval_s, 900 s
                for (site, gateway), cameras in HONEST.items():
                    for cam in cameras:
                        assert intake.take(site, gateway, snapshot(f"s-{gateway}", cam, int(clock.now * 1000))) == []
                        sent.setdefault(cam, []).append(int(clock.now * 1000))
            await store._queue.join()
            assert store.counters.dropped_queue_full == 0
            if minute % 5 == 4:
                await store.enforce(int(clock.now * 1000))
                assert store.total_bytes <= POLICY.max_total_bytes
        await store.enforce(int(clock.now * 1000))

        # The bucket: 10 at once, then one a minute; everything else refused as snapshot_rate.
        assert [len(sent[cam]) for cam in FLOODING] == [rules.burst + MINUTES - 1] * len(FLOODING)
        assert refused == len(FLOODING) * (MINUTES * TRIES_PER_MINUTE - (rules.burst + MINUTES - 1))
        # Every honest picture is kept.
        for cameras in HONEST.values():
            for cam in cameras:
                assert [s.ts for s in store.history(cam, 1000)[1][::-1]] == sent[cam], cam
                assert len(sent[cam]) == MINUTES // 15
        honest_bytes = sum(len(sent[cam]) * SIZE for cameras in HONEST.values() for cam in cameras)
        # The total is at its bound: the flooding gateway holds exactly what the honest ones leave.
        figures = store.gateway_bytes()
        assert figures == {
            "site-a/gw-1": 3 * 48 * SIZE,
            "site-b/gw-2": 2 * 48 * SIZE,
            "site-x/gw-9": POLICY.max_total_bytes - honest_bytes,
        }
        # Shared between its cameras (1088 KiB in 4 KiB pictures: 272 over six), each keeping its newest.
        kept = {cam: [s.ts for s in store.history(cam, 1000)[1][::-1]] for cam in FLOODING}
        assert sorted(len(ts) for ts in kept.values()) == [45, 45, 45, 45, 46, 46]
        for cam in FLOODING:
            assert kept[cam] == sent[cam][-len(kept[cam]) :], cam
        # Both bounds worked: each camera's bytes at the writes, the total at the checks.
        assert store.counters.removed_device_bound > 0
        assert store.counters.removed_bytes > 0
        assert store.counters.removed_age == 0
        before = (figures, {cam: store.device_bytes(cam) for cam in store.devices()}, store.total_files)
    # The folder holds exactly that, and a restart rebuilds the same figures.
    assert bytes_on_disk(tmp_path) == POLICY.max_total_bytes
    async with SnapshotStore(tmp_path, POLICY) as store:
        assert (store.gateway_bytes(), {c: store.device_bytes(c) for c in store.devices()}, store.total_files) == before
