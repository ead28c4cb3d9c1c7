"""A snapshot sent while the hub is away is kept when it comes back, with no refusal and no security alert.

After a restart the broker hands the hub what its persistent session queued while it was away before the
retained births, which come with the subscription: the hub has not yet seen a birth of the gateway when the
snapshot arrives. It is judged as the gateway's data is then, by what the registry gives that gateway (here: the
camera recorded from the birth before the restart). A demo run in CI refused all four snapshots of that moment
(``unannounced_device``, dead-lettered) before the intake looked at the registry."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from ops_support import Gateway, now_ms, ops_settings, running_hub, wait_until

from hub.config import SnapshotSettings
from hub.service import Hub
from ioc.stack import StackEndpoints
from wire.v1 import Snapshot, SnapshotTrigger, encode

pytestmark = [pytest.mark.integration]

SITE, GATEWAY = "site-a", "gw-1"
SOF = b"\xff\xc0\x00\x0b\x08\x00\xb4\x01\x40\x01\x01\x11\x00"  # 320 x 180
SOS = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
JPEG = b"\xff\xd8" + SOF + SOS + b"\x12\x34" + b"\xff\xd9"


def snapshot(gw: Gateway, ts: int) -> bytes:
    return encode(Snapshot(session=gw.session, device="cam-1", ts=ts, jpeg=JPEG, trigger=SnapshotTrigger.PERIODIC))


def stored_ts(hub: Hub) -> list[int]:
    intake = hub.pipeline.snapshots
    assert intake is not None
    return [s.ts for s in intake.store.history("cam-1", 10)[1]]


@pytest.mark.timeout(120)
async def test_a_snapshot_queued_while_the_hub_was_away_is_kept_when_it_is_back(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path)
    # A persistent session, as in production: what the gateway sends while the hub is away waits at the broker.
    mqtt = settings.mqtt.model_copy(update={"client_id": f"hub-restart-{secrets.token_hex(4)}", "session_expiry_s": 60})
    settings = settings.model_copy(update={"mqtt": mqtt, "snapshots": SnapshotSettings(dir=tmp_path / "snapshots")})
    gw = Gateway(stack, SITE, GATEWAY)
    try:
        first, second = now_ms(), now_ms() + 1
        async with running_hub(settings) as hub:
            gw.birth([("cam-1", "camera", 60.0)])
            gw.raw("snapshot", snapshot(gw, first))
            await wait_until(lambda: stored_ts(hub) == [first], 10)
        gw.raw("snapshot", snapshot(gw, second))  # the hub is away: queued in its session
        async with running_hub(settings) as hub:
            await wait_until(lambda: stored_ts(hub) == [second, first], 10)
            admission = hub.pipeline.admission
            assert admission is not None
            assert admission.refusals_by_gateway() == {}
            stats = hub.ingest_stats()
            assert (stats.dead_letters_total, stats.messages_by_channel.get("snapshot")) == (0, 1)
            # And the retained birth did come after it: the gateway's birth is now what judges its snapshots.
            await wait_until(lambda: admission.birth_seen(SITE, GATEWAY), 10)
    finally:
        gw.close()
