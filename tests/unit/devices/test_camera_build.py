"""Building the camera driver: options checked once with errors naming the option; the plan it shows."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import devices.drivers.camera  # registers "camera"
from devices.driver import REGISTRY
from devices.drivers import build_driver
from devices.drivers.camera import CameraConfig, CameraDriver
from devices.errors import DeviceConfigError
from devices.profile import Profile, load_profile

PROFILE = "camera-onvif-generic"


def test_the_driver_is_registered_by_name() -> None:
    assert "camera" in devices.drivers.DRIVER_MODULES  # importing devices.drivers is enough to know it
    assert devices.drivers.camera.CAMERA is REGISTRY.get("camera")
    assert REGISTRY.get("camera").config_model is CameraConfig


def test_the_shipped_profile_names_its_source_and_driver() -> None:
    profile = load_profile(PROFILE)
    assert profile.driver == "camera"
    assert profile.kind == "camera"
    assert "ONVIF Core Specification" in profile.source


def test_build_from_a_device_entry() -> None:
    options = {"host": "10.0.0.5", "username": "ops", "password": "pw", "rtsp_url": "rtsp://10.0.0.5/stream1"}
    driver = build_driver("camera", options, PROFILE)
    assert isinstance(driver, CameraDriver)
    assert driver.config.onvif_url == "http://10.0.0.5:80/onvif/device_service"
    assert driver.config.password is not None
    assert driver.config.password.get_secret_value() == "pw"
    assert "pw" not in repr(driver.config)  # a SecretStr is never printed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": "h", "colour": "red"}, "option 'colour': unknown key (not allowed)"),
        ({}, "option 'host': missing (required)"),
        ({"host": "h", "onvif_port": 70000}, "option 'onvif_port'"),
        ({"host": "h", "onvif_timeout_s": 0}, "option 'onvif_timeout_s'"),
        ({"host": "h", "rtsp_url": "http://h/stream"}, "must be an rtsp:// or rtsps:// URL with a host"),
        ({"host": "h", "rtsp_transport": "sctp"}, "option 'rtsp_transport'"),
        ({"host": "h", "username": "ops"}, "username and password go together"),
        ({"host": "h", "onvif_path": "no-slash"}, "option 'onvif_path'"),
        ({"host": "h", "rtsp_url": "rtsp://h/s", "no_rtsp_reason": "x"}, "no_rtsp_reason is for a camera without"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DeviceConfigError) as info:
        build_driver("camera", options, PROFILE)
    assert str(info.value).startswith("driver 'camera': ")
    assert message in str(info.value)


def test_nothing_to_check_is_refused() -> None:
    with pytest.raises(DeviceConfigError, match="nothing to check"):
        build_driver("camera", {"host": "h", "onvif_port": 0}, PROFILE)


def test_a_profile_of_another_driver_is_refused() -> None:
    with pytest.raises(DeviceConfigError, match="is for driver 'modbus', not camera"):
        build_driver("camera", {"host": "h"}, "xy-md02")


def test_the_plan_is_logged_once_and_hides_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devices.drivers.camera.driver")
    options = {"host": "cam.local", "onvif_port": 8080, "rtsp_url": "rtsp://ops:s3cret@cam.local:554/s1"}
    driver = build_driver("camera", options, PROFILE)
    plan = driver.describe_plan()
    assert plan == [
        (
            "ONVIF http://cam.local:8080/onvif/device_service: GetSystemDateAndTime, GetDeviceInformation without "
            "credentials, within 3 s"
        ),
        "RTSP rtsp://cam.local:554/s1: ffprobe (auto), 30 packets, within 5 s",
        (
            "image checks of rtsp://cam.local:554/s1 every 300 s (sooner, after 60 s, to confirm a change): ffmpeg "
            "(auto), 15 frames over 3 s, within 15 s; thresholds devices/profiles/image-checks/camera-onvif-generic"
            ".yaml; raised after 2, cleared after 2 checks; reference views in memory"
        ),
        "a poll takes at most 5 s",
    ]
    assert [r.getMessage() for r in caplog.records] == [f"camera cam.local: {line}" for line in plan]
    assert "s3cret" not in caplog.text


def test_ipv6_hosts_are_bracketed() -> None:
    assert CameraConfig(host="fd00::5").onvif_url == "http://[fd00::5]:80/onvif/device_service"


def test_poll_budget_is_the_larger_of_the_two_checks() -> None:
    assert CameraConfig(host="h", onvif_timeout_s=2).poll_budget_s == 2
    assert CameraConfig(host="h", onvif_timeout_s=2, rtsp_url="rtsp://h/s", rtsp_timeout_s=7).poll_budget_s == 7
    assert CameraConfig(host="h", onvif_port=0, rtsp_url="rtsp://h/s", rtsp_timeout_s=4).poll_budget_s == 4


def test_profile_model_accepts_a_camera_profile_without_registers() -> None:
    profile = Profile(id="cam-x", kind="camera", manufacturer="m", model="x", source="s", driver="camera")
    assert CameraDriver(CameraConfig(host="h"), profile).profile.registers == ()
