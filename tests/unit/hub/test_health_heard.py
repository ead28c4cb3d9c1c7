"""``HealthMonitor.take_heard``: the devices whose "last seen" may have changed since the last call (those of the
gateways that sent readings), which the live ``seen`` events look at instead of every device; and
``HealthMonitor.version``, which changes with what the API's lists show and not with a reading of a device
already online."""

from __future__ import annotations

from hub.health.monitor import HealthMonitor
from wire.v1 import DataBatch, DeviceInfo, Reading, State


def _birth(session: str, *devices: str) -> State:
    return State(online=True, session=session, ts=1, devices=[DeviceInfo(d, "weather", "p", 10.0) for d in devices])


def _data(session: str, seq: int, *devices: str, replay: bool = False) -> DataBatch:
    readings = [Reading(d, "weather", 1, {"t": 1.0}) for d in devices]
    return DataBatch(session=session, seq=seq, readings=readings, replay=replay)


def test_take_heard_names_the_devices_of_the_gateways_with_readings_since_the_last_call() -> None:
    monitor = HealthMonitor()
    monitor.observe("s1", "gw-a", _birth("a", "a-2", "a-1"))
    monitor.observe("s1", "gw-b", _birth("b", "b-1"))
    monitor.observe("s2", "gw-c", _birth("c", "c-1"))
    assert monitor.take_heard() == []  # births are no readings
    monitor.observe("s2", "gw-c", _data("c", 1, "c-1"))
    monitor.observe("s1", "gw-a", _data("a", 1, "a-1"))
    monitor.observe("s1", "gw-b", _data("b", 1, "b-1", replay=True))  # old readings: not "seen" now
    assert monitor.take_heard() == ["a-1", "a-2", "c-1"]  # by gateway, then id; a-2 is only looked at
    assert monitor.take_heard() == []
    monitor.observe("s1", "gw-b", _data("b", 2, "b-1"))
    assert monitor.take_heard() == ["b-1"]


def test_version_changes_with_what_the_lists_show_only() -> None:
    monitor = HealthMonitor()
    v0 = monitor.version
    monitor.observe("s1", "gw-a", _birth("a", "a-1"))
    v1 = monitor.version
    assert v1 > v0  # a new gateway, its device, online
    monitor.observe("s1", "gw-a", _data("a", 1, "a-1"))
    v2 = monitor.version
    assert v2 > v1  # a-1 unknown -> online
    monitor.observe("s1", "gw-a", _data("a", 2, "a-1"))
    assert monitor.version == v2  # a reading of a device already online shows nowhere in the lists
    monitor.report_problem("s1", "gw-a", "clock_skew", "5 s ahead")
    assert monitor.version > v2
