"""The answers of hub/routes/devices.py's device and command routes and of ``POST /api/v1/inventory`` keep their
JSON exactly as before these routes declared their ``response_model`` (``DevicesPage``, ``DeviceDetail``,
``CommandRecord``, ``CommandsPage``, ``InventoryResult``): the same keys, none added as null, none dropped, and
numbers of the same type. On a running hub with a registry, a gateway's birth, the real broker and InfluxDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

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


#: The keys of a device in ``GET /api/v1/devices``, as API clients know them (dashboards/registry.py, the page).
DEVICE_KEYS: Final = frozenset(
    {
        *("id", "kind", "profile", "driver", "site", "gateway", "ward", "lat", "lon", "installed", "interval_s"),
        *("tags", "state", "reason", "last_seen_ms", "problems", "conflicts"),
    }
)
#: ``GET /api/v1/devices/{id}`` adds these.
DETAIL_KEYS: Final = DEVICE_KEYS | {
    *("inactivity_s", "announced", "inventory", "conflict_details", "transitions", "open_alerts"),
}
COMMAND_KEYS: Final = frozenset(
    {
        *("id", "device", "site", "gateway", "action", "params", "timeout_s", "requested_by", "status", "detail"),
        *("result", "created", "finished", "duration_ms"),
    }
)


async def test_the_device_command_and_inventory_answers_keep_their_json(
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
    assert set(page) == {"total", "limit", "offset", "items"}
    assert all(set(d) == DEVICE_KEYS for d in page["items"])
    assert set(detail) == set(spare) == DETAIL_KEYS
    assert set(sent.json()) == set(command) == COMMAND_KEYS
    assert set(history) == {"total", "items"}
    assert set(imported.json()) == {"sites_added", "sites_updated", "devices_added", "devices_updated", "conflicts"}
    # The model's JSON of each answer is the answer itself (as it was before the routes declared them):
    # no int turned float.
    for model, answer in (
        (DevicesPage, page),
        (DeviceDetail, detail),
        (DeviceDetail, spare),
        (CommandRecord, sent.json()),
        (CommandsPage, history),
        (CommandRecord, command),
        (InventoryResult, imported.json()),
    ):
        assert model.model_validate(answer).model_dump(mode="json") == answer
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
