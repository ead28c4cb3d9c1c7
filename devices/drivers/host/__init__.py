"""The gateway host as a device: driver ``host`` (psutil), registered on import. See ``README.md``."""

from __future__ import annotations

from typing import Any

from devices.driver import REGISTRY, Driver, DriverSpec
from devices.drivers.host.config import HostConfig
from devices.drivers.host.driver import HostDriver
from devices.errors import DeviceConfigError

__all__ = ["HOST", "HostConfig", "HostDriver"]


def _factory(config: Any, profile: Any) -> Driver:
    if not isinstance(config, HostConfig):
        raise DeviceConfigError(f"host needs a HostConfig, not {type(config).__name__}")
    return HostDriver(config)


HOST = REGISTRY.register(
    DriverSpec(
        name="host",
        config_model=HostConfig,
        factory=_factory,
        needs_profile=False,
        description="the gateway itself: CPU, memory, disk, load, uptime, temperature (psutil)",
    )
)
