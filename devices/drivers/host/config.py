"""Options of the ``host`` driver (the ``options`` of a gateway-host device in the edge config)."""

from __future__ import annotations

from pydantic import Field

from devices.driver import DriverConfig


class HostConfig(DriverConfig):
    """Which filesystem and which temperature sensor to report. Unknown keys are refused."""

    disk_path: str = Field(
        default="/",
        min_length=1,
        max_length=4096,
        description="a path on the filesystem whose usage is reported: the agent's state folder (outbox)",
    )
    temperature_sensor: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="psutil sensor chip to report (e.g. cpu_thermal, coretemp); unset: the first known one found",
    )
