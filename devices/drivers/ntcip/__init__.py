"""NTCIP 1203 (dynamic message signs over SNMPv2c): driver ``ntcip``, registered on import.

``mib.py`` holds the standard's objects (shared with the simulator), ``config.py`` the instance options, ``snmp.py``
the pysnmp adapter (the one place its errors are translated),
``driver.py`` the polling and the ``display_message`` command. See ``README.md`` in this folder.
"""

from __future__ import annotations

from typing import Any

from devices.driver import REGISTRY, Driver, DriverSpec
from devices.drivers.ntcip.config import NtcipConfig
from devices.drivers.ntcip.driver import NtcipDriver
from devices.errors import DeviceConfigError
from devices.profile import Profile

__all__ = ["NTCIP", "NtcipConfig", "NtcipDriver"]


def _factory(config: Any, profile: Any) -> Driver:
    if not isinstance(config, NtcipConfig):
        raise DeviceConfigError(f"ntcip needs an NtcipConfig, not {type(config).__name__}")
    if not isinstance(profile, Profile):
        raise DeviceConfigError("driver 'ntcip' needs a profile")
    if profile.driver != "ntcip":
        raise DeviceConfigError(f"profile {profile.id!r} is for driver {profile.driver!r}, not ntcip")
    return NtcipDriver(config, profile)


NTCIP = REGISTRY.register(
    DriverSpec(
        name="ntcip",
        config_model=NtcipConfig,
        factory=_factory,
        description="variable message sign, NTCIP 1203 over SNMPv2c (pysnmp)",
    )
)
