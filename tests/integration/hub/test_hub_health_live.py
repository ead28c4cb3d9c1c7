"""Health against the real broker, InfluxDB and edge agent: a device that stops answering (Modbus simulator
unit offline), a gateway that dies silently (the broker's will after 1.5 x keep-alive), a cut link (relay), and
a flapping link; each with its latency bound and its recovery; transitions stored in the table and InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from ops_support import Gateway, Relay, ops_settings, running_hub, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from devices.sim.modbus import ModbusSimulator
from edge.agent import run_agent
from edge.config import BrokerConfig, DeviceConfig, EdgeConfig, PublishConfig
from hub.config import HealthSettings
from hub.health.monitor import Transition
from hub.health.store import recent_transitions
from hub.service import Hub
from ioc.stack import StackEndpoints, influx_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-a", "gw-1"
INTERVAL_S = 1.0


class Seen:
    """Every transition of the hub with the monotonic time it happened."""

    def __init__(self, hub: Hub) -> None:
        self.items: list[tuple[float, Transition]] = []
        hub.operations.health.subscribe(lambda t: self.items.append((time.monotonic(), t)))

    def of(self, key: str) -> list[tuple[float, Transition]]:
        return [(at, t) for at, t in self.items if t.key == key]

    def states(self, key: str) -> list[str]:
        return [t.new for _, t in self.of(key)]

    def first(self, key: str, state: str, after: float = 0.0) -> tuple[float, Transition] | None:
        return next(((at, t) for at, t in self.of(key) if t.new == state and at >= after), None)


def agent_config(stack: StackEndpoints, port: int, sim_port: int) -> EdgeConfig:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    options = {"host": "127.0.0.1", "port": sim_port, "timeout_s": 0.3}
    return EdgeConfig(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host=stack.mqtt_host, port=port, username=user, password=password, keepalive_s=5),
        publish=PublishConfig(max_batch=50, max_delay_ms=100, drain_timeout_s=3),
        devices=[
            DeviceConfig(
                id="weather-1",
                driver="modbus_tcp",
                profile="xy-md02",
                interval_s=INTERVAL_S,
                timeout_s=0.4,
                options={**options, "unit_id": 1},
            ),
            DeviceConfig(
                id="aq-1",
                driver="modbus_tcp",
                profile="pm-sensor-rs485",
                interval_s=INTERVAL_S,
                timeout_s=0.4,
                options={**options, "unit_id": 2},
            ),
        ],
    )


@contextlib.asynccontextmanager
async def running_agent(config: EdgeConfig) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@pytest.mark.timeout(90)
async def test_device_that_stops_answering_is_offline_within_two_intervals_and_recovers(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with (
        ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600) as sim,
        running_hub(ops_settings(stack, influx_db, tmp_path)) as hub,
    ):
        seen = Seen(hub)
        health = hub.operations.health
        async with running_agent(agent_config(stack, stack.mqtt_port, sim.port)):
            await wait_until(lambda: health.device_state("weather-1").value == "online", 15)
            await asyncio.sleep(2 * INTERVAL_S)
            sim.set_offline(1)
            killed = time.monotonic()
            found = await wait_until(lambda: seen.first("weather-1", "offline", killed), 10)
            at, transition = found
            last_reading = health.devices["weather-1"].last_seen
            assert last_reading is not None
            latency = at - last_reading
            assert latency <= 2 * INTERVAL_S, f"offline {latency:.2f} s after the last reading"
            assert transition.reason.startswith("device_down: ")
            assert health.device_state("aq-1").value == "online"  # its neighbour is not affected
            sim.set_offline(1, False)
            await wait_until(lambda: seen.first("weather-1", "online", at), 10)
            assert seen.states("weather-1") == ["online", "offline", "online"]
            await hub.operations.sink.flush()
            rows = await hub.operations.db.read(lambda s: recent_transitions(s, "weather-1", 10))
            assert [(r["old"], r["new"]) for r in reversed(rows)] == [
                ("unknown", "online"),
                ("online", "offline"),
                ("offline", "online"),
            ]
            points = influx_query(
                stack.influx_url, influx_db, "SELECT state, code, reason FROM device_health WHERE device = 'weather-1'"
            )
            assert [(p["state"], p["code"]) for p in points] == [("online", 3), ("offline", 0), ("online", 3)]
        # The agent stopped cleanly (its death): the hub no longer knows about its devices.
        await wait_until(lambda: seen.states("weather-1")[-1] == "unknown")


#: Mosquitto 2.0 checks keep-alives every 5 s (src/keepalive.c: ``if(last_keepalive_check + 5 < db.now_s)``, in
#: whole seconds), so a silent client's will comes between 1.5 x keep-alive and that plus about 6 s after its last
#: packet; measured here with keep-alive 4 s: 9.2, 10.6, 10.8 s; 10 s: 15.6, 16.8, 16.7 s.
BROKER_CHECK_PERIOD_S = 5.0


@pytest.mark.timeout(90)
async def test_gateway_dying_silently_is_offline_when_the_broker_gives_up_on_it(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    keepalive_s = 4
    wills: list[float] = []
    user, password = stack.credentials("admin")
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"will-watch-{time.monotonic_ns()}")
    watcher.username_pw_set(user, password)
    watcher.on_message = lambda _c, _u, m: wills.append(time.monotonic()) if b'"online":false' in m.payload else None
    watcher.connect(stack.mqtt_host, stack.mqtt_port)
    watcher.subscribe(f"ioc/v1/{SITE}/{GATEWAY}/state", qos=1)
    watcher.loop_start()
    try:
        async with running_hub(ops_settings(stack, influx_db, tmp_path)) as hub:
            seen = Seen(hub)
            gw = Gateway(stack, SITE, GATEWAY, keepalive_s=keepalive_s)
            try:
                # Poll intervals long enough that inactivity does not mark them offline before the will comes.
                gw.birth([("aq-01", "air_quality", 30.0), ("wl-01", "water_level", 30.0)])
                gw.data(("aq-01", "air_quality", {"pm25": 12.0}), ("wl-01", "water_level", {"level_m": 1.2}))
                await wait_until(lambda: seen.states("wl-01") == ["online"])
                gw.die_silently()
                killed = time.monotonic()
                at, transition = await wait_until(lambda: seen.first(f"{SITE}/{GATEWAY}", "offline"), 20)
                latency = at - killed
                assert latency <= 1.5 * keepalive_s + BROKER_CHECK_PERIOD_S + 1.5, f"offline after {latency:.2f} s"
                # The hub's own part: from the will reaching a subscriber to the transition.
                assert wills, "no will seen by the watcher"
                assert at - wills[-1] < 0.5, f"the hub took {at - wills[-1]:.2f} s after the will"
                assert transition.reason == "gateway death: connection lost"
                # Its devices are unknown, not offline, and say why.
                for device in ("aq-01", "wl-01"):
                    last = seen.of(device)[-1][1]
                    expected = ("unknown", f"gateway {SITE}/{GATEWAY} offline: {transition.reason}")
                    assert (last.new, last.reason) == expected
            finally:
                gw.close()
            again = Gateway(stack, SITE, GATEWAY)
            try:
                again.birth([("aq-01", "air_quality", 30.0), ("wl-01", "water_level", 30.0)])
                again.data(("aq-01", "air_quality", {"pm25": 12.0}), ("wl-01", "water_level", {"level_m": 1.2}))
                await wait_until(lambda: seen.states("wl-01") == ["online", "unknown", "online"])
                assert seen.states(f"{SITE}/{GATEWAY}") == ["online", "offline", "online"]
                await hub.operations.sink.flush()
                points = influx_query(stack.influx_url, influx_db, "SELECT state, reason FROM gateway_health")
                assert [p["state"] for p in points] == ["online", "offline", "online"]
            finally:
                again.close()
    finally:
        watcher.loop_stop()
        watcher.disconnect()


@pytest.mark.timeout(90)
async def test_cut_link_marks_gateway_offline_and_devices_unknown_then_recovers(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with (
        ModbusSimulator(["xy-md02", "pm-sensor-rs485"], update_interval_s=3600) as sim,
        Relay(stack.mqtt_host, stack.mqtt_port) as relay,
        running_hub(ops_settings(stack, influx_db, tmp_path)) as hub,
    ):
        seen = Seen(hub)
        health = hub.operations.health
        async with running_agent(agent_config(stack, relay.port, sim.port)):
            await wait_until(lambda: health.device_state("aq-1").value == "online", 15)
            relay.cut()
            cut = time.monotonic()
            at, _ = await wait_until(lambda: seen.first(f"{SITE}/{GATEWAY}", "offline", cut), 10)
            assert at - cut < 2.0  # the TCP connection dropped: the broker publishes the will at once
            await wait_until(lambda: health.device_state("aq-1").value == "unknown")
            # The agent reconnects through the relay: birth, readings, everything online again.
            await wait_until(lambda: seen.first(f"{SITE}/{GATEWAY}", "online", at), 30)
            await wait_until(lambda: health.device_state("aq-1").value == "online", 10)
            await wait_until(lambda: health.device_state("weather-1").value == "online", 10)
        assert seen.states("aq-1")[:3] == ["online", "unknown", "online"]


@pytest.mark.timeout(90)
async def test_flapping_link_is_damped_and_opens_no_alert_storm(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    rules = {
        "rules": [
            {"id": "gateway-offline", "type": "offline", "target": "gateway", "for_s": 3},
            {"id": "device-offline", "type": "offline", "for_s": 3},
        ]
    }
    health = HealthSettings(flap_changes=4, flap_window_s=60, flap_quiet_s=3)
    async with running_hub(ops_settings(stack, influx_db, tmp_path, rules=rules, health=health)) as hub:
        seen = Seen(hub)
        for _ in range(8):  # the link drops every few hundred milliseconds
            gw = Gateway(stack, SITE, GATEWAY)
            gw.birth([("aq-01", "air_quality", 1.0)])
            gw.data(("aq-01", "air_quality", {"pm25": 12.0}))
            await asyncio.sleep(0.2)
            gw.close()  # abrupt: the broker publishes the will
            await asyncio.sleep(0.3)
        key = f"{SITE}/{GATEWAY}"
        await wait_until(lambda: seen.states(key)[-1:] == ["degraded"])
        # The first online, 3 counted changes, then "degraded (flapping)", whatever the number of drops.
        assert seen.states(key) == ["online", "offline", "online", "offline", "degraded"]
        stable = Gateway(stack, SITE, GATEWAY)
        try:
            stable.birth([("aq-01", "air_quality", 1.0)])
            stable.data(("aq-01", "air_quality", {"pm25": 12.0}))
            await wait_until(lambda: seen.states(key)[-1] == "online", 10)
            assert "stable for" in seen.of(key)[-1][1].reason
        finally:
            stable.close()
        await hub.operations.alerts.drain()
        total, _ = await hub.operations.alert_store.query()
        assert total == 0
