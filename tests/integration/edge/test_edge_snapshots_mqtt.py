"""Snapshots over the real Mosquitto with the real publisher: those decided while the agent is not connected wait,
only the latest of each camera, and go once it connects, on the snapshot topic and never through the outbox."""

from __future__ import annotations

import asyncio

import pytest
from edge_support import MessageLog, recording

from devices.driver import Frame, now_ms
from edge.config import BrokerConfig, PublishConfig, SnapshotConfig
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.publisher import Publisher
from edge.snapshots import SnapshotBox
from edge.stats import EdgeStats
from ioc.stack import StackEndpoints
from wire.v1 import Channel, DeviceInfo, Snapshot, SnapshotTrigger

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The camera test gateway (tests/conftest.py): no other test's client takes its client id over.
SITE, GATEWAY = "cameras", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"


def jpeg(marker: int) -> bytes:
    """A JPEG's frame: SOI, a body telling the snapshots apart, EOI (the agent checks only those and the size)."""
    return b"\xff\xd8" + bytes([marker]) * 200 + b"\xff\xd9"


@pytest.mark.timeout(90)
async def test_the_latest_snapshot_of_each_camera_waits_for_the_connection(stack: StackEndpoints) -> None:
    stats = EdgeStats()
    outbox = MemoryOutbox(1000, stats)
    snapshots = SnapshotBox(SnapshotConfig(interval_s=900), stats)
    t0 = now_ms() - 120_000
    # Decided before the publisher has a connection: cam-1's periodic one is replaced by its problem one.
    snapshots.offer("cam-1", [Frame(t0, jpeg(1), 320, 240)])
    snapshots.offer("cam-2", [Frame(t0 + 1_000, jpeg(2), 320, 180)])
    snapshots.offer("cam-1", [Frame(t0 + 60_000, jpeg(3), 320, 240, ("image_black",), ("image_black",))])
    assert (len(snapshots), stats.snapshots_replaced) == (2, 1)

    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    publisher = Publisher(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host=stack.mqtt_host, port=stack.mqtt_port, username=user, password=password),
        publish=PublishConfig(max_batch=50, max_delay_ms=100, drain_timeout_s=3),
        devices=[
            DeviceInfo(id=cam, kind="camera", profile="camera-onvif-generic", interval_s=30, driver="camera")
            for cam in ("cam-1", "cam-2")
        ],
        outbox=outbox,
        events=EventQueue(stats),
        stats=stats,
        agent_version="test",
        snapshots=snapshots,
    )
    async with recording(stack, "snapshots", [f"{ROOT}/#"], MessageLog) as log:

        def received() -> list[Snapshot]:
            return [m.payload for m in log.messages if m.channel == Channel.SNAPSHOT.value]

        async with publisher:
            await log.until(lambda: len(received()) == 2)
            await log.until(lambda: stats.snapshots_sent == 2)
            await asyncio.sleep(1.0)  # nothing more comes
        session = {m.payload.session for m in log.messages if m.channel == Channel.STATE.value and m.payload.online}
    first, second = received()
    assert (first.device, first.ts, first.jpeg, first.trigger, first.problems) == (
        "cam-2",
        t0 + 1_000,
        jpeg(2),
        SnapshotTrigger.PERIODIC,
        [],
    )
    assert (first.width, first.height) == (320, 180)
    assert (second.device, second.ts, second.jpeg, second.trigger, second.problems) == (
        "cam-1",
        t0 + 60_000,
        jpeg(3),
        SnapshotTrigger.PROBLEM,
        ["image_black"],
    )
    assert {first.session, second.session} <= session
    assert [m.payload for m in log.messages if m.channel == "invalid"] == []
    # Never through the readings' outbox.
    assert (stats.readings_queued, stats.batches_sent, len(snapshots)) == (0, 0, 0)
    assert (stats.snapshots_sent, stats.snapshots_replaced, stats.snapshots_refused) == (2, 1, 0)
