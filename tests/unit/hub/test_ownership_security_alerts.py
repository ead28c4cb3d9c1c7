"""Security alerts from the ingest admission's refusals: one open alert per (gateway, reason) however many
refusals, the count refreshed, resolved after a quiet period; every refusal counted per gateway. On the real
alert store (SQLite) and engine, whose listeners are the webhooks and the live events."""

from __future__ import annotations

from typing import Any

from clock_support import Clock

from hub.alerts.engine import AlertEngine
from hub.alerts.rules import RulesFile
from hub.alerts.security import SecurityAlerts
from hub.alerts.store import AlertStore
from hub.ingest.admission import Refusal, RefusalReason
from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry


def refusal(reason: RefusalReason, device: str = "aq-01", gateway: str = "gw-9") -> Refusal:
    return Refusal("s2", gateway, reason, device, f"{reason.value} about {device}")


def make(db: Database) -> tuple[SecurityAlerts, AlertEngine, AlertStore, Clock, list[tuple[str, str, str]]]:
    clock = Clock()
    registry = Registry()
    registry.apply_inventory(parse_mapping({"sites": [{"id": "s2", "ward": "quan-3"}]}, "x"))
    store = AlertStore(db)
    engine = AlertEngine(RulesFile(), store, registry, clock=clock)
    events: list[tuple[str, str, str]] = []
    engine.subscribe(lambda event, alert: events.append((event, alert["rule"], alert["subject"])))
    return SecurityAlerts(engine, quiet_s=300, update_s=10, clock=clock), engine, store, clock, events


async def open_alerts(store: AlertStore) -> list[dict[str, Any]]:
    return sorted(await store.open_alerts(), key=lambda a: a["rule"])


async def test_a_storm_of_refusals_is_one_alert_per_gateway_and_reason_with_its_count(db: Database) -> None:
    security, engine, store, clock, events = make(db)
    for i in range(500):
        security.observe(refusal(RefusalReason.FOREIGN_DEVICE, device=f"d-{i % 7}"))
    for _ in range(3):
        security.observe(refusal(RefusalReason.FIELD_TYPE))
    security.observe(refusal(RefusalReason.UNANNOUNCED_DEVICE))  # counted, not an alert (rebirth asked)
    security.observe(refusal(RefusalReason.CLOCK_SKEW))  # counted, not an alert (a health problem)
    security.observe(refusal(RefusalReason.HUB_OWNED_KIND, gateway="gw-1"))
    await engine.drain()

    alerts = await open_alerts(store)
    assert [(a["rule"], a["subject"], a["severity"], a["subject_type"], a["ward"]) for a in alerts] == [
        ("security-field-type", "s2/gw-9", "major", "gateway", "quan-3"),
        ("security-foreign-device", "s2/gw-9", "critical", "gateway", "quan-3"),
        ("security-hub-owned-kind", "s2/gw-1", "critical", "gateway", "quan-3"),
    ]
    assert sorted(events) == [
        ("fired", "security-field-type", "s2/gw-9"),
        ("fired", "security-foreign-device", "s2/gw-9"),
        ("fired", "security-hub-owned-kind", "s2/gw-1"),
    ]
    assert security.counts("s2", "gw-9") == {
        "foreign_device": 500,
        "field_type": 3,
        "unannounced_device": 1,
        "clock_skew": 1,
    }
    assert security.counts("s2", "gw-1") == {"hub_owned_kind": 1}

    # The count reaches the alert row, at most once per update period.
    clock.now += 10
    security.tick()
    await engine.drain()
    foreign = next(a for a in await open_alerts(store) if a["rule"] == "security-foreign-device")
    assert foreign["value"] == 500.0
    assert "refused 500 times" in foreign["message"]
    assert len(events) == 3  # a refreshed count notifies nobody


async def test_a_security_alert_resolves_after_the_quiet_period_and_a_new_refusal_opens_another(db: Database) -> None:
    security, engine, store, clock, events = make(db)
    security.observe(refusal(RefusalReason.DEVICE_RATE))
    clock.now += 299
    security.observe(refusal(RefusalReason.DEVICE_RATE))  # the quiet period starts again
    clock.now += 299
    security.tick()
    await engine.drain()
    assert [a["rule"] for a in await open_alerts(store)] == ["security-device-rate"]

    clock.now += 1
    security.tick()
    await engine.drain()
    assert await open_alerts(store) == []
    _, resolved = await store.query(states=["resolved"])
    assert resolved[0]["resolution"] == "condition cleared: no device_rate refusal for 300 s (2 in all)"

    security.observe(refusal(RefusalReason.DEVICE_RATE))
    await engine.drain()
    assert [e[0] for e in events] == ["fired", "resolved", "fired"]


async def test_after_a_manual_resolve_the_next_refusal_opens_a_new_alert(db: Database) -> None:
    security, engine, store, _clock, events = make(db)
    security.observe(refusal(RefusalReason.UNKNOWN_KIND))
    await engine.drain()
    alert = (await open_alerts(store))[0]
    await store.resolve(alert["id"], "operator", "checked the cabinet")
    engine.manual_resolved(alert["subject"], alert["rule"])

    security.observe(refusal(RefusalReason.UNKNOWN_KIND))
    await engine.drain()
    assert [(a["rule"], a["value"]) for a in await open_alerts(store)] == [("security-unknown-kind", 1.0)]
    assert [e[0] for e in events] == ["fired", "fired"]


async def test_open_security_alerts_of_a_previous_run_are_taken_over_and_resolve_when_quiet(db: Database) -> None:
    security, engine, store, _clock, _events = make(db)
    security.observe(refusal(RefusalReason.FOREIGN_DEVICE))
    await engine.drain()

    again, engine2, _store, clock2, events2 = make(db)
    await engine2.load()
    await again.load(store)
    clock2.now += 300
    again.tick()
    await engine2.drain()
    assert await open_alerts(store) == []
    assert events2 == [("resolved", "security-foreign-device", "s2/gw-9")]


async def test_garbage_or_a_flood_of_snapshots_raises_a_security_alert_per_reason(db: Database) -> None:
    security, engine, store, clock, events = make(db)
    for _ in range(40):
        security.observe(refusal(RefusalReason.SNAPSHOT_RATE, device="cam-01"))
    security.observe(refusal(RefusalReason.BAD_IMAGE, device="cam-01"))
    security.observe(refusal(RefusalReason.BAD_IMAGE, device="cam-02"))
    security.observe(refusal(RefusalReason.NOT_A_CAMERA, device="aq-01"))
    await engine.drain()

    alerts = await open_alerts(store)
    assert [(a["rule"], a["subject"], a["severity"], a["subject_type"], a["ward"], a["value"]) for a in alerts] == [
        ("security-bad-image", "s2/gw-9", "major", "gateway", "quan-3", 1.0),
        ("security-not-a-camera", "s2/gw-9", "major", "gateway", "quan-3", 1.0),
        ("security-snapshot-rate", "s2/gw-9", "warning", "gateway", "quan-3", 1.0),
    ]
    assert [a["message"] for a in alerts] == [
        (
            "gateway s2/gw-9 sent snapshots that are not a JPEG of a sane picture size (bad_image, refused once); "
            "last: bad_image about cam-01"
        ),
        (
            "gateway s2/gw-9 sent snapshots of a device it announced as no camera (not_a_camera, refused once); "
            "last: not_a_camera about aq-01"
        ),
        (
            "gateway s2/gw-9 sent snapshots of a camera faster than allowed (snapshot_rate, refused once); "
            "last: snapshot_rate about cam-01"
        ),
    ]
    assert security.counts("s2", "gw-9") == {"snapshot_rate": 40, "bad_image": 2, "not_a_camera": 1}

    # The flood's count reaches its alert at the next update; the alerts resolve when quiet, with their totals.
    clock.now += 10
    security.tick()
    await engine.drain()
    alerts = await open_alerts(store)
    assert [(a["rule"], a["value"]) for a in alerts] == [
        ("security-bad-image", 2.0),
        ("security-not-a-camera", 1.0),
        ("security-snapshot-rate", 40.0),
    ]
    assert "(snapshot_rate, refused 40 times); last: snapshot_rate about cam-01" in alerts[2]["message"]
    clock.now += 300
    security.tick()
    await engine.drain()
    assert await open_alerts(store) == []
    _, resolved = await store.query(states=["resolved"])
    assert sorted(a["resolution"] for a in resolved) == [
        "condition cleared: no bad_image refusal for 300 s (2 in all)",
        "condition cleared: no not_a_camera refusal for 300 s (1 in all)",
        "condition cleared: no snapshot_rate refusal for 300 s (40 in all)",
    ]
    assert sorted(events) == sorted(
        (event, rule, "s2/gw-9")
        for event in ("fired", "resolved")
        for rule in ("security-bad-image", "security-not-a-camera", "security-snapshot-rate")
    )
