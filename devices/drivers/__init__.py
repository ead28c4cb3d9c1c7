"""Every driver of this package, registered in :data:`devices.driver.REGISTRY` by importing it.

``import devices.drivers`` is enough to make all drivers known; :func:`build_driver` is how a caller (the edge
agent, ``ioc edge check``) turns a device entry into a driver, with its options checked once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from devices.driver import REGISTRY, Driver
from devices.drivers import camera, host, modbus, ntcip
from devices.errors import DeviceConfigError
from devices.profile import Profile, describe_validation_error, load_profile

__all__ = ["build_driver", "camera", "host", "modbus", "ntcip"]


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
