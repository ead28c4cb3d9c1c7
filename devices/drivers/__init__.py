"""Every driver of this package, declared by name in :data:`devices.driver.REGISTRY`.

``import devices.drivers`` makes all drivers known by name without importing them (:data:`DRIVER_MODULES`): a
driver's module, and the libraries it needs (pymodbus, pysnmp, httpx, psutil), are imported only when a
device uses it, so an agent serving only Modbus sensors never loads SNMP or HTTP code (the agent's memory footprint).
:func:`build_driver` is how a caller (the edge agent, ``ioc edge check``) turns a device entry into a driver,
with its options checked once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from devices.driver import REGISTRY, Driver
from devices.errors import DeviceConfigError
from devices.profile import Profile, describe_validation_error, load_profile

__all__ = ["DRIVER_MODULES", "build_driver"]

#: Driver name -> the module that registers it (imported on first use).
DRIVER_MODULES: Final[dict[str, str]] = {
    "camera": "devices.drivers.camera",
    "host": "devices.drivers.host",
    "modbus_rtu": "devices.drivers.modbus",
    "modbus_tcp": "devices.drivers.modbus",
    "ntcip": "devices.drivers.ntcip",
}
for _name, _module in DRIVER_MODULES.items():
    REGISTRY.declare(_name, _module)


def build_driver(driver_name: str, options: Mapping[str, Any], profile_id: str | None) -> Driver:
    """Validate ``options`` with the driver's config model, load the profile, build the driver.

    Raises :class:`DeviceConfigError` naming the driver and the option (``option 'port': ...``), or the
    profile file, register and field. Nothing is connected yet: that is :meth:`Driver.open`.
    """
    spec = REGISTRY.get(driver_name)
    try:
        config = spec.config_model.model_validate(dict(options))
    except ValidationError as exc:
        problems = [p.replace("field ", "option ", 1) for p in describe_validation_error(exc, dict(options))]
        raise DeviceConfigError(f"driver {driver_name!r}: " + "; ".join(problems)) from None
    profile: Profile | None = None
    if spec.needs_profile:
        if not profile_id:
            raise DeviceConfigError(f"driver {driver_name!r} needs a profile")
        profile = load_profile(profile_id)
    return spec.factory(config, profile)
