"""The per-device scheduler, with devices simulated in memory (a real Driver implementation, not a mock).

Timings use short intervals and generous margins: they check the policy (grid, skip, backoff, isolation),
not the event loop's precision.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from collections.abc import Mapping

import pytest

from devices.driver import MetricValue, Reading, now_ms
from devices.errors import DeviceBusy, DeviceResponseError, DeviceUnavailable
from edge.config import ReportConfig
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.plan import DevicePlan
from edge.scheduler import ActionNotSupported, Health, PollFailed, Scheduler, UnknownDevice
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
        self.in_flight = 0  # requests being served now (polls and commands): must never exceed 1
        self.max_in_flight = 0

    async def open(self) -> None:
        self.opens += 1
        if self.mode == "unavailable":
            self.attempts.append(time.monotonic())
            raise DeviceUnavailable("simulated: connection refused")
        self.is_open = True

    async def poll(self) -> list[Reading]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._poll()
        finally:
            self.in_flight -= 1

    async def _poll(self) -> list[Reading]:
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
    # Had the hanging device held the healthy one up, its polls would be >= 0.3 s apart (the hang's timeout) and
    # about 3 in the run: the bounds sit between that and the 0.1 s grid, leaving room for a loaded machine.
    assert 7 <= len(healthy.attempts) <= 12
    assert max(gaps(healthy.attempts)) < 0.25
    assert harness.event_types("ok-1") == [EventType.DEVICE_UP]
    for device_id in ("hang-1", "crash-1", "down-1"):
        assert harness.event_types(device_id) == [EventType.DEVICE_DOWN]
    # The failing ones were retried (their tasks are alive), with backoff: fewer attempts than ticks.
    for failing in (hanging, crashing, refusing):
        assert 2 <= len(failing.attempts) < 9


async def test_down_and_up_are_emitted_exactly_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.poller")
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
    transitions = [r.getMessage() for r in caplog.records if r.name == "edge.poller" and r.levelno >= logging.INFO]
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
    caplog.set_level(logging.INFO, logger="edge.poller")
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


# --------------------------------------------------------------------------------------- run-time control


class SimulatedSign(SimulatedDevice):
    """A device whose driver also runs commands (CommandCapable), each taking ``command_s``."""

    def __init__(self, mode: str = "ok", *, command_s: float = 0.0, slow_s: float = 0.0) -> None:
        super().__init__(mode, slow_s=slow_s)
        self.command_s = command_s
        self.executed: list[tuple[str, dict[str, MetricValue]]] = []

    def supported_actions(self) -> frozenset[str]:
        return frozenset({"display_message", "restart"})

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.command_s)
            if params.get("text") == "fail":
                raise DeviceResponseError("simulated: message refused")
            if params.get("text") == "bug":
                raise RuntimeError("simulated driver bug")
            if params.get("text") == "busy":
                raise DeviceBusy("simulated: busy")
            self.executed.append((action, dict(params)))
            return f"{action} done"
        finally:
            self.in_flight -= 1


async def test_set_interval_takes_effect_at_once_on_a_new_grid() -> None:
    device = SimulatedDevice()
    harness = Harness()
    scheduler = Scheduler([plan("t-1", device, 10.0)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.2)
        assert len(device.attempts) == 1  # the first poll; the next would be 10 s later
        changed_at = time.monotonic()
        assert scheduler.set_interval("t-1", 0.1) == 10.0
        await asyncio.sleep(0.65)
        assert scheduler.plans()[0].interval_s == 0.1
    after = [t for t in device.attempts if t >= changed_at]
    assert 5 <= len(after) <= 8
    assert after[0] - changed_at < 0.05  # the last poll was more than 0.1 s ago: at once
    assert max(gaps(after)) < 0.17


async def test_set_interval_to_a_longer_one_waits_one_new_interval_after_the_last_poll() -> None:
    device = SimulatedDevice()
    harness = Harness()
    scheduler = Scheduler([plan("t-1", device, 0.1)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.25)
        scheduler.set_interval("t-1", 0.5)
        polls = len(device.attempts)
        await asyncio.sleep(0.3)
        assert len(device.attempts) == polls  # no poll before 0.5 s after the last one
        await asyncio.sleep(0.35)
        assert len(device.attempts) == polls + 1


async def test_set_interval_refuses_nonsense_and_unknown_devices() -> None:
    harness = Harness()
    scheduler = Scheduler([plan("t-1", SimulatedDevice(), 1.0)], harness.outbox, harness.events, harness.stats)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive number"):
            scheduler.set_interval("t-1", bad)
    with pytest.raises(UnknownDevice, match="unknown device 'nope'"):
        scheduler.set_interval("nope", 1.0)
    with pytest.raises(UnknownDevice):
        await scheduler.poll_now("nope")


async def test_poll_now_reads_at_once_queues_the_readings_and_waits_for_a_poll_in_progress() -> None:
    device = SimulatedDevice("slow", slow_s=0.15)
    harness = Harness()
    scheduler = Scheduler([plan("t-1", device, 0.2)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.05)  # the first regular poll is in progress
        readings = await asyncio.gather(*(scheduler.poll_now("t-1") for _ in range(3)))
        await asyncio.sleep(0.3)
    assert device.max_in_flight == 1  # one request at a time, however polls and reads interleave
    counts = [r[0].metrics["count"] for r in readings]
    assert len(set(counts)) == 3
    queued = [q.reading.metrics["count"] for q in await harness.outbox.peek(100)]
    assert set(counts) <= set(queued)
    assert queued == sorted(queued)
    assert device.opens == 1


async def test_poll_now_failures_say_why_and_whether_the_device_timed_out() -> None:
    hanging = SimulatedDevice("hang")
    refusing = SimulatedDevice("unavailable")
    harness = Harness()
    scheduler = Scheduler(
        [plan("hang-1", hanging, 10.0, timeout_s=0.2), plan("down-1", refusing, 10.0)],
        harness.outbox,
        harness.events,
        harness.stats,
    )
    async with scheduler:
        await asyncio.sleep(0.3)
        with pytest.raises(PollFailed) as hung:
            await scheduler.poll_now("hang-1")
        with pytest.raises(PollFailed) as down:
            await scheduler.poll_now("down-1")
    assert hung.value.timed_out
    assert hung.value.reason == "poll timed out after 0.2 s"
    assert not down.value.timed_out
    assert down.value.reason == "simulated: connection refused"
    assert hanging.closes == hanging.opens  # the hung connection was dropped each time


async def test_a_cancelled_poll_now_closes_the_driver_and_polling_goes_on() -> None:
    device = SimulatedDevice("slow", slow_s=0.3)
    harness = Harness()
    scheduler = Scheduler([plan("t-1", device, 0.5, timeout_s=2.0)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.4)  # first poll done
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # a command's timeout, shorter than the poll
                await scheduler.poll_now("t-1")
        assert (device.opens, device.closes) == (1, 1)
        device.mode = "ok"
        await asyncio.sleep(0.6)
        assert (device.opens, device.closes) == (2, 1)  # the regular task reopened it
    assert harness.event_types("t-1") == [EventType.DEVICE_UP]


async def test_execute_runs_driver_commands_one_request_at_a_time() -> None:
    sign = SimulatedSign(command_s=0.1, slow_s=0.05)
    sign.mode = "slow"
    harness = Harness()
    scheduler = Scheduler([plan("vms-1", sign, 0.05)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        details = await asyncio.gather(
            scheduler.execute("vms-1", "display_message", {"text": "SLOW DOWN"}),
            scheduler.execute("vms-1", "display_message", {"text": "JAM AHEAD"}),
        )
        await asyncio.sleep(0.1)
    assert list(details) == ["display_message done", "display_message done"]
    assert [p["text"] for _, p in sign.executed] == ["SLOW DOWN", "JAM AHEAD"]
    assert sign.max_in_flight == 1


async def test_execute_refuses_what_the_driver_cannot_do() -> None:
    harness = Harness()
    scheduler = Scheduler(
        [plan("t-1", SimulatedDevice(), 1.0), plan("vms-1", SimulatedSign(), 1.0)],
        harness.outbox,
        harness.events,
        harness.stats,
    )
    async with scheduler:
        with pytest.raises(ActionNotSupported, match="cannot 'restart'"):
            await scheduler.execute("t-1", "restart", {})
        with pytest.raises(ActionNotSupported, match="cannot 'reboot'"):
            await scheduler.execute("vms-1", "reboot", {})


async def test_execute_errors_close_the_driver_and_restart_reconnects() -> None:
    sign = SimulatedSign()
    harness = Harness()
    scheduler = Scheduler([plan("vms-1", sign, 10.0)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.1)
        assert sign.opens == 1
        with pytest.raises(DeviceResponseError, match="message refused"):
            await scheduler.execute("vms-1", "display_message", {"text": "fail"})
        assert not sign.is_open
        assert await scheduler.execute("vms-1", "display_message", {"text": "ok"}) == "display_message done"
        assert sign.opens == 2  # opened for the command
        assert await scheduler.execute("vms-1", "restart", {}) == "restart done"
        assert not sign.is_open  # the old connection died with the device
        assert await scheduler.execute("vms-1", "display_message", {"text": "ok"}) == "display_message done"
        with pytest.raises(DeviceBusy):
            await scheduler.execute("vms-1", "display_message", {"text": "busy"})
        assert sign.opens - sign.closes == 1  # busy: the device is there, the connection is kept
        with pytest.raises(RuntimeError, match="simulated driver bug"):
            await scheduler.execute("vms-1", "display_message", {"text": "bug"})
        assert sign.opens == sign.closes  # a driver bug may leave the connection in any state: closed


async def test_devices_are_added_removed_replaced_and_restarted_while_others_keep_polling() -> None:
    steady = SimulatedDevice()
    old = SimulatedDevice()
    harness = Harness()
    scheduler = Scheduler(
        [plan("steady-1", steady, 0.05), plan("old-1", old, 0.05)], harness.outbox, harness.events, harness.stats
    )
    async with scheduler:
        await asyncio.sleep(0.2)
        await scheduler.remove("old-1")
        assert old.closes == old.opens == 1
        polls_of_old = len(old.attempts)
        new = SimulatedDevice()
        await scheduler.add(plan("new-1", new, 0.05))
        with pytest.raises(ValueError, match="already scheduled"):
            await scheduler.add(plan("new-1", new, 0.05))
        await asyncio.sleep(0.2)
        assert len(new.attempts) >= 3
        replacement = SimulatedDevice()
        await scheduler.replace(plan("new-1", replacement, 0.1))
        assert new.closes == 1
        await asyncio.sleep(0.05)
        assert replacement.opens == 1
        await scheduler.restart("new-1")
        await asyncio.sleep(0.3)
        assert replacement.opens == 2  # restarted: closed and opened again
        assert [p.id for p in scheduler.plans()] == ["steady-1", "new-1"]
        with pytest.raises(UnknownDevice):
            await scheduler.remove("old-1")
    assert len(old.attempts) == polls_of_old
    assert max(gaps(steady.attempts)) < 0.12  # never held up by the others' changes


async def test_removing_a_device_waits_for_its_command_in_progress() -> None:
    sign = SimulatedSign(command_s=0.3)
    harness = Harness()
    scheduler = Scheduler([plan("vms-1", sign, 10.0)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.05)
        command = asyncio.create_task(scheduler.execute("vms-1", "display_message", {"text": "x"}))
        await asyncio.sleep(0.05)
        await scheduler.remove("vms-1")
        assert command.done()
        assert command.result() == "display_message done"
        assert not sign.is_open


async def test_report_by_exception_filters_regular_polls_but_not_read_now() -> None:
    device = SimulatedDevice(metrics={"temperature_c": 21.5})  # "count" changes on every poll, the rest not
    harness = Harness()
    scheduler = Scheduler(
        [plan("t-1", device, 0.05)],
        harness.outbox,
        harness.events,
        harness.stats,
        report={"t-1": ReportConfig(max_silence_s=3600, deadband={"count": 2})},
    )
    async with scheduler:
        await asyncio.sleep(0.38)
        [now] = await scheduler.poll_now("t-1")
    sent = [q.reading.metrics for q in await harness.outbox.peek(100)]
    assert sent[0] == {"temperature_c": 21.5, "count": 1}
    assert {"temperature_c": 21.5, "count": now.metrics["count"]} in sent  # read_now: whole
    regular = [m for m in sent[1:] if m != now.metrics]
    assert regular
    assert all(m.keys() == {"count"} for m in regular)  # the unchanged temperature is held back
    assert [m["count"] for m in regular] == list(range(4, 4 + 3 * len(regular), 3))[: len(regular)]


async def test_commands_waiting_for_a_removed_device_fail_and_leave_its_driver_closed() -> None:
    sign = SimulatedSign(command_s=0.3)
    harness = Harness()
    scheduler = Scheduler([plan("vms-1", sign, 10.0)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.05)
        first = asyncio.create_task(scheduler.execute("vms-1", "display_message", {"text": "a"}))
        await asyncio.sleep(0.05)
        waiting_command = asyncio.create_task(scheduler.execute("vms-1", "display_message", {"text": "b"}))
        waiting_read = asyncio.create_task(scheduler.poll_now("vms-1"))
        await asyncio.sleep(0.05)
        await scheduler.remove("vms-1")
        assert await first == "display_message done"
        with pytest.raises(DeviceUnavailable, match="'vms-1' was removed meanwhile"):
            await waiting_command
        with pytest.raises(PollFailed, match="'vms-1' was removed meanwhile"):
            await waiting_read
    assert [p["text"] for _, p in sign.executed] == ["a"]
    assert not sign.is_open
    assert sign.opens == sign.closes == 1


async def test_set_interval_during_a_backoff_keeps_the_wait() -> None:
    device = SimulatedDevice("unavailable")
    harness = Harness()
    scheduler = Scheduler([plan("t-1", device, 0.4)], harness.outbox, harness.events, harness.stats)
    async with scheduler:
        await asyncio.sleep(0.05)  # failed once: backing off for 0.2..0.4 s
        assert len(device.attempts) == 1
        scheduler.set_interval("t-1", 0.05)  # does not hammer a dead device at once
        await asyncio.sleep(0.1)
        assert len(device.attempts) == 1
        device.mode = "ok"
        await asyncio.sleep(0.6)
    # After the backoff the device came back and is polled on the new interval.
    back = device.attempts[1:]
    assert len(back) >= 5
    assert max(gaps(back)) < 0.1
