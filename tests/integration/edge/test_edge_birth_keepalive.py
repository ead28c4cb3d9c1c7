"""The birth follows the devices, and the keep-alive promise, against the real Mosquitto (``stack``).

- After a ``set_interval`` or a ``reload_config`` that changes what the agent serves, a new retained birth of the
  same session announces the devices as they are now; a command that changes nothing announces nothing.
- The birth carries ``keepalive_s`` (the MQTT keep-alive) and the agent publishes on ``data`` at least that
  often, even when its only device polls once an hour: the self-metrics reading is the heartbeat, and it carries
  the publish latency of the readings before it.

An admin subscriber records the gateway's topics; the agent runs in this process under the gateway's account,
from a config file (``reload_config`` rereads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edge_support import MessageLog, Received, recording, retained_state

from devices.driver import now_ms
from devices.sim.modbus import ModbusSimulator
from edge.agent import run_agent
from edge.config import load_config
from ioc.stack import StackEndpoints
from wire.v1 import (
    AckStatus,
    Command,
    CommandAck,
    DeviceInfo,
    State,
    encode,
)

pytestmark = pytest.mark.integration

SITE, GATEWAY = "site-a", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"


class Hub(MessageLog):
    """The hub's side over the broker: records state, data and acks of the gateway, sends commands."""

    def births(self, session: str | None = None) -> list[State]:
        return [
            m.payload
            for m in self.messages
            if m.channel == "state" and not m.retained and m.payload.online
            if session is None or m.payload.session == session
        ]

    def data(self, session: str) -> list[Received]:
        return [m for m in self.messages if m.channel == "data" and m.payload.session == session]

    async def ask(self, device: str, action: str, **kw: Any) -> CommandAck:
        command_id = f"c-{time.monotonic_ns()}"
        command = Command(id=command_id, device=device, action=action, ts=now_ms(), **kw)
        await self.client.publish(f"{ROOT}/cmd", encode(command), qos=1)
        ack: CommandAck = await self.until(
            lambda: next(
                (m.payload for m in self.messages if m.channel == "cmd/ack" and m.payload.id == command_id), None
            )
        )
        return ack


@contextlib.asynccontextmanager
async def agent_and_hub(stack: StackEndpoints, path: Path) -> AsyncIterator[tuple[Hub, State]]:
    """The agent of ``path`` running, the hub recording; yields the hub and the agent's first birth."""
    async with recording(stack, "hub", [f"{ROOT}/{channel}" for channel in ("state", "data", "cmd/ack")], Hub) as hub:
        await asyncio.sleep(0.2)  # the retained state of an earlier test arrives first, marked retained
        stop = asyncio.Event()
        agent = asyncio.create_task(run_agent(load_config(path), stop, config_path=path))
        try:
            birth: State = await hub.until(lambda: next(iter(hub.births()), None))
            yield hub, birth
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await agent
        assert [m.payload for m in hub.messages if m.channel == "invalid"] == []


def gateway(stack: StackEndpoints, devices: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    return {
        "site": SITE,
        "gateway": GATEWAY,
        "broker": {
            "host": stack.mqtt_host,
            "port": stack.mqtt_port,
            "username": user,
            "password": password,
            **sections.pop("broker", {}),
        },
        "publish": {"max_batch": 50, "max_delay_ms": 100, "outbox_path": ":memory:", "drain_timeout_s": 3},
        "devices": devices,
        **sections,
    }


def modbus(device_id: str, profile: str, unit: int, port: int, interval_s: float) -> dict[str, Any]:
    return {
        "id": device_id,
        "driver": "modbus_tcp",
        "profile": profile,
        "interval_s": interval_s,
        "options": {"host": "127.0.0.1", "port": port, "unit_id": unit, "timeout_s": 0.5},
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.slow
async def test_the_birth_follows_set_interval_and_reload(stack: StackEndpoints, tmp_path: Path) -> None:
    async with ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600, seed=2) as sim:
        weather = modbus("weather-1", "xy-md02", 1, sim.port, 0.5)
        path = write(tmp_path / "gateway.yaml", gateway(stack, [weather]))
        async with agent_and_hub(stack, path) as (hub, birth):
            session = birth.session
            assert [(d.id, d.interval_s) for d in birth.devices] == [("weather-1", 0.5)]

            ack = await hub.ask("weather-1", "set_interval", params={"interval_s": 2.0})
            assert ack.status is AckStatus.OK
            second: State = await hub.until(lambda: hub.births(session)[1:2] and hub.births(session)[1])
            assert second.devices == [
                DeviceInfo(id="weather-1", kind="weather", profile="xy-md02", interval_s=2.0, driver="modbus_tcp")
            ]
            assert second.ts is not None
            assert birth.ts is not None
            assert second.ts >= birth.ts
            assert second.keepalive_s == birth.keepalive_s == 30
            assert await retained_state(stack, ROOT) == second  # what a hub starting now sees

            # Refused commands change nothing, and announce nothing.
            assert (await hub.ask("weather-1", "set_interval", params={"interval_s": -1})).status is AckStatus.ERROR
            assert (await hub.ask("nope-1", "set_interval", params={"interval_s": 1})).status is AckStatus.ERROR

            # A reload adding a device (and putting weather-1 back on its configured 0.5 s): one new birth.
            write(path, gateway(stack, [weather, modbus("aq-1", "pm-sensor-rs485", 2, sim.port, 1.0)]))
            ack = await hub.ask(GATEWAY, "reload_config")
            assert ack.status is AckStatus.OK, ack.detail
            third: State = await hub.until(lambda: hub.births(session)[2:3] and hub.births(session)[2])
            assert [(d.id, d.kind, d.interval_s) for d in third.devices] == [
                ("weather-1", "weather", 0.5),
                ("aq-1", "air_quality", 1.0),
            ]
            assert await retained_state(stack, ROOT) == third
            # The refused commands in between did not add a birth: the third is the reload's.
            assert len(hub.births(session)) == 3
            # A reload of the same file changes nothing and announces nothing; the set_interval after it does.
            assert (await hub.ask(GATEWAY, "reload_config")).status is AckStatus.OK
            assert (await hub.ask("aq-1", "set_interval", params={"interval_s": 5})).status is AckStatus.OK
            fourth: State = await hub.until(lambda: hub.births(session)[3:4] and hub.births(session)[3])
            assert [(d.id, d.interval_s) for d in fourth.devices] == [("weather-1", 0.5), ("aq-1", 5.0)]
            assert len(hub.births(session)) == 4
            assert {b.session for b in hub.births()} == {session}  # all of one connection


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_quiet_agent_publishes_at_least_once_per_keepalive(stack: StackEndpoints, tmp_path: Path) -> None:
    """One device polled once an hour, self-metrics once an hour: the keep-alive (5 s) still sees data."""
    keepalive_s = 5
    async with ModbusSimulator(["xy-md02"], update_interval_s=3600, seed=4) as sim:
        doc = gateway(
            stack,
            [modbus("weather-1", "xy-md02", 1, sim.port, 3600)],
            broker={"keepalive_s": keepalive_s},
            self_metrics={"interval_s": 3600},
        )
        path = write(tmp_path / "gateway.yaml", doc)
        async with agent_and_hub(stack, path) as (hub, birth):
            born_at = next(m.at for m in hub.messages if m.channel == "state" and m.payload == birth)
            assert birth.keepalive_s == keepalive_s
            # Four keep-alives and a bit: at least four data messages must come, no gap over the keep-alive.
            await asyncio.sleep(4 * keepalive_s + 2)
            data = hub.data(birth.session)
            stamps = [born_at, *(m.at for m in data)]
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            assert len(data) >= 4, gaps
            assert max(gaps) <= keepalive_s, gaps
            readings = [r for m in data for r in m.payload.readings]
            heartbeats = [r for r in readings if r.kind == "agent"]
            assert all(r.device == GATEWAY for r in heartbeats)
            assert len(heartbeats) >= 3  # the device itself polled once, at start
            assert [r.device for r in readings if r.kind != "agent"] == ["weather-1"]
            # Each heartbeat counts the ones before it, and the publish latency of what was sent since.
            counts = [r.metrics["heartbeats_sent"] for r in heartbeats]
            assert counts == sorted(counts)
            later = heartbeats[-1].metrics
            assert later["publish_latency_readings"] == 1  # the previous heartbeat
            assert 0 <= later["publish_latency_p50_ms"] <= later["publish_latency_max_ms"]
            assert later["publish_latency_max_ms"] < 60_000


async def test_without_self_metrics_the_birth_promises_nothing(stack: StackEndpoints, tmp_path: Path) -> None:
    async with ModbusSimulator(["xy-md02"], update_interval_s=3600, seed=4) as sim:
        doc = gateway(stack, [modbus("weather-1", "xy-md02", 1, sim.port, 3600)], self_metrics={"enabled": False})
        async with agent_and_hub(stack, write(tmp_path / "gateway.yaml", doc)) as (_hub, birth):
            assert birth.keepalive_s is None
