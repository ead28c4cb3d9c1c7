"""The deployment PostgreSQL is for: two hubs on one shared subscription ($share/...) and one PostgreSQL registry.

Two :class:`Hub` instances (each its own MQTT connections, engine, pools, threads and HTTP server) share a
subscription group on the real Mosquitto, so the broker splits the gateway's messages between them for storing,
and one database on the real PostgreSQL.

- Both as operations hubs (``mqtt.observe: all``, e.g. for redundancy): each hears every message on its observer
  connection, so a breach reaches both alert engines, each of which opens the alert from its own memory: the
  database must leave exactly one, and both hubs' APIs show it.
- One operations hub and one storage-only hub (``all`` / ``none``): the operations hub judges every gateway and
  device on all their messages while each hub stores its share.
"""

from __future__ import annotations

import secrets
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Gateway, auth, ops_settings, running_hub, tokens, wait_until
from sqlalchemy import select

from hub.config import HubSettings
from hub.health.machine import Health
from hub.registry.models import DeviceRow
from hub.service import Hub
from ioc.stack import StackEndpoints

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES: dict[str, Any] = {
    "rules": [
        {"id": "fps-low", "type": "threshold", "kinds": ["camera"], "metric": "fps", "below": 10, "clear": 12,
         "severity": "major"},
    ]
}  # fmt: skip
INVENTORY: dict[str, Any] = {"sites": [{"id": "site-a", "ward": "quan-1"}]}
DEVICES = [("cam-01", "camera", 30.0), ("cam-02", "camera", 30.0), ("aq-01", "air_quality", 30.0)]


def hub_settings(
    stack: StackEndpoints, influx_db: str, folder: Path, url: str, group: str, observe: str = "all"
) -> HubSettings:
    folder.mkdir()
    settings = ops_settings(stack, influx_db, folder, rules=RULES, inventory=INVENTORY)
    mqtt = settings.mqtt.model_copy(update={"shared_group": group, "observe": observe})
    registry = settings.registry.model_copy(update={"url": url})
    return settings.model_copy(update={"mqtt": mqtt, "registry": registry})


def _on_alert(fired: list[tuple[int, int]], hub_number: int, event: str, alert: dict[str, Any]) -> None:
    if event == "fired":
        fired.append((hub_number, alert["id"]))


async def _stored_devices_are(hub: Hub, expected: list[str]) -> bool:
    stored = await hub.operations.db.read(lambda s: sorted(s.scalars(select(DeviceRow.id))))
    return stored == expected


async def _open_alerts(hub: Hub) -> list[dict[str, Any]]:
    _, items = await hub.operations.alert_store.query(states=["firing", "acknowledged"])
    return items


@pytest.mark.timeout(90)
async def test_two_hubs_on_one_shared_subscription_keep_one_registry_and_open_one_alert(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, postgres_url: str
) -> None:
    group = f"hubs{secrets.token_hex(3)}"
    first = hub_settings(stack, influx_db, tmp_path / "hub-1", postgres_url, group)
    second = hub_settings(stack, influx_db, tmp_path / "hub-2", postgres_url, group)
    gw = Gateway(stack, "site-a", "gw-1")
    try:
        async with running_hub(first) as hub1, running_hub(second) as hub2:
            hubs = (hub1, hub2)
            assert hub1.operations.db.url == hub2.operations.db.url == postgres_url
            fired: list[tuple[int, int]] = []
            for n, hub in enumerate(hubs):
                hub.operations.alerts.subscribe(partial(_on_alert, fired, n))
            gw.birth(DEVICES)
            # Both heard the birth; the registry rows are in the one database, once.
            expected = sorted(d for d, _, _ in DEVICES)
            for hub in hubs:
                await wait_until(partial(_stored_devices_are, hub, expected), timeout_s=20)
            # The breach, in many messages: both observer connections hear all of them, each engine fires.
            for _ in range(30):
                gw.data(("cam-01", "camera", {"fps": 3.0}))

            def both_fired() -> bool:
                conds = [h.operations.alerts._conds.get(("cam-01", "fps-low")) for h in hubs]
                return all(c is not None and c.open for c in conds)

            await wait_until(both_fired, timeout_s=20)
            for hub in hubs:
                await hub.operations.alerts.drain()
            # Both engines asked the database to open it; it opened one, and the loser got the winner's back.
            assert len(fired) == 1, fired
            for hub in hubs:
                items = await _open_alerts(hub)
                assert [(a["subject"], a["rule"]) for a in items] == [("cam-01", "fps-low")]
            (alert,) = await _open_alerts(hub1)
            total, _ = await hub1.operations.alert_store.query()
            assert total == 1
            # The API of either hub shows that one alert and acknowledges it for both.
            tok = await tokens(hub1)
            async with httpx.AsyncClient(base_url=hub2.api_url, timeout=10) as http:
                listed = (await http.get("/api/v1/alerts?state=open", headers=auth(tok["viewer"]))).json()
                assert [a["id"] for a in listed["items"]] == [alert["id"]]
                r = await http.post(f"/api/v1/alerts/{alert['id']}/ack", headers=auth(tok["operator"]))
                assert r.status_code == 200, r.text
            assert (await hub1.operations.alert_store.get(alert["id"]) or {})["state"] == "acknowledged"
    finally:
        gw.close()


@pytest.mark.timeout(90)
async def test_the_operations_hub_judges_every_device_while_each_hub_stores_its_share(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, postgres_url: str
) -> None:
    group = f"hubs{secrets.token_hex(3)}"
    ops = hub_settings(stack, influx_db, tmp_path / "hub-ops", postgres_url, group, observe="all")
    store = hub_settings(stack, influx_db, tmp_path / "hub-store", postgres_url, group, observe="none")
    gateways = [Gateway(stack, "site-a", "gw-1"), Gateway(stack, "site-b", "gw-2")]
    devices = {gw.gateway: [(f"{gw.gateway}-aq-{n}", "air_quality", 30.0) for n in range(3)] for gw in gateways}
    messages = 40
    try:
        async with running_hub(ops) as hub_ops, running_hub(store) as hub_store:
            assert hub_ops.intake.filters[0] == f"$share/{group}/ioc/v1/+/+/data"
            for gw in gateways:
                gw.birth(devices[gw.gateway])
            for _ in range(messages):
                for gw in gateways:
                    gw.data(*((d, kind, {"pm25": 12.0}) for d, kind, _ in devices[gw.gateway]))
            everything = [d for ds in devices.values() for d, _, _ in ds]

            def stored() -> int:
                return sum(h.pipeline.stats.messages_by_channel.get("data", 0) for h in (hub_ops, hub_store))

            await wait_until(lambda: stored() == messages * len(gateways), timeout_s=30)
            shares = [h.pipeline.stats.messages_by_channel.get("data", 0) for h in (hub_ops, hub_store)]
            assert all(n > 0 for n in shares), shares  # the broker split the storing between the two

            # The operations hub heard every message on its observer connection: every gateway and device online.
            def all_online() -> bool:
                health = hub_ops.operations.health
                return all(health.device_state(d) == Health.ONLINE for d in everything) and all(
                    (health.gateway(gw.site, gw.gateway) or {}).get("state") == Health.ONLINE for gw in gateways
                )

            await wait_until(all_online, timeout_s=20)
            observer = hub_ops.ingest_stats().observer
            assert observer is not None
            assert observer.connected is True
            # It stored a part, and heard all of it (data + births).
            assert shares[0] < messages * len(gateways) <= observer.observed - len(gateways)
            assert observer.undecodable == 0
            for d in everything:
                seen = (hub_ops.operations.health.device(d) or {}).get("last_seen_ms")
                assert seen is not None, d
            # The storage-only hub judges nothing (it would judge on half the traffic otherwise).
            assert hub_store.ingest_stats().observer is None
            assert all(hub_store.operations.health.device(d) is None for d in everything)
            assert hub_store.operations.health.gateway("site-a", "gw-1") is None
    finally:
        for gw in gateways:
            gw.close()
