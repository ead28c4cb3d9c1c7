"""The health monitor keeps a device with its owning gateway (another gateway's birth, readings or events about
it change nothing; a technician's move re-homes it), and shows a gateway's ``clock_skew`` problem beside its
state until a quiet period passes."""

from __future__ import annotations

from clock_support import Clock

from hub.health.machine import FlapPolicy
from hub.health.monitor import CLOCK_SKEW, HealthMonitor, HealthPolicy, Transition
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, Reading, State

TS = 1_764_331_200_000


def birth(*devices: str, session: str = "sess-0001") -> State:
    return State(online=True, session=session, ts=TS, devices=[DeviceInfo(d, "air_quality", "p", 2.0) for d in devices])


def make(quiet_s: float = 60.0) -> tuple[HealthMonitor, Registry, Clock, list[Transition]]:
    clock = Clock()
    registry = Registry()
    policy = HealthPolicy(flap=FlapPolicy(60, 4, 30), problem_quiet_s=quiet_s)
    monitor = HealthMonitor(registry, policy, clock=clock, wall=lambda: TS / 1000)
    seen: list[Transition] = []
    monitor.subscribe(seen.append)
    return monitor, registry, clock, seen


def feed(monitor: HealthMonitor, registry: Registry, site: str, gateway: str, payload: object) -> None:
    """What the operations observer does: the registry first, then health."""
    if isinstance(payload, State):
        registry.apply_birth(site, gateway, payload)
    monitor.observe(site, gateway, payload)


def test_another_gateways_birth_data_and_events_do_not_re_home_or_judge_a_device() -> None:
    monitor, registry, _clock, seen = make()
    feed(monitor, registry, "s1", "gw-1", birth("aq-01"))
    feed(monitor, registry, "s1", "gw-1", DataBatch("sess-0001", 1, [Reading("aq-01", "air_quality", TS, {"x": 1})]))
    assert [t.new for t in seen if t.key == "aq-01"] == ["online"]

    feed(monitor, registry, "s2", "gw-9", birth("aq-01", session="sess-0009"))
    feed(monitor, registry, "s2", "gw-9", Event("sess-0009", "aq-01", EventType.DEVICE_DOWN, TS, reason="forged"))
    feed(monitor, registry, "s2", "gw-9", DataBatch("sess-0009", 1, [Reading("aq-01", "air_quality", TS, {"x": 9})]))

    d = monitor.devices["aq-01"]
    assert (d.site, d.gateway) == ("s1", "gw-1")
    assert monitor.gateways["s2/gw-9"].devices == set()
    assert [t.new for t in seen if t.key == "aq-01"] == ["online"]


def test_a_technicians_move_re_homes_the_device_in_health() -> None:
    monitor, registry, _clock, _seen = make()
    feed(monitor, registry, "s1", "gw-1", birth("aq-01"))
    feed(monitor, registry, "s3", "gw-3", birth(session="sess-0003"))  # the new cabinet's gateway, nothing on it yet
    assert monitor.gateways["s3/gw-3"].devices == set()
    registry.move("aq-01", "s3", "gw-3", by="tech")
    d = monitor.devices["aq-01"]
    assert (d.site, d.gateway) == ("s3", "gw-3")
    assert "aq-01" not in monitor.gateways["s1/gw-1"].devices
    assert monitor.gateways["s3/gw-3"].devices == {"aq-01"}


def test_clock_skew_shows_on_the_gateway_and_its_devices_and_clears_after_the_quiet_period() -> None:
    monitor, registry, clock, seen = make(quiet_s=60.0)
    feed(monitor, registry, "s1", "gw-1", birth("aq-01"))
    before = list(seen)

    monitor.report_problem("s1", "gw-1", CLOCK_SKEW, "reading of aq-01 stamped 3600 s ahead")
    clock.now += 30
    monitor.report_problem("s1", "gw-1", CLOCK_SKEW, "reading of aq-01 stamped 3700 s ahead")

    expected = [
        {"problem": "clock_skew", "detail": "reading of aq-01 stamped 3700 s ahead", "since_ms": TS, "count": 2}
    ]
    gateway = monitor.gateway("s1", "gw-1")
    assert gateway is not None
    assert (gateway["state"], gateway["problems"]) == ("online", expected)
    device = monitor.device("aq-01")
    assert device is not None
    assert device["problems"] == expected
    assert seen == before  # a problem is not a state change

    clock.now += 59  # 59 s after the last report
    monitor.tick()
    assert monitor.problems("s1", "gw-1") == expected
    clock.now += 1
    monitor.tick()
    assert monitor.problems("s1", "gw-1") == []
    assert monitor.device("aq-01") is not None
    assert monitor.device("aq-01")["problems"] == []  # type: ignore[index]
