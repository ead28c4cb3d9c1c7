"""Camera snapshots through the real broker, hub and InfluxDB: a gateway's snapshot of its own camera is kept on
disk, served and counted in the hub's stats and metrics; what it may not send is refused with its reason,
dead-lettered, not kept, and raises a security alert per reason; the API follows the token's wards like the device
routes. At the default settings a camera may send 10 at once, each with its own bucket, and each camera's folder
names its gateway (the retention's accounting)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from ops_support import Gateway, auth, now_ms, ops_settings, running_hub, tokens, wait_until
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from snapshot_support import jpeg, snapshot_payload

from hub.config import SnapshotSettings
from hub.service import Hub
from ioc.stack import StackEndpoints
from wire.v1 import MAX_SNAPSHOT_BYTES, SnapshotTrigger

pytestmark = [pytest.mark.integration]

INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"},
        {"id": "site-b", "name": "Nhà Văn hóa Thanh niên", "ward": "quan-3"},
    ]
}


def store_figures(files: int, kept_bytes: int) -> dict[str, int]:
    """``snapshots`` of ``GET /api/v1/ingest/stats`` for one camera whose every stored snapshot is kept (nothing
    replaced, dropped or removed)."""
    nothing = (
        *("replaced", "dropped_queue_full", "write_errors"),
        *("removed_age", "removed_total_bytes", "removed_camera_bound"),
    )
    kept = {"files": files, "bytes": kept_bytes, "cameras": 1, "queued": 0}
    return {**kept, "stored": files, "stored_bytes": kept_bytes, **dict.fromkeys(nothing, 0)}


def errors(hub: Hub) -> list[str]:
    """The dead letters' errors, oldest first."""
    _, letters = hub.dead_letters(100)
    return [d.error for d in reversed(letters)]


@pytest.mark.timeout(180)
async def test_own_camera_snapshot_is_kept_and_served_and_the_rest_refused(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    folder = tmp_path / "snapshots"
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY).model_copy(
        update={"snapshots": SnapshotSettings(dir=folder, burst=2, max_per_minute=0.1)}
    )
    gw1, gw2 = Gateway(stack, "site-a", "gw-1"), Gateway(stack, "site-b", "gw-2")
    good, other = jpeg(320, 180), jpeg(320, 180, "smptebars")
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            tok = await tokens(hub)
            gw1.birth([("cam-01", "camera", 60.0), ("aq-01", "air_quality", 60.0)])
            gw2.birth([("cam-02", "camera", 60.0)])
            await wait_until(lambda: "cam-01" in hub.operations.registry.devices, 30)
            await wait_until(lambda: "cam-02" in hub.operations.registry.devices, 30)

            # Its own camera, announced in its birth: kept and served.
            taken = now_ms() - 1000
            gw1.raw(
                "snapshot",
                snapshot_payload(gw1.session, "cam-01", taken, good, SnapshotTrigger.PROBLEM, ("image_black",)),
            )
            admin = auth(tok["admin"])

            async def listed() -> Any:
                answer = await http.get("/api/v1/devices/cam-01/snapshots", headers=admin)
                return answer.json() if answer.status_code == 200 and answer.json()["total"] else None

            page = await wait_until(listed, 30)
            [item] = page["items"]
            assert item == {
                "ts_ms": taken,
                "trigger": "problem",
                "problems": ["image_black"],
                "width": 320,
                "height": 180,
                "bytes": len(good),
                "url": f"/api/v1/devices/cam-01/snapshots/{taken}",
            }
            latest = await http.get("/api/v1/devices/cam-01/snapshots/latest", headers=admin)
            assert latest.status_code == 200
            assert latest.headers["content-type"] == "image/jpeg"
            assert latest.headers["x-snapshot-ts"] == str(taken)
            assert latest.content == good
            by_time = await http.get(item["url"], headers=admin)
            assert (by_time.status_code, by_time.content) == (200, good)
            assert sorted(p.name for p in (folder / "cam-01").iterdir()) == [
                ".gateway",  # whose camera the folder holds: the retention's accounting per gateway
                f"{taken}-problem-320x180-image_black.jpg",
            ]
            assert (folder / "cam-01" / ".gateway").read_text() == "site-a/gw-1\n"
            assert (folder / "cam-01" / f"{taken}-problem-320x180-image_black.jpg").read_bytes() == good
            # Counted: the hub's stats and /metrics say what the folder holds.
            stats = (await http.get("/api/v1/ingest/stats")).json()
            assert stats["snapshots"] == store_figures(1, len(good))
            metrics = (await http.get("/metrics")).text
            assert "ioc_hub_snapshots_files 1\n" in metrics
            assert f"ioc_hub_snapshots_bytes {len(good)}\n" in metrics
            assert "ioc_hub_snapshots_stored_total 1\n" in metrics

            # What gw-1 may not send, each refused with its reason; the last valid one takes the second token.
            not_jpeg = b"GIF89a" + b"\x00" * 200
            truncated = good[: len(good) // 2]  # SOI, no EOI
            sends: list[tuple[str, bytes]] = [
                ("foreign_device cam-02", snapshot_payload(gw1.session, "cam-02", now_ms(), good)),
                ("unannounced_device cam-09", snapshot_payload(gw1.session, "cam-09", now_ms(), good)),
                ("not_a_camera aq-01", snapshot_payload(gw1.session, "aq-01", now_ms(), good)),
                ("bad_image cam-01", snapshot_payload(gw1.session, "cam-01", now_ms(), not_jpeg)),
                ("bad_image cam-01", snapshot_payload(gw1.session, "cam-01", now_ms(), truncated)),
                ("clock_skew cam-01", snapshot_payload(gw1.session, "cam-01", now_ms() + 3_600_000, good)),
            ]
            for _, payload in sends:
                gw1.raw("snapshot", payload)
            # Larger than the contract allows: refused by the decoder (the JSON is built by hand: the encoder's
            # struct would not let us).
            oversized = json.dumps(
                {
                    "session": gw1.session,
                    "device": "cam-01",
                    "ts": now_ms(),
                    "trigger": "periodic",
                    "jpeg": base64.b64encode(good + b"\x00" * MAX_SNAPSHOT_BYTES).decode(),
                }
            ).encode()
            gw1.raw("snapshot", oversized)
            second = now_ms()
            gw1.raw("snapshot", snapshot_payload(gw1.session, "cam-01", second, other))
            gw1.raw("snapshot", snapshot_payload(gw1.session, "cam-01", second + 1, other))  # over the rate
            expected = [*[reason for reason, _ in sends], "contract", "snapshot_rate cam-01"]
            await wait_until(lambda: len(errors(hub)) >= len(expected), 30)
            found = errors(hub)
            assert len(found) == len(expected), found
            for error, reason in zip(found, expected, strict=True):
                assert error.startswith(reason) if reason != "contract" else "Snapshot" in error, (reason, error)
            assert "belongs to site-b/gw-2" in found[0]
            assert "not in the gateway's current birth" in found[1]
            assert "announced as 'air_quality', not a camera kind" in found[2]
            assert "does not start with the JPEG SOI marker FF D8 (starts with 47 49)" in found[3]
            assert "does not end with the JPEG EOI marker FF D9" in found[4]
            assert "s beyond the allowed clock skew" in found[5]
            assert f"length <= {MAX_SNAPSHOT_BYTES}" in found[6]
            assert "$.jpeg" in found[6]
            assert "more than 2 snapshots at once" in found[7]
            counted = hub.pipeline.admission.refusals_by_gateway()["site-a/gw-1"]  # type: ignore[union-attr]
            for reason in ("foreign_device", "not_a_camera", "clock_skew", "snapshot_rate"):
                assert counted[reason] == 1, counted
            assert counted["bad_image"] == 2

            # Each reason no honest agent has is one security alert of gw-1, whatever the count (clock_skew is a
            # health problem of the gateway, unannounced_device asks it for a new birth).
            async def security_alerts() -> Any:
                answer = (await http.get("/api/v1/alerts", params={"state": "open"}, headers=admin)).json()
                found = [(a["rule"], a["subject"], a["severity"]) for a in answer["items"]]
                return sorted(found) if len(found) >= 4 else None

            assert await wait_until(security_alerts, 10) == [
                ("security-bad-image", "site-a/gw-1", "major"),
                ("security-foreign-device", "site-a/gw-1", "critical"),
                ("security-not-a-camera", "site-a/gw-1", "major"),
                ("security-snapshot-rate", "site-a/gw-1", "warning"),
            ]

            # Only the two valid ones are kept.
            page = await wait_until(listed, 10)
            await wait_until(lambda: len(list((folder / "cam-01").glob("*.jpg"))) == 2, 10)
            page = (await http.get("/api/v1/devices/cam-01/snapshots", headers=admin)).json()
            assert [(i["ts_ms"], i["trigger"], i["problems"]) for i in page["items"]] == [
                (second, "periodic", []),
                (taken, "problem", ["image_black"]),
            ]
            assert not (folder / "cam-02").exists()
            assert not (folder / "aq-01").exists()
            assert not (folder / "cam-09").exists()
            stats = (await http.get("/api/v1/ingest/stats")).json()
            assert stats["snapshots"] == store_figures(2, len(good) + len(other))

            # gw-2's account (its second one: gw-2 itself is connected) cannot publish on gw-1's snapshot topic,
            # only on its own: the broker refuses it with PUBACK 0x87 "not authorized".
            account = stack.second_account("site-b.gw-2")
            assert _publish_reason(stack, account, "ioc/v1/site-a/gw-1/snapshot", b"{}") == 0x87
            assert _publish_reason(stack, account, "ioc/v1/site-b/gw-2/snapshot", b"{}") == 0

            # The camera list and its wards.
            cams = (await http.get("/api/v1/cameras", headers=admin)).json()
            assert [c["id"] for c in cams["items"]] == ["cam-01", "cam-02"]
            cam1 = cams["items"][0]
            assert (cam1["ward"], cam1["site"], cam1["gateway"]) == ("quan-1", "site-a", "gw-1")
            assert cam1["snapshot"]["ts_ms"] == second
            assert cams["items"][1]["snapshot"] is None
            quan3 = auth(tok["operator-quan-3"])
            assert [c["id"] for c in (await http.get("/api/v1/cameras", headers=quan3)).json()["items"]] == ["cam-02"]
            for path in (
                "/api/v1/devices/cam-01/snapshots",
                "/api/v1/devices/cam-01/snapshots/latest",
                f"/api/v1/devices/cam-01/snapshots/{taken}",
            ):
                answer = await http.get(path, headers=quan3)
                assert answer.status_code == 404, (path, answer.status_code)
                assert answer.json() == {"detail": "device 'cam-01' not found"}
                assert (await http.get(path, headers=auth(tok["viewer-quan-1"]))).status_code == 200
            # A device that is not a camera, a time with no snapshot, a camera with none: 404 too.
            assert (await http.get("/api/v1/devices/aq-01/snapshots", headers=admin)).status_code == 404
            assert (await http.get(f"/api/v1/devices/cam-01/snapshots/{taken + 1}", headers=admin)).status_code == 404
            assert (await http.get("/api/v1/devices/cam-02/snapshots/latest", headers=admin)).status_code == 404
            assert (await http.get("/api/v1/cameras")).status_code == 401
    finally:
        for gw in (gw1, gw2):
            gw.client.loop_stop()
            gw.client.disconnect()


@pytest.mark.timeout(120)
async def test_the_default_rate_and_each_cameras_gateway_on_disk(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    """At the hub's default snapshot settings a camera may send 10 at once (then 1 a minute): the 11th and 12th of
    a burst are refused, other cameras have their own bucket, and each camera's folder names its gateway."""
    folder = tmp_path / "snapshots"
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY).model_copy(
        update={"snapshots": SnapshotSettings(dir=folder)}
    )
    gw1, gw2 = Gateway(stack, "site-a", "gw-1"), Gateway(stack, "site-b", "gw-2")
    picture = jpeg(320, 180)
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            gw1.birth([("cam-01", "camera", 60.0), ("cam-03", "camera", 60.0)])
            gw2.birth([("cam-02", "camera", 60.0)])
            await wait_until(lambda: {"cam-01", "cam-02", "cam-03"} <= set(hub.operations.registry.devices), 30)
            taken = now_ms() - 60_000
            for i in range(12):
                gw1.raw("snapshot", snapshot_payload(gw1.session, "cam-01", taken + i, picture))
            gw1.raw("snapshot", snapshot_payload(gw1.session, "cam-03", taken, picture))
            gw2.raw("snapshot", snapshot_payload(gw2.session, "cam-02", taken, picture))
            store = hub.pipeline.snapshots.store  # type: ignore[union-attr]
            await wait_until(lambda: len(errors(hub)) >= 2, 30)
            await wait_until(lambda: store.total_files == 12 and store.queued == 0, 30)
            refused = "snapshot_rate cam-01: more than 10 snapshots at once, then 1 a minute"
            assert errors(hub) == [f"{refused} (snapshots.burst, snapshots.max_per_minute)"] * 2
            assert [len(list((folder / cam).glob("*.jpg"))) for cam in ("cam-01", "cam-02", "cam-03")] == [10, 1, 1]
            assert [(folder / cam / ".gateway").read_text() for cam in ("cam-01", "cam-02", "cam-03")] == [
                "site-a/gw-1\n",
                "site-b/gw-2\n",
                "site-a/gw-1\n",
            ]
            figures = (await http.get("/api/v1/ingest/stats")).json()["snapshots"]
            assert figures == {**store_figures(12, 12 * len(picture)), "cameras": 3}
    finally:
        for gw in (gw1, gw2):
            gw.client.loop_stop()
            gw.client.disconnect()


def _publish_reason(stack: StackEndpoints, account: str, topic: str, payload: bytes) -> int:
    """The PUBACK reason code the broker gives ``account`` for a QoS 1 publish on ``topic``."""
    user, password = stack.credentials(account)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=stack.client_id(account, "x"), protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(user, password)
    codes: list[int] = []
    client.on_publish = lambda _c, _u, _mid, reason, _p: codes.append(reason.value)
    client.connect(stack.mqtt_host, stack.mqtt_port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
        return codes[0]
    finally:
        client.loop_stop()
        client.disconnect()
