"""Cameras as the edge agent runs them: built from device entries, one task each in the real scheduler.

A live camera, a silent one (accepts, never answers) and one that is off are polled side by side against
ONVIF simulators: the live camera keeps its grid, and every camera's state arrives as readings of kind
``camera`` (a dead camera is a reading saying so, not a missing one). A camera going dead and coming back
yields ``device_down`` (with the reason) and ``device_up`` once each, as any driver's device does.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from devices.sim.onvif import OnvifSimulator
from edge.config import DeviceConfig
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.plan import build_device_plans
from edge.scheduler import Scheduler
from edge.stats import EdgeStats
from wire.v1 import EventType

INTERVAL_S = 0.5
RUN_S = 3.2


def entry(device_id: str, sim: OnvifSimulator) -> DeviceConfig:
    return DeviceConfig(
        id=device_id,
        driver="camera",
        profile="camera-onvif-generic",
        interval_s=INTERVAL_S,
        timeout_s=2.0,
        options={
            "host": "127.0.0.1",
            "onvif_port": sim.port,
            "username": "admin",
            "password": "pw",
            "onvif_timeout_s": 1.0,
        },
    )


async def test_a_dead_camera_never_stops_the_others() -> None:
    async with (
        OnvifSimulator(password="pw") as live,
        OnvifSimulator(password="pw") as silent,
        OnvifSimulator(password="pw") as off,
    ):
        silent.set_fault("silent")
        await off.set_offline()
        plans = build_device_plans([entry("cam-live", live), entry("cam-silent", silent), entry("cam-off", off)])
        assert [p.kind for p in plans] == ["camera"] * 3
        stats = EdgeStats()
        outbox = MemoryOutbox(10_000, stats)
        async with Scheduler(plans, outbox, EventQueue(stats), stats, rng=random.Random(1)):
            await asyncio.sleep(RUN_S)
        queued = await outbox.peek(10_000)
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in queued:
        assert item.reading.kind == "camera"
        by_device[item.reading.device].append(dict(item.reading.metrics))
    # The live camera kept its grid (about RUN_S / INTERVAL_S polls) while the silent one hung for 1 s each time.
    assert len(by_device["cam-live"]) >= int(RUN_S / INTERVAL_S) - 1
    assert {m["onvif_state_name"] for m in by_device["cam-live"]} == {"up_with_auth"}
    assert by_device["cam-silent"], "the silent camera's state was reported"
    assert {m["onvif_error"] for m in by_device["cam-silent"]} == {"connected, but no answer within 1 s"}
    assert {m["onvif_error"] for m in by_device["cam-off"]} == {"cannot connect: Connection refused"}


async def test_restart_through_the_scheduler_reboots_the_camera() -> None:
    async with OnvifSimulator(password="pw", reboot_s=1.0) as sim:
        plans = build_device_plans([entry("cam-1", sim)])
        stats = EdgeStats()
        async with Scheduler(plans, MemoryOutbox(10_000, stats), EventQueue(stats), stats) as scheduler:
            detail = await scheduler.execute("cam-1", "restart", {})
        assert detail == "Rebooting in 1 second"
        assert sim.reboots == 1


async def test_a_camera_going_dead_and_back_is_one_device_down_and_one_device_up() -> None:
    """Off (connection refused) for several polls, then back: one event each way, the reason in the down;
    the readings keep coming while it is down, saying it is unreachable."""
    async with OnvifSimulator(password="pw") as sim, OnvifSimulator(password="pw") as silent:
        silent.set_fault("silent")
        plans = build_device_plans([entry("cam-1", sim), entry("cam-silent", silent)])
        stats = EdgeStats()
        outbox = MemoryOutbox(10_000, stats)
        events = EventQueue(stats)
        async with Scheduler(plans, outbox, events, stats, rng=random.Random(2)) as scheduler:
            await _until(lambda: [e.type for e in events.items() if e.device == "cam-1"] == [EventType.DEVICE_UP])
            await sim.set_offline()
            await _until(lambda: len([e for e in events.items() if e.device == "cam-1"]) == 2)
            down_polls = len(await outbox.peek(10_000))
            await asyncio.sleep(4 * INTERVAL_S)  # several more polls while it is off: no more events
            assert len(await outbox.peek(10_000)) > down_polls
            assert scheduler.figures()["devices_down"] == 2
            await sim.set_online()
            await _until(lambda: len([e for e in events.items() if e.device == "cam-1"]) == 3)
            await asyncio.sleep(4 * INTERVAL_S)  # and several up: no more either
        queued = await outbox.peek(10_000)
    cam = [e for e in events.items() if e.device == "cam-1"]
    assert [e.type for e in cam] == [EventType.DEVICE_UP, EventType.DEVICE_DOWN, EventType.DEVICE_UP]
    assert cam[1].reason == "ONVIF unreachable: cannot connect: Connection refused"
    assert cam[0].reason == cam[2].reason == ""
    silent_events = [e for e in events.items() if e.device == "cam-silent"]
    assert [e.type for e in silent_events] == [EventType.DEVICE_DOWN]
    assert silent_events[0].reason == "ONVIF unreachable: connected, but no answer within 1 s"
    states = [item.reading.metrics["onvif_state_name"] for item in queued if item.reading.device == "cam-1"]
    assert "unreachable" in states
    assert states[0] == states[-1] == "up_with_auth"
    assert stats.polls_failed == 0  # the probe itself never failed: its readings say the camera was gone


async def test_a_camera_that_refuses_is_reachable_and_stays_up() -> None:
    async with OnvifSimulator(password="pw") as sim:
        sim.set_fault("refuse_auth")
        plans = build_device_plans([entry("cam-1", sim)])
        stats = EdgeStats()
        events = EventQueue(stats)
        async with Scheduler(plans, MemoryOutbox(10_000, stats), events, stats):
            await _until(lambda: stats.polls_ok >= 3)
    assert [e.type for e in events.items()] == [EventType.DEVICE_UP]


async def _until(predicate: Callable[[], bool], within_s: float = 20.0) -> None:
    """Until ``predicate()`` holds: it reads the scheduler's queues, which offer no event to wait on."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - no event to await (see the docstring)
            await asyncio.sleep(0.05)
