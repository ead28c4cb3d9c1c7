"""Which camera frames leave the gateway as snapshots, their bounds, and the latest-per-camera box.

Table-driven: a frame (its time, the problems its check raised and cleared, those raised after it) and the
camera's last snapshot give one trigger or none; a frame outside the contract's bounds is refused and counted.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from devices.driver import Frame
from edge.config import SnapshotConfig
from edge.snapshots import PendingSnapshot, SnapshotBox, refusal, trigger_of
from edge.stats import EdgeStats
from wire.v1 import MAX_SNAPSHOT_BYTES, Channel, Snapshot, SnapshotTrigger, decode_for, encode

T0 = 1_800_000_000_000
JPEG = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"
MINUTE = 60_000


def frame(
    ts_ms: int = T0,
    *,
    jpeg: bytes = JPEG,
    problems: tuple[str, ...] = (),
    raised: tuple[str, ...] = (),
    cleared: tuple[str, ...] = (),
) -> Frame:
    return Frame(ts_ms, jpeg, 320, 240, problems, raised, cleared)


TRIGGERS: dict[str, tuple[Frame, int | None, float, SnapshotTrigger | None]] = {
    "the camera's first frame": (frame(), None, 900, SnapshotTrigger.PERIODIC),
    "a frame before the interval": (frame(T0 + 14 * MINUTE), T0, 900, None),
    "a frame at the interval": (frame(T0 + 15 * MINUTE), T0, 900, SnapshotTrigger.PERIODIC),
    # The checks come on their own schedule: the one due with the snapshot may be a little early.
    "a frame 100 ms early": (frame(T0 + 15 * MINUTE - 100), T0, 900, SnapshotTrigger.PERIODIC),
    "a frame 5 % early": (frame(T0 + 855_000), T0, 900, SnapshotTrigger.PERIODIC),
    "a frame more than 5 % early": (frame(T0 + 854_999), T0, 900, None),
    "a problem raised": (
        frame(T0 + MINUTE, problems=("image_black",), raised=("image_black",)),
        T0,
        900,
        SnapshotTrigger.PROBLEM,
    ),
    "a problem held: no news": (frame(T0 + MINUTE, problems=("image_black",)), T0, 900, None),
    "the last problem cleared": (frame(T0 + MINUTE, cleared=("image_black",)), T0, 900, SnapshotTrigger.CLEARED),
    "one cleared, another still raised": (
        frame(T0 + MINUTE, problems=("view_changed",), cleared=("image_black",)),
        T0,
        900,
        SnapshotTrigger.PROBLEM,
    ),
    "interval 0: no periodic snapshot": (frame(), None, 0, None),
    "interval 0: a problem still goes": (
        frame(problems=("image_frozen",), raised=("image_frozen",)),
        None,
        0,
        SnapshotTrigger.PROBLEM,
    ),
}


@pytest.mark.parametrize("case", TRIGGERS)
def test_trigger(case: str) -> None:
    f, last, interval_s, expected = TRIGGERS[case]
    assert trigger_of(f, last, interval_s) is expected


REFUSALS: dict[str, tuple[bytes, str]] = {
    "a JPEG": (JPEG, ""),
    "a JPEG of exactly the limit": (b"\xff\xd8" + b"\x00" * (MAX_SNAPSHOT_BYTES - 4) + b"\xff\xd9", ""),
    "one byte over": (
        b"\xff\xd8" + b"\x00" * (MAX_SNAPSHOT_BYTES - 3) + b"\xff\xd9",
        f"its JPEG is {MAX_SNAPSHOT_BYTES + 1} bytes, more than a snapshot may carry ({MAX_SNAPSHOT_BYTES})",
    ),
    "cut short (no EOI)": (JPEG[:-1], "not a whole JPEG (103 bytes)"),
    "a PNG": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a whole JPEG (28 bytes)"),
    "empty": (b"", "not a whole JPEG (0 bytes)"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusal(case: str) -> None:
    data, expected = REFUSALS[case]
    assert refusal(frame(jpeg=data)) == expected


def box(interval_s: float = 900) -> tuple[SnapshotBox, EdgeStats]:
    stats = EdgeStats()
    return SnapshotBox(SnapshotConfig(interval_s=interval_s), stats), stats


def test_a_camera_keeps_only_its_latest_waiting_snapshot() -> None:
    snapshots, stats = box()
    snapshots.offer("cam-1", [frame(T0)])
    snapshots.offer("cam-2", [frame(T0 + 1)])
    # cam-1's problem while nothing was sent (the uplink down): it replaces cam-1's periodic one, counted.
    snapshots.offer("cam-1", [frame(T0 + MINUTE, problems=("image_black",), raised=("image_black",))])
    assert len(snapshots) == 2
    first = snapshots.first()
    assert first is not None
    assert (first.device, first.trigger) == ("cam-2", SnapshotTrigger.PERIODIC)
    snapshots.remove(first)
    second = snapshots.first()
    assert second is not None
    assert (second.device, second.ts_ms, second.trigger, second.problems) == (
        "cam-1",
        T0 + MINUTE,
        SnapshotTrigger.PROBLEM,
        ("image_black",),
    )
    snapshots.remove(second)
    assert snapshots.first() is None
    assert stats.snapshots_replaced == 1
    assert stats.snapshots_refused == 0


def test_the_periodic_clock_restarts_at_each_snapshot() -> None:
    snapshots, _ = box(interval_s=600)
    taken = []
    for minute, f in [
        (0, frame(T0)),  # first: periodic
        (5, frame(T0 + 5 * MINUTE)),  # too soon
        (7, frame(T0 + 7 * MINUTE, problems=("image_black",), raised=("image_black",))),  # problem
        (12, frame(T0 + 12 * MINUTE, problems=("image_black",))),  # 5 min after the problem one: too soon
        (17, frame(T0 + 17 * MINUTE, problems=("image_black",))),  # 10 min after it: periodic, problems named
    ]:
        snapshots.offer("cam-1", [f])
        pending = snapshots.first()
        if pending is not None:
            taken.append((minute, pending.trigger, pending.problems))
            snapshots.remove(pending)
    assert taken == [
        (0, SnapshotTrigger.PERIODIC, ()),
        (7, SnapshotTrigger.PROBLEM, ("image_black",)),
        (17, SnapshotTrigger.PERIODIC, ("image_black",)),
    ]


def test_a_refused_frame_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.snapshots")
    snapshots, stats = box()
    big = b"\xff\xd8" + b"\x00" * MAX_SNAPSHOT_BYTES + b"\xff\xd9"
    snapshots.offer("cam-1", [frame(T0, jpeg=big)])
    snapshots.offer("cam-1", [frame(T0 + MINUTE, jpeg=big)])
    assert snapshots.first() is None
    assert stats.snapshots_refused == 2
    messages = [r.getMessage() for r in caplog.records]
    expected = (
        f"camera cam-1: a periodic snapshot not sent: its JPEG is {MAX_SNAPSHOT_BYTES + 4} bytes, more than a "
        f"snapshot may carry ({MAX_SNAPSHOT_BYTES})"
    )
    assert messages == [expected]
    # A refused frame does not count as the camera's last snapshot: the next good one goes at once.
    snapshots.offer("cam-1", [frame(T0 + 2 * MINUTE)])
    pending = snapshots.first()
    assert pending is not None
    assert pending.trigger is SnapshotTrigger.PERIODIC


def test_a_removed_device_is_forgotten() -> None:
    snapshots, _ = box()
    snapshots.offer("cam-1", [frame(T0)])
    snapshots.forget("cam-1")
    assert snapshots.first() is None
    snapshots.offer("cam-1", [frame(T0 + MINUTE)])  # its clock went too: periodic at once
    assert snapshots.first() is not None


def test_remove_keeps_a_newer_snapshot_that_replaced_the_one_sent() -> None:
    snapshots, _ = box(interval_s=0)
    snapshots.offer("cam-1", [frame(T0, problems=("image_black",), raised=("image_black",))])
    sending = snapshots.first()
    assert sending is not None
    snapshots.offer("cam-1", [frame(T0 + MINUTE, cleared=("image_black",))])  # arrives while it is published
    snapshots.remove(sending)
    left = snapshots.first()
    assert left is not None
    assert left.trigger is SnapshotTrigger.CLEARED


def test_the_wire_snapshot_decodes_with_the_contract() -> None:
    pending = PendingSnapshot("cam-1", T0, JPEG, SnapshotTrigger.PROBLEM, ("image_black", "view_changed"), 320, 240)
    decoded = decode_for(Channel.SNAPSHOT, encode(pending.to_wire("k3J9xQ2mPzA1")))
    assert decoded == Snapshot(
        session="k3J9xQ2mPzA1",
        device="cam-1",
        ts=T0,
        jpeg=JPEG,
        trigger=SnapshotTrigger.PROBLEM,
        problems=["image_black", "view_changed"],
        width=320,
        height=240,
    )


async def test_wait_returns_once_a_snapshot_waits() -> None:
    snapshots, _ = box()
    waiter = asyncio.create_task(snapshots.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    snapshots.offer("cam-1", [frame(T0)])
    async with asyncio.timeout(5):
        await waiter
