"""The command dispatcher (edge/commands.py) over the real scheduler and in-memory devices.

The devices are real Driver implementations living in memory; the acks are collected where the publisher
would send them (the MQTT path is tested in tests/integration/edge/test_edge_cmd_mqtt.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec
import pytest

from devices.driver import MetricValue, Reading, now_ms
from devices.errors import DeviceResponseError, DeviceUnavailable, UnsupportedCommand
from edge.commands import CommandDispatcher
from edge.errors import ConfigError
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.plan import DevicePlan
from edge.scheduler import Scheduler
from edge.stats import EdgeStats
from wire.v1 import AckStatus, Command, CommandAck, encode

GATEWAY = "gw-1"


class Sensor:
    """Answers a counter; ``mode`` ``hang`` never answers, ``down`` refuses."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.polls = 0
        self.poll_times: list[float] = []

    async def open(self) -> None:
        if self.mode == "down":
            raise DeviceUnavailable("simulated: connection refused")

    async def poll(self) -> list[Reading]:
        self.poll_times.append(time.monotonic())
        if self.mode == "down":
            raise DeviceUnavailable("simulated: connection refused")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        self.polls += 1
        return [Reading(ts_ms=now_ms(), metrics={"pm25": 12.5, "count": self.polls})]

    async def close(self) -> None:
        pass

    def describe_plan(self) -> list[str]:
        return ["in memory"]


class Sign(Sensor):
    """A display controller: ``display_message`` (taking ``command_s``) and ``restart``."""

    def __init__(self, command_s: float = 0.0) -> None:
        super().__init__()
        self.command_s = command_s
        self.messages: list[str] = []

    def supported_actions(self) -> frozenset[str]:
        return frozenset({"display_message", "restart"})

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        await asyncio.sleep(self.command_s)
        if action == "restart":
            return "controller restarting"
        if set(params) - {"text"}:
            raise UnsupportedCommand(f"display_message: unknown param(s) {', '.join(sorted(set(params) - {'text'}))}")
        text = params.get("text")
        if not isinstance(text, str) or not text:
            raise DeviceResponseError("params.text: a non-empty string is required")
        self.messages.append(text)
        return f"message {len(self.messages)} active"


def plan(device_id: str, driver: Sensor, interval_s: float = 10.0, timeout_s: float = 1.0) -> DevicePlan:
    return DevicePlan(device_id, "memory", "in-memory", "air_quality", interval_s, timeout_s, driver)


class Hub:
    """Collects the acks the agent would publish."""

    def __init__(self, connected: bool = True) -> None:
        self.acks: list[CommandAck] = []
        self.refused = 0
        self.connected = connected
        self._changed = asyncio.Event()

    async def send(self, ack: CommandAck) -> bool:
        if not self.connected:
            self.refused += 1
            self._changed.set()
            return False
        self.acks.append(ack)
        self._changed.set()
        return True

    async def wait_for(self, condition: Callable[[], bool], within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def ack_for(self, command_id: str, within_s: float = 5.0) -> CommandAck:
        async with asyncio.timeout(within_s):
            while True:
                for ack in self.acks:
                    if ack.id == command_id:
                        return ack
                self._changed.clear()
                await self._changed.wait()


class Agent:
    def __init__(self, scheduler: Scheduler, dispatcher: CommandDispatcher, hub: Hub, outbox: MemoryOutbox) -> None:
        self.scheduler = scheduler
        self.commands = dispatcher
        self.hub = hub
        self.outbox = outbox

    async def ask(self, device: str, action: str, **kw: Any) -> CommandAck:
        command_id = f"c-{time.monotonic_ns()}"
        await self.commands.handle(encode(Command(id=command_id, device=device, action=action, ts=now_ms(), **kw)))
        return await self.hub.ack_for(command_id)


async def reload_ok() -> tuple[str, dict[str, int]]:
    return "reloaded: 1 added (aq-9)", {"added": 1, "removed": 0, "changed": 0, "unchanged": 2}


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    stats = EdgeStats()
    outbox = MemoryOutbox(1000, stats)
    plans = [plan("aq-1", Sensor()), plan("aq-hang", Sensor("hang"), timeout_s=0.3), plan("aq-down", Sensor("down"))]
    plans.append(plan("vms-1", Sign()))
    plans.append(plan("vms-slow", Sign(command_s=5.0)))
    hub = Hub()
    async with (
        Scheduler(plans, outbox, EventQueue(stats), stats) as scheduler,
        CommandDispatcher(GATEWAY, scheduler, hub.send, reload=reload_ok) as dispatcher,
    ):
        yield Agent(scheduler, dispatcher, hub, outbox)


async def test_set_interval(agent: Agent) -> None:
    ack = await agent.ask("aq-1", "set_interval", params={"interval_s": 2.5})
    assert (ack.status, ack.device, ack.detail) == (AckStatus.OK, "aq-1", "poll interval 2.5 s (was 10 s)")
    assert ack.result == {"interval_s": 2.5, "previous_interval_s": 10.0}
    assert agent.scheduler.poller("aq-1").interval_s == 2.5


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "params.interval_s is required"),
        ({"interval_s": "fast"}, "must be a number of seconds, not 'fast'"),
        ({"interval_s": True}, "must be a number of seconds"),
        ({"interval_s": 0.05}, "must be 0.1..86400 s, not 0.05"),
        ({"interval_s": 100_000}, "must be 0.1..86400 s"),
        ({"interval_s": 5, "unit": "s"}, "params: unknown unit"),
    ],
)
async def test_set_interval_with_bad_params_is_an_error(agent: Agent, params: dict[str, Any], fragment: str) -> None:
    ack = await agent.ask("aq-1", "set_interval", params=params)
    assert ack.status is AckStatus.ERROR
    assert fragment in ack.detail
    assert agent.scheduler.poller("aq-1").interval_s == 10.0


async def test_read_now_answers_with_the_metrics_and_queues_them_as_data(agent: Agent) -> None:
    await asyncio.sleep(0.05)  # the first regular poll
    ack = await agent.ask("aq-1", "read_now")
    assert (ack.status, ack.detail) == (AckStatus.OK, "1 reading taken and queued")
    assert ack.result == {"pm25": 12.5, "count": 2}
    queued = [q.reading.metrics for q in await agent.outbox.peek(10) if q.reading.device == "aq-1"]
    assert queued[-1] == ack.result


async def test_read_now_of_a_device_that_does_not_answer_is_a_timeout(agent: Agent) -> None:
    ack = await agent.ask("aq-hang", "read_now")  # its own poll timeout (0.3 s) comes first
    assert (ack.status, ack.detail) == (AckStatus.TIMEOUT, "poll timed out after 0.3 s")
    ack = await agent.ask("aq-hang", "read_now", timeout_s=0.1)  # the command's timeout comes first
    assert (ack.status, ack.detail) == (AckStatus.TIMEOUT, "no answer from 'aq-hang' within 0.1 s")


async def test_read_now_of_an_unreachable_device_is_an_error_with_the_reason(agent: Agent) -> None:
    ack = await agent.ask("aq-down", "read_now")
    assert (ack.status, ack.detail) == (AckStatus.ERROR, "simulated: connection refused")


async def test_read_now_takes_no_params(agent: Agent) -> None:
    ack = await agent.ask("aq-1", "read_now", params={"fast": True})
    assert (ack.status, ack.detail) == (AckStatus.ERROR, "read_now takes no params (got fast)")


async def test_driver_actions(agent: Agent) -> None:
    ack = await agent.ask("vms-1", "display_message", params={"text": "KẸT XE - ĐI CHẬM"})
    assert (ack.status, ack.detail, ack.result) == (AckStatus.OK, "message 1 active", {})
    ack = await agent.ask("vms-1", "restart")
    assert (ack.status, ack.detail) == (AckStatus.OK, "controller restarting")
    ack = await agent.ask("vms-1", "display_message", params={"text": ""})
    assert (ack.status, ack.detail) == (AckStatus.ERROR, "params.text: a non-empty string is required")
    # The action exists; params the driver refuses (even as UnsupportedCommand) make a malformed command.
    ack = await agent.ask("vms-1", "display_message", params={"text": "x", "colour": "red"})
    assert (ack.status, ack.detail) == (AckStatus.ERROR, "display_message: unknown param(s) colour")


@pytest.mark.parametrize(
    ("device", "action"),
    [("aq-1", "restart"), ("aq-1", "display_message"), ("vms-1", "self_destruct"), ("aq-1", "reboot")],
)
async def test_what_a_device_cannot_do_is_unsupported(agent: Agent, device: str, action: str) -> None:
    ack = await agent.ask(device, action)
    assert ack.status is AckStatus.UNSUPPORTED
    assert ack.detail == f"device {device!r} does not support {action!r}"


async def test_an_unknown_device_is_an_error(agent: Agent) -> None:
    ack = await agent.ask("aq-404", "read_now")
    assert (ack.status, ack.detail) == (AckStatus.ERROR, "unknown device 'aq-404' (this gateway serves 5 devices)")


async def test_a_slow_command_times_out_and_holds_up_nothing_else(agent: Agent) -> None:
    agent.scheduler.set_interval("aq-1", 0.1)
    started = time.monotonic()
    slow = asyncio.create_task(agent.ask("vms-slow", "display_message", params={"text": "x"}, timeout_s=0.5))
    fast = await agent.ask("vms-1", "display_message", params={"text": "y"})
    assert fast.status is AckStatus.OK
    assert time.monotonic() - started < 0.3  # answered while the slow one still runs
    ack = await slow
    assert (ack.status, ack.detail) == (AckStatus.TIMEOUT, "no answer from 'vms-slow' within 0.5 s")
    sensor = agent.scheduler.poller("aq-1").plan.driver
    assert isinstance(sensor, Sensor)
    during = [t for t in sensor.poll_times if t >= started]
    assert len(during) >= 4  # polled every 0.1 s meanwhile


async def test_handle_returns_at_once(agent: Agent) -> None:
    command = Command(id="c-slow", device="vms-slow", action="display_message", params={"text": "x"}, ts=now_ms())
    started = time.monotonic()
    await agent.commands.handle(encode(command))
    assert time.monotonic() - started < 0.05


async def test_reload_config(agent: Agent) -> None:
    ack = await agent.ask(GATEWAY, "reload_config")
    assert (ack.status, ack.device, ack.detail) == (AckStatus.OK, GATEWAY, "reloaded: 1 added (aq-9)")
    assert ack.result == {"added": 1, "removed": 0, "changed": 0, "unchanged": 2}
    ack = await agent.ask("aq-1", "reload_config")
    assert ack.status is AckStatus.ERROR
    assert "addressed to the gateway id 'gw-1', not to a device" in ack.detail
    ack = await agent.ask(GATEWAY, "read_now")
    assert ack.status is AckStatus.ERROR
    assert "the gateway itself only takes 'reload_config'" in ack.detail


async def test_a_bad_config_on_reload_is_an_error_ack() -> None:
    async def reload_bad() -> tuple[str, dict[str, int]]:
        raise ConfigError(
            "gateway.yaml: devices[1] (id 'aq-2'): interval_s: Input should be greater than or equal to 0.1"
        )

    hub = Hub()
    stats = EdgeStats()
    async with (
        Scheduler([], MemoryOutbox(10, stats), EventQueue(stats), stats) as scheduler,
        CommandDispatcher(GATEWAY, scheduler, hub.send, reload=reload_bad) as commands,
    ):
        await commands.handle(encode(Command(id="c-1", device=GATEWAY, action="reload_config", ts=now_ms())))
        ack = await hub.ack_for("c-1")
    assert ack.status is AckStatus.ERROR
    assert ack.detail.startswith("gateway.yaml: devices[1] (id 'aq-2'): interval_s:")


async def test_reload_without_a_config_file_is_unsupported() -> None:
    hub = Hub()
    stats = EdgeStats()
    async with (
        Scheduler([], MemoryOutbox(10, stats), EventQueue(stats), stats) as scheduler,
        CommandDispatcher(GATEWAY, scheduler, hub.send) as commands,
    ):
        await commands.handle(encode(Command(id="c-1", device=GATEWAY, action="reload_config", ts=now_ms())))
        assert (await hub.ack_for("c-1")).status is AckStatus.UNSUPPORTED


MALFORMED_WITH_ID: list[tuple[dict[str, Any], str, str]] = [
    ({"id": "c-1", "device": "aq-1", "action": "read_now"}, "aq-1", "missing required field `ts`"),
    ({"id": "c-2", "device": "aq-1", "action": "Read Now", "ts": 1_764_331_200_000}, "aq-1", "$.action"),
    ({"id": "c-3", "device": "AQ 1", "action": "read_now", "ts": 1_764_331_200_000}, GATEWAY, "$.device"),
    ({"id": "c-4", "device": "aq-1", "action": "read_now", "ts": 1_764_331_200}, "aq-1", "$.ts"),
    (
        {"id": "c-5", "device": "aq-1", "action": "read_now", "ts": 1_764_331_200_000, "timeout_s": 0},
        "aq-1",
        "$.timeout_s",
    ),
    ({"id": "c-6", "device": "aq-1", "action": "x", "ts": 1_764_331_200_000, "v": 2}, "aq-1", "$.v"),
    ({"id": "c-7", "device": "aq-1", "action": "x", "ts": 1_764_331_200_000, "params": {"a": [1]}}, "aq-1", "params"),
]


@pytest.mark.parametrize(("doc", "device", "fragment"), MALFORMED_WITH_ID, ids=[d[0]["id"] for d in MALFORMED_WITH_ID])
async def test_a_contract_violation_with_an_id_is_an_error_ack(
    agent: Agent, doc: dict[str, Any], device: str, fragment: str
) -> None:
    await agent.commands.handle(msgspec.json.encode(doc))
    ack = await agent.hub.ack_for(doc["id"])
    assert (ack.status, ack.device) == (AckStatus.ERROR, device)
    assert ack.detail.startswith("Command: ")
    assert fragment in ack.detail


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[1, 2]", b'{"device": "aq-1", "action": "read_now"}', b'{"id": "C 1"}', b'{"id": 7}', b"\xff"],
)
async def test_a_payload_without_a_usable_id_is_logged_and_counted(
    agent: Agent, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await agent.commands.handle(payload)
    await agent.commands.handle(payload)
    await asyncio.sleep(0.05)
    assert agent.hub.acks == []
    assert agent.commands.stats.unanswerable == 2
    warnings = [r for r in caplog.records if r.name == "edge.commands" and r.levelname == "WARNING"]
    assert len(warnings) == 1  # the first; the rest at DEBUG
    assert "unanswerable command" in warnings[0].getMessage()


async def test_a_redelivered_command_runs_once_and_is_answered_again(agent: Agent) -> None:
    payload = encode(Command(id="c-dup", device="vms-1", action="display_message", params={"text": "a"}, ts=now_ms()))
    await agent.commands.handle(payload)
    await agent.commands.handle(payload)  # still running: ignored
    first = await agent.hub.ack_for("c-dup")
    await agent.commands.handle(payload)  # done: the same ack again
    await agent.hub.wait_for(lambda: len(agent.hub.acks) >= 2)
    assert agent.hub.acks == [first, first]
    sign = agent.scheduler.poller("vms-1").plan.driver
    assert isinstance(sign, Sign)
    assert sign.messages == ["a"]
    assert agent.commands.stats.duplicates == 2


async def test_too_many_commands_at_once_are_refused_not_queued() -> None:
    hub = Hub()
    stats = EdgeStats()
    async with (
        Scheduler([plan("vms-slow", Sign(command_s=0.3))], MemoryOutbox(10, stats), EventQueue(stats), stats) as s,
        CommandDispatcher(GATEWAY, s, hub.send, max_running=2) as commands,
    ):
        for n in range(3):
            command = Command(
                id=f"c-{n}", device="vms-slow", action="display_message", params={"text": "x"}, ts=now_ms()
            )
            await commands.handle(encode(command))
        refused = await hub.ack_for("c-2")
        assert (refused.status, refused.detail) == (
            AckStatus.ERROR,
            "too many commands in progress (2); try again later",
        )
        assert (await hub.ack_for("c-0")).status is AckStatus.OK
        assert (await hub.ack_for("c-1")).status is AckStatus.OK
        # The refused id sent again once there is room: it runs now (a refusal is not remembered).
        hub.acks.clear()
        retry = Command(id="c-2", device="vms-slow", action="display_message", params={"text": "x"}, ts=now_ms())
        await commands.handle(encode(retry))
        assert (await hub.ack_for("c-2")).status is AckStatus.OK
    assert (commands.stats.ok, commands.stats.error, commands.stats.handled) == (3, 1, 4)


async def test_an_ack_that_cannot_be_sent_is_counted(agent: Agent) -> None:
    agent.hub.connected = False
    await agent.commands.handle(encode(Command(id="c-lost", device="aq-1", action="read_now", ts=now_ms())))
    await agent.hub.wait_for(lambda: agent.hub.refused >= 1)
    await asyncio.sleep(0.01)  # the dispatcher counts after the sender returned
    assert agent.commands.stats.acks_lost == 1
    assert agent.commands.stats.ok == 1


async def test_leaving_cancels_commands_in_progress() -> None:
    hub = Hub()
    stats = EdgeStats()
    async with Scheduler(
        [plan("vms-slow", Sign(command_s=30))], MemoryOutbox(10, stats), EventQueue(stats), stats
    ) as s:
        started = time.monotonic()
        async with CommandDispatcher(GATEWAY, s, hub.send) as commands:
            command = Command(id="c-0", device="vms-slow", action="display_message", params={"text": "x"}, ts=now_ms())
            await commands.handle(encode(command))
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 2


async def test_a_command_during_shutdown_is_refused() -> None:
    hub = Hub()
    stats = EdgeStats()
    async with Scheduler([plan("aq-1", Sensor())], MemoryOutbox(10, stats), EventQueue(stats), stats) as scheduler:
        commands = CommandDispatcher(GATEWAY, scheduler, hub.send)
        async with commands:
            pass
        await commands.handle(encode(Command(id="c-late", device="aq-1", action="read_now", ts=now_ms())))
        ack = await hub.ack_for("c-late")
    assert (ack.status, ack.detail) == (AckStatus.ERROR, "the agent is shutting down")
