"""The alert clock's work is what may be due (the conditions touched since they settled, a heap per stale rule),
not every condition and device: after every tick of a random run, nothing a visit of every condition and device
would have fired, resolved or judged stale is left undone; with nothing due, a tick of 20,000 devices touches
none."""

from __future__ import annotations

import random

import pytest
from clock_support import Clock

from hub.alerts.engine import AlertEngine
from hub.alerts.rules import OfflineRule, StaleRule, parse_rules
from hub.alerts.store import AlertStore
from hub.health.machine import FlapPolicy, Health
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.registry.db import Database
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Reading, State

TS = 1_764_331_200_000
GATEWAYS = [(f"s{i}", f"gw-{i}") for i in range(3)]
RULES = parse_rules(
    {
        "rules": [
            {"id": "pm25-high", "type": "threshold", "metric": "pm25", "above": 150, "clear": 120, "for_s": 4},
            {"id": "device-offline", "type": "offline", "for_s": 3, "clear_after_s": 10},
            {"id": "gateway-offline", "type": "offline", "target": "gateway", "for_s": 2, "clear_after_s": 6},
            {"id": "stale", "type": "stale", "max_age_s": 8},
            {"id": "stale-water", "type": "stale", "max_age_s": 20, "kinds": ["water_level"]},
        ]
    },
    "rules.yaml",
)


def devices_of(i: int) -> list[tuple[str, str]]:
    return [(f"gw-{i}-d{n}", ("air_quality", "water_level")[n % 2]) for n in range(4)]


def owed(engine: AlertEngine, health: HealthMonitor, now: float) -> list[str]:
    """What a visit of every condition and device at ``now`` would still do."""
    out = []
    rules = {r.id: r for r in RULES.rules}
    for (subject, rule_id), cond in engine._conds.items():
        rule = rules[rule_id]
        for_s = 0.0 if isinstance(rule, StaleRule) else rule.for_s
        if cond.breaching and not cond.open and now - cond.since >= for_s:
            out.append(f"{rule_id} {subject}: not fired")
        hold = rule.clear_after_s if isinstance(rule, OfflineRule) else 0.0
        if cond.back_since is not None and now - cond.back_since >= hold:
            out.append(f"{rule_id} {subject}: not resolved")
    for rule in (r for r in RULES.rules if isinstance(r, StaleRule)):
        for device, (seen, site, gateway, kind) in engine._last_reading.items():
            gw = health.gateway(site, gateway)
            if now - seen < rule.max_age_s or not rule.applies_to(device, kind) or gw is None:
                continue
            judged = engine._conds.get((device, rule.id))
            if gw["state"] == Health.ONLINE and (judged is None or not (judged.breaching or judged.open)):
                out.append(f"{rule.id} {device}: stale, not judged")
    return out


@pytest.mark.parametrize("seed", range(20))
def test_after_every_tick_nothing_due_is_left_undone(db: Database, seed: int) -> None:
    rnd = random.Random(seed)
    clock = Clock()
    registry = Registry()
    health = HealthMonitor(registry, HealthPolicy(flap=FlapPolicy(60, 4, 30)), clock=clock)
    engine = AlertEngine(RULES, AlertStore(db), registry, health, clock=clock)
    fired: list[str] = []
    sessions = dict.fromkeys(range(len(GATEWAYS)), 0)
    for step in range(300):
        i = rnd.randrange(len(GATEWAYS))
        site, gateway = GATEWAYS[i]
        action = rnd.random()
        if action < 0.08:
            sessions[i] += 1
            infos = [DeviceInfo(d, kind, "p", rnd.choice((1.0, 2.0))) for d, kind in devices_of(i)]
            state = State(online=True, session=f"sess-{i}-{sessions[i]}", ts=TS, devices=infos)
            registry.apply_birth(site, gateway, state)
            health.observe(site, gateway, state)
        elif action < 0.13:
            health.observe(site, gateway, State(online=False, session=f"sess-{i}-{sessions[i]}", ts=TS))
        elif action < 0.7:
            chosen = rnd.sample(devices_of(i), rnd.randint(1, 4))
            readings = [Reading(d, kind, TS, {"pm25": float(rnd.choice((10, 130, 200)))}) for d, kind in chosen]
            batch = DataBatch(session=f"sess-{i}-{sessions[i]}", seq=step, readings=readings)
            health.observe(site, gateway, batch)
            engine.observe(site, gateway, batch)
        before = engine.dropped_actions
        clock.now += rnd.choice((0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 12.0))
        health.tick()
        engine.tick()
        assert engine.dropped_actions == before
        assert owed(engine, health, clock.now) == [], f"seed {seed} step {step}"
        fired += [f"{s}/{r}" for (s, r), c in engine._conds.items() if c.open]
    rules_fired = {f.split("/")[-1] for f in fired}
    assert {"pm25-high", "device-offline", "stale"} <= rules_fired  # the run reached the verdicts it checks


def test_a_tick_with_nothing_due_touches_none_of_20000_devices(db: Database) -> None:
    clock = Clock()
    rules = parse_rules({"rules": [{"id": "stale", "type": "stale", "max_age_s": 600}]}, "rules.yaml")
    engine = AlertEngine(rules, AlertStore(db), clock=clock)
    for i in range(5000):
        readings = [Reading(f"gw-{i}-d{n}", "air_quality", TS, {"pm25": 1.0}) for n in range(4)]
        engine.observe(f"s{i}", f"gw-{i}", DataBatch(session="sess-0001", seq=1, readings=readings))
    heap = engine._stale_heaps[0]
    assert len(heap) == 20_000
    head = heap[0]
    clock.now += 599.0
    for _ in range(3):
        engine.tick()
    assert (len(heap), heap[0]) == (20_000, head)
    assert engine._conds == {}

    # Data keeps coming from all but one device: at its max age that one alone is stale.
    clock.now += 0.5
    for i in range(5000):
        ids = [f"gw-{i}-d{n}" for n in range(4) if (i, n) != (42, 1)]
        readings = [Reading(d, "air_quality", TS, {"pm25": 1.0}) for d in ids]
        engine.observe(f"s{i}", f"gw-{i}", DataBatch(session="sess-0001", seq=2, readings=readings))
    clock.now = 1600.0
    engine.tick()
    assert sorted(engine._conds) == [("gw-42-d1", "stale")]
    assert engine.is_open("gw-42-d1", "stale")
