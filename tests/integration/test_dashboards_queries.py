"""Every query of every generated board, with its template variables filled in, runs against the real InfluxDB
loaded by the simulated city (``ioc.demo``: simulators, edge agents, the hub) and returns rows.

The demo runs once for the session (its own state folder, its own stack); its hub computes VN_AQI every few
seconds (``IOC_HUB_AQI__INTERVAL_S``) and writes its own health; KPIs are posted through ``POST /api/v1/kpis``
with a technician token. Alerts come from the demo hub's own engine, with a rules file of this test
(``IOC_HUB_ALERTS__RULES_FILE``: every PM2.5 reading breaches), and are resolved through ``POST
/api/v1/alerts/{id}/resolve``; the alert figures job (hub/alerts/series.py) then records them in InfluxDB from the
hub's database (in this process, as long as hub/service.py does not run the job itself). Queries go to InfluxDB's
``/query`` exactly as Grafana's InfluxQL datasource sends them, after the same macro and variable substitution.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dashboards.boards import CAMERA_PROFILES, SIGN_PROFILES
from dashboards.build import render_all
from dashboards.registry import Snapshot, parse
from hub.alerts.series import AlertSeriesJob
from hub.config import InfluxSettings
from hub.registry.db import Database
from hub.registry.registry import Registry
from hub.storage.influx import InfluxWriter
from ioc.demo import demo_city
from ioc.stack import influx_query, influx_write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROFILES = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "devices/profiles").glob("*.yaml")}
#: The settle time: every demo device has reported, and the hub's periodic jobs have run at least twice.
READY_TIMEOUT_S = 150.0  # the agents publish their own figures once a minute
#: Dated an hour before the test runs: the "City indicators over time" panel asks for the last 7 days.
_KPI_TS = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=7))).isoformat("T", "seconds")
KPIS = (
    "kpi,value,ts,ward,unit,target\n"
    f"dvc_on_time_rate,97.5,{_KPI_TS},quan-1,%,95\n"
    f"citizen_feedback,42,{_KPI_TS},quan-3,,\n"
)
#: The demo hub's alert rules: the hub's defaults, and one that every PM2.5 reading breaches, so that alerts
#: fire (and, resolved by hand, fire again) in every ward with a PM sensor within seconds.
RULES: dict[str, Any] = {
    "rules": [
        {"id": "pm25-demo", "type": "threshold", "kinds": ["air_quality"], "metric": "pm25", "above": 0,
         "clear": -1, "severity": "major"},
        {"id": "device-offline", "type": "offline", "for_s": 60, "severity": "major"},
        {"id": "gateway-offline", "type": "offline", "target": "gateway", "for_s": 30, "severity": "critical"},
    ]
}  # fmt: skip
ALERTS_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class City:
    url: str
    db: str
    snapshot: Snapshot
    #: Whether the demo's cameras have RTSP streams (VLC and ffmpeg here); without, they report no frame rate.
    rtsp: bool


def city_snapshot(state: Path, doc: dict[str, Any]) -> Snapshot:
    """The demo city as the registry knows it: sites with their ward (``demo.json``) and every device with its
    profile and kind (the edge configs the demo runs its agents with)."""
    wards = {s["site"]: s.get("district", "") for s in doc["sites"]}
    sites: list[dict[str, Any]] = []
    for i, path in enumerate(sorted(state.glob("edge-*.yaml"))):
        config = yaml.safe_load(path.read_text())
        sites.append(
            {
                "id": config["site"],
                "ward": wards.get(config["site"], ""),
                "lat": 10.77 + i / 100,
                "lon": 106.70 + i / 100,
                "devices": [
                    {"id": d["id"], "profile": d["profile"], "kind": PROFILES[d["profile"]]["kind"]}
                    for d in config["devices"]
                ],
            }
        )
    assert sites, f"no edge config in {state}"
    return parse(sites, [], str(state))


def _wait_for_data(url: str, db: str, snap: Snapshot) -> None:
    expected = {d.id for d in snap.devices}
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: set[str] = set()
    have_aqi = False
    while time.monotonic() < deadline:
        rows = influx_query(url, db, 'SHOW TAG VALUES WITH KEY = "device"')
        seen = {r["value"] for r in rows}
        have_aqi = bool(influx_query(url, db, 'SELECT count("aqi") FROM "vn_aqi"'))
        have_health = bool(influx_query(url, db, 'SELECT count("code") FROM "device_health"'))
        have_hourly = bool(influx_query(url, db, 'SELECT count("aqi") FROM "vn_aqi" WHERE "period" = \'hour\''))
        have_agent = bool(influx_query(url, db, 'SELECT count("outbox_readings") FROM "agent"'))
        if expected <= seen and have_aqi and have_hourly and have_health and have_agent:
            return
        time.sleep(2)
    pytest.fail(f"demo data incomplete after {READY_TIMEOUT_S} s: devices {sorted(seen)} of {sorted(expected)}")


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block only (the demo's children copy the environment when they start)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    """The simulated city, loaded: readings of every demo device, VN_AQI, hub health, KPIs."""
    state = tmp_path_factory.mktemp("demo-city")
    registry = f"sqlite:///{state / 'hub.db'}"
    rules = state / "alert-rules.yaml"
    rules.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    env = {
        "IOC_HUB_ALERTS__RULES_FILE": str(rules),
        # Only for the demo's children: its hub runs its periodic jobs every few seconds, and its database is a
        # file, so a token can be created for it with `ioc hub token create`. Not left set for other tests.
        "IOC_HUB_AQI__INTERVAL_S": "3",
        "IOC_HUB_METRICS__INTERVAL_S": "2",
        "IOC_HUB_REPORTS__SERIES_INTERVAL_S": "3",
        "IOC_HUB_REGISTRY__URL": registry,
    }
    with contextlib.ExitStack() as stack:
        with _environ(env):
            running = stack.enter_context(demo_city(state))
        children = running.children
        doc = running.doc
        url, db = doc["influxdb"]["url"], doc["influxdb"]["database"]
        snap = city_snapshot(state, doc)
        _seed_pm_history(url, db, snap)
        _wait_for_data(url, db, snap)
        _post_kpis(doc, registry)
        _resolve_alerts(doc)
        asyncio.run(_record_alerts(registry, url, db))
        yield City(url, db, snap, bool(doc.get("rtsp", {}).get("available", True)))
        stack.close()
        # ioc.demo reads each simulator's port from its stdout pipe and leaves the pipe open; closed here, once
        # the children are stopped, so no ResourceWarning escapes (warnings are errors in this suite).
        for proc in children.procs.values():
            if proc.stdout is not None:
                proc.stdout.close()


def _seed_pm_history(url: str, db: str, snap: Snapshot) -> None:
    """Two earlier hours of PM readings for the demo's PM sensors, as the hub stores them.

    The demo runs for a minute, and an hourly VN_AQI needs 1-hour means of at least 2 of the last 3 hours
    (Decision 1459, Nowcast): without history the hourly index is rightly absent. This is the history a city
    that has been running for hours would have; the hub's own AQI job then computes from it.
    """
    now_ms = int(time.time() * 1000)
    hour = now_ms - now_ms % 3_600_000
    lines = [
        f"air_quality,device={d.id},gateway=gw-1,kind=air_quality,site={d.site} "
        f"pm25={30.0 + (t // 300_000) % 7},pm10={55.0 + (t // 300_000) % 5} {t}"
        for d in snap.devices
        if d.profile == "pm-sensor-rs485"
        for t in range(hour - 2 * 3_600_000, hour, 300_000)
    ]
    assert lines, "the demo city has no PM sensor"
    influx_write(url, db, "\n".join(lines))


def _technician_token(doc: dict[str, Any], registry: str) -> str:
    """The demo's own token if it gives one, else a technician token created as an operator would."""
    token = doc.get("admin_token") or doc.get("token")
    if token:
        return str(token)
    done = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "hub", "token", "create", "--role", "technician", "--name", "kpi-test"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "IOC_HUB_REGISTRY__URL": registry},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _post_kpis(doc: dict[str, Any], registry: str) -> None:
    headers = {"Content-Type": "text/csv", "Authorization": f"Bearer {_technician_token(doc, registry)}"}
    response = httpx.post(f"{doc['hub_url']}/api/v1/kpis", content=KPIS, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2}


def _resolve_alerts(doc: dict[str, Any]) -> None:
    """Wait for the demo hub's first alerts and resolve them by hand, as an operator would (they fire again at
    the next reading: open and resolved alerts both exist)."""
    headers = {"Authorization": f"Bearer {doc['hub_token']}"}
    deadline = time.monotonic() + ALERTS_TIMEOUT_S
    items: list[dict[str, Any]] = []
    while not items and time.monotonic() < deadline:
        response = httpx.get(f"{doc['hub_url']}/api/v1/alerts?state=open", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        time.sleep(0.5)
    assert items, f"the demo hub fired no alert within {ALERTS_TIMEOUT_S} s"
    assert all(a["ward"] for a in items if a["rule"] == "pm25-demo"), items
    for alert in items:
        response = httpx.post(f"{doc['hub_url']}/api/v1/alerts/{alert['id']}/resolve", headers=headers, timeout=10)
        assert response.status_code == 200, response.text


async def _record_alerts(registry_url: str, url: str, db: str) -> None:
    """One run of the alert figures job on the demo hub's database and InfluxDB (hub/alerts/series.py)."""
    database = Database(registry_url)
    try:
        registry = Registry(database)
        await asyncio.to_thread(registry.load)
        async with InfluxWriter(InfluxSettings(url=url, database=db)) as writer:
            result = await AlertSeriesJob(database, writer.write, registry).run_once()
        assert result.resolved_points > 0, result
    finally:
        database.close()


#: Grafana's InfluxQL datasource escapes these in a variable's value used inside a regex.
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


def fill(query: str, variables: dict[str, str], time_from: str = "now-1h") -> str:
    """The query as Grafana sends it: macros (the board's time range) and variables substituted."""
    since = time_from.removeprefix("now-")
    out = query.replace("$timeFilter", f"time > now() - {since}").replace("$__interval", "10s")
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace(f"${name}", _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), variables[name]))
    assert "$" not in out.replace("$/", "").replace("^", ""), f"unfilled variable in {out}"
    return out


@pytest.mark.timeout(300)
def test_every_panel_query_returns_rows(city: City) -> None:
    boards = render_all(city.snapshot, "en").boards
    # Stream metrics exist only where the RTSP server runs (VLC, ffmpeg); the demo says whether it does.
    streams = ("rtsp_fps", "rtsp_bitrate_kbps")
    empty: list[str] = []
    count = 0
    for _, uid, board in boards:
        variables: dict[str, str] = {}
        for var in board["templating"]["list"]:
            rows = influx_query(city.url, city.db, fill(var["query"], variables, board["time"]["from"]))
            values = sorted({r["value"] for r in rows})
            assert values, f"{uid}: variable {var['name']} has no values ({var['query']})"
            variables[var["name"]] = values[0]  # sort 1: the first value, as Grafana preselects it
        for panel in board["panels"]:
            for target in panel["targets"]:
                q = fill(target["query"], variables, board["time"]["from"])
                count += 1
                if not city.rtsp and any(f'"{f}"' in q for f in streams):
                    continue
                if not influx_query(city.url, city.db, q):
                    empty.append(f"{uid} / {panel['title']} / {target['refId']}: {q}")
    assert count > 30
    uids = {uid for _, uid, _ in boards}
    assert {f"ioc-site-{s.id}" for s in city.snapshot.sites} <= uids
    assert ("ioc-ops-cameras" in uids) == city.snapshot.has(profiles=CAMERA_PROFILES)
    assert ("ioc-ops-displays" in uids) == city.snapshot.has(profiles=SIGN_PROFILES)
    assert empty == [], "queries without rows:\n" + "\n".join(empty)
