"""Commands over the real Mosquitto: the agent (``run_agent`` with its config file) answers every command on
``.../cmd`` with an ack on ``.../cmd/ack``, error cases included, while its devices keep being polled.

The test plays the hub as admin. Devices: two Modbus units on the simulator, the gateway host, and a display
controller driver registered by this test (``test_sign``: a real driver living in memory, so display_message
and a command timeout can be shown without sign hardware). The last test drives the real NTCIP 1203 driver
against the sign simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from edge_support import MessageLog, recording

from devices.driver import REGISTRY, DriverConfig, DriverSpec, MetricValue, Reading, now_ms
from devices.errors import DeviceConfigError, DeviceResponseError
from devices.sim.modbus import ModbusSimulator
from devices.sim.ntcip import NtcipSimulator
from edge.agent import run_agent
from edge.config import load_config
from ioc.stack import StackEndpoints
from wire.v1 import AckStatus, Channel, Command, CommandAck, DataBatch, encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-a", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"


class SignOptions(DriverConfig):
    pass


class MemorySign:
    """A display controller in memory: ``display_message`` (``params.delay_s`` makes it slow), ``restart``."""

    def __init__(self) -> None:
        self.text = ""

    async def open(self) -> None:
        pass

    async def poll(self) -> list[Reading]:
        return [Reading(ts_ms=now_ms(), metrics={"message": self.text})]

    async def close(self) -> None:
        pass

    def describe_plan(self) -> list[str]:
        return ["in memory"]

    def supported_actions(self) -> frozenset[str]:
        return frozenset({"display_message", "restart"})

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        if action == "restart":
            return "controller restarting"
        delay = params.get("delay_s", 0)
        if isinstance(delay, int | float) and not isinstance(delay, bool):
            await asyncio.sleep(delay)
        text = params.get("text")
        if not isinstance(text, str) or not text:
            raise DeviceResponseError("params.text: a non-empty string is required")
        self.text = text
        return f"showing {text!r}"


def _register_test_sign() -> None:
    with contextlib.suppress(DeviceConfigError):  # already registered by an earlier test
        REGISTRY.register(
            DriverSpec("test_sign", SignOptions, lambda config, profile: MemorySign(), needs_profile=False)
        )


SIGN_PROFILE = {
    "id": "test-sign",
    "kind": "sign",
    "manufacturer": "test",
    "model": "in-memory sign",
    "driver": "test_sign",
    "source": "tests/integration/edge/test_edge_cmd_mqtt.py: a display controller living in memory for the tests",
}


def gateway_config(stack: StackEndpoints, sim_port: int, profile: Path, extra: list[dict[str, Any]]) -> dict[str, Any]:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    modbus = {"host": "127.0.0.1", "port": sim_port, "timeout_s": 0.5}
    return {
        "site": SITE,
        "gateway": GATEWAY,
        "broker": {"host": stack.mqtt_host, "port": stack.mqtt_port, "username": user, "password": password},
        "publish": {"max_batch": 50, "max_delay_ms": 100, "outbox_path": ":memory:", "drain_timeout_s": 3},
        "self_metrics": {"interval_s": 1},
        "devices": [
            {"id": "weather-1", "driver": "modbus_tcp", "profile": "xy-md02", "interval_s": 30, "options": modbus},
            {"id": "vms-1", "driver": "test_sign", "profile": str(profile), "interval_s": 30},
            {"id": "host-1", "driver": "host", "profile": "gateway-host", "interval_s": 30},
            *extra,
        ],
    }


class Hub(MessageLog):
    """The hub's side: sends commands as admin; every ack and data batch of the gateway, decoded (MessageLog)."""

    @property
    def acks(self) -> dict[str, CommandAck]:
        return {m.payload.id: m.payload for m in self.messages if m.channel == Channel.CMD_ACK.value}

    @property
    def batches(self) -> list[DataBatch]:
        return [m.payload for m in self.messages if m.channel == Channel.DATA.value]

    @property
    def invalid(self) -> list[str]:
        return [m.payload for m in self.messages if m.channel == "invalid"]

    async def send(self, payload: bytes) -> None:
        await self.client.publish(f"{ROOT}/cmd", payload, qos=1)

    async def ask(self, device: str, action: str, **kw: Any) -> CommandAck:
        command_id = f"c-{time.monotonic_ns()}"
        await self.send(encode(Command(id=command_id, device=device, action=action, ts=now_ms(), **kw)))
        ack: CommandAck = await self.until(lambda: self.acks.get(command_id))
        return ack

    def readings(self, device: str) -> list[Any]:
        return [r for b in self.batches for r in b.readings if r.device == device]


@contextlib.asynccontextmanager
async def agent_and_hub(stack: StackEndpoints, path: Path) -> AsyncIterator[Hub]:
    async with recording(stack, "cmd-hub", [f"{ROOT}/cmd/ack", f"{ROOT}/data"], Hub) as hub:
        stop = asyncio.Event()
        agent = asyncio.create_task(run_agent(load_config(path), stop, config_path=path))
        try:
            # The agent is subscribed once its devices' first readings arrive (subscribe precedes the birth).
            await hub.until(lambda: hub.readings("host-1"))
            yield hub
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await agent
        assert hub.invalid == []


@pytest.fixture
def sign_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _register_test_sign()
    path = tmp_path_factory.mktemp("p") / "sign.yaml"
    path.write_text(yaml.safe_dump(SIGN_PROFILE), encoding="utf-8")
    return path


@pytest.mark.timeout(120)
async def test_every_command_is_answered_over_mqtt(stack: StackEndpoints, tmp_path: Path, sign_profile: Path) -> None:
    async with ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600, seed=5) as sim:
        path = tmp_path / "gateway.yaml"
        # weather-2 reads the same (unchanging: no simulator updates) unit every 0.5 s, by exception.
        quiet = {
            "id": "weather-2",
            "driver": "modbus_tcp",
            "profile": "xy-md02",
            "interval_s": 0.5,
            "options": {"host": "127.0.0.1", "port": sim.port, "unit_id": 1, "timeout_s": 0.5},
            "report": {"max_silence_s": 3600, "deadband": {"temperature_c": 0.5}},
        }
        path.write_text(yaml.safe_dump(gateway_config(stack, sim.port, sign_profile, [quiet])), encoding="utf-8")
        async with agent_and_hub(stack, path) as hub:
            # read_now: the metrics in the ack, the same reading published as data.
            ack = await hub.ask("weather-1", "read_now")
            assert (ack.status, ack.device) == (AckStatus.OK, "weather-1")
            assert set(ack.result) == {"temperature_c", "humidity_pct"}
            await hub.until(lambda: [r for r in hub.readings("weather-1") if dict(r.metrics) == ack.result])

            # set_interval: from 30 s to 0.5 s, the device's readings now come twice a second.
            ack = await hub.ask("weather-1", "set_interval", params={"interval_s": 0.5})
            assert (ack.status, ack.detail) == (AckStatus.OK, "poll interval 0.5 s (was 30 s)")
            seen = len(hub.readings("weather-1"))
            await hub.until(lambda: len(hub.readings("weather-1")) >= seen + 4, within_s=5)

            # A driver's own action, then its error, then a timeout; the device is polled as before.
            ack = await hub.ask("vms-1", "display_message", params={"text": "KẸT XE - ĐI CHẬM"})
            assert (ack.status, ack.detail) == (AckStatus.OK, "showing 'KẸT XE - ĐI CHẬM'")
            ack = await hub.ask("vms-1", "display_message", params={"text": ""})
            assert (ack.status, ack.detail) == (AckStatus.ERROR, "params.text: a non-empty string is required")
            seen = len(hub.readings("weather-1"))
            ack = await hub.ask("vms-1", "display_message", params={"text": "x", "delay_s": 3}, timeout_s=0.5)
            assert (ack.status, ack.detail) == (AckStatus.TIMEOUT, "no answer from 'vms-1' within 0.5 s")
            ack = await hub.ask("vms-1", "read_now")
            assert ack.result == {"message": "KẸT XE - ĐI CHẬM"}  # the timed-out message was not shown
            ack = await hub.ask("vms-1", "restart")
            assert (ack.status, ack.detail) == (AckStatus.OK, "controller restarting")

            # What a device cannot do, and what does not exist.
            ack = await hub.ask("weather-1", "restart")
            assert (ack.status, ack.detail) == (AckStatus.UNSUPPORTED, "device 'weather-1' does not support 'restart'")
            ack = await hub.ask("weather-1", "display_message", params={"text": "x"})
            assert ack.status is AckStatus.UNSUPPORTED
            ack = await hub.ask("vms-1", "self_destruct")
            assert ack.status is AckStatus.UNSUPPORTED
            ack = await hub.ask("cam-404", "read_now")
            assert (ack.status, ack.detail) == (
                AckStatus.ERROR,
                "unknown device 'cam-404' (this gateway serves 4 devices)",
            )
            ack = await hub.ask("weather-1", "set_interval", params={"interval_s": "fast"})
            assert (ack.status, ack.detail) == (
                AckStatus.ERROR,
                "params.interval_s must be a number of seconds, not 'fast'",
            )

            # Payloads that break the contract: answered when the id can be recovered, never fatal.
            await hub.send(b"\x00 not json")
            await hub.send(b'{"id": "c-bad-1", "device": "weather-1", "action": "read_now"}')
            bad = await hub.until(lambda: hub.acks.get("c-bad-1"))
            assert bad.status is AckStatus.ERROR
            assert "missing required field `ts`" in bad.detail
            assert (await hub.ask("weather-1", "read_now")).status is AckStatus.OK  # still serving

            # The gateway's own figures and the host device arrive as data.
            def counted() -> list[Any]:
                return [r for r in hub.readings(GATEWAY) if int(r.metrics["commands_received"]) >= 14]

            [agent_reading, *_] = await hub.until(counted, within_s=5)
            assert agent_reading.kind == "agent"
            assert int(agent_reading.metrics["commands_handled"]) >= 13  # all but the unanswerable one
            assert int(agent_reading.metrics["commands_unanswerable"]) == 1
            assert hub.readings("host-1")[0].kind == "gateway_host"
            # Report by exception: weather-2 was polled all along, but only its first reading was news.
            assert int(agent_reading.metrics["values_suppressed"]) > 0
            assert len(hub.readings("weather-2")) == 1
            ack = await hub.ask("weather-2", "read_now")  # an explicit read is always sent whole
            await hub.until(lambda: len(hub.readings("weather-2")) == 2)
            assert dict(hub.readings("weather-2")[1].metrics) == ack.result
            assert sim.port  # the simulator served throughout


@pytest.mark.timeout(120)
async def test_reload_config_over_mqtt(stack: StackEndpoints, tmp_path: Path, sign_profile: Path) -> None:
    async with ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600, seed=5) as sim:
        path = tmp_path / "gateway.yaml"
        config = gateway_config(stack, sim.port, sign_profile, [])
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        async with agent_and_hub(stack, path) as hub:
            # A bad file: an error ack naming the file, device and field; the old devices keep running.
            broken = gateway_config(stack, sim.port, sign_profile, [])
            broken["devices"][0]["interval_s"] = 0
            path.write_text(yaml.safe_dump(broken), encoding="utf-8")
            ack = await hub.ask(GATEWAY, "reload_config")
            assert (ack.status, ack.device) == (AckStatus.ERROR, GATEWAY)
            assert "gateway.yaml: devices[0] (id 'weather-1'): interval_s: " in ack.detail
            assert (await hub.ask("weather-1", "read_now")).status is AckStatus.OK

            # A good one: a new device is added and polled; the sign removed; the rest untouched.
            aq = {
                "id": "aq-1",
                "driver": "modbus_tcp",
                "profile": "pm-sensor-rs485",
                "interval_s": 0.5,
                "options": {"host": "127.0.0.1", "port": sim.port, "unit_id": 2, "timeout_s": 0.5},
            }
            good = gateway_config(stack, sim.port, sign_profile, [aq])
            del good["devices"][1]
            path.write_text(yaml.safe_dump(good), encoding="utf-8")
            ack = await hub.ask(GATEWAY, "reload_config")
            assert (ack.status, ack.detail) == (
                AckStatus.OK,
                "reloaded gateway.yaml, 1 added (aq-1), 1 removed (vms-1), 2 unchanged",
            )
            assert ack.result == {"added": 1, "removed": 1, "changed": 0, "unchanged": 2}
            await hub.until(lambda: len(hub.readings("aq-1")) >= 2)
            ack = await hub.ask("vms-1", "display_message", params={"text": "x"})
            assert (ack.status, ack.detail) == (
                AckStatus.ERROR,
                "unknown device 'vms-1' (this gateway serves 3 devices)",
            )
            ack = await hub.ask("aq-1", "reload_config")
            assert ack.status is AckStatus.ERROR


@pytest.mark.timeout(120)
async def test_display_message_on_an_ntcip_sign_over_mqtt(stack: StackEndpoints, tmp_path: Path) -> None:
    """The real NTCIP 1203 driver against the sign simulator (SNMPv2c over UDP), commanded through the broker."""
    async with (
        ModbusSimulator(["xy-md02"], update_interval_s=3600, seed=5) as sim,
        NtcipSimulator(seed=3, update_interval_s=3600) as sign,
    ):
        path = tmp_path / "gateway.yaml"
        config = gateway_config(stack, sim.port, Path("unused"), [])
        config["devices"][1] = {
            "id": "vms-3",
            "driver": "ntcip",
            "profile": "ntcip-dms-full-matrix",
            "interval_s": 30,
            "options": {"host": "127.0.0.1", "port": sign.port, "write_community": "administrator", "timeout_s": 1},
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        async with agent_and_hub(stack, path) as hub:
            ack = await hub.ask("vms-3", "display_message", params={"text": "[jl3]FLOOD AHEAD", "priority": 200})
            assert ack.status is AckStatus.OK
            assert ack.detail.startswith("changeable message 1 shown (crc 0x")
            assert sign.current_message() == b"[jl3]FLOOD AHEAD"
            ack = await hub.ask("vms-3", "read_now")
            assert ack.result["message_text"] == "FLOOD AHEAD"
            # The sign refuses a bad MULTI tag: an error with the sign's reason; its message stays.
            ack = await hub.ask("vms-3", "display_message", params={"text": "[xx]BAD"})
            assert ack.status is AckStatus.ERROR
            assert "syntaxMULTI" in ack.detail
            # The driver refuses bad params: the action exists, the command is malformed: error, with why.
            ack = await hub.ask("vms-3", "display_message", params={"text": "x", "colour": "red"})
            assert ack.status is AckStatus.ERROR
            assert "unknown param(s) colour" in ack.detail
            ack = await hub.ask("vms-3", "restart")
            assert ack.status is AckStatus.UNSUPPORTED
            assert sign.current_message() == b"[jl3]FLOOD AHEAD"
