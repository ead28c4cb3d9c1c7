"""Instance configs of the Modbus drivers (the ``options`` of a device in the edge config).

Checked once when the driver is built; unknown keys are refused. Defaults are the documented ones below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from devices.driver import DriverConfig
from devices.drivers.modbus.plan import DEFAULT_MAX_GAP


class ModbusCommonConfig(DriverConfig):
    """Options shared by Modbus TCP and Modbus RTU."""

    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout_s: float = Field(default=3.0, gt=0, le=60, description="timeout of connecting and of each request")
    retries_busy: int = Field(default=2, ge=0, le=10, description="retries of a request answered 'device busy'")
    busy_pause_s: float = Field(
        default=0.2, ge=0, le=10, description="pause before the first busy retry; doubles per retry, with jitter"
    )
    pause_after_connect_s: float = Field(
        default=0.0, ge=0, le=30, description="quiet time after connecting (some gateways drop early requests)"
    )
    pause_between_requests_s: float = Field(
        default=0.0, ge=0, le=10, description="quiet time between the requests of one poll (slow RTU devices)"
    )
    max_gap: int = Field(
        default=DEFAULT_MAX_GAP, ge=0, le=124, description="largest hole of unused addresses a request may span"
    )


class ModbusTcpConfig(ModbusCommonConfig):
    """A device (or an RTU gateway) reached over Modbus TCP."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=502, ge=1, le=65535)
    share_connection: bool = Field(
        default=False,
        description="one TCP connection (one request at a time) for all units of this host and port that set it",
    )


class ModbusRtuConfig(ModbusCommonConfig):
    """A device on a local RS485 line (needs ``pyserial``)."""

    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
