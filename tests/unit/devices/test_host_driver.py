"""The ``host`` driver: the gateway itself, read through psutil on this machine (real figures, no stand-ins),
with the temperature source replaced where this machine has no sensor to show the other paths."""

from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import devices.drivers
from devices.driver import REGISTRY
from devices.drivers.host import HostConfig, HostDriver
from devices.errors import DeviceConfigError, DeviceUnavailable

#: The shape of psutil's entries (``psutil._common.shwtemp``).
Temp = namedtuple("Temp", ["label", "current", "high", "critical"])

EXPECTED = {
    "cpu_pct",
    "load1",
    "load5",
    "load15",
    "mem_used_pct",
    "mem_available_bytes",
    "mem_total_bytes",
    "swap_used_pct",
    "disk_used_pct",
    "disk_free_bytes",
    "disk_total_bytes",
    "uptime_s",
}


def sensors(chips: Mapping[str, Sequence[Any]]) -> Any:
    return lambda: chips


def test_registered_without_a_profile() -> None:
    spec = REGISTRY.get("host")
    assert spec.needs_profile is False
    driver = devices.drivers.build_driver("host", {"disk_path": "/"}, None)
    assert isinstance(driver, HostDriver)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"disk": "/"}, "option 'disk': unknown key"),
        ({"disk_path": ""}, "option 'disk_path'"),
        ({"temperature_sensor": ""}, "option 'temperature_sensor'"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DeviceConfigError, match=fragment):
        devices.drivers.build_driver("host", options, None)


async def test_a_poll_reads_this_machine(tmp_path: Path) -> None:
    driver = HostDriver(HostConfig(disk_path=str(tmp_path)), temperatures=sensors({}))
    await driver.open()
    [reading] = await driver.poll()
    [again] = await driver.poll()
    await driver.close()
    assert set(reading.metrics) == EXPECTED  # no sensor: no temperature_c
    m = again.metrics
    assert 0.0 <= float(m["cpu_pct"]) <= 100.0
    assert 0.0 <= float(m["mem_used_pct"]) <= 100.0
    assert 0 < int(m["mem_available_bytes"]) <= int(m["mem_total_bytes"])
    assert 0 < int(m["disk_free_bytes"]) <= int(m["disk_total_bytes"])
    assert float(m["uptime_s"]) > 0
    assert float(m["load1"]) >= 0
    assert again.ts_ms >= reading.ts_ms


async def test_no_sensor_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devices.drivers.host.driver")
    driver = HostDriver(HostConfig(), temperatures=sensors({"acpitz": [Temp("", float("nan"), None, None)]}))
    for _ in range(3):
        await driver.open()
        await driver.poll()
        await driver.close()
    said = [r.getMessage() for r in caplog.records]
    assert said == ["host: temperature_c is not reported: this machine has no temperature sensor psutil can read"]


@pytest.mark.parametrize(
    ("chips", "wanted", "expected"),
    [
        ({"nvme": [Temp("", 40.0, None, None)], "coretemp": [Temp("Core 0", 51.0, 90, 100)]}, None, 51.0),
        ({"cpu_thermal": [Temp("", 47.2, None, None)], "coretemp": [Temp("", 60.0, None, None)]}, None, 47.2),
        ({"nvme": [Temp("", 40.0, None, None), Temp("", 44.5, None, None)]}, None, 44.5),  # any chip, the hottest
        ({"nvme": [Temp("", 40.0, None, None)], "coretemp": [Temp("", 60.0, None, None)]}, "nvme", 40.0),
    ],
)
async def test_temperature_from_the_chosen_sensor(
    chips: dict[str, list[Temp]], wanted: str | None, expected: float
) -> None:
    driver = HostDriver(HostConfig(temperature_sensor=wanted), temperatures=sensors(chips))
    await driver.open()
    [reading] = await driver.poll()
    assert reading.metrics["temperature_c"] == expected


async def test_a_named_sensor_that_is_missing_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    chips = {"coretemp": [Temp("", 60.0, None, None)]}
    driver = HostDriver(HostConfig(temperature_sensor="cpu_thermal"), temperatures=sensors(chips))
    await driver.open()
    [reading] = await driver.poll()
    await driver.open()
    assert "temperature_c" not in reading.metrics
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["host: temperature_c is not reported: no sensor 'cpu_thermal' (found: coretemp)"]


async def test_failing_sensors_cost_only_the_temperature() -> None:
    def broken() -> Mapping[str, Sequence[Any]]:
        raise OSError("/sys/class/hwmon: permission denied")

    driver = HostDriver(HostConfig(), temperatures=broken)
    await driver.open()
    [reading] = await driver.poll()
    assert set(reading.metrics) == EXPECTED


async def test_a_missing_disk_path_makes_the_device_unavailable(tmp_path: Path) -> None:
    driver = HostDriver(HostConfig(disk_path=str(tmp_path / "gone")))
    with pytest.raises(DeviceUnavailable, match="does not exist"):
        await driver.open()
