"""This month's camera availability for the leadership board (hub/reports/series.py) against the real InfluxDB and
a real registry and health history (SQLite): the figures per ward and for the city computed by hand, read back
with the board's own query (dashboards/leadership.py) as Grafana sends it; a running hub writes them from its
start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ops_support import ops_settings, running_hub, wait_until

from dashboards.leadership import CAMERA_AVAILABILITY
from hub.config import InfluxSettings
from hub.health.store import HealthTransitionRow
from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from hub.reports.series import AvailabilitySeriesJob
from hub.storage.influx import InfluxWriter
from ioc.stack import StackEndpoints, influx_query

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"},
        {"id": "site-b", "ward": "quan-3"},
        {"id": "site-c"},
    ],
    "devices": [
        {"id": "cam-1", "kind": "camera", "site": "site-a", "gateway": "gw-1"},
        {"id": "cam-2", "kind": "camera", "site": "site-a", "gateway": "gw-1"},
        {"id": "cam-3", "kind": "camera", "site": "site-b", "gateway": "gw-2"},
        {"id": "cam-4", "kind": "camera", "site": "site-c", "gateway": "gw-3"},
        {"id": "aq-1", "kind": "air_quality", "site": "site-a", "gateway": "gw-1"},
    ],
}


def _row(device: str, ts_ms: int, new: str, reason: str = "") -> HealthTransitionRow:
    return HealthTransitionRow(
        entity="device",
        key=device,
        device=device,
        kind="camera",
        old="unknown",
        new=new,
        reason=reason,
        ts_ms=ts_ms,
        at=datetime.fromtimestamp(ts_ms / 1000, UTC),
    )


async def test_month_so_far_per_ward_and_city_read_with_the_board_s_query(
    stack: StackEndpoints, influx_db: str, db: Database
) -> None:
    registry = Registry(db)
    registry.apply_inventory(parse_mapping(INVENTORY, "test"))
    await registry.flush()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now.astimezone(TZ).replace(day=1, hour=0, minute=0, second=0)
    s, length = int(start.timestamp()) * 1000, int((now - start).total_seconds()) * 1000
    q = length // 4
    rows = [
        _row("cam-1", s - 3_600_000, "online"),  # offline from a quarter to half of the month so far
        _row("cam-1", s + q, "offline", "device_down"),
        _row("cam-1", s + 2 * q, "online"),
        _row("cam-2", s + q, "online", "birth"),  # unknown before: left out
        _row("cam-3", s - 60_000, "degraded", "device_degraded: image_black: dark"),  # all month
        _row("cam-4", s - 60_000, "online"),
        _row("aq-1", s - 60_000, "offline"),  # no camera
    ]
    db.run_sync(lambda session: session.add_all(rows))

    async with InfluxWriter(InfluxSettings(url=stack.influx_url, database=influx_db)) as writer:
        job = AvailabilitySeriesJob(db, writer.write, registry, tz=TZ)
        assert await job.run_once(now) == 4  # quan-1, quan-3, the ward-less site, the city

    quan_1 = (2 * length - 2 * q) / (2 * length - q)
    board = influx_query(stack.influx_url, influx_db, CAMERA_AVAILABILITY)
    assert {r["ward"]: r["last"] for r in board} == {"quan-1": quan_1 * 100, "quan-3": 0.0}

    month = start.strftime("%Y-%m")
    points = influx_query(stack.influx_url, influx_db, 'SELECT * FROM "camera_availability"')
    by_scope = {(p["scope"], p["ward"]): p for p in points}
    assert {p["month"] for p in points} == {month}
    assert {p["time"] for p in points} == {int(now.timestamp() * 1000)}
    city = by_scope["city", None]
    assert city["availability"] == (3 * length - 2 * q) / (4 * length - q)
    assert (city["cameras"], city["outages"], city["outages_open"]) == (4, 1, 0)
    assert city["mttr_s"] == q / 1000
    assert city["known_s"] == (4 * length - q) / 1000
    assert city["unknown_s"] == q / 1000
    ward_1 = by_scope["ward", "quan-1"]
    assert (ward_1["availability"], ward_1["cameras"], ward_1["online_s"]) == (quan_1, 2, (2 * length - 2 * q) / 1000)
    assert (by_scope["ward", "quan-3"]["availability"], by_scope["ward", "quan-3"]["mttr_s"]) == (0.0, None)
    assert by_scope["ward", None]["availability"] == 1.0  # site-c's camera: no ward tag, not on the board


async def test_a_city_without_cameras_gets_no_points(stack: StackEndpoints, influx_db: str, db: Database) -> None:
    registry = Registry(db)
    registry.apply_inventory(parse_mapping({**INVENTORY, "devices": INVENTORY["devices"][-1:]}, "test"))
    await registry.flush()
    async with InfluxWriter(InfluxSettings(url=stack.influx_url, database=influx_db)) as writer:
        job = AvailabilitySeriesJob(db, writer.write, registry, tz=TZ)
        assert await job.run_once() == 0
    assert job.runs == 1
    assert influx_query(stack.influx_url, influx_db, 'SELECT * FROM "camera_availability"') == []


@pytest.mark.timeout(60)
async def test_a_running_hub_writes_them_from_its_start(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    assert settings.reports.series_interval_s == 300
    async with running_hub(settings):

        def city() -> list[dict[str, Any]]:
            return influx_query(
                stack.influx_url, influx_db, 'SELECT * FROM "camera_availability" WHERE "scope" = \'city\''
            )

        rows = await wait_until(city, timeout_s=20)
    # No history yet: four cameras, nothing of the month known, so no availability field (never written here).
    assert [(r["cameras"], r["known_s"], r["online_s"]) for r in rows] == [(4, 0.0, 0.0)]
    assert "availability" not in rows[0]
