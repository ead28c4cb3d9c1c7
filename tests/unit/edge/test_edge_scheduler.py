"""The per-device scheduler, with devices simulated in memory (a real Driver implementation, not a mock).

Timings use short intervals and generous margins: they check the policy (grid, skip, backoff, isolation),
not the event loop's precision.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Mapping

import pytest

from devices.driver import MetricValue, Reading, now_ms
from devices.errors import DeviceBusy, DeviceResponseError, DeviceUnavailable
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.plan import DevicePlan
from edge.scheduler import Health, Scheduler
from edge.stats import EdgeStats
from wire.v1 import EventType


class SimulatedDevice:
    """A device that lives in memory: answers with a counter, or misbehaves as its ``mode`` says.

    Modes: ``ok``; ``unavailable`` (open and poll raise DeviceUnavailable); ``bad_answer`` (DeviceResponseError);
    ``busy`` (DeviceBusy); ``hang`` (poll never answers); ``crash`` (a bug: RuntimeError); ``slow`` (poll
    takes ``slow_s`` then answers).
    """

    def __init__(self, mode: str = "ok", *, slow_s: float = 0.0, metrics: Mapping[str, MetricValue] | None = None):
        self.mode = mode
        self.slow_s = slow_s
        self.metrics = dict(metrics or {"temperature_c": 21.5})
        self.opens = 0
        self.closes = 0
        self.is_open = False
        self.attempts: list[float] = []  # monotonic start of every open-or-poll attempt that reached the device
        self.polls_answered = 0

    async def open(self) -> None:
        self.opens += 1
        if self.mode == "unavailable":
            self.attempts.append(time.monotonic())
            raise DeviceUnavailable("simulated: connection refused")
        self.is_open = True

    async def poll(self) -> list[Reading]:
        self.attempts.append(time.monotonic())
        ts = now_ms()
        if self.mode == "unavailable":
            raise DeviceUnavailable("simulated: no answer")
        if self.mode == "bad_answer":
            raise DeviceResponseError("simulated: exception 2 (illegal data address)")
        if self.mode == "busy":
            raise DeviceBusy("simulated: exception 6 (slave device busy)")
        if self.mode == "crash":
            raise RuntimeError("simulated driver bug")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        self.polls_answered += 1
        return [Reading(ts_ms=ts, metrics={**self.metrics, "count": self.polls_answered})]

    async def close(self) -> None:
        self.closes += 1
        self.is_open = False

    def describe_plan(self) -> list[str]:
        return ["in memory"]


def plan(device_id: str, driver: SimulatedDevice, interval_s: float, timeout_s: float = 1.0) -> DevicePlan:
    return DevicePlan(
        id=device_id,
        driver_name="simulated",
        profile_id="in-memory",
        kind="weather",
        interval_s=interval_s,
        timeout_s=timeout_s,
        driver=driver,
    )


class Harness:
    def __init__(self) -> None:
        self.stats = EdgeStats()
        self.outbox = MemoryOutbox(100_000, self.stats)
        self.events = EventQueue(self.stats)

    async def run(self, plans: list[DevicePlan], seconds: float) -> Scheduler:
        scheduler = Scheduler(plans, self.outbox, self.events, self.stats, rng=random.Random(7))
        async with scheduler:
            await asyncio.sleep(seconds)
        return scheduler

    def event_types(self, device: str) -> list[EventType]:
        return [e.type for e in self.events.items() if e.device == device]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_a_healthy_device_is_polled_on_a_fixed_grid() -> None:
    device = SimulatedDevice()
    harness = Harness()
    await harness.run([plan("t-1", device, 0.1)], 1.05)
    assert 9 <= len(device.attempts) <= 12
    origin = device.attempts[0]
    for k, at in enumerate(device.attempts):
        assert abs(at - (origin + k * 0.1)) < 0.05, f"poll {k} drifted: {at - origin:.3f} s"
    queued = await harness.outbox.peek(100)
    assert [q.reading.metrics["count"] for q in queued] == list(range(1, len(device.attempts) + 1))
    assert {(q.reading.device, q.reading.kind) for q in queued} == {("t-1", "weather")}
    assert device.opens == 1
    assert device.closes == 1  # closed when the scheduler stopped


async def test_readings_keep_the_time_they_were_sampled() -> None:
    device = SimulatedDevice("slow", slow_s=0.2)
    harness = Harness()
    before = now_ms()
    await harness.run([plan("t-1", device, 1.0)], 0.5)
    [queued] = await harness.outbox.peek(10)
    assert before <= queued.reading.ts <= before + 100  # stamped when sampled, not 200 ms later when answered


async def test_a_slow_poll_skips_missed_ticks_instead_of_bursting() -> None:
    device = SimulatedDevice("slow", slow_s=0.25)
    harness = Harness()
    await harness.run([plan("t-1", device, 0.1)], 1.2)
    # Each poll takes 2.5 intervals: the next starts on the next tick of the grid, never right after in a burst.
    assert 3 <= len(device.attempts) <= 5
    origin = device.attempts[0]
    for gap in gaps(device.attempts):
        assert 0.25 <= gap <= 0.4
    for at in device.attempts:
        offset = (at - origin) / 0.1
        assert abs(offset - round(offset)) < 0.4, "a poll started off the grid"


async def test_a_failing_device_does_not_delay_a_healthy_one() -> None:
    hanging = SimulatedDevice("hang")
    crashing = SimulatedDevice("crash")
    refusing = SimulatedDevice("unavailable")
    healthy = SimulatedDevice()
    harness = Harness()
    await harness.run(
        [
            plan("hang-1", hanging, 0.1, timeout_s=0.3),
            plan("crash-1", crashing, 0.1),
            plan("down-1", refusing, 0.1),
            plan("ok-1", healthy, 0.1),
        ],
        1.05,
    )
    assert 9 <= len(healthy.attempts) <= 12
    assert max(gaps(healthy.attempts)) < 0.17
    assert harness.event_types("ok-1") == [EventType.DEVICE_UP]
    for device_id in ("hang-1", "crash-1", "down-1"):
        assert harness.event_types(device_id) == [EventType.DEVICE_DOWN]
    # The failing ones were retried (their tasks are alive), with backoff: fewer attempts than ticks.
    for failing in (hanging, crashing, refusing):
        assert 2 <= len(failing.attempts) < 9


async def test_down_and_up_are_emitted_exactly_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.scheduler")
    device = SimulatedDevice("unavailable")
    harness = Harness()
    scheduler = Scheduler([plan("t-1", device, 0.05)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.5)
        failures = len(device.attempts)
        device.mode = "ok"
        await asyncio.sleep(1.0)
        poller = scheduler.pollers["t-1"]
        assert poller.health is Health.UP
    assert failures >= 3
    assert device.polls_answered >= 5
    events = harness.events.items()
    assert [e.type for e in events] == [EventType.DEVICE_DOWN, EventType.DEVICE_UP]
    assert events[0].reason == "simulated: connection refused"
    assert events[0].ts_ms <= events[1].ts_ms
    transitions = [r.getMessage() for r in caplog.records if r.name == "edge.scheduler" and r.levelno >= logging.INFO]
    assert len([m for m in transitions if "is down" in m]) == 1
    assert len([m for m in transitions if "is up again" in m]) == 1
    assert harness.stats.polls_failed == failures


async def test_failures_back_off_within_bounds_and_reopen_the_driver() -> None:
    device = SimulatedDevice("bad_answer")
    harness = Harness()
    await harness.run([plan("t-1", device, 0.05)], 1.6)
    # Nominal delays after each failure: 0.05, 0.1, 0.2, 0.4, 0.5 (cap = 10 intervals), 0.5...; each in [d/2, d].
    nominal = [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    observed = gaps(device.attempts)
    assert len(observed) >= 4
    for d, gap in zip(nominal, observed, strict=False):
        assert d / 2 - 0.01 <= gap <= d + 0.06, f"gap {gap:.3f} s outside [{d / 2}, {d}]"
    # Every failure closed the driver; every retry reopened it.
    assert device.opens == len(device.attempts)
    assert device.closes == device.opens


async def test_busy_keeps_the_connection_and_retries_on_the_next_tick() -> None:
    device = SimulatedDevice("busy")
    harness = Harness()
    await harness.run([plan("t-1", device, 0.1)], 0.55)
    assert device.opens == 1
    assert 4 <= len(device.attempts) <= 7
    assert max(gaps(device.attempts)) < 0.17  # no backoff: the driver already retried the busy answer
    assert harness.event_types("t-1") == [EventType.DEVICE_DOWN]
    assert harness.events.items()[0].reason.startswith("device busy: ")


async def test_an_unexpected_error_is_logged_with_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.scheduler")
    device = SimulatedDevice("crash")
    harness = Harness()
    await harness.run([plan("t-1", device, 0.05)], 0.6)
    assert len(device.attempts) >= 3
    with_traceback = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert len(with_traceback) == 1
    assert "unexpected error in poll" in with_traceback[0].getMessage()
    [event] = harness.events.items()
    assert event.reason == "unexpected error in poll: RuntimeError: simulated driver bug"


async def test_a_hung_poll_times_out_and_the_driver_is_reopened() -> None:
    device = SimulatedDevice("hang")
    harness = Harness()
    await harness.run([plan("t-1", device, 0.1, timeout_s=0.2)], 0.8)
    [event] = harness.events.items()
    assert event.reason == "poll timed out after 0.2 s"
    assert device.opens >= 2
    assert device.closes == device.opens
