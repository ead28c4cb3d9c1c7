"""The edge agent against the real Mosquitto (``stack``) and the Modbus simulator over real sockets.

An admin subscriber records what the broker delivers on ``ioc/v1/site-a/gw-1/#``; the agent runs under the
gateway's own account "site-a.gw-1". Retained messages left by earlier tests are told apart by session id.
The abrupt loss of the link is made by a TCP relay between the agent and the broker that the test cuts.
The last test runs ``ioc edge run`` as a child process and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from edge_support import WAIT_S, MessageLog, Received, retained_state
from edge_support import recording as edge_recording

from devices.sim.modbus import ModbusSimulator
from edge.config import BrokerConfig, EdgeConfig, PublishConfig
from ioc.stack import StackEndpoints
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, State

# The hub tests' support module (the agent run in-process, the relay), imported top-level as they import it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

from ops_support import Relay, modbus_devices, running_agent

pytestmark = pytest.mark.integration

SITE, GATEWAY = "site-a", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"
INTERVAL_S = 0.5
REPO = Path(__file__).parents[3]


class Recorder(MessageLog):
    """Subscribes as admin to the gateway's topics and keeps every message, decoded with the contract."""

    async def wait_for(self, predicate: Callable[[list[Received]], Any], within_s: float = WAIT_S) -> Any:
        """Until ``predicate(messages)`` is truthy; returns its value."""
        return await self.until(lambda: predicate(self.messages), within_s)

    def states(self, *, live: bool = True) -> list[State]:
        return [m.payload for m in self.messages if m.channel == "state" and (not live or not m.retained)]

    def batches(self, session: str) -> list[DataBatch]:
        return [m.payload for m in self.messages if m.channel == "data" and m.payload.session == session]

    def events(self, session: str | None = None) -> list[Event]:
        return [
            m.payload
            for m in self.messages
            if m.channel == "event" and (session is None or m.payload.session == session)
        ]


def recording(stack: StackEndpoints) -> contextlib.AbstractAsyncContextManager[Recorder]:
    return edge_recording(stack, "recorder", [f"{ROOT}/{channel}" for channel in ("state", "data", "event")], Recorder)


def agent_config(host: str, port: int, stack: StackEndpoints, sim_port: int, **broker: Any) -> EdgeConfig:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    return EdgeConfig(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host=host, port=port, username=user, password=password, **broker),
        publish=PublishConfig(max_batch=50, max_delay_ms=200, drain_timeout_s=5),
        devices=modbus_devices(sim_port, INTERVAL_S),
    )


def live_birth(known: set[str]) -> Callable[[list[Received]], State | None]:
    def find(messages: list[Received]) -> State | None:
        for m in messages:
            if m.channel == "state" and not m.retained and m.payload.online and m.payload.session not in known:
                return m.payload  # type: ignore[no-any-return]
        return None

    return find


async def test_birth_data_and_clean_shutdown(stack: StackEndpoints) -> None:
    async with (
        ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600, seed=3) as sim,
        recording(stack) as recorder,
    ):
        config = agent_config(stack.mqtt_host, stack.mqtt_port, stack, sim.port)
        async with running_agent(config) as stop:
            birth: State = await recorder.wait_for(live_birth(set()))
            session = birth.session
            assert birth.devices == [
                DeviceInfo(id="weather-1", kind="weather", profile="xy-md02", interval_s=0.5, driver="modbus_tcp"),
                DeviceInfo(
                    id="aq-1", kind="air_quality", profile="pm-sensor-rs485", interval_s=0.5, driver="modbus_tcp"
                ),
            ]
            assert birth.agent
            await recorder.wait_for(lambda _: len(recorder.batches(session)) >= 4)
            assert (await retained_state(stack, ROOT)) == birth
            await recorder.wait_for(lambda _: len(recorder.events(session)) >= 2)
            stop.set()
        # run_agent has returned: the clean shutdown is complete.
        death: State = await recorder.wait_for(
            lambda ms: next((s for s in recorder.states() if not s.online and s.session == session), None)
        )
        assert death.reason == "shutdown"
        assert (await retained_state(stack, ROOT)) == death

        batches = recorder.batches(session)
        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
        assert not any(b.replay for b in batches)
        readings = [r for b in batches for r in b.readings]
        weather = [r for r in readings if r.device == "weather-1"]
        air = [r for r in readings if r.device == "aq-1"]
        assert weather
        assert air
        assert {r.kind for r in weather} == {"weather"}
        assert {r.kind for r in air} == {"air_quality"}
        # The simulator's values do not move (update every hour): every reading carries exactly them.
        for r in weather:
            assert r.metrics == {
                "temperature_c": pytest.approx(sim.value(1, "temperature_c")),
                "humidity_pct": pytest.approx(sim.value(1, "humidity_pct")),
            }
        for r in air:
            assert set(r.metrics) == {"pm1", "pm25", "pm10"}
            assert r.metrics["pm25"] == pytest.approx(sim.value(2, "pm25"))
        # Sampled on the agent's 0.5 s grid: consecutive readings of one device are about an interval apart.
        stamps = sorted(r.ts for r in weather)
        for a, b in itertools.pairwise(stamps):
            assert 300 <= b - a <= 900
        assert sorted((e.device, e.type) for e in recorder.events(session)) == [
            ("aq-1", EventType.DEVICE_UP),
            ("weather-1", EventType.DEVICE_UP),
        ]
        # A clean shutdown ends with DISCONNECT: the broker drops the will, nothing else arrives for the session.
        await asyncio.sleep(1.0)
        assert [s.reason for s in recorder.states() if s.session == session] == ["", "shutdown"]
        assert [m.payload for m in recorder.messages if m.channel == "invalid"] == []


async def test_device_down_and_up_are_published_once(stack: StackEndpoints) -> None:
    async with (
        ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600) as sim,
        recording(stack) as recorder,
    ):
        config = agent_config(stack.mqtt_host, stack.mqtt_port, stack, sim.port)
        async with running_agent(config):
            birth: State = await recorder.wait_for(live_birth(set()))
            session = birth.session
            await recorder.wait_for(lambda _: len(recorder.events(session)) >= 2)
            sim.set_offline(1, True)
            down = await recorder.wait_for(
                lambda _: [e for e in recorder.events(session) if e.type is EventType.DEVICE_DOWN]
            )
            await asyncio.sleep(2.0)  # several failed attempts: still one event
            sim.set_offline(1, False)
            await recorder.wait_for(
                lambda _: len([e for e in recorder.events(session) if e.device == "weather-1"]) >= 3, within_s=30
            )
            await asyncio.sleep(1.0)
        weather_events = [e.type for e in recorder.events(session) if e.device == "weather-1"]
        assert weather_events == [EventType.DEVICE_UP, EventType.DEVICE_DOWN, EventType.DEVICE_UP]
        assert [e.type for e in recorder.events(session) if e.device == "aq-1"] == [EventType.DEVICE_UP]
        assert down[0].device == "weather-1"
        assert down[0].reason  # why, e.g. "... no answer to input 1+2 within 0.3 s"


@pytest.mark.slow
async def test_an_abrupt_loss_yields_the_will_then_a_new_session_replays(stack: StackEndpoints) -> None:
    async with (
        ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600) as sim,
        Relay(stack.mqtt_host, stack.mqtt_port) as relay,
        recording(stack) as recorder,
    ):
        config = agent_config(
            "127.0.0.1", relay.port, stack, sim.port, reconnect_min_s=0.2, reconnect_max_s=1.0, connect_timeout_s=2
        )
        async with running_agent(config):
            first: State = await recorder.wait_for(live_birth(set()))
            await recorder.wait_for(lambda _: len(recorder.batches(first.session)) >= 2)

            relay.accepting = False
            relay.cut()
            will: State = await recorder.wait_for(
                lambda _: next((s for s in recorder.states() if not s.online and s.session == first.session), None)
            )
            assert will.reason == "connection lost"
            assert will.ts is None  # written at connect time, published by the broker
            await asyncio.sleep(2.0)  # the devices keep being polled; the readings wait in the outbox
            relay.accepting = True

            second: State = await recorder.wait_for(live_birth({first.session}))
            assert second.session != first.session
            await recorder.wait_for(lambda _: any(not b.replay for b in recorder.batches(second.session)))

        batches = recorder.batches(second.session)
        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
        replayed = [b for b in batches if b.replay]
        assert replayed, "the readings held during the outage were not sent as replay"
        assert batches[0].replay
        assert second.ts is not None
        assert all(r.ts < second.ts for b in replayed for r in b.readings)
        # Nothing sampled during the outage was lost: one device's readings stay about an interval apart.
        stamps = sorted(
            {
                r.ts
                for s in (first, second)
                for b in recorder.batches(s.session)
                for r in b.readings
                if r.device == "weather-1"
            }
        )
        assert stamps[-1] - stamps[0] > 3000
        for a, b in itertools.pairwise(stamps):
            assert b - a <= 900, f"a gap of {b - a} ms: readings were lost"
        death = [s for s in recorder.states() if s.session == second.session and not s.online]
        assert [s.reason for s in death] == ["shutdown"]


async def test_readings_taken_before_the_first_connect_are_sent_as_replay(stack: StackEndpoints) -> None:
    async with (
        ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600) as sim,
        Relay(stack.mqtt_host, stack.mqtt_port) as relay,
        recording(stack) as recorder,
    ):
        relay.accepting = False  # the broker is unreachable when the agent starts
        config = agent_config(
            "127.0.0.1", relay.port, stack, sim.port, reconnect_min_s=0.2, reconnect_max_s=0.5, connect_timeout_s=1
        )
        async with running_agent(config):
            await asyncio.sleep(1.6)
            relay.accepting = True
            birth: State = await recorder.wait_for(live_birth(set()))
            await recorder.wait_for(lambda _: any(not b.replay for b in recorder.batches(birth.session)))
        batches = recorder.batches(birth.session)
        assert batches[0].seq == 1
        assert batches[0].replay
        assert birth.ts is not None
        held = [r for b in batches if b.replay for r in b.readings]
        assert {r.device for r in held} == {"weather-1", "aq-1"}
        assert len(held) >= 4  # about three polls per device while the broker was away
        assert all(r.ts < birth.ts for r in held)
        assert [b.seq for b in batches] == list(range(1, len(batches) + 1))


async def test_ioc_edge_run_until_sigterm(stack: StackEndpoints, tmp_path: Path) -> None:
    """``ioc edge run`` as an operator starts it: a child process, the password from the environment."""
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    async with ModbusSimulator(["xy-md02"], update_interval_s=3600) as sim, recording(stack) as recorder:
        config = {
            "site": SITE,
            "gateway": GATEWAY,
            "broker": {"host": stack.mqtt_host, "port": stack.mqtt_port, "username": user},
            "publish": {"max_delay_ms": 200},
            "devices": [
                {
                    "id": "weather-1",
                    "driver": "modbus_tcp",
                    "profile": "xy-md02",
                    "interval_s": 0.5,
                    "options": {"host": "127.0.0.1", "port": sim.port, "unit_id": 1},
                }
            ],
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_EDGE_")}
        env["IOC_EDGE_BROKER__PASSWORD"] = password  # not in the file: the environment supplies it
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioc.cli",
            "edge",
            "run",
            str(path),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            birth: State = await recorder.wait_for(live_birth(set()), within_s=30)
            await recorder.wait_for(lambda _: len(recorder.batches(birth.session)) >= 2)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, stderr.decode()
        death = [s for s in recorder.states() if s.session == birth.session and not s.online]
        assert [s.reason for s in death] == ["shutdown"]
        assert b"published shutdown state" in stderr
