"""Re-provisioning when sites are added: ``push_on_change`` (``ioc dashboards push --every``) reads the registry of a
running hub (real API, real token, real SQLite registry) and pushes to a local server implementing the Grafana
API (a contract fake, from tests/unit/test_dashboards_push_contract.py): a site imported into the hub gets its
board, and rounds in which nothing changed push nothing."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import auth, ops_settings, running_hub, tokens

from dashboards.build import render_all
from dashboards.datasource import InfluxTarget
from dashboards.push import PushReport, connect, push_on_change
from dashboards.registry import load_hub
from ioc.stack import StackEndpoints

# The contract fake of Grafana lives with the contract test.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit"))
contract = importlib.import_module("test_dashboards_push_contract")

pytestmark = pytest.mark.integration

INVENTORY: dict[str, Any] = {
    "sites": [{"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1", "lat": 10.7725, "lon": 106.698}],
    "devices": [
        {"id": "aq-01", "kind": "air_quality", "profile": "pm-sensor-rs485", "site": "site-a", "gateway": "gw-1"}
    ],
}
ADDED = {
    "sites": [{"id": "site-b", "name": "Tân Định", "ward": "quan-3"}],
    "devices": [
        {"id": "wl-09", "kind": "water_level", "profile": "water-level-rs485", "site": "site-b", "gateway": "gw-2"}
    ],
}


async def wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_a_site_added_to_the_hub_gets_its_board(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    with contract.serve_fake_grafana() as (fake, grafana_url):
        await _reprovision(stack, influx_db, tmp_path, fake, grafana_url)


async def _reprovision(stack: StackEndpoints, influx_db: str, tmp_path: Path, fake: Any, grafana_url: str) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
        tok = await tokens(hub)
        reports: list[PushReport] = []
        stop = threading.Event()

        def run() -> None:
            push_on_change(
                connect(grafana_url, contract.TOKEN),
                lambda: render_all(load_hub(hub.api_url, tok["viewer"]), "vi"),
                InfluxTarget(),
                stop,
                every_s=0.2,
                locale="vi",
                prune=True,
                on_report=reports.append,
            )

        worker = threading.Thread(target=run, name="reprovision")
        worker.start()
        try:
            await wait_for(lambda: "ioc-site-site-a" in fake.dashboards)
            await wait_for(lambda: len(reports) >= 1)
            assert fake.dashboards["ioc-site-site-a"]["dashboard"]["title"] == "Điểm Chợ Bến Thành"
            await asyncio.sleep(1.0)  # several rounds with an unchanged registry
            assert len(reports) == 1
            writes_before = len(fake.writes())
            r = await http.post("/api/v1/inventory", json=ADDED, headers=auth(tok["technician"]))
            assert r.status_code == 200, r.text
            await wait_for(lambda: "ioc-site-site-b" in fake.dashboards)
            # the report is handed over once the whole push (boards, then prune) is done
            await wait_for(lambda: len(reports) >= 2)
            assert len(reports) == 2
            assert reports[1].created == ["dashboard ioc-site-site-b"]
            # only the new board and the boards that show wards (the city board gets the new ward) are written
            new_writes = fake.writes()[writes_before:]
            assert ("POST", "/api/dashboards/db") in new_writes
            assert "dashboard ioc-lead-city" in reports[1].changed
            assert "dashboard ioc-site-site-a" in reports[1].unchanged
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 10)
        assert not worker.is_alive()
