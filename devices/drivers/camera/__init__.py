"""Camera driver ``camera``: ONVIF reachability and an RTSP stream probe, registered on import.

See ``README.md`` in this folder for the options, the metrics and a sample device entry.
"""

from __future__ import annotations

from typing import Any

from devices.driver import REGISTRY, Driver, DriverSpec
from devices.drivers.camera.config import CameraConfig
from devices.drivers.camera.driver import CameraDriver
from devices.drivers.camera.onvif import OnvifState
from devices.drivers.camera.rtsp import RtspState
from devices.errors import DeviceConfigError
from devices.profile import Profile

__all__ = ["CAMERA", "CameraConfig", "CameraDriver", "OnvifState", "RtspState", "make_camera_driver"]


def make_camera_driver(config: CameraConfig, profile: Profile) -> CameraDriver:
    """A driver for one camera."""
    return CameraDriver(config, profile)


def _factory(config: Any, profile: Any) -> Driver:
    if not isinstance(config, CameraConfig):
        raise DeviceConfigError(f"camera needs a CameraConfig, not {type(config).__name__}")
    if not isinstance(profile, Profile):
        raise DeviceConfigError("driver 'camera' needs a profile")
    return make_camera_driver(config, profile)


CAMERA = REGISTRY.register(
    DriverSpec(
        name="camera",
        config_model=CameraConfig,
        factory=_factory,
        description="IP camera: ONVIF device service (SOAP over httpx) and RTSP stream probe (ffprobe)",
    )
)
