"""Instance config of the NTCIP 1203 driver (the ``options`` of a sign in the edge config).

Checked once when the driver is built; unknown keys are refused. Defaults are the documented ones below.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from devices.driver import DriverConfig
from devices.drivers.ntcip.mib import DURATION_INFINITE


class NtcipConfig(DriverConfig):
    """A sign controller reached over SNMPv2c (NTCIP 1203 over UDP)."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=161, ge=1, le=65535)
    community: str = Field(default="public", min_length=1, max_length=64, description="read community")
    write_community: SecretStr | None = Field(
        default=None, description="write community; without it the sign is read-only (no display_message)"
    )
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="timeout of each SNMP request")
    retries: int = Field(default=0, ge=0, le=5, description="re-sends of an unanswered request (UDP may drop one)")
    max_objects_per_request: int = Field(
        default=16, ge=1, le=64, description="objects per GET; small signs have small SNMP packets (484 octets)"
    )
    message_number: int = Field(
        default=1, ge=1, le=65535, description="the changeable message row display_message writes"
    )
    default_priority: int = Field(default=128, ge=1, le=255, description="activation and run-time priority")
    default_duration_min: int = Field(
        default=DURATION_INFINITE, ge=0, le=DURATION_INFINITE, description="minutes shown; 65535 = until replaced"
    )
    owner: str = Field(default="ioc", min_length=1, max_length=127, description="dmsMessageOwner of written rows")
    max_message_length: int = Field(default=500, ge=1, le=65535, description="longest MULTI string sent")
