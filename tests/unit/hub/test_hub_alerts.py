"""Alerts: rule file errors, threshold duration and clear level, bits, offline, stale, one open alert per
(subject, rule) also with two engines racing on one database, re-fire after a manual resolve, webhooks with
retries and a delivery log (against a real HTTP server on loopback)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.alerts.engine import AlertEngine
from hub.alerts.notify import Notifier
from hub.alerts.rules import RulesFile, Webhook, parse_rules
from hub.alerts.store import AlertStore
from hub.errors import ConfigError
from hub.health.machine import FlapPolicy
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Reading, State

TS = 1_764_331_200_000
SITE, GW = "site-a", "gw-1"

RULES = parse_rules(
    {
        "rules": [
            {"id": "pm25-high", "type": "threshold", "kinds": ["air_quality"], "metric": "pm25", "above": 150,
             "clear": 120, "for_s": 600, "severity": "critical"},
            {"id": "fps-low", "type": "threshold", "kinds": ["camera"], "metric": "fps", "below": 10, "clear": 12},
            {"id": "display-error", "type": "bits", "kinds": ["display"], "metric": "error_bits", "mask": 6},
            {"id": "device-offline", "type": "offline", "for_s": 5, "severity": "major"},
            {"id": "stale", "type": "stale", "max_age_s": 30, "kinds": ["water_level"]},
        ]
    },
    "rules.yaml",
)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    database.create_schema()
    yield database
    database.close()


def batch(device: str, kind: str, **metrics: float) -> DataBatch:
    return DataBatch(session="sess-0001", seq=1, readings=[Reading(device, kind, TS, dict(metrics))])


def make(db: Database, rules: RulesFile = RULES) -> tuple[AlertEngine, AlertStore, Clock, list[tuple[str, int]]]:
    clock = Clock()
    registry = Registry()
    registry.apply_inventory(parse_mapping({"sites": [{"id": SITE, "ward": "quan-1"}]}, "x"))
    store = AlertStore(db)
    engine = AlertEngine(rules, store, registry, clock=clock)
    events: list[tuple[str, int]] = []
    engine.subscribe(lambda event, alert: events.append((event, alert["id"])))
    return engine, store, clock, events


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"rules": [{"id": "x", "type": "threshold", "metric": "pm25", "above": 150, "clear": 160}]},
         "rules.yaml: rules[0] (x): clear (160) must not be above 'above' (150)"),
        ({"rules": [{"id": "x", "type": "threshold", "metric": "pm25", "clear": 1}]},
         "rules[0] (x): give exactly one of 'above' and 'below'"),
        ({"rules": [{"id": "x", "type": "offline", "colour": 1}]}, "rules[0] (x): colour: unknown key"),
        ({"rules": [{"id": "x", "type": "nonsense"}]}, "rules[0] (x): Input tag 'nonsense' found"),
        ({"rules": [{"id": "x", "type": "stale", "max_age_s": 1}, {"id": "x", "type": "stale", "max_age_s": 1}]},
         "rule id 'x' is used twice"),
        ({"webhooks": [{"url": "ftp://x"}]}, "webhooks[0]: url: String should match"),
        ([1, 2], "rules.yaml: the top level must be a mapping"),
    ],
)  # fmt: skip
def test_bad_rules_name_rule_and_field(data: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(data, "rules.yaml")
    assert expected in str(err.value)


async def test_threshold_fires_after_its_duration_and_clears_only_below_the_clear_level(db: Database) -> None:
    engine, store, clock, events = make(db)
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=160))
    clock.now += 599
    engine.tick()
    await engine.drain()
    assert events == []
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=155))
    clock.now += 2
    engine.tick()
    await engine.drain()
    assert [e for e, _ in events] == ["fired"]
    total, alerts = await store.query(states=["firing"])
    assert total == 1
    assert alerts[0]["ward"] == "quan-1"
    assert alerts[0]["severity"] == "critical"
    assert alerts[0]["message"] == "pm25 = 155, above 150"
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=130))  # inside the band: still open
    await engine.drain()
    assert [e for e, _ in events] == ["fired"]
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=110))
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "resolved"]
    _, resolved = await store.query(states=["resolved"])
    assert resolved[0]["resolved_by"] == "system"


async def test_a_dip_below_the_level_before_the_duration_restarts_it(db: Database) -> None:
    engine, _store, clock, events = make(db)
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=160))
    clock.now += 500
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=140))
    engine.observe(SITE, GW, batch("aq-01", "air_quality", pm25=160))
    clock.now += 500
    engine.tick()
    await engine.drain()
    assert events == []


async def test_fps_floor_and_error_bits(db: Database) -> None:
    engine, store, _clock, events = make(db)
    engine.observe(SITE, GW, batch("cam-01", "camera", fps=8))
    engine.observe(SITE, GW, batch("vms-01", "display", error_bits=1))  # bit 0 is outside the mask
    engine.observe(SITE, GW, batch("vms-02", "display", error_bits=4))
    engine.observe(SITE, GW, batch("cam-02", "air_quality", fps=1))  # rule limited to cameras
    await engine.drain()
    _, alerts = await store.query()
    assert sorted((a["subject"], a["rule"]) for a in alerts) == [("cam-01", "fps-low"), ("vms-02", "display-error")]
    engine.observe(SITE, GW, batch("vms-02", "display", error_bits=0))
    await engine.drain()
    assert [e for e, _ in events].count("resolved") == 1


async def test_manual_resolve_refires_when_the_condition_holds(db: Database) -> None:
    engine, store, clock, _events = make(db)
    engine.observe(SITE, GW, batch("cam-01", "camera", fps=5))
    await engine.drain()
    _, [alert] = await store.query(states=["firing"])
    await store.acknowledge(alert["id"], "op-1")
    resolved = await store.resolve(alert["id"], "op-1", "checked on site")
    assert resolved is not None
    assert (resolved["state"], resolved["acked_by"], resolved["resolved_by"]) == ("resolved", "op-1", "op-1")
    engine.manual_resolved("cam-01", "fps-low")
    clock.now += 1
    engine.tick()
    await engine.drain()
    total, firing = await store.query(states=["firing"])
    assert total == 1
    assert firing[0]["id"] != alert["id"]


async def test_offline_rule_no_storm_while_flapping(db: Database) -> None:
    engine, store, clock, _events = make(db)
    health = HealthMonitor(
        policy=HealthPolicy(flap=FlapPolicy(flap_window_s=60, flap_changes=4, flap_quiet_s=30)), clock=clock
    )
    health.subscribe(engine.on_transition)
    birth = State(online=True, session="sess-0001", ts=TS, devices=[DeviceInfo("aq-01", "air_quality", "p", 1.0)])
    health.observe(SITE, GW, birth)
    for _ in range(30):  # a device flapping every second
        health.observe(SITE, GW, batch("aq-01", "air_quality", x=1))
        clock.now += 3.1  # past its inactivity timeout (3 x 1 s)
        health.tick()
        engine.tick()
    await engine.drain()
    total, _ = await store.query()
    assert total == 0  # offline never lasted the rule's 5 s, then the device was damped to degraded
    state = health.device("aq-01")
    assert state is not None
    assert state["flapping"] is True


async def test_stale_data(db: Database) -> None:
    engine, store, clock, events = make(db)
    engine.observe(SITE, GW, batch("wl-01", "water_level", level_m=1.0))
    clock.now += 31
    engine.tick()
    await engine.drain()
    _, alerts = await store.query()
    assert [(a["rule"], a["subject"]) for a in alerts] == [("stale", "wl-01")]
    engine.observe(SITE, GW, batch("wl-01", "water_level", level_m=1.0))
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "resolved"]


async def test_two_engines_racing_on_one_database_open_one_alert(db: Database) -> None:
    """Two hub processes (each its own engine, memory and connection pool) see the same breach at once: the
    unique constraint on open alerts leaves exactly one, and the loser gets the winner's alert back."""
    other = Database(db.url)
    try:
        engines = [make(db)[0], make(other)[0]]
        for engine in engines:
            engine.observe(SITE, GW, batch("cam-01", "camera", fps=1))
        await asyncio.gather(*(e.drain() for e in engines))
        total, alerts = await AlertStore(db).query(states=["firing", "acknowledged"])
        assert total == 1
        # The same race straight on the stores, many times over, from threads of two pools.
        await AlertStore(db).resolve(alerts[0]["id"], "t", "t")
        values = {"rule": "fps-low", "subject": "cam-02", "severity": "warning", "message": "x"}
        results = await asyncio.gather(*(AlertStore(d).open(values) for d in [db, other] * 5))
        assert sum(created for _, created in results) == 1
        assert len({alert["id"] for alert, _ in results}) == 1
    finally:
        other.close()


class _Receiver(BaseHTTPRequestHandler):
    answers: list[int] = []  # noqa: RUF012 - set per test
    received: list[dict[str, Any]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_webhook_retries_and_logs_each_attempt(db: Database, receiver: str) -> None:
    _Receiver.answers = [503, 500]
    _Receiver.received = []
    store = AlertStore(db)
    alert, _ = await store.open({"rule": "r", "subject": "d", "severity": "major", "message": "m"})
    notifier = Notifier([Webhook(url=receiver, retries=3)], store, retry_initial_s=0.01)
    async with httpx.AsyncClient() as client:
        assert await notifier.deliver(client, Webhook(url=receiver, retries=3), "fired", alert)
    log = await store.deliveries(alert["id"])
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in reversed(log)] == [
        (1, False, 503),
        (2, False, 500),
        (3, True, 200),
    ]
    assert _Receiver.received[-1] == {"event": "fired", "alert": alert}


async def test_webhook_gives_up_on_a_client_error_and_filters_by_severity(db: Database, receiver: str) -> None:
    _Receiver.answers = [404]
    _Receiver.received = []
    store = AlertStore(db)
    major, _ = await store.open({"rule": "r", "subject": "d", "severity": "major", "message": "m"})
    info, _ = await store.open({"rule": "r", "subject": "e", "severity": "info", "message": "m"})
    notifier = Notifier([Webhook(url=receiver, retries=3, min_severity="major")], store, retry_initial_s=0.01)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue("fired", info)
    notifier.enqueue("fired", major)
    for _ in range(200):
        if notifier.failed:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [d["status_code"] for d in await store.deliveries()] == [404]
    assert [r["alert"]["id"] for r in _Receiver.received] == [major["id"]]


async def test_alerts_left_open_by_a_previous_run_clear_when_their_condition_does(db: Database) -> None:
    engine, store, clock, _events = make(db)
    engine.observe(SITE, GW, batch("wl-01", "water_level", level_m=1.0))
    engine.observe(SITE, GW, batch("cam-01", "camera", fps=1))
    clock.now += 31
    engine.tick()
    await engine.drain()
    assert (await store.query(states=["firing"]))[0] == 2
    restarted, _, _, events = make(db)
    await restarted.load()
    restarted.observe(SITE, GW, batch("wl-01", "water_level", level_m=1.0))
    restarted.observe(SITE, GW, batch("cam-01", "camera", fps=30))
    await restarted.drain()
    assert [e for e, _ in events] == ["resolved", "resolved"]
    assert (await store.query(states=["firing"]))[0] == 0
