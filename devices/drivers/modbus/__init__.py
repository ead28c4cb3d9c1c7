"""Modbus drivers: ``modbus_tcp`` and ``modbus_rtu``, registered on import.

Both are :class:`~devices.drivers.modbus.driver.ModbusDriver`; they differ in how the pymodbus client is made
and in which units share it (:mod:`~devices.drivers.modbus.link`): every unit on one serial port, and the
``modbus_tcp`` units of one host and port that set ``share_connection``. See ``README.md`` in this folder for
the options and a sample device entry.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from devices.driver import REGISTRY, Driver, DriverSpec
from devices.drivers.modbus.config import ModbusCommonConfig, ModbusRtuConfig, ModbusTcpConfig
from devices.drivers.modbus.driver import ModbusDriver
from devices.drivers.modbus.link import (
    CLIENT_TIMEOUT_S,
    ClientHooks,
    LinkKey,
    LinkSpec,
    ModbusLink,
    SerialSettings,
    claim_serial_port,
)
from devices.errors import DeviceConfigError
from devices.profile import Profile

__all__ = [
    "MODBUS_RTU",
    "MODBUS_TCP",
    "ModbusCommonConfig",
    "ModbusDriver",
    "ModbusLink",
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

    def client(hooks: ClientHooks) -> AsyncModbusTcpClient:
        # retries=0 and reconnect_delay=0: the driver owns retries and reconnects; each request is cut at its
        # unit's timeout_s by the link, so the client's timeout is only a backstop (see link.py).
        return AsyncModbusTcpClient(
            config.host,
            port=config.port,
            timeout=CLIENT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            name=f"{config.host}:{config.port}",
            trace_connect=hooks.on_connection,
            trace_packet=hooks.on_packet,
        )

    link = LinkSpec(LinkKey("tcp", f"{config.host}:{config.port}"), client, shared=config.share_connection)
    return ModbusDriver(config, profile, link, where=f"modbus_tcp {config.host}:{config.port} unit {config.unit_id}")


def make_rtu_driver(config: ModbusRtuConfig, profile: Profile) -> ModbusDriver:
    """A driver for a unit on a serial line, shared with every other unit on the same port."""
    if importlib.util.find_spec("serial") is None:
        raise DeviceConfigError("driver 'modbus_rtu' needs pyserial: pip install pyserial")

    def client(hooks: ClientHooks) -> AsyncModbusSerialClient:
        return AsyncModbusSerialClient(
            config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
            timeout=CLIENT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            name=config.port,
            trace_connect=hooks.on_connection,
            trace_packet=hooks.on_packet,
        )

    where = f"modbus_rtu {config.port} unit {config.unit_id}"
    settings = SerialSettings(config.baudrate, config.parity, config.stopbits, config.bytesize)
    claim = claim_serial_port(config.port, settings, where)
    link = LinkSpec(LinkKey("rtu", config.port), client, shared=True, serial=settings)
    try:
        return ModbusDriver(config, profile, link, where=where, serial_claim=claim)
    except BaseException:
        claim.release()
        raise


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
