"""The Modbus driver against the Modbus simulator over a real TCP socket on 127.0.0.1.

No broker or database is involved, so these are plain tests (not marked ``integration``). Each test starts
its own simulator on a free port; faults are injected with the simulator's knobs.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devices.driver import DriverSession, MetricValue
from devices.drivers import build_driver
from devices.drivers.modbus import ModbusDriver, ModbusTcpConfig, make_tcp_driver
from devices.errors import DeviceBusy, DeviceResponseError, DeviceUnavailable
from devices.profile import Profile, RegisterSpec, available_profiles, load_profile
from devices.sim.modbus import ModbusSimulator

ROOT = Path(__file__).parents[3]
SHIPPED = [p for p in available_profiles() if load_profile(p).driver == "modbus"]
TIMEOUT_S = 0.5


def driver_for(
    sim: ModbusSimulator, unit_id: int, profile: str | Profile | None = None, **options: Any
) -> ModbusDriver:
    profile = profile if profile is not None else sim.units[unit_id].profile
    if isinstance(profile, Profile):
        config = ModbusTcpConfig(host="127.0.0.1", port=sim.port, unit_id=unit_id, timeout_s=TIMEOUT_S, **options)
        return make_tcp_driver(config, profile)
    opts = {"host": "127.0.0.1", "port": sim.port, "unit_id": unit_id, "timeout_s": TIMEOUT_S, **options}
    driver = build_driver("modbus_tcp", opts, profile)
    assert isinstance(driver, ModbusDriver)
    return driver


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    async with ModbusSimulator(SHIPPED, seed=11) as simulator:
        yield simulator


def tolerance(reg: RegisterSpec, value: float) -> float:
    """Half a step of the register's resolution, plus float32 rounding."""
    return abs(reg.scale) / 2 + 1e-6 * max(1.0, abs(value))


async def test_every_metric_of_every_profile_is_read_within_its_sim_range(sim: ModbusSimulator) -> None:
    for _ in range(3):
        for unit_id, unit in sim.units.items():
            async with DriverSession(driver_for(sim, unit_id)) as driver:
                (reading,) = await driver.poll()
            assert set(reading.metrics) == {r.name for r in unit.profile.registers}, unit.profile.id
            assert abs(reading.ts_ms - time.time() * 1000) < 5000
            for reg in unit.profile.registers:
                value = reading.metrics[reg.name]
                assert reg.sim is not None
                if reg.type == "bool":
                    assert isinstance(value, bool)
                    continue
                assert isinstance(value, float), (reg.name, value)
                if reg.sim.min is not None:
                    assert value >= reg.sim.min - tolerance(reg, value), (unit.profile.id, reg.name, value)
                if reg.sim.max is not None:
                    assert value <= reg.sim.max + tolerance(reg, value), (unit.profile.id, reg.name, value)
                # What the driver read is what the simulator serves (no tick happens between: 1 s interval).
                assert value == sim.value(unit_id, reg.name), (unit.profile.id, reg.name)
        sim.tick()


def pin_value(reg: RegisterSpec) -> MetricValue:
    """A value inside the sim range that the register carries exactly."""
    assert reg.sim is not None
    if reg.type == "bool":
        return not bool(reg.sim.typical)
    lo = reg.sim.min if reg.sim.min is not None else 0.0
    hi = reg.sim.max if reg.sim.max is not None else lo + 100
    target = lo + (hi - lo) * 0.37
    if reg.type == "float32":
        return round(target * 2) / 2  # halves are exact in float32 for these magnitudes
    decimals = max(0, -math.floor(math.log10(abs(reg.scale))))
    return round(target, decimals) if decimals else float(round(target))


async def test_pinned_values_are_read_exactly(sim: ModbusSimulator) -> None:
    pinned: dict[int, dict[str, MetricValue]] = {}
    for unit_id, unit in sim.units.items():
        pinned[unit_id] = {reg.name: pin_value(reg) for reg in unit.profile.registers}
        for name, value in pinned[unit_id].items():
            sim.set_value(unit_id, name, value)
    sim.tick()  # pinned values do not move
    for unit_id in sim.units:
        async with DriverSession(driver_for(sim, unit_id)) as driver:
            (reading,) = await driver.poll()
        assert dict(reading.metrics) == pinned[unit_id]


async def test_pinned_values_named_by_hand(sim: ModbusSimulator) -> None:
    th = next(uid for uid, u in sim.units.items() if u.profile.id == "xy-md02")
    sdm = next(uid for uid, u in sim.units.items() if u.profile.id == "eastron-sdm630")
    sim.set_value(th, "temperature_c", -12.3)
    sim.set_value(th, "humidity_pct", 55.5)
    sim.set_value(sdm, "frequency_hz", 49.875)
    sim.set_value(sdm, "voltage_l1_v", 230.1)
    async with DriverSession(driver_for(sim, th)) as driver:
        (reading,) = await driver.poll()
    assert reading.metrics == {"temperature_c": -12.3, "humidity_pct": 55.5}
    async with DriverSession(driver_for(sim, sdm)) as driver:
        (reading,) = await driver.poll()
    assert reading.metrics["frequency_hz"] == 49.875
    # 230.1 is not a float32; the meter sends the nearest one.
    assert reading.metrics["voltage_l1_v"] == pytest.approx(230.1, abs=1e-4)
    assert reading.metrics["voltage_l1_v"] != 230.1


ALL_TYPES = Profile.model_validate(
    {
        "id": "all-types",
        "kind": "test_device",
        "manufacturer": "test",
        "model": "every type and order",
        "source": "tests/integration/devices/test_modbus_against_sim.py",
        "driver": "modbus",
        "registers": [
            {"name": "relay", "address": 3, "table": "coil", "type": "bool"},
            {"name": "door_open", "address": 17, "table": "discrete", "type": "bool"},
            {"name": "i16_neg", "address": 0, "table": "holding", "type": "int16", "scale": 0.1, "offset": -40},
            {"name": "u16_le", "address": 1, "table": "holding", "type": "uint16", "byte_order": "little"},
            {"name": "i32_cdab", "address": 2, "table": "holding", "type": "int32", "word_order": "little"},
            {"name": "u32_badc", "address": 4, "table": "holding", "type": "uint32", "byte_order": "little"},
            {
                "name": "f32_dcba",
                "address": 10,
                "table": "holding",
                "type": "float32",
                "byte_order": "little",
                "word_order": "little",
            },
            {"name": "f32_cdab", "address": 0, "table": "input", "type": "float32", "word_order": "little"},
            {"name": "i32_abcd", "address": 40, "table": "input", "type": "int32", "scale": 0.01},
        ],
    }
)


async def test_every_type_and_order_end_to_end() -> None:
    values: dict[str, MetricValue] = {
        "relay": True,
        "door_open": True,
        "i16_neg": -52.5,
        "u16_le": 513.0,
        "i32_cdab": -70000.0,
        "u32_badc": 4_000_000_000.0,
        "f32_dcba": -1.5,
        "f32_cdab": 1234.25,
        "i32_abcd": -1234567.89,
    }
    async with ModbusSimulator([ALL_TYPES]) as sim:
        for name, value in values.items():
            sim.set_value(1, name, value)
        async with DriverSession(driver_for(sim, 1)) as driver:
            assert isinstance(driver, ModbusDriver)
            assert len(driver.describe_plan()) == 5  # coil, discrete, holding 0..11, input 0..1, input 40..41
            (reading,) = await driver.poll()
            assert dict(reading.metrics) == values
            sim.set_value(1, "relay", False)
            sim.set_value(1, "door_open", False)
            (reading,) = await driver.poll()
            assert reading.metrics["relay"] is False
            assert reading.metrics["door_open"] is False


async def test_busy_is_retried_then_succeeds(sim: ModbusSimulator) -> None:
    unit = sim.unit(1)
    async with DriverSession(driver_for(sim, 1, retries_busy=2, busy_pause_s=0.01)) as driver:
        await driver.poll()
        before = unit.requests
        sim.set_busy(1, 2)
        (reading,) = await driver.poll()
        assert set(reading.metrics) == {r.name for r in unit.profile.registers}
        requests_per_poll = len(driver.describe_plan())
        assert unit.requests - before == requests_per_poll + 2  # two busy answers, each retried
        assert unit.busy_remaining == 0


async def test_busy_beyond_the_retries_raises_device_busy(sim: ModbusSimulator) -> None:
    driver = driver_for(sim, 1, retries_busy=1, busy_pause_s=0.01)
    async with DriverSession(driver):
        sim.set_busy(1, 2)
        with pytest.raises(DeviceBusy, match="exception 6"):
            await driver.poll()
        # Busy is an answer: the connection is kept, and the next poll works.
        assert driver.connected
        (reading,) = await driver.poll()
        assert reading.metrics


async def test_offline_unit_is_unavailable_within_the_timeout_and_recovers(sim: ModbusSimulator) -> None:
    driver = driver_for(sim, 2)
    async with DriverSession(driver):
        await driver.poll()
        sim.set_offline(2)
        started = time.monotonic()
        with pytest.raises(DeviceUnavailable, match=r"no valid answer|no answer"):
            await driver.poll()
        elapsed = time.monotonic() - started
        assert TIMEOUT_S * 0.8 <= elapsed < TIMEOUT_S + 1.0, elapsed
        assert not driver.connected  # dropped, so a late answer cannot be taken for the next request
        sim.set_offline(2, False)
        (reading,) = await driver.poll()  # reconnects by itself
        assert reading.metrics


async def test_a_dead_unit_does_not_slow_another_unit_on_the_same_simulator(sim: ModbusSimulator) -> None:
    sim.set_offline(1)
    dead = driver_for(sim, 1)
    alive = driver_for(sim, 3)
    await dead.open()
    await alive.open()
    try:
        dead_poll = asyncio.create_task(dead.poll())
        await asyncio.sleep(0.05)  # the dead unit's request is in flight
        started = time.monotonic()
        for _ in range(5):
            (reading,) = await alive.poll()
            assert reading.metrics
        assert time.monotonic() - started < TIMEOUT_S, "the live unit waited for the dead one"
        assert not dead_poll.done()
        with pytest.raises(DeviceUnavailable):
            await dead_poll
    finally:
        await dead.close()
        await alive.close()


async def test_exception_answer_is_a_response_error(sim: ModbusSimulator) -> None:
    # Ask unit 2 for a register its profile does not have: a real device answers exception 2.
    profile = Profile.model_validate(
        {
            **sim.units[2].profile.model_dump(exclude={"registers"}),
            "id": "wrong-map",
            "registers": [{"name": "far_away", "address": 9000, "table": "holding", "type": "uint16"}],
        }
    )
    driver = driver_for(sim, 2, profile)
    async with DriverSession(driver):
        with pytest.raises(DeviceResponseError, match=r"exception 2 \(illegal data address\)"):
            await driver.poll()
        assert driver.connected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nothing_listening_is_unavailable_quickly() -> None:
    driver = build_driver("modbus_tcp", {"host": "127.0.0.1", "port": free_port(), "timeout_s": TIMEOUT_S}, "xy-md02")
    started = time.monotonic()
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        await driver.open()
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        await driver.poll()
    assert time.monotonic() - started < 2 * (TIMEOUT_S + 0.5)
    await driver.close()


async def test_simulator_restart_is_survived() -> None:
    port = free_port()
    async with ModbusSimulator(["xy-md02"], port=port) as sim:
        driver = driver_for(sim, 1)
        await driver.open()
        await driver.poll()
    with pytest.raises(DeviceUnavailable):
        await driver.poll()
    async with ModbusSimulator(["xy-md02"], port=port):
        (reading,) = await driver.poll()
        assert set(reading.metrics) == {"temperature_c", "humidity_pct"}
    await driver.close()


def test_cli_prints_its_port_then_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ioc.cli",
            "sim",
            "modbus",
            "--profile",
            "xy-md02",
            "--profile",
            "eastron-sdm630",
            "--port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["host"] == "127.0.0.1"
        assert info["units"] == [{"unit_id": 1, "profile": "xy-md02"}, {"unit_id": 2, "profile": "eastron-sdm630"}]

        async def read_both() -> list[set[str]]:
            names = []
            for unit_id, profile in ((1, "xy-md02"), (2, "eastron-sdm630")):
                opts = {"host": "127.0.0.1", "port": info["port"], "unit_id": unit_id, "timeout_s": 2.0}
                async with DriverSession(build_driver("modbus_tcp", opts, profile)) as driver:
                    (reading,) = await driver.poll()
                names.append(set(reading.metrics))
            return names

        th, sdm = asyncio.run(read_both())
        assert th == {r.name for r in load_profile("xy-md02").registers}
        assert "total_power_w" in sdm
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == b"", "stdout carries only the JSON line"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_duration_and_bad_profile() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "sim", "modbus", "--profile", "pm-sensor-rs485", "--duration", "0.5"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["units"] == [{"unit_id": 1, "profile": "pm-sensor-rs485"}]
    bad = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "sim", "modbus", "--profile", "no-such-model"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == b""
    assert b"unknown profile 'no-such-model'" in bad.stderr


async def test_modbus_rtu_over_a_socket_url() -> None:
    """RTU framing (CRC, no MBAP header) end to end: the simulator frames RTU over TCP like a serial server,
    the rtu driver reaches it through pyserial's ``socket://`` URL."""
    pytest.importorskip("serial")
    async with ModbusSimulator(["xy-md02", "deltaohm-hd2013-3"], framer="rtu") as sim:
        pinned: dict[int, tuple[str, MetricValue]] = {1: ("temperature_c", -3.5), 2: ("precipitation", True)}
        for unit_id, (name, value) in pinned.items():
            sim.set_value(unit_id, name, value)
        for unit_id, (name, value) in pinned.items():
            options = {
                "port": f"socket://127.0.0.1:{sim.port}",
                "unit_id": unit_id,
                "baudrate": 19200,
                "parity": "E",
                "timeout_s": TIMEOUT_S,
                "busy_pause_s": 0.01,
            }
            driver = build_driver("modbus_rtu", options, sim.units[unit_id].profile.id)
            async with DriverSession(driver):
                (reading,) = await driver.poll()
                assert set(reading.metrics) == {r.name for r in sim.units[unit_id].profile.registers}
                assert reading.metrics[name] == value
                sim.set_busy(unit_id, 1)
                (again,) = await driver.poll()
                assert again.metrics
                sim.set_offline(unit_id)
                with pytest.raises(DeviceUnavailable):
                    await driver.poll()
                sim.set_offline(unit_id, False)
                assert (await driver.poll())[0].metrics[name] == value
