"""The NTCIP 1203 driver against the sign simulator over real UDP sockets on 127.0.0.1.

No broker or database is involved, so these are plain tests (not marked ``integration``). Each test starts its
own simulator on a free port with a fixed clock (simulated local noon unless said otherwise) and no background
updates, so every value the driver reads can be compared with what the simulator serves.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pysnmp.hlapi.v3arch.asyncio import (  # type: ignore[import-untyped]
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    bulk_cmd,
    walk_cmd,
)

from devices.driver import DriverSession, MetricValue
from devices.drivers import build_driver
from devices.drivers.ntcip import NtcipDriver, mib
from devices.drivers.ntcip.driver import METRICS
from devices.errors import DeviceResponseError, DeviceUnavailable
from devices.sim.ntcip import GEN_ERR, NtcipSimulator

#: Requests that must be answered get a generous timeout (the machine is shared and loaded); tests that expect a
#: timeout use the short one.
TIMEOUT_S = 2.0
SHORT_TIMEOUT_S = 0.4
NOON = 12 * 3600.0  # the simulated local time, seconds since an epoch at local midnight
MIDNIGHT = 0.0


def make_sim(at: float = NOON, **kwargs: Any) -> NtcipSimulator:
    # utc_offset_s=0 and a clock at `at`: the simulated local time is exactly `at` past midnight.
    return NtcipSimulator(seed=3, clock=lambda: at, utc_offset_s=0, update_interval_s=3600, **kwargs)


@pytest.fixture
async def sim() -> AsyncIterator[NtcipSimulator]:
    async with make_sim() as simulator:
        yield simulator


_OPENED: list[NtcipDriver] = []


@pytest.fixture(autouse=True)
async def _close_drivers() -> AsyncIterator[None]:
    """Every driver a test makes is closed after it (each holds a UDP socket)."""
    yield
    while _OPENED:
        await _OPENED.pop().close()


def driver_for(sim: NtcipSimulator, **options: Any) -> NtcipDriver:
    opts = {"host": "127.0.0.1", "port": sim.port, "timeout_s": TIMEOUT_S, "write_community": "administrator"}
    driver = build_driver("ntcip", {**opts, **options}, "ntcip-dms-full-matrix")
    assert isinstance(driver, NtcipDriver)
    _OPENED.append(driver)
    return driver


async def read(driver: NtcipDriver) -> dict[str, MetricValue]:
    readings = await driver.poll()
    assert len(readings) == 1
    assert abs(readings[0].ts_ms - time.time() * 1000) < 5000
    return dict(readings[0].metrics)


EXPECTED: dict[str, tuple[mib.MibObject, Callable[[Any], MetricValue]]] = {
    "short_error_status": (mib.shortErrorStatus, int),
    "sign_type": (mib.dmsSignType, int),
    "control_mode": (mib.dmsControlMode, int),
    "message_time_remaining_min": (mib.dmsMessageTimeRemaining, int),
    "illum_control": (mib.dmsIllumControl, int),
    "brightness_level": (mib.dmsIllumBrightLevelStatus, int),
    "brightness_levels": (mib.dmsIllumNumBrightLevels, int),
    "light_output_pct": (mib.dmsIllumLightOutputStatus, lambda v: round(v * 100 / 65535, 1)),
    "photocell_level": (mib.dmsIllumPhotocellLevelStatus, int),
    "pixel_failures": (mib.pixelFailureTableNumRows, int),
    "controller_error_status": (mib.controllerErrorStatus, int),
    "power_failures": (mib.dmsPowerFailureStatusMap, lambda v: sum(b.bit_count() for b in v)),
    "sign_volts": (mib.signVolts, lambda v: v / 100),
    "watchdog_failures": (mib.watchdogFailureCount, int),
    "door_open": (mib.dmsStatDoorOpen, int),
    "temp_cabinet_min_c": (mib.tempMinCtrlCabinet, int),
    "temp_cabinet_max_c": (mib.tempMaxCtrlCabinet, int),
    "temp_ambient_min_c": (mib.tempMinAmbient, int),
    "temp_ambient_max_c": (mib.tempMaxAmbient, int),
    "temp_housing_min_c": (mib.tempMinSignHousing, int),
    "temp_housing_max_c": (mib.tempMaxSignHousing, int),
}


async def test_every_reading_is_what_the_sign_serves(sim: NtcipSimulator) -> None:
    async with DriverSession(driver_for(sim)) as driver:
        assert isinstance(driver, NtcipDriver)
        metrics = await read(driver)
    assert set(EXPECTED) | {"message_source"} == {spec.metric for spec in METRICS}
    for metric, (obj, convert) in EXPECTED.items():
        assert metrics[metric] == convert(sim.value(obj)), metric
    assert metrics["message_source"] == "permanent 1"
    assert metrics["message_memory_type"] == mib.MemoryType.permanent
    assert metrics["message_number"] == 1
    assert metrics["message_multi"] == "[jl3]DRIVE SAFELY"
    assert metrics["message_text"] == "DRIVE SAFELY"
    assert {k: v for k, v in metrics.items() if k.startswith("error_")} == mib.decode_short_error_status(
        int(metrics["short_error_status"])
    )
    # Plausible for a 24 V sign at noon in a warm city.
    assert metrics["sign_type"] == mib.SignType.vmsFull
    assert 23.5 <= float(metrics["sign_volts"]) <= 24.5
    assert int(metrics["temp_cabinet_min_c"]) <= int(metrics["temp_cabinet_max_c"])
    assert int(metrics["temp_ambient_max_c"]) < int(metrics["temp_cabinet_max_c"])


async def test_brightness_follows_the_day() -> None:
    levels: dict[str, dict[str, MetricValue]] = {}
    for name, at in (("midnight", MIDNIGHT), ("morning", 8 * 3600.0), ("noon", NOON)):
        async with make_sim(at) as sim:
            driver = driver_for(sim)
            levels[name] = await read(driver)
            await driver.close()
    assert levels["midnight"]["photocell_level"] == 0
    assert levels["midnight"]["brightness_level"] == 1
    assert levels["noon"]["photocell_level"] == 1000
    assert levels["noon"]["brightness_level"] == 16
    assert 1 < int(levels["morning"]["brightness_level"]) < 16
    assert (
        float(levels["midnight"]["light_output_pct"])
        < float(levels["morning"]["light_output_pct"])
        < float(levels["noon"]["light_output_pct"])
    )
    # The housing heats up in the sun more than the cabinet does.
    assert int(levels["noon"]["temp_housing_max_c"]) - int(levels["midnight"]["temp_housing_max_c"]) >= 15


async def test_failed_pixels_show_in_the_count_and_the_error_bit(sim: NtcipSimulator) -> None:
    driver = driver_for(sim)
    assert (await read(driver))["error_pixel"] == 0
    sim.state.pixel_failures = 3
    metrics = await read(driver)
    assert metrics["pixel_failures"] == 3
    assert metrics["error_pixel"] == 1
    await driver.close()


async def test_pixels_fail_now_and_then_as_the_sign_ages() -> None:
    async with NtcipSimulator(seed=1, pixel_failure_probability=0.5, update_interval_s=3600) as sim:
        for _ in range(40):
            sim.state.tick()
        assert 5 < int(sim.value(mib.pixelFailureTableNumRows)) < 35


async def test_a_failed_power_supply_shows_in_the_map_and_the_error_bit(sim: NtcipSimulator) -> None:
    sim.state.power_failure_map = 0b10
    metrics = await read(driver_for(sim))
    assert metrics["power_failures"] == 1
    assert metrics["error_power"] == 1


async def test_power_supplies_fail_rarely_and_come_back() -> None:
    async with NtcipSimulator(seed=2, power_failure_probability=0.2, update_interval_s=3600) as sim:
        maps = []
        for _ in range(200):
            sim.state.tick()
            maps.append(sim.state.power_failure_map)
        assert any(maps), "a supply failed"
        assert any(before and not after for before, after in itertools.pairwise(maps)), "and came back"


async def test_short_error_status_bits_arrive_decoded(sim: NtcipSimulator) -> None:
    sim.pin(mib.shortErrorStatus, (1 << 2) | (1 << 13) | 1)
    metrics = await read(driver_for(sim))
    assert metrics["short_error_status"] == 0b10000000000101
    on = {k for k, v in metrics.items() if k.startswith("error_") and v == 1}
    assert on == {"error_power", "error_door_open"}


async def test_power_failure_map_counts_failed_supplies(sim: NtcipSimulator) -> None:
    sim.pin(mib.dmsPowerFailureStatusMap, b"\x05\x80")
    assert (await read(driver_for(sim)))["power_failures"] == 3


async def test_an_object_the_sign_lacks_is_left_out_and_the_rest_is_read(sim: NtcipSimulator) -> None:
    sim.remove(mib.tempMinAmbient)
    sim.remove(mib.signVolts)
    metrics = await read(driver_for(sim))
    assert "temp_ambient_min_c" not in metrics
    assert "sign_volts" not in metrics
    assert metrics["temp_ambient_max_c"] == sim.value(mib.tempMaxAmbient)
    assert metrics["message_text"] == "DRIVE SAFELY"


async def test_an_optional_object_of_the_wrong_type_is_left_out(sim: NtcipSimulator) -> None:
    sim.pin(mib.dmsStatDoorOpen, b"\x01")  # an OCTET STRING where the standard has an INTEGER
    sim.pin(mib.dmsPowerFailureStatusMap, 7)  # and the other way round
    metrics = await read(driver_for(sim))
    assert "door_open" not in metrics
    assert "power_failures" not in metrics
    assert metrics["temp_cabinet_max_c"] == sim.value(mib.tempMaxCtrlCabinet)


async def test_a_required_object_of_the_wrong_type_is_an_error(sim: NtcipSimulator) -> None:
    sim.pin(mib.dmsMsgTableSource, 3)
    with pytest.raises(DeviceResponseError, match="dmsMsgTableSource should be an OCTET STRING, the sign sent Integer"):
        await read(driver_for(sim))


async def test_a_sign_without_the_required_objects_is_an_error(sim: NtcipSimulator) -> None:
    sim.remove(mib.shortErrorStatus)
    with pytest.raises(DeviceResponseError, match=r"the sign does not support shortErrorStatus$"):
        await read(driver_for(sim))


async def test_a_malformed_message_source_is_an_error(sim: NtcipSimulator) -> None:
    sim.pin(mib.dmsMsgTableSource, b"\x03\x00")
    with pytest.raises(DeviceResponseError, match="dmsMsgTableSource: a MessageIDCode has 5 octets, not 2"):
        await read(driver_for(sim))


async def test_current_message_falls_back_to_the_source_row(sim: NtcipSimulator) -> None:
    sim.remove(mib.dmsMessageMultiString, mib.MemoryType.currentBuffer, 1)
    assert (await read(driver_for(sim)))["message_multi"] == "[jl3]DRIVE SAFELY"


# --- failure knobs ---------------------------------------------------------------------------------------------
async def test_silent_sign_is_unavailable_then_comes_back(sim: NtcipSimulator) -> None:
    driver = driver_for(sim, timeout_s=SHORT_TIMEOUT_S)
    sim.set_silent()
    started = time.monotonic()
    with pytest.raises(DeviceUnavailable, match=rf"no answer to GET within {SHORT_TIMEOUT_S:g} s \(1 tries\)"):
        await read(driver)
    assert time.monotonic() - started < SHORT_TIMEOUT_S * 3 + 1
    sim.set_silent(False)
    assert (await read(driver))["message_text"] == "DRIVE SAFELY"
    await driver.close()


async def test_retries_resend_an_unanswered_request(sim: NtcipSimulator) -> None:
    driver = driver_for(sim, retries=2, timeout_s=SHORT_TIMEOUT_S)
    sim.set_silent()
    before = sim.requests
    with pytest.raises(DeviceUnavailable, match=r"\(3 tries\)"):
        await read(driver)
    assert sim.requests - before == 3
    await driver.close()


async def test_garbage_wrong_types_is_a_response_error_naming_the_object(sim: NtcipSimulator) -> None:
    sim.set_garbage("wrong_type")
    with pytest.raises(DeviceResponseError, match="shortErrorStatus should be an INTEGER, the sign sent OctetString"):
        await read(driver_for(sim))


async def test_garbage_no_such_object_is_a_response_error(sim: NtcipSimulator) -> None:
    sim.set_garbage("no_such_object")
    with pytest.raises(DeviceResponseError, match=r"the sign does not support shortErrorStatus, dmsMsgTableSource$"):
        await read(driver_for(sim))


async def test_garbage_bytes_are_dropped_so_the_sign_is_unavailable(sim: NtcipSimulator) -> None:
    sim.set_garbage("bytes")
    with pytest.raises(DeviceUnavailable, match="no answer to GET"):
        await read(driver_for(sim, timeout_s=SHORT_TIMEOUT_S))
    sim.set_garbage(None)
    assert (await read(driver_for(sim)))["sign_type"] == mib.SignType.vmsFull


async def test_slow_sign_within_the_timeout_is_read(sim: NtcipSimulator) -> None:
    sim.set_delay(0.2)
    started = time.monotonic()
    metrics = await read(driver_for(sim))
    # Three GETs (two planned, one for the message), each answered late.
    assert time.monotonic() - started >= 3 * 0.2
    assert metrics["message_text"] == "DRIVE SAFELY"


async def test_slow_sign_beyond_the_timeout_is_unavailable(sim: NtcipSimulator) -> None:
    sim.set_delay(SHORT_TIMEOUT_S * 2)
    with pytest.raises(DeviceUnavailable, match="no answer to GET"):
        await read(driver_for(sim, timeout_s=SHORT_TIMEOUT_S))


async def test_gen_err_is_a_response_error_naming_the_object(sim: NtcipSimulator) -> None:
    sim.set_error(GEN_ERR)
    with pytest.raises(DeviceResponseError, match=r"GET shortErrorStatus: error-status genErr \(5\)"):
        await read(driver_for(sim))


async def test_one_error_answer_then_the_sign_is_fine(sim: NtcipSimulator) -> None:
    driver = driver_for(sim)
    sim.set_error(2, count=1)  # noSuchName, once
    with pytest.raises(DeviceResponseError, match=r"error-status noSuchName \(2\)"):
        await read(driver)
    assert (await read(driver))["message_text"] == "DRIVE SAFELY"
    await driver.close()


async def test_a_small_controller_answers_too_big_until_the_requests_are_smaller(sim: NtcipSimulator) -> None:
    sim.set_max_message_size(200)
    with pytest.raises(
        DeviceResponseError,
        match=r"GET of 16 objects: error-status tooBig \(1\): lower max_objects_per_request$",
    ):
        await read(driver_for(sim))
    metrics = await read(driver_for(sim, max_objects_per_request=4))
    assert metrics["temp_housing_max_c"] == sim.value(mib.tempMaxSignHousing)
    assert metrics["message_text"] == "DRIVE SAFELY"


async def test_the_default_plan_fits_the_smallest_ntcip_packet(sim: NtcipSimulator) -> None:
    sim.set_max_message_size(484)  # the smallest maximum an NTCIP controller may have
    assert (await read(driver_for(sim)))["message_text"] == "DRIVE SAFELY"


async def test_wrong_read_community_is_ignored_by_the_sign(sim: NtcipSimulator) -> None:
    with pytest.raises(DeviceUnavailable):
        await read(driver_for(sim, community="private", timeout_s=SHORT_TIMEOUT_S))


async def test_undecodable_datagrams_are_dropped_and_the_sign_keeps_answering(sim: NtcipSimulator) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        for data in (b"", b"\x00", b"garbage", b"\x30\x03\x02\x01\x05", b"\x30\x82\xff\xff"):
            sock.sendto(data, ("127.0.0.1", sim.port))
        with pytest.raises(TimeoutError):
            sock.recv(2048)
    assert (await read(driver_for(sim)))["message_text"] == "DRIVE SAFELY"


async def test_unresolvable_host_is_unavailable() -> None:
    driver = build_driver("ntcip", {"host": "no-such-host.invalid", "timeout_s": 0.2}, "ntcip-dms-full-matrix")
    with pytest.raises(DeviceUnavailable, match="cannot resolve the address"):
        await driver.open()
    await driver.close()


# --- writing a message -----------------------------------------------------------------------------------------
async def test_written_message_becomes_the_current_message(sim: NtcipSimulator) -> None:
    driver = driver_for(sim)
    text = "[jl3]FLOOD AHEAD[nl]USE ROUTE 2"
    detail = await driver.execute("display_message", {"text": text, "priority": 200, "duration": 15})
    crc = mib.message_crc(text.encode())
    assert detail == f"changeable message 1 shown (crc 0x{crc:04x}, priority 200, duration 15 min)"
    assert sim.current_message() == text.encode()
    metrics = await read(driver)
    assert metrics["message_multi"] == text
    assert metrics["message_text"] == "FLOOD AHEAD USE ROUTE 2"
    assert metrics["message_source"] == "changeable 1"
    assert metrics["message_time_remaining_min"] == 15
    # The row as written, owner and priority included.
    assert sim.value(mib.dmsMessageOwner, 3, 1) == b"ioc"
    assert sim.value(mib.dmsMessageRunTimePriority, 3, 1) == 200
    await driver.close()


async def test_a_second_message_replaces_the_first(sim: NtcipSimulator) -> None:
    driver = driver_for(sim, message_number=4)
    await driver.execute("display_message", {"text": "FIRST"})
    await driver.execute("display_message", {"text": "SECOND"})
    metrics = await read(driver)
    assert metrics["message_text"] == "SECOND"
    assert metrics["message_source"] == "changeable 4"
    assert metrics["message_time_remaining_min"] == mib.DURATION_INFINITE
    await driver.close()


async def test_a_message_with_a_bad_tag_is_refused_and_the_sign_keeps_its_message(sim: NtcipSimulator) -> None:
    driver = driver_for(sim)
    with pytest.raises(
        DeviceResponseError,
        match=r"refused the text of changeable message 1: syntaxMULTI \(5\), MULTI syntax error unsupportedTag \(3\)",
    ):
        await driver.execute("display_message", {"text": "[xx]BAD"})
    assert (await read(driver))["message_text"] == "DRIVE SAFELY"
    assert sim.value(mib.dmsMessageStatus, 3, 1) == mib.MessageStatus.error
    await driver.close()


async def test_a_lower_priority_message_is_refused(sim: NtcipSimulator) -> None:
    driver = driver_for(sim, message_number=2)
    await driver.execute("display_message", {"text": "ROAD CLOSED", "priority": 200})
    with pytest.raises(DeviceResponseError, match=r"refused to activate changeable message 2: priority \(3\)"):
        await driver.execute("display_message", {"text": "HAVE A NICE DAY", "priority": 10})
    assert (await read(driver))["message_text"] == "ROAD CLOSED"
    await driver.close()


async def test_a_sign_in_local_mode_refuses_activation(sim: NtcipSimulator) -> None:
    sim.state.control_mode = mib.ControlMode.local
    with pytest.raises(DeviceResponseError, match=r"refused to activate changeable message 1: localMode \(9\)"):
        await driver_for(sim).execute("display_message", {"text": "HELLO"})
    assert sim.current_message() == b"[jl3]DRIVE SAFELY"


async def test_wrong_write_community_is_ignored_by_the_sign(sim: NtcipSimulator) -> None:
    driver = driver_for(sim, write_community="guess", timeout_s=SHORT_TIMEOUT_S)
    with pytest.raises(DeviceUnavailable, match="no answer to SET"):
        await driver.execute("display_message", {"text": "HELLO"})
    assert sim.current_message() == b"[jl3]DRIVE SAFELY"


async def test_a_sign_failing_mid_write_is_a_response_error_naming_the_step(sim: NtcipSimulator) -> None:
    sim.set_error(GEN_ERR, count=1)
    with pytest.raises(DeviceResponseError, match=r"SET dmsMessageStatus: error-status genErr \(5\)"):
        await driver_for(sim).execute("display_message", {"text": "HELLO"})


async def test_a_message_expires_after_its_duration() -> None:
    now = [NOON]
    async with NtcipSimulator(clock=lambda: now[0], utc_offset_s=0, update_interval_s=3600) as sim:
        driver = driver_for(sim)
        await driver.execute("display_message", {"text": "SHORT", "duration": 2})
        now[0] += 61
        assert (await read(driver))["message_time_remaining_min"] == 1
        now[0] += 60
        sim.state.tick()
        metrics = await read(driver)
        assert metrics["message_source"] == "blank 1"
        assert metrics["message_text"] == ""
        await driver.close()


async def test_polls_and_a_write_at_the_same_time_do_not_mix_up_answers(sim: NtcipSimulator) -> None:
    driver = driver_for(sim)
    results = await asyncio.gather(
        read(driver), driver.execute("display_message", {"text": "TOGETHER"}), read(driver), read(driver)
    )
    assert results[1].startswith("changeable message 1 shown")
    assert (await read(driver))["message_text"] == "TOGETHER"
    await driver.close()


# --- the simulator itself --------------------------------------------------------------------------------------
async def test_the_sign_can_be_walked_like_any_snmp_agent(sim: NtcipSimulator) -> None:
    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", sim.port), timeout=1, retries=0)
    seen: list[tuple[int, ...]] = []
    async for indication, status, _, bindings in walk_cmd(
        engine,
        CommunityData("public", mpModel=1),
        target,
        ContextData(),
        ObjectType(ObjectIdentity(mib.DMS)),
        lookupMib=False,
        lexicographicMode=False,
    ):
        assert not indication
        assert not int(status)
        seen.extend(tuple(oid) for oid, _ in bindings)
    engine.close_dispatcher()
    assert seen == sorted(seen)
    assert mib.shortErrorStatus.scalar() in seen
    assert mib.dmsMessageMultiString.row(mib.MemoryType.currentBuffer, 1) in seen


async def test_the_sign_answers_getbulk(sim: NtcipSimulator) -> None:
    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", sim.port), timeout=1, retries=0)
    indication, status, _, bindings = await bulk_cmd(
        engine,
        CommunityData("public", mpModel=1),
        target,
        ContextData(),
        0,
        6,
        ObjectType(ObjectIdentity((*mib.DMS, 9, 9))),  # statTemp
        lookupMib=False,
    )
    engine.close_dispatcher()
    assert not indication
    assert not int(status)
    oids = [tuple(oid) for oid, _ in bindings]
    assert oids == [(*mib.DMS, 9, 9, n, 0) for n in range(1, 7)]  # the six temperature objects, in order
    temperatures = (
        mib.tempMinCtrlCabinet,
        mib.tempMaxCtrlCabinet,
        mib.tempMinAmbient,
        mib.tempMaxAmbient,
        mib.tempMinSignHousing,
        mib.tempMaxSignHousing,
    )
    assert [int(v) for _, v in bindings] == [sim.value(o) for o in temperatures]


def test_cli_prints_its_endpoint_and_serves_the_driver() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ioc.cli", "sim", "ntcip", "--port", "0", "--duration", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["host"] == "127.0.0.1"
        assert info["community"] == "public"

        async def poll() -> dict[str, MetricValue]:
            opts = {"host": info["host"], "port": info["port"], "timeout_s": 1.0}
            driver = build_driver("ntcip", opts, "ntcip-dms-full-matrix")
            try:
                return dict((await driver.poll())[0].metrics)
            finally:
                await driver.close()

        assert asyncio.run(poll())["message_text"] == "DRIVE SAFELY"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert out == b""


def test_cli_refuses_a_bad_port() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "sim", "ntcip", "--port", "70000"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"--port must be 0..65535, not 70000" in done.stderr
