"""Building Modbus drivers from a device entry: options checked once, errors naming the option."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import pytest

import devices.drivers
from devices.driver import REGISTRY
from devices.drivers import build_driver
from devices.drivers.modbus import ModbusDriver, ModbusRtuConfig, ModbusTcpConfig
from devices.errors import DeviceConfigError


def test_importing_devices_drivers_registers_modbus() -> None:
    assert devices.drivers.modbus is not None
    assert {"modbus_tcp", "modbus_rtu"} <= set(REGISTRY.names())
    assert REGISTRY.get("modbus_tcp").config_model is ModbusTcpConfig
    assert REGISTRY.get("modbus_rtu").config_model is ModbusRtuConfig


def test_defaults_are_the_documented_ones() -> None:
    config = ModbusTcpConfig(host="10.0.0.5")
    assert (config.port, config.unit_id, config.timeout_s, config.retries_busy, config.max_gap) == (502, 1, 3.0, 2, 8)
    assert (config.pause_after_connect_s, config.pause_between_requests_s) == (0.0, 0.0)


def test_build_tcp_driver_logs_its_plan_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devices.drivers.modbus.driver")
    driver = build_driver("modbus_tcp", {"host": "127.0.0.1", "port": 1502, "unit_id": 3}, "eastron-sdm630")
    assert isinstance(driver, ModbusDriver)
    plan = driver.describe_plan()
    assert plan[0].startswith("fc4 input 0..17 (0x0000..0x0011, 18 registers): voltage_l1_v")
    assert any("import_energy_kwh" in line for line in plan)
    logged = [r.getMessage() for r in caplog.records]
    assert any("modbus_tcp 127.0.0.1:1502 unit 3: profile eastron-sdm630" in m for m in logged)
    assert sum("fc4 input 0..17" in m for m in logged) == 1


def test_max_gap_changes_the_plan() -> None:
    merged = build_driver("modbus_tcp", {"host": "h"}, "eastron-sdm630").describe_plan()
    strict = build_driver("modbus_tcp", {"host": "h", "max_gap": 0}, "eastron-sdm630").describe_plan()
    assert len(strict) > len(merged)


BAD_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("port not a number", {"host": "h", "port": "abc"}, "option 'port'"),
    ("port out of range", {"host": "h", "port": 70000}, "option 'port'"),
    ("typo", {"host": "h", "hots": "x"}, "option 'hots': unknown key"),
    ("host missing", {}, "option 'host': missing"),
    ("timeout not positive", {"host": "h", "timeout_s": 0}, "option 'timeout_s'"),
    ("unit id too big", {"host": "h", "unit_id": 256}, "option 'unit_id'"),
    ("negative busy retries", {"host": "h", "retries_busy": -1}, "option 'retries_busy'"),
]


@pytest.mark.parametrize(
    ("options", "fragment"), [(o, f) for _, o, f in BAD_OPTIONS], ids=[i for i, _, _ in BAD_OPTIONS]
)
def test_bad_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DeviceConfigError) as info:
        build_driver("modbus_tcp", options, "xy-md02")
    assert str(info.value).startswith("driver 'modbus_tcp': ")
    assert fragment in str(info.value)


def test_rtu_options_are_checked() -> None:
    with pytest.raises(DeviceConfigError, match="option 'parity'"):
        build_driver("modbus_rtu", {"port": "/dev/ttyUSB0", "parity": "X"}, "xy-md02")


@pytest.mark.skipif(importlib.util.find_spec("serial") is not None, reason="pyserial is installed")
def test_rtu_without_pyserial_is_a_config_error() -> None:
    with pytest.raises(DeviceConfigError, match="pyserial"):
        build_driver("modbus_rtu", {"port": "/dev/ttyUSB0"}, "xy-md02")


def test_unknown_driver_and_profile() -> None:
    with pytest.raises(DeviceConfigError, match="unknown driver 'modbus_udp'"):
        build_driver("modbus_udp", {}, "xy-md02")
    with pytest.raises(DeviceConfigError, match="unknown profile 'no-such'"):
        build_driver("modbus_tcp", {"host": "h"}, "no-such")
    with pytest.raises(DeviceConfigError, match="needs a profile"):
        build_driver("modbus_tcp", {"host": "h"}, None)


def test_factory_refuses_the_wrong_config_type() -> None:
    spec = REGISTRY.get("modbus_tcp")
    with pytest.raises(DeviceConfigError, match="ModbusTcpConfig"):
        spec.factory(ModbusRtuConfig(port="/dev/ttyUSB0"), None)
