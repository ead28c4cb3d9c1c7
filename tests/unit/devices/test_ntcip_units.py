"""NTCIP 1203 pieces without a network: error bits, octet layouts, CRC, MULTI handling, config and params."""

from __future__ import annotations

import re
from typing import Any

import pytest

from devices.driver import CommandCapable
from devices.drivers import build_driver
from devices.drivers.ntcip import NtcipConfig, NtcipDriver, mib
from devices.drivers.ntcip.driver import METRICS, multi_to_text
from devices.errors import DeviceConfigError, UnsupportedCommand
from devices.profile import METRIC_PATTERN, load_profile
from devices.sim.ntcip_sign import MULTI_NONE, MULTI_TEXT_TOO_BIG, MULTI_UNSUPPORTED_TAG, validate_multi

ALL_BITS_OFF = dict.fromkeys(mib.SHORT_ERROR_BITS.values(), 0)


@pytest.mark.parametrize(
    ("raw", "on"),
    [
        (0, set()),
        (1 << 0, set()),  # bit 0 is reserved: only the raw value shows it
        (1 << 1, {"error_communications"}),
        (1 << 2, {"error_power"}),
        (1 << 3, {"error_attached_device"}),
        (1 << 4, {"error_lamp"}),
        (1 << 5, {"error_pixel"}),
        (1 << 6, {"error_photocell"}),
        (1 << 7, {"error_message"}),
        (1 << 8, {"error_controller"}),
        (1 << 9, {"error_temperature_warning"}),
        (1 << 10, {"error_climate_control"}),
        (1 << 11, {"error_critical_temperature"}),
        (1 << 12, {"error_drum_rotor"}),
        (1 << 13, {"error_door_open"}),
        (1 << 14, {"error_humidity_warning"}),
        (1 << 15, set()),  # reserved
        ((1 << 2) | (1 << 5) | (1 << 11), {"error_power", "error_pixel", "error_critical_temperature"}),
        (0x7FFE, set(mib.SHORT_ERROR_BITS.values())),
    ],
)
def test_short_error_status_bits_decode_to_named_metrics(raw: int, on: set[str]) -> None:
    assert mib.decode_short_error_status(raw) == {**ALL_BITS_OFF, **dict.fromkeys(on, 1)}


def test_every_short_error_metric_name_is_a_valid_metric_name() -> None:
    names = [*mib.SHORT_ERROR_BITS.values(), *(spec.metric for spec in METRICS)]
    assert len(names) == len(set(names))
    assert all(re.match(METRIC_PATTERN, n) for n in names)


@pytest.mark.parametrize(
    ("code", "raw"),
    [
        (mib.MessageId(3, 1, 0x7B1A), bytes.fromhex("0300017b1a")),
        (mib.MessageId(7, 1, 0xFFFF), bytes.fromhex("070001ffff")),
        (mib.MessageId(2, 65535, 0), bytes.fromhex("02ffff0000")),
    ],
)
def test_message_id_code_layout(code: mib.MessageId, raw: bytes) -> None:
    assert code.encode() == raw
    assert mib.MessageId.decode(raw) == code


def test_activation_code_layout_is_the_standard_octet_order() -> None:
    # duration 0xFFFF, priority 3, memory type 3 (changeable), number 1, CRC 0x8815, source 0.0.0.0
    code = mib.Activation(65535, 3, 3, 1, 0x8815)
    assert code.encode() == bytes.fromhex("ffff0303000188150000 0000".replace(" ", ""))
    assert mib.Activation.decode(code.encode()) == code


@pytest.mark.parametrize("raw", [b"", b"\x03\x00", b"\x03\x00\x01\x00\x00\x00"])
def test_malformed_message_id_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="5 octets"):
        mib.MessageId.decode(raw)


def test_malformed_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="12 octets"):
        mib.Activation.decode(b"\x00" * 11)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (mib.MessageId(3, 1, 0), "changeable 1"),
        (mib.MessageId(2, 12, 0), "permanent 12"),
        (mib.MessageId(7, 1, 0), "blank 1"),
        (mib.MessageId(99, 4, 0), "memory type 99 4"),
    ],
)
def test_message_source_is_described_by_memory_type_name(code: mib.MessageId, text: str) -> None:
    assert code.describe() == text


def test_crc_is_the_iso_3309_crc16() -> None:
    assert mib.crc16_x25(b"123456789") == 0x906E  # the published check value of CRC-16/X-25
    assert mib.message_crc(b"ABC", 0, 0) == mib.crc16_x25(b"ABC\x00\x00")
    assert mib.message_crc(b"ABC", 1, 0) != mib.message_crc(b"ABC", 0, 0)


@pytest.mark.parametrize(
    ("multi", "text"),
    [
        ("DRIVE SAFELY", "DRIVE SAFELY"),
        ("[jl3]DRIVE SAFELY", "DRIVE SAFELY"),
        ("FLOOD AHEAD[nl]USE ROUTE 2", "FLOOD AHEAD USE ROUTE 2"),
        ("FLOOD AHEAD[nl2]USE ROUTE 2", "FLOOD AHEAD USE ROUTE 2"),
        ("PAGE ONE[np]PAGE TWO", "PAGE ONE | PAGE TWO"),
        ("[cf255,0,0][fo2]RED[/fl]", "RED"),
        ("USE [[LEFT]] LANE", "USE [LEFT] LANE"),
        ("", ""),
    ],
)
def test_multi_to_text(multi: str, text: str) -> None:
    assert multi_to_text(multi) == text


@pytest.mark.parametrize(
    ("multi", "error"),
    [
        (b"DRIVE SAFELY", MULTI_NONE),
        (b"[jl3]FLOOD[nl]AHEAD[np][fo2]SLOW", MULTI_NONE),
        (b"USE [[LEFT]] LANE", MULTI_NONE),
        (b"[xx]BAD TAG", MULTI_UNSUPPORTED_TAG),
        (b"[jl3 UNCLOSED", MULTI_UNSUPPORTED_TAG),
        (b"STRAY ] BRACKET", MULTI_UNSUPPORTED_TAG),
        (b"TAB\tHERE", MULTI_UNSUPPORTED_TAG),
        (b"X" * 501, MULTI_TEXT_TOO_BIG),
    ],
)
def test_simulated_sign_multi_validation(multi: bytes, error: int) -> None:
    assert validate_multi(multi) == error


def options(**extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 1161, **extra}


def test_driver_builds_from_the_shipped_sign_profile() -> None:
    driver = build_driver("ntcip", options(), "ntcip-dms-full-matrix")
    assert isinstance(driver, NtcipDriver)
    assert load_profile("ntcip-dms-full-matrix").kind == "sign"
    plan = driver.describe_plan()
    assert plan[0].startswith("GET shortErrorStatus, dmsMsgTableSource")
    assert sum(line.count(",") + 1 for line in plan[:-1]) == len(METRICS)


@pytest.mark.parametrize(
    ("opts", "problem"),
    [
        ({"hostname": "x"}, "option 'hostname': unknown key (not allowed)"),
        ({"port": 0}, "option 'port'"),
        ({"timeout_s": 0}, "option 'timeout_s'"),
        ({"retries": 9}, "option 'retries'"),
        ({"max_objects_per_request": 0}, "option 'max_objects_per_request'"),
        ({"default_priority": 256}, "option 'default_priority'"),
        ({"default_duration_min": 70000}, "option 'default_duration_min'"),
    ],
)
def test_bad_options_are_refused_naming_the_option(opts: dict[str, Any], problem: str) -> None:
    with pytest.raises(DeviceConfigError, match="driver 'ntcip'") as info:
        build_driver("ntcip", {**options(), **opts}, "ntcip-dms-full-matrix")
    assert problem in str(info.value)


def test_a_modbus_profile_is_refused() -> None:
    with pytest.raises(DeviceConfigError, match="profile 'xy-md02' is for driver 'modbus', not ntcip"):
        build_driver("ntcip", options(), "xy-md02")


def test_read_only_sign_offers_no_command() -> None:
    driver = build_driver("ntcip", options(), "ntcip-dms-full-matrix")
    assert isinstance(driver, CommandCapable)
    assert driver.supported_actions() == frozenset()


async def test_read_only_sign_refuses_display_message_naming_why() -> None:
    driver = NtcipDriver(NtcipConfig(host="127.0.0.1"))
    with pytest.raises(UnsupportedCommand, match="no write_community configured"):
        await driver.execute("display_message", {"text": "HELLO"})


@pytest.mark.parametrize(
    ("action", "params", "problem"),
    [
        ("reboot", {}, "action 'reboot' is not supported"),
        ("display_message", {}, "param 'text' (a MULTI string) is required"),
        ("display_message", {"text": 5}, "param 'text' (a MULTI string) is required"),
        ("display_message", {"text": "HI", "colour": "red"}, "unknown param(s) colour"),
        ("display_message", {"text": "CAFÉ"}, "printable ASCII"),
        ("display_message", {"text": "X" * 501}, "longer than max_message_length 500"),
        ("display_message", {"text": "HI", "priority": 0}, "'priority' must be an integer 1..255"),
        ("display_message", {"text": "HI", "priority": True}, "'priority' must be an integer 1..255"),
        ("display_message", {"text": "HI", "duration": -1}, "'duration' must be an integer 0..65535"),
        ("display_message", {"text": "HI", "duration": 1.5}, "'duration' must be an integer 0..65535"),
    ],
)
async def test_bad_commands_are_refused_before_anything_is_sent(
    action: str, params: dict[str, Any], problem: str
) -> None:
    # Port 9 (discard) on loopback: nothing answers, so a request sent would time out instead of this error.
    driver = NtcipDriver(NtcipConfig(host="127.0.0.1", port=9, write_community="administrator"))
    with pytest.raises(UnsupportedCommand) as info:
        await driver.execute(action, params)
    assert problem in str(info.value)
    await driver.close()
