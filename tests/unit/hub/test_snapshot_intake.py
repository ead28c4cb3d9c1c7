"""What a gateway may send as a snapshot (hub/snapshots/intake.py), with the real admission and store: each
refusal by its reason, counted with admission's; the rate per camera as a token bucket on a test clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clock_support import Clock

from hub.ingest.admission import Admission, RefusalReason
from hub.snapshots.intake import SnapshotIntake, SnapshotRules
from hub.snapshots.store import SnapshotStore
from wire.v1 import DeviceInfo, Snapshot, SnapshotTrigger, State

NOW_S = 1_800_000_000.0
SESSION = "session-1"
SOF = b"\xff\xc0\x00\x0b\x08\x00\xb4\x01\x40\x01\x01\x11\x00"  # 320 x 180
SOS = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
JPEG = b"\xff\xd8" + SOF + SOS + b"\x12\x34" + b"\xff\xd9"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[SnapshotIntake, Clock]]:
    clock = Clock(NOW_S)
    admission = Admission(clock=clock)
    admission.set_owners({"cam-9": ("site-b", "gw-2")})
    devices = [
        DeviceInfo("cam-1", "camera", "p", 60.0),
        DeviceInfo("aq-1", "air_quality", "p", 60.0),
    ]
    admission.state("site-a", "gw-1", State(online=True, session=SESSION, devices=devices))
    async with SnapshotStore(tmp_path) as store:
        yield SnapshotIntake(admission, store, SnapshotRules(burst=2, max_per_minute=6), clock), clock


def snapshot(device: str = "cam-1", ts_ms: int | None = None, data: bytes = JPEG) -> Snapshot:
    return Snapshot(
        session=SESSION,
        device=device,
        ts=int(NOW_S * 1000) if ts_ms is None else ts_ms,
        jpeg=data,
        trigger=SnapshotTrigger.PROBLEM,
    )


@pytest.mark.parametrize(
    ("site", "gateway", "snap", "reason", "detail"),
    [
        ("site-a", "gw-1", snapshot("cam-9"), RefusalReason.FOREIGN_DEVICE, "device 'cam-9' belongs to site-b/gw-2"),
        ("site-a", "gw-1", snapshot("cam-7"), RefusalReason.UNANNOUNCED_DEVICE, "'cam-7' is not in the gateway's"),
        ("site-a", "gw-3", snapshot("cam-1"), RefusalReason.FOREIGN_DEVICE, "'cam-1' belongs to site-a/gw-1"),
        ("site-a", "gw-3", snapshot("cam-5"), RefusalReason.UNANNOUNCED_DEVICE, "'cam-5' is not in the gateway's"),
        ("site-a", "gw-1", snapshot("gw-1"), RefusalReason.UNANNOUNCED_DEVICE, "'gw-1' is not in the gateway's"),
        ("site-a", "gw-1", snapshot("aq-1"), RefusalReason.NOT_A_CAMERA, "announced as 'air_quality', not a camera"),
        ("site-a", "gw-1", snapshot(ts_ms=int(NOW_S * 1000) + 301_000), RefusalReason.CLOCK_SKEW, "is 2 s beyond"),
        ("site-a", "gw-1", snapshot(ts_ms=int(NOW_S * 1000) - 31 * 86_400_000), RefusalReason.CLOCK_SKEW, "older"),
        ("site-a", "gw-1", snapshot(data=b"\x89PNG\r\n\x1a\n"), RefusalReason.BAD_IMAGE, "8 bytes: does not start"),
        ("site-a", "gw-1", snapshot(data=JPEG[:-2]), RefusalReason.BAD_IMAGE, "does not end with the JPEG EOI"),
    ],
)
async def test_refused_with_its_reason_and_counted(
    setup: tuple[SnapshotIntake, Clock], site: str, gateway: str, snap: Snapshot, reason: RefusalReason, detail: str
) -> None:
    intake, _ = setup
    [refusal] = intake.take(site, gateway, snap)
    assert (refusal.site, refusal.gateway, refusal.reason, refusal.device) == (site, gateway, reason, snap.device)
    assert detail in refusal.detail
    assert intake.admission.refusals_by_gateway() == {f"{site}/{gateway}": {reason.value: 1}}
    await intake.store._queue.join()
    assert intake.store.devices() == []


async def test_a_good_snapshot_is_stored_with_its_sorted_problems_and_the_jpegs_own_size(
    setup: tuple[SnapshotIntake, Clock],
) -> None:
    intake, _ = setup
    snap = Snapshot(
        session=SESSION,
        device="cam-1",
        ts=int(NOW_S * 1000),
        jpeg=JPEG,
        trigger=SnapshotTrigger.PROBLEM,
        problems=["image_frozen", "image_black", "image_frozen"],
        width=1920,  # the agent's word; the hub reads the JPEG's own
        height=1080,
    )
    assert intake.take("site-a", "gw-1", snap) == []
    await intake.store._queue.join()
    stored = intake.store.latest("cam-1")
    assert stored is not None
    assert (stored.ts, stored.trigger, stored.width, stored.height, stored.size) == (
        snap.ts,
        "problem",
        320,
        180,
        len(JPEG),
    )
    assert stored.problems == ("image_black", "image_frozen")
    assert await intake.store.read(stored) == JPEG


async def test_the_rate_is_a_bucket_per_camera_and_refusals_take_no_token(setup: tuple[SnapshotIntake, Clock]) -> None:
    intake, clock = setup
    take = intake.take
    assert take("site-a", "gw-1", snapshot(data=b"junk")) != []  # refused before the rate: no token taken
    assert take("site-a", "gw-1", snapshot(ts_ms=int(NOW_S * 1000) - 2)) == []
    assert take("site-a", "gw-1", snapshot(ts_ms=int(NOW_S * 1000) - 1)) == []
    [refusal] = take("site-a", "gw-1", snapshot())
    assert refusal.reason is RefusalReason.SNAPSHOT_RATE
    assert (
        refusal.detail == "more than 2 snapshots at once, then 6 a minute (snapshots.burst, snapshots.max_per_minute)"
    )
    clock.now += 9.9  # 6 a minute: one token every 10 s
    assert take("site-a", "gw-1", snapshot())[0].reason is RefusalReason.SNAPSHOT_RATE
    clock.now += 0.2
    assert take("site-a", "gw-1", snapshot()) == []
    assert intake.admission.refusals_by_gateway()["site-a/gw-1"] == {"bad_image": 1, "snapshot_rate": 2}


async def test_before_a_birth_a_camera_the_registry_gives_the_gateway_is_judged_by_its_recorded_kind(
    tmp_path: Path,
) -> None:
    """After a hub restart the broker hands over what the hub's session queued (snapshots among it) before the
    retained births: a camera the registry gives that gateway is taken by the kind it recorded, as its data is."""
    clock = Clock(NOW_S)
    admission = Admission(clock=clock)
    admission.set_owners({"cam-1": ("site-a", "gw-1"), "aq-1": ("site-a", "gw-1"), "cam-9": ("site-b", "gw-2")})
    recorded = {"cam-1": "camera", "aq-1": "air_quality", "cam-9": "camera", "cam-2": "camera"}
    async with SnapshotStore(tmp_path) as store:
        intake = SnapshotIntake(admission, store, clock=clock, registry_kind=recorded.get)
        assert not admission.birth_seen("site-a", "gw-1")
        assert intake.take("site-a", "gw-1", snapshot("cam-1")) == []
        refused = [
            intake.take("site-a", "gw-1", snapshot("aq-1")),  # the registry's own kind: not a camera
            intake.take("site-a", "gw-1", snapshot("cam-9")),  # another gateway's camera
            intake.take("site-a", "gw-1", snapshot("cam-2")),  # a camera the registry gives no one
        ]
        assert [(r.reason, r.detail) for [r] in refused] == [
            (RefusalReason.NOT_A_CAMERA, "device 'aq-1' was recorded as 'air_quality', not a camera kind"),
            (RefusalReason.FOREIGN_DEVICE, "device 'cam-9' belongs to site-b/gw-2"),
            (
                RefusalReason.UNANNOUNCED_DEVICE,
                "device 'cam-2' is not in the gateway's current birth (none seen yet) nor its registry's",
            ),
        ]
        # Once a birth is seen, it alone says what the gateway runs: a camera it leaves out is refused.
        devices = [DeviceInfo("aq-1", "air_quality", "p", 60.0)]
        admission.state("site-a", "gw-1", State(online=True, session=SESSION, devices=devices))
        assert admission.birth_seen("site-a", "gw-1")
        [refusal] = intake.take("site-a", "gw-1", snapshot("cam-1", ts_ms=int(NOW_S * 1000) + 1))
        assert (refusal.reason, refusal.detail) == (
            RefusalReason.UNANNOUNCED_DEVICE,
            "device 'cam-1' is not in the gateway's current birth",
        )
        await store._queue.join()
        assert [s.ts for s in store.history("cam-1", 10)[1]] == [int(NOW_S * 1000)]
