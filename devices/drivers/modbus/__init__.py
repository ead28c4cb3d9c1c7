"""Modbus drivers: ``modbus_tcp`` and ``modbus_rtu``, registered on import.

Both are :class:`~devices.drivers.modbus.driver.ModbusDriver`; they differ only in how the pymodbus client
is made. See ``README.md`` in this folder for the options and a sample device entry.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from devices.driver import REGISTRY, Driver, DriverSpec
from devices.drivers.modbus.config import ModbusCommonConfig, ModbusRtuConfig, ModbusTcpConfig
from devices.drivers.modbus.driver import ClientFactory, ModbusDriver
from devices.errors import DeviceConfigError
from devices.profile import Profile

__all__ = [
    "MODBUS_RTU",
    "MODBUS_TCP",
    "ModbusCommonConfig",
    "ModbusDriver",
    "ModbusRtuConfig",
    "ModbusTcpConfig",
    "make_rtu_driver",
    "make_tcp_driver",
]


def _profile(profile: Any, driver: str) -> Profile:
    if not isinstance(profile, Profile):
        raise DeviceConfigError(f"driver {driver!r} needs a profile")
    return profile


def make_tcp_driver(config: ModbusTcpConfig, profile: Profile) -> ModbusDriver:
    """A driver for a unit reached over Modbus TCP (a device, or an RTU line behind a gateway)."""

    def client() -> AsyncModbusTcpClient:
        # retries=0 and reconnect_delay=0: this driver owns retries and reconnects (see driver.py).
        return AsyncModbusTcpClient(
            config.host,
            port=config.port,
            timeout=config.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=f"{config.host}:{config.port}",
        )

    factory: ClientFactory = client
    return ModbusDriver(config, profile, factory, where=f"modbus_tcp {config.host}:{config.port} unit {config.unit_id}")


def make_rtu_driver(config: ModbusRtuConfig, profile: Profile) -> ModbusDriver:
    """A driver for a unit on a local RS485 line."""
    if importlib.util.find_spec("serial") is None:
        raise DeviceConfigError("driver 'modbus_rtu' needs pyserial: pip install pyserial")

    def client() -> AsyncModbusSerialClient:
        return AsyncModbusSerialClient(
            config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
            timeout=config.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=config.port,
        )

    factory: ClientFactory = client
    return ModbusDriver(config, profile, factory, where=f"modbus_rtu {config.port} unit {config.unit_id}")


def _tcp_factory(config: Any, profile: Any) -> Driver:
    if not isinstance(config, ModbusTcpConfig):
        raise DeviceConfigError(f"modbus_tcp needs a ModbusTcpConfig, not {type(config).__name__}")
    return make_tcp_driver(config, _profile(profile, "modbus_tcp"))


def _rtu_factory(config: Any, profile: Any) -> Driver:
    if not isinstance(config, ModbusRtuConfig):
        raise DeviceConfigError(f"modbus_rtu needs a ModbusRtuConfig, not {type(config).__name__}")
    return make_rtu_driver(config, _profile(profile, "modbus_rtu"))


MODBUS_TCP = REGISTRY.register(
    DriverSpec(
        name="modbus_tcp",
        config_model=ModbusTcpConfig,
        factory=_tcp_factory,
        description="Modbus TCP device or RTU-over-TCP gateway (pymodbus)",
    )
)
MODBUS_RTU = REGISTRY.register(
    DriverSpec(
        name="modbus_rtu",
        config_model=ModbusRtuConfig,
        factory=_rtu_factory,
        description="Modbus RTU device on a local serial line (pymodbus + pyserial)",
    )
)
