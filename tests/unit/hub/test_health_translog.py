"""The health transitions' log: each at DEBUG; at INFO the first after a quiet second, then a summary a second."""

from __future__ import annotations

import logging

import pytest

from hub.health.machine import FlapPolicy
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.health.translog import TransitionLog
from wire.v1 import DeviceInfo, State

LOGGER = "hub.health.monitor"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


def birth(i: int) -> State:
    return State(
        online=True, session=f"s{i}", ts=1, devices=[DeviceInfo(f"d-{i}-{j}", "weather", "p", 10.0) for j in range(4)]
    )


def test_a_storm_is_one_line_a_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = Clock()
    monitor = HealthMonitor(None, HealthPolicy(flap=FlapPolicy(60, 4, 30)), clock=clock)
    for i in range(1000):  # 1,000 gateways online and their 4,000 devices online, in 1.0 s
        monitor.observe(f"site-{i % 7}", f"gw-{i}", birth(i))
        clock.now += 0.001
    assert infos(caplog) == ["gateway site-0/gw-0: unknown -> online (birth (session s0))"]
    clock.now += 0.001
    monitor.tick()
    assert infos(caplog)[1:] == ["health: 999 transitions in 1.0 s (999 gateways, 0 devices): 999 online"]
    clock.now += 5.0  # quiet: the window ends with nothing, the next one is logged on its own
    monitor.tick()
    assert len(infos(caplog)) == 2


def test_each_transition_at_debug_but_the_first_of_a_quiet_period(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    clock = Clock()
    monitor = HealthMonitor(None, HealthPolicy(flap=FlapPolicy(60, 4, 30)), clock=clock)
    for i in range(3):
        monitor.observe("site-a", f"gw-{i}", birth(i))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "->" in r.getMessage()]
    assert lines == [
        ("INFO" if i == 0 else "DEBUG", f"gateway site-a/gw-{i}: unknown -> online (birth (session s{i}))")
        for i in range(3)
    ]


def test_summary_counts_by_new_state_and_entity(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "t")
    clock = Clock()
    tl = TransitionLog(logging.getLogger("t"), clock)
    tl.record("device", "d-0", "unknown", "online", "reading")
    for n in range(4812):
        clock.now = 1000.0 + n * 0.0002
        state = "degraded" if n % 401 == 0 else "online"
        tl.record("gateway" if n % 4 == 0 else "device", f"d-{n}", "unknown", state, "x")
    tl.flush(1001.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "device d-0: unknown -> online (reading)",
        "health: 4,812 transitions in 1.0 s (1,203 gateways, 3,609 devices): 4,800 online, 12 degraded",
    ]
    tl.flush(1002.5)  # a window with nothing counted: quiet again
    tl.record("device", "d-9", "online", "offline", "no reading for 30 s")
    assert [r.getMessage() for r in caplog.records][2:] == ["device d-9: online -> offline (no reading for 30 s)"]


def test_a_summary_waits_for_its_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "t")
    clock = Clock()
    tl = TransitionLog(logging.getLogger("t"), clock)
    tl.record("device", "a", "online", "offline", "r")
    clock.now += 0.5
    tl.record("device", "b", "online", "offline", "r")
    tl.flush()
    assert len(caplog.records) == 1
    clock.now += 0.6  # a transition after the window's end closes it first, and starts the next window
    tl.record("device", "c", "offline", "online", "r")
    assert [r.getMessage() for r in caplog.records][1:] == [
        "health: 1 transitions in 1.1 s (0 gateways, 1 devices): 1 offline"
    ]
    clock.now += 1.0
    tl.flush()
    assert [r.getMessage() for r in caplog.records][2:] == [
        "health: 1 transitions in 1.0 s (0 gateways, 1 devices): 1 online"
    ]
