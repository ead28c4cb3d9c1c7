"""The routes that do not declare their answer's model yet (hub/routes/devices.py, ``POST /api/v1/inventory``:
tests/unit/hub/test_api_openapi.py's ``NOT_YET_TYPED``) answer what the models prepared for them in
hub/routes/models.py describe, field for field (the models refuse a field they do not declare): so declaring them
as ``response_model`` changes no answer. On a running hub with a registry, a gateway's birth, the real broker and
InfluxDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Gateway, auth, ops_settings, running_hub, tokens, wait_until

from hub.routes.models import CommandRecord, CommandsPage, DeviceDetail, DevicesPage, InventoryResult
from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration

INVENTORY: dict[str, Any] = {
    "sites": [{"id": "site-b", "name": "Chợ Bến Thành", "ward": "quan-1", "lat": 10.7725, "lon": 106.698}],
    "devices": [
        {"id": "aq-m1", "kind": "air_quality", "site": "site-b", "gateway": "gw-2", "tags": {"zone": "north"}},
        {"id": "spare-m", "kind": "camera", "installed": "2026-01-15"},
    ],
}


async def test_the_answers_of_the_routes_without_a_model_fit_the_models_prepared_for_them(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
        tok = await tokens(hub)
        viewer, technician = auth(tok["viewer"]), auth(tok["technician"])
        gw = Gateway(stack, "site-b", "gw-2")
        try:
            # A birth that disagrees with the inventory about the kind (a conflict), then data: a transition to online.
            gw.birth([("aq-m1", "water_level", 60.0)])
            gw.data(("aq-m1", "water_level", {"level_m": 1.5}))
            await wait_until(lambda: hub.operations.health.device_state("aq-m1").value == "online")
            page = (await http.get("/api/v1/devices", headers=viewer)).json()
            detail = (await http.get("/api/v1/devices/aq-m1", headers=viewer)).json()
            spare = (await http.get("/api/v1/devices/spare-m", headers=viewer)).json()
            sent = await http.post("/api/v1/devices/spare-m/commands", json={"action": "read_now"}, headers=technician)
            history = (await http.get("/api/v1/devices/spare-m/commands", headers=viewer)).json()
            command = (await http.get(f"/api/v1/commands/{sent.json()['id']}", headers=viewer)).json()
            imported = await http.post("/api/v1/inventory", json=INVENTORY, headers=technician)
        finally:
            gw.close()
    parsed = DevicesPage.model_validate(page)
    # Retained births of other tests' gateways on the session's broker may add devices of their own: only ours.
    assert [(d.id, d.site, d.state) for d in parsed.items if d.id in {"aq-m1", "spare-m"}] == [
        ("aq-m1", "site-b", "online"),
        ("spare-m", None, "unknown"),
    ]
    assert parsed.items[0].tags == {"zone": "north"}
    aq = DeviceDetail.model_validate(detail)
    assert [(c.field, c.announced, c.inventory) for c in aq.conflict_details] == [
        ("kind", "water_level", "air_quality")
    ]
    assert aq.transitions[0].new == "online"
    assert DeviceDetail.model_validate(spare).installed == "2026-01-15"
    # spare-m has no gateway: the command is refused at once, with its record.
    assert sent.status_code == 200, sent.text
    record = CommandRecord.model_validate(sent.json())
    assert (record.device, record.status) == ("spare-m", "error")
    assert CommandsPage.model_validate(history).items == [record]
    assert CommandRecord.model_validate(command) == record
    assert imported.status_code == 200, imported.text
    result = InventoryResult.model_validate(imported.json())
    assert (result.sites_added, result.devices_added) == (0, 0)
    assert [(c.device, c.field) for c in result.conflicts] == [("aq-m1", "kind")]
