"""Alerts: rule file errors, threshold duration and clear level, bits, offline (one alert through a flapping link:
resolved only once back for the rule's hold), stale, one open alert per (subject, rule) also with two engines
racing on one database, re-fire after a manual resolve, webhooks with retries and a delivery log (against a real
HTTP server on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clock_support import Clock
from webhook_support import WebhookReceiver, webhook_receiver

from hub.alerts.engine import AlertEngine
from hub.alerts.notify import Notifier
from hub.alerts.rules import DEFAULT_CLEAR_AFTER_S, DEFAULT_RULES, OfflineRule, RulesFile, Webhook, parse_rules
from hub.alerts.store import AlertStore
from hub.errors import ConfigError
from hub.health.machine import FlapPolicy
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, Reading, State

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
        ({"rules": [{"id": "x", "type": "offline", "clear_after_s": -1}]},
         "rules[0] (x): clear_after_s: Input should be greater than or equal to 0"),
        ({"rules": [{"id": "x", "type": "offline", "clear_after_s": "soon"}]},
         "rules[0] (x): clear_after_s: Input should be a valid number"),
        ({"rules": [{"id": "x", "type": "offline", "clear_after_s": 86_401}]},
         "rules[0] (x): clear_after_s: Input should be less than or equal to 86400"),
        ({"rules": [{"id": "x", "type": "threshold", "metric": "pm25", "above": 1, "clear": 0, "clear_after_s": 5}]},
         "rules[0] (x): clear_after_s: unknown key"),
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


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver("/hook") as found:
        yield found


async def test_webhook_retries_and_logs_each_attempt(db: Database, receiver: WebhookReceiver) -> None:
    receiver.answers = [503, 500]
    store = AlertStore(db)
    alert, _ = await store.open({"rule": "r", "subject": "d", "severity": "major", "message": "m"})
    notifier = Notifier([Webhook(url=receiver.url, retries=3)], store, retry_initial_s=0.01)
    async with httpx.AsyncClient() as client:
        assert await notifier.deliver(client, Webhook(url=receiver.url, retries=3), "fired", alert)
    log = await store.deliveries(alert["id"])
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in reversed(log)] == [
        (1, False, 503),
        (2, False, 500),
        (3, True, 200),
    ]
    assert receiver.received[-1] == {"event": "fired", "alert": alert}


async def test_webhook_gives_up_on_a_client_error_and_filters_by_severity(
    db: Database, receiver: WebhookReceiver
) -> None:
    receiver.answers = [404]
    store = AlertStore(db)
    major, _ = await store.open({"rule": "r", "subject": "d", "severity": "major", "message": "m"})
    info, _ = await store.open({"rule": "r", "subject": "e", "severity": "info", "message": "m"})
    notifier = Notifier([Webhook(url=receiver.url, retries=3, min_severity="major")], store, retry_initial_s=0.01)
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
    assert [r["alert"]["id"] for r in receiver.received] == [major["id"]]


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


# ------------------------------------------------------------------------------------------ offline: the hold

GW_KEY = f"{SITE}/{GW}"
#: The gateway rule of the fault suite's flapping-link case (tests/faults/test_edge_faults.py): for_s scaled down
#: to its 4 s cuts, the hold at its default; a threshold and a stale rule beside it.
HOLD_RULES = parse_rules(
    {
        "rules": [
            {"id": "gateway-offline", "type": "offline", "target": "gateway", "for_s": 1, "severity": "critical"},
            {"id": "device-offline", "type": "offline", "for_s": 5, "severity": "major"},
            {"id": "fps-low", "type": "threshold", "kinds": ["camera"], "metric": "fps", "below": 10, "clear": 12},
            {"id": "stale", "type": "stale", "max_age_s": 30, "kinds": ["water_level"]},
        ]
    },
    "rules.yaml",
)  # fmt: skip


def test_offline_rules_hold_their_alert_for_60_s_by_default() -> None:
    assert DEFAULT_CLEAR_AFTER_S == 60.0
    offline = [r for r in DEFAULT_RULES.rules if isinstance(r, OfflineRule)]
    assert [(r.id, r.clear_after_s) for r in offline] == [("device-offline", 60.0), ("gateway-offline", 60.0)]


def watched(
    db: Database, rules: RulesFile = HOLD_RULES, policy: HealthPolicy | None = None
) -> tuple[AlertEngine, AlertStore, HealthMonitor, Clock, list[tuple[str, int]]]:
    """An engine fed by a health monitor on the same clock (the flap policy at its defaults unless given)."""
    engine, store, clock, events = make(db, rules)
    health = HealthMonitor(policy=policy or HealthPolicy(), clock=clock)
    health.subscribe(engine.on_transition)
    return engine, store, health, clock, events


def gw_birth(n: int) -> State:
    return State(
        online=True,
        session=f"sess-{n:04d}",
        ts=TS,
        devices=[DeviceInfo("aq-01", "air_quality", "p", 60.0), DeviceInfo("cam-01", "camera", "p", 60.0)],
    )


def gw_death(n: int) -> State:
    return State(online=False, session=f"sess-{n:04d}", reason="connection lost")


def advance(clock: Clock, health: HealthMonitor, engine: AlertEngine, seconds: float) -> None:
    """Let ``seconds`` pass in the engine's tick steps (0.5 s), both clocks ticking."""
    for _ in range(round(seconds / 0.5)):
        clock.now += 0.5
        health.tick()
        engine.tick()


async def test_a_flapping_gateway_gets_one_alert_resolved_once_back_for_the_hold(db: Database) -> None:
    """The fault suite's flapping link (cut 5 times: 4 s down, 6 s up) with the default flap damping: offline at
    the 1st, 3rd and 5th change, degraded (flapping) at the 6th; one alert, counting the three times offline."""
    engine, store, health, clock, events = watched(db)
    session = 1
    health.observe(SITE, GW, gw_birth(session))
    for _ in range(5):
        health.observe(SITE, GW, gw_death(session))
        advance(clock, health, engine, 4)
        session += 1
        health.observe(SITE, GW, gw_birth(session))
        advance(clock, health, engine, 6)
    await engine.drain()
    # The states are truthful at once; only the alert's resolution waits.
    gateway = health.gateway(SITE, GW)
    assert gateway is not None
    assert gateway["state"] == "degraded"
    assert [e for e, _ in events] == ["fired"]
    total, [alert] = await store.query()
    assert total == 1
    assert (alert["rule"], alert["subject"], alert["state"], alert["value"]) == (
        "gateway-offline",
        GW_KEY,
        "firing",
        3.0,
    )
    assert alert["message"] == (
        f"gateway {GW_KEY} offline: gateway death: connection lost "
        "(offline 3 times, back for less than 60 s in between)"
    )
    # Degraded (flapping) since the 6th change (the 3rd return), 26 s ago: resolved 60 s after it.
    advance(clock, health, engine, 33.5)
    await engine.drain()
    assert [e for e, _ in events] == ["fired"]
    advance(clock, health, engine, 0.5)
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "resolved"]
    _, [resolved] = await store.query(states=["resolved"])
    assert resolved["id"] == alert["id"]
    assert resolved["resolved_by"] == "system"
    assert resolved["resolution"].startswith("condition cleared: gateway degraded: flapping: 6 changes within 300 s")
    assert resolved["resolution"].endswith("; back for 60 s")


async def test_an_outage_resolves_once_the_gateway_is_back_for_the_hold(db: Database) -> None:
    engine, store, health, clock, events = watched(db)
    health.observe(SITE, GW, gw_birth(1))
    health.observe(SITE, GW, gw_death(1))
    advance(clock, health, engine, 40)
    health.observe(SITE, GW, gw_birth(2))
    gateway = health.gateway(SITE, GW)
    assert gateway is not None
    assert gateway["state"] == "online"  # at once
    advance(clock, health, engine, 59.5)
    await engine.drain()
    assert [e for e, _ in events] == ["fired"]
    advance(clock, health, engine, 0.5)
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "resolved"]
    _, [alert] = await store.query(states=["resolved"])
    assert alert["value"] == 1.0
    assert alert["message"] == f"gateway {GW_KEY} offline: gateway death: connection lost"
    assert alert["resolution"] == "condition cleared: gateway online: birth (session sess-0002); back for 60 s"


async def test_offline_again_within_the_hold_keeps_the_alert_and_the_hold_starts_over(db: Database) -> None:
    engine, store, health, clock, events = watched(db)
    health.observe(SITE, GW, gw_birth(1))
    health.observe(SITE, GW, gw_death(1))
    advance(clock, health, engine, 40)
    health.observe(SITE, GW, gw_birth(2))
    advance(clock, health, engine, 50)  # back, but not for the hold
    health.observe(SITE, GW, gw_death(2))
    advance(clock, health, engine, 40)
    await engine.drain()
    total, [alert] = await store.query()
    assert (total, alert["state"], alert["value"]) == (1, "firing", 2.0)
    assert "(offline 2 times, back for less than 60 s in between)" in alert["message"]
    health.observe(SITE, GW, gw_birth(3))
    advance(clock, health, engine, 59.5)  # 109.5 s after the first return: the hold counts from the last one
    await engine.drain()
    assert [e for e, _ in events] == ["fired"]
    advance(clock, health, engine, 0.5)
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "resolved"]
    # Once resolved, the next outage is a new alert.
    health.observe(SITE, GW, gw_death(3))
    advance(clock, health, engine, 2)
    await engine.drain()
    total, alerts = await store.query()
    assert total == 2
    assert [(a["state"], a["value"]) for a in alerts] == [("firing", 1.0), ("resolved", 2.0)]


async def test_a_device_whose_gateway_goes_during_the_hold_is_not_back(db: Database) -> None:
    """Unknown (its gateway went) is no verdict on the device: the resolve waits for its next return."""
    engine, store, health, clock, events = watched(db)
    health.observe(SITE, GW, gw_birth(1))
    health.observe(SITE, GW, batch("aq-01", "air_quality", pm25=1))
    health.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_DOWN, TS, reason="no answer"))
    advance(clock, health, engine, 10)
    health.observe(SITE, GW, batch("aq-01", "air_quality", pm25=1))  # back: the hold starts
    advance(clock, health, engine, 30)
    health.observe(SITE, GW, gw_death(1))  # aq-01 unknown: the hold stops
    advance(clock, health, engine, 40)
    await engine.drain()
    _, firing = await store.query(states=["firing"])
    assert sorted((a["rule"], a["subject"]) for a in firing) == [
        ("device-offline", "aq-01"),
        ("gateway-offline", GW_KEY),
    ]
    health.observe(SITE, GW, gw_birth(2))
    health.observe(SITE, GW, batch("aq-01", "air_quality", pm25=1))  # back again: the hold starts over
    advance(clock, health, engine, 59.5)  # 99.5 s after the device's first return
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "fired"]
    advance(clock, health, engine, 0.5)
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "fired", "resolved", "resolved"]
    _, resolved = await store.query(states=["resolved"])
    device = next(a for a in resolved if a["subject"] == "aq-01")
    assert device["resolution"] == "condition cleared: device online: reading received; back for 60 s"


async def test_clear_after_0_resolves_when_the_entity_is_back(db: Database) -> None:
    rules = parse_rules(
        {"rules": [{"id": "gateway-offline", "type": "offline", "target": "gateway", "for_s": 1, "clear_after_s": 0}]},
        "rules.yaml",
    )
    engine, _store, health, clock, events = watched(db, rules)
    health.observe(SITE, GW, gw_birth(1))
    health.observe(SITE, GW, gw_death(1))
    advance(clock, health, engine, 2)
    health.observe(SITE, GW, gw_birth(2))
    await engine.drain()
    assert [e for e, _ in events] == ["fired", "resolved"]


async def test_threshold_and_stale_rules_clear_at_once_while_an_offline_alert_is_held(db: Database) -> None:
    engine, store, health, clock, _events = watched(db)
    health.observe(SITE, GW, gw_birth(1))
    engine.observe(SITE, GW, batch("wl-01", "water_level", level_m=1.0))
    engine.observe(SITE, GW, batch("cam-01", "camera", fps=4))
    health.observe(SITE, GW, gw_death(1))
    advance(clock, health, engine, 2)
    health.observe(SITE, GW, gw_birth(2))  # back: gateway-offline is held
    advance(clock, health, engine, 30)  # wl-01 silent for 32 s while its gateway is online: stale
    await engine.drain()
    _, firing = await store.query(states=["firing"])
    assert sorted(a["rule"] for a in firing) == ["fps-low", "gateway-offline", "stale"]
    engine.observe(SITE, GW, batch("cam-01", "camera", fps=13))
    engine.observe(SITE, GW, batch("wl-01", "water_level", level_m=1.0))
    await engine.drain()
    _, firing = await store.query(states=["firing"])
    assert [a["rule"] for a in firing] == ["gateway-offline"]


async def test_an_offline_alert_taken_over_at_start_resolves_after_the_hold(db: Database) -> None:
    engine, store, health, clock, _events = watched(db)
    health.observe(SITE, GW, gw_birth(1))
    health.observe(SITE, GW, gw_death(1))
    advance(clock, health, engine, 2)
    await engine.drain()
    restarted, _, health, clock, events = watched(db)
    await restarted.load()
    health.observe(SITE, GW, gw_birth(2))
    health.observe(SITE, GW, gw_death(2))  # offline again within the hold: counted on from the stored value
    health.observe(SITE, GW, gw_birth(3))
    advance(clock, health, restarted, 59.5)
    await restarted.drain()
    assert events == []
    advance(clock, health, restarted, 0.5)
    await restarted.drain()
    assert [e for e, _ in events] == ["resolved"]
    _, [alert] = await store.query()
    assert alert["value"] == 2.0
