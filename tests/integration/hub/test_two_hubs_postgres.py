"""The deployment PostgreSQL is for: two hubs on one shared subscription ($share/...) and one PostgreSQL registry.

Two :class:`Hub` instances (each its own MQTT connection, engine, pools, threads and HTTP server) share a
subscription group on the real Mosquitto, so the broker splits the gateway's messages between them, and one
database on the real PostgreSQL. A breach reported in many messages reaches both hubs' alert engines, each of
which opens the alert from its own memory: the database must leave exactly one, and both hubs' APIs show it.
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


def hub_settings(stack: StackEndpoints, influx_db: str, folder: Path, url: str, group: str) -> HubSettings:
    folder.mkdir()
    settings = ops_settings(stack, influx_db, folder, rules=RULES, inventory=INVENTORY)
    mqtt = settings.mqtt.model_copy(update={"shared_group": group})
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
            # The birth went to one of the two; the registry rows it wrote are in the one database, for both.
            expected = sorted(d for d, _, _ in DEVICES)
            for hub in hubs:
                await wait_until(partial(_stored_devices_are, hub, expected), timeout_s=20)
            # The breach, in many messages: the broker hands some to each hub, and each engine fires from memory.
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
