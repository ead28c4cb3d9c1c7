"""The health clock's work is what is due (a heap by time, the flapping entities), not every device: after every
tick of a random run, nothing a visit of every gateway and device would have judged is left unjudged, and nothing
was judged before its time; with nothing due, a tick of 20,000 devices touches none."""

from __future__ import annotations

import random

import pytest
from clock_support import Clock

from hub.health.machine import FlapPolicy, Health
from hub.health.monitor import SILENCE_FACTOR, HealthMonitor, HealthPolicy, Transition
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, Reading, State

TS = 1_764_331_200_000
GATEWAYS = [(f"s{i}", f"gw-{i}") for i in range(3)]


def devices_of(i: int) -> list[str]:
    return [f"gw-{i}-d{n}" for n in range(4)]


def unjudged(monitor: HealthMonitor, now: float) -> list[str]:
    """What a visit of every entity at ``now`` would still change: the verdicts the clock owes."""
    owed = []
    for key, g in monitor.gateways.items():
        if g.machine.flapping and now - g.machine.raw_since >= monitor.policy.flap.flap_quiet_s:
            owed.append(f"gateway {key} still flapping")
        if g.keepalive_s is not None and g.machine.raw is Health.ONLINE:
            silent_at = max(g.heard, monitor._blind_at) + SILENCE_FACTOR * g.keepalive_s
            if now >= silent_at:
                owed.append(f"gateway {key} silent since {silent_at}")
    for d in monitor.devices.values():
        if d.machine.flapping and now - d.machine.raw_since >= monitor.policy.flap.flap_quiet_s:
            owed.append(f"device {d.id} still flapping")
        timeout = monitor.inactivity_s(d)
        if (
            d.last_seen is not None
            and timeout is not None
            and d.machine.raw in (Health.ONLINE, Health.DEGRADED)
            and now - d.last_seen >= timeout
            and (d.owner is None or d.owner.machine.raw is Health.ONLINE)
        ):
            owed.append(f"device {d.id} inactive since {d.last_seen + timeout}")
    return owed


@pytest.mark.parametrize("seed", range(25))
def test_after_every_tick_nothing_due_is_left_and_nothing_came_early(seed: int) -> None:
    rnd = random.Random(seed)
    clock = Clock()
    registry = Registry()
    monitor = HealthMonitor(
        registry, HealthPolicy(flap=FlapPolicy(60, 4, 30)), clock=clock, wall=lambda: TS / 1000 + clock.now
    )
    seen: list[Transition] = []
    monitor.subscribe(seen.append)
    blind = False
    monitor.watch_intake(lambda: not blind)
    sessions = dict.fromkeys(range(len(GATEWAYS)), 0)
    for step in range(400):
        i = rnd.randrange(len(GATEWAYS))
        site, gateway = GATEWAYS[i]
        session = f"sess-{i}-{sessions[i]:04d}"
        action = rnd.random()
        if action < 0.08:
            sessions[i] += 1
            session = f"sess-{i}-{sessions[i]:04d}"
            infos = [DeviceInfo(d, "air_quality", "p", rnd.choice((1.0, 2.0, 5.0))) for d in devices_of(i)]
            state = State(online=True, session=session, ts=TS, keepalive_s=rnd.choice((None, 4, 10)), devices=infos)
            registry.apply_birth(site, gateway, state)
            monitor.observe(site, gateway, state)
        elif action < 0.12:
            monitor.observe(site, gateway, State(online=False, session=session, ts=TS, reason="lost"))
        elif action < 0.55:
            readings = [Reading(d, "air_quality", TS, {"x": 1.0}) for d in rnd.sample(devices_of(i), rnd.randint(1, 4))]
            monitor.observe(site, gateway, DataBatch(session=session, seq=step, readings=readings))
        elif action < 0.62:
            kind = rnd.choice((EventType.DEVICE_DOWN, EventType.DEVICE_UP, EventType.DEVICE_DEGRADED))
            event = Event(session=session, device=rnd.choice(devices_of(i)), ts=TS, type=kind)
            monitor.observe(site, gateway, event)
        elif action < 0.65:
            device = rnd.choice(devices_of(i))
            if device in registry.devices:  # a technician states its timeout (shorter or longer than 3 polls)
                entry = {"id": device, "inactivity_s": rnd.choice((0.5, 3.0, 40.0))}
                registry.apply_inventory(parse_mapping({"devices": [entry]}, "inventory.yaml"))
        elif action < 0.68:
            blind = not blind
        before = len(seen)
        clock.now += rnd.choice((0.0, 0.1, 0.25, 0.5, 1.0, 3.0, 8.0, 20.0))
        monitor.tick()
        assert unjudged(monitor, clock.now) == [], f"seed {seed} step {step}"
        for t in seen[before:]:
            if t.reason.startswith("no reading for"):
                d = monitor.devices[t.device]
                timeout = monitor.inactivity_s(d)
                assert timeout is not None
                assert d.last_seen is not None
                assert clock.now - d.last_seen >= timeout, t
    assert any(t.reason.startswith("no reading for") for t in seen)  # the run did reach the verdicts it checks


def test_a_tick_with_nothing_due_touches_none_of_20000_devices() -> None:
    clock = Clock()
    monitor = HealthMonitor(None, clock=clock)
    for i in range(5000):
        infos = [DeviceInfo(f"gw-{i}-d{n}", "air_quality", "p", 10.0) for n in range(4)]
        state = State(online=True, session="sess-0001", ts=TS, keepalive_s=30, devices=infos)
        monitor.observe(f"s{i}", f"gw-{i}", state)
        readings = [Reading(info.id, "air_quality", TS, {"x": 1.0}) for info in infos]
        monitor.observe(f"s{i}", f"gw-{i}", DataBatch(session="sess-0001", seq=1, readings=readings))
    devices_due, gateways_due = monitor._devices_due, monitor._gateways_due
    assert (len(devices_due), len(gateways_due)) == (20_000, 5000)  # one entry each, however many readings
    heads = (devices_due[0], gateways_due[0])

    clock.now += 29.0  # within every device's 30 s and every gateway's 45 s
    monitor.tick()
    assert (len(devices_due), len(gateways_due)) == (20_000, 5000)
    assert (devices_due[0], gateways_due[0]) == heads
    assert all(d.machine.state is Health.ONLINE for d in monitor.devices.values())

    # Readings keep coming for all but one device: at its timeout that one alone goes offline.
    clock.now += 0.5
    for i in range(5000):
        ids = [f"gw-{i}-d{n}" for n in range(4) if (i, n) != (17, 3)]
        batch = DataBatch(session="sess-0001", seq=2, readings=[Reading(d, "air_quality", TS, {"x": 1.0}) for d in ids])
        monitor.observe(f"s{i}", f"gw-{i}", batch)
    clock.now = 1000.0 + 30.0
    monitor.tick()
    offline = [d.id for d in monitor.devices.values() if d.machine.state is Health.OFFLINE]
    assert offline == ["gw-17-d3"]
    assert all(g.machine.state is Health.ONLINE for g in monitor.gateways.values())
