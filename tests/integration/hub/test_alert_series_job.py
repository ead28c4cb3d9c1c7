"""The alert figures job (hub/alerts/series.py) against the real InfluxDB and a real alert store and registry
(SQLite): open alerts per ward and severity with zeros, resolved alerts counted once across runs and restarts,
a failed write that loses nothing, and the job composed with a running hub (alerts fired by a gateway's data,
resolved through the API)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Gateway, auth, ops_settings, running_hub, tokens, wait_until

from hub.alerts.series import SEVERITIES, AlertSeriesJob
from hub.alerts.store import AlertStore
from hub.config import InfluxSettings
from hub.errors import StorageUnavailable
from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from hub.storage.influx import InfluxWriter
from ioc.stack import StackEndpoints, influx_query

pytestmark = pytest.mark.integration

INVENTORY: dict[str, Any] = {
    "sites": [{"id": "site-a", "ward": "ben-thanh"}, {"id": "site-b", "ward": "sai-gon"}, {"id": "site-c"}]
}


def _alert(site: str, severity: str, subject: str, opened_at: datetime) -> dict[str, Any]:
    return {
        "rule": "device-offline",
        "subject": subject,
        "site": site,
        "gateway": "gw-1",
        "ward": None,
        "kind": "air_quality",
        "severity": severity,
        "message": "offline",
        "opened_at": opened_at,
    }


def _gauge(url: str, db: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(ward, severity) -> (open, firing, acknowledged) of the last point of each series."""
    rows = influx_query(
        url,
        db,
        'SELECT last("open") AS "open", last("firing") AS "firing", last("acknowledged") AS "acknowledged" '
        'FROM "alerts" GROUP BY "ward", "severity"',
    )
    return {(r["ward"], r["severity"]): (r["open"], r["firing"], r["acknowledged"]) for r in rows}


def _resolved(url: str, db: str) -> list[dict[str, Any]]:
    return influx_query(url, db, 'SELECT * FROM "alert_resolved"')


async def test_open_counts_with_zeros_and_resolved_alerts_counted_once(
    stack: StackEndpoints, influx_db: str, db: Database
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    registry = Registry(db)
    registry.apply_inventory(parse_mapping(INVENTORY, "test"))
    await registry.flush()
    store = AlertStore(db)
    crit, _ = await store.open(_alert("site-a", "critical", "aq-01", now - timedelta(minutes=10)))
    major, _ = await store.open(_alert("site-a", "major", "aq-02", now - timedelta(minutes=10)))
    await store.acknowledge(major["id"], "operator")
    await store.open(_alert("site-c", "warning", "aq-03", now - timedelta(minutes=10)))  # a site without a ward
    late, _ = await store.open(_alert("site-b", "critical", "aq-04", now - timedelta(hours=2)))
    await store.resolve(late["id"], "operator", "fixed")

    influx = InfluxSettings(url=stack.influx_url, database=influx_db)
    async with InfluxWriter(influx) as writer:
        job = AlertSeriesJob(db, writer.write, registry)
        first = await job.run_once()
        assert (first.open_points, first.resolved_points) == (3 * len(SEVERITIES), 1)
        gauge = _gauge(stack.influx_url, influx_db)
        # Every ward of the registry in every severity, zeros included; the ward-less site has no ward tag.
        assert set(gauge) == {(w, s) for w in ("ben-thanh", "sai-gon", "") for s in SEVERITIES}
        assert gauge["ben-thanh", "critical"] == (1.0, 1.0, 0.0)
        assert gauge["ben-thanh", "major"] == (1.0, 0.0, 1.0)
        assert gauge["", "warning"] == (1.0, 1.0, 0.0)
        assert gauge["sai-gon", "critical"] == (0.0, 0.0, 0.0)
        [point] = _resolved(stack.influx_url, influx_db)
        assert (point["ward"], point["severity"], point["subject"], point["rule"]) == (
            "sai-gon",
            "critical",
            "aq-04",
            "device-offline",
        )
        assert point["in_time"] == 0  # two hours for a critical alert (target 1 h)
        assert point["resolve_s"] >= 7200
        assert point["manual"] is True

        # Later runs and a restarted job (backfill of 7 days) rewrite the same point: still one.
        await job.run_once()
        restarted = AlertSeriesJob(db, writer.write, registry)
        assert (await restarted.run_once()).resolved_points == 1
        assert len(_resolved(stack.influx_url, influx_db)) == 1

        # A critical alert resolved within its hour is in time; the share is now 1 of 2.
        await store.resolve(crit["id"], "system", "condition cleared")
        assert (await job.run_once()).resolved_points == 2  # the overlap re-reads the first one
        share = influx_query(stack.influx_url, influx_db, 'SELECT mean("in_time") * 100 FROM "alert_resolved"')
        assert share[0]["mean"] == 50
        assert len(_resolved(stack.influx_url, influx_db)) == 2
        assert _gauge(stack.influx_url, influx_db)["ben-thanh", "critical"] == (0.0, 0.0, 0.0)


async def test_a_failed_write_loses_no_resolved_alert(stack: StackEndpoints, influx_db: str, db: Database) -> None:
    store = AlertStore(db)
    opened, _ = await store.open(_alert("site-x", "major", "aq-09", datetime.now(UTC) - timedelta(minutes=1)))
    await store.resolve(opened["id"], "system", "condition cleared")
    down = InfluxSettings(url="http://127.0.0.1:9", database=influx_db, timeout_s=1)
    up = InfluxSettings(url=stack.influx_url, database=influx_db)
    async with InfluxWriter(down) as dead, InfluxWriter(up) as writer:
        writers = [dead.write, writer.write]

        async def write(body: bytes) -> None:
            await writers[0](body)

        job = AlertSeriesJob(db, write, backfill_s=60)
        with pytest.raises(StorageUnavailable):
            await job.run_once()
        writers.pop(0)
        # The job goes on from the same window: the alert resolved before the failure is written now.
        assert (await job.run_once()).resolved_points == 1
    [point] = _resolved(stack.influx_url, influx_db)
    assert "ward" not in point or point["ward"] in (None, "")
    assert point["in_time"] == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_the_hub_runs_the_job_with_its_settings(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    rules = {
        "rules": [
            {"id": "pm25-high", "type": "threshold", "kinds": ["air_quality"], "metric": "pm25", "above": 150,
             "clear": 120, "severity": "critical"},
        ]
    }  # fmt: skip
    settings = ops_settings(stack, influx_db, tmp_path, rules=rules, inventory={"sites": [INVENTORY["sites"][0]]})
    # alerts.series_interval_s and alerts.resolve_targets_s reach the hub's own job: a critical alert must be
    # resolved within 1 ms to count as in time, which no alert resolved through the API can be.
    alerts = settings.alerts.model_copy(update={"series_interval_s": 0.2, "resolve_targets_s": {"critical": 0.001}})
    settings = settings.model_copy(update={"alerts": alerts})
    gw = Gateway(stack, "site-a", "gw-1")
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            tok = await tokens(hub)
            gw.birth([("aq-01", "air_quality", 30.0)])
            gw.data(("aq-01", "air_quality", {"pm25": 220.0}))
            await wait_until(lambda: _gauge(stack.influx_url, influx_db).get(("ben-thanh", "critical"), (0,))[0] == 1)
            _, items = await hub.operations.alert_store.query(states=["firing"])
            r = await http.post(f"/api/v1/alerts/{items[0]['id']}/resolve", headers=auth(tok["operator"]))
            assert r.status_code == 200, r.text
            await wait_until(lambda: _resolved(stack.influx_url, influx_db))
            # (The breach goes on, so the engine may open a new alert after the manual resolve: the gauge need not
            # drop to 0.) Five more runs of the job: the resolved alert is still one point.
            await asyncio.sleep(1.0)
            [point] = _resolved(stack.influx_url, influx_db)
            assert (point["ward"], point["severity"], point["rule"]) == ("ben-thanh", "critical", "pm25-high")
            assert (point["in_time"], point["target_s"]) == (0, 0.001)
    finally:
        gw.close()
