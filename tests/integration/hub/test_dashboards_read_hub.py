"""``dashboards.registry.load_hub`` reads the hub's answers with the hub's own models (hub/routes/models.py):
against a running hub (real API, token and registry), every page of the devices, ward limits applied by the hub;
an answer of another shape is refused naming the route and the field."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ops_support import ops_settings, running_hub, tokens

from dashboards.registry import Device, RegistryError, Site, Snapshot, load_hub, read_answer
from hub.routes.models import DevicesPage, SitesPage
from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration

INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1", "lat": 10.7725, "lon": 106.698},
        {"id": "site-b", "name": "Tân Định", "ward": "quan-3"},
    ],
    "devices": [
        {"id": "aq-01", "kind": "air_quality", "profile": "pm-sensor-rs485", "site": "site-a", "lat": 10.77},
        {"id": "cam-01", "kind": "camera", "site": "site-a"},
        {"id": "wl-09", "kind": "water_level", "profile": "water-level-rs485", "site": "site-b"},
        {"id": "spare-1", "kind": "camera"},
    ],
}


async def test_the_registry_of_a_running_hub_is_read_typed_page_by_page(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    async with running_hub(settings) as hub:
        tok = await tokens(hub)
        # Pages of one device: four requests, the last one reaching ``total``.
        snapshot = await asyncio.to_thread(load_hub, hub.api_url, tok["viewer"], page_size=1)
        limited = await asyncio.to_thread(load_hub, hub.api_url, tok["viewer-quan-1"])
    assert snapshot == Snapshot(
        sites=(
            Site("site-a", "Chợ Bến Thành", "quan-1", 10.7725, 106.698),
            Site("site-b", "Tân Định", "quan-3"),
        ),
        # spare-1 is at no site: on no site's board.
        devices=(
            Device("aq-01", "site-a", "air_quality", "pm-sensor-rs485", 10.77),
            Device("cam-01", "site-a", "camera"),
            Device("wl-09", "site-b", "water_level", "water-level-rs485"),
        ),
    )
    assert limited == Snapshot(sites=snapshot.sites[:1], devices=snapshot.devices[:2])


def test_an_answer_of_another_shape_is_refused_naming_the_field() -> None:
    # What a hub without the models answered for a page: a list, no total.
    with pytest.raises(RegistryError, match=r"^hub/api/v1/devices: not the hub's DevicesPage answer: the answer: "):
        read_answer(b'[{"id": "aq-01"}]', DevicesPage, "hub/api/v1/devices")
    with pytest.raises(RegistryError, match=r"^hub/api/v1/sites: not the hub's SitesPage answer: items\.0\.devices: "):
        read_answer(
            b'{"total": 1, "items": [{"id": "s", "name": "", "ward": null, "lat": null, "lon": null, "states": {}}]}',
            SitesPage,
            "hub/api/v1/sites",
        )
    page = read_answer(b'{"total": 0, "items": []}', SitesPage, "hub/api/v1/sites")
    assert page == SitesPage(total=0, items=[])
