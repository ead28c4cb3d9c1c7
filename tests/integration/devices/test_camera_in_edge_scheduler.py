"""Cameras as the edge agent runs them: built from device entries, one task each in the real scheduler.

A live camera, a silent one (accepts, never answers) and one that is off are polled side by side against
ONVIF simulators: the live camera keeps its grid, and every camera's state arrives as readings of kind
``camera`` (a dead camera is a reading saying so, not a missing one).
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

from devices.sim.onvif import OnvifSimulator
from edge.config import DeviceConfig
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.plan import build_device_plans
from edge.scheduler import Scheduler
from edge.stats import EdgeStats

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
