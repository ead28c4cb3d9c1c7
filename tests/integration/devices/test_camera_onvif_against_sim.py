"""The camera driver's ONVIF check against the ONVIF simulator over real HTTP on 127.0.0.1.

No broker or database is involved, so these are plain tests (not marked ``integration``). Each test starts
its own simulator on a free port; every classification and every fault knob is exercised, and the reading
(state, reason, what the simulator saw) is exactly what the fault predicts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devices.driver import CommandCapable
from devices.drivers.camera import CameraConfig, CameraDriver, OnvifState, soap
from devices.errors import DeviceResponseError, DeviceUnavailable, UnsupportedCommand
from devices.profile import load_profile
from devices.sim.onvif import Identity, OnvifSimulator, SimulatedCameras

USER, PASSWORD = "operator", "s3cret-pw"
BUDGET_S = 0.6
PROFILE = load_profile("camera-onvif-generic")
NOT_AUTHORIZED = "SOAP fault Sender/NotAuthorized: Sender not Authorized (HTTP 400)"


@pytest.fixture
async def sim() -> AsyncIterator[OnvifSimulator]:
    identity = Identity(manufacturer="Acme & Co", model="AC-900", firmware_version="5.1", serial_number="X42")
    async with OnvifSimulator(username=USER, password=PASSWORD, identity=identity, seed=3) as simulator:
        yield simulator


def camera(sim: OnvifSimulator, **options: Any) -> CameraDriver:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "onvif_port": sim.port,
        "username": USER,
        "password": PASSWORD,
        "onvif_timeout_s": BUDGET_S,
    }
    base.update(options)
    config = CameraConfig.model_validate({k: v for k, v in base.items() if v is not None})
    return CameraDriver(config, load_profile("camera-onvif-generic"))


async def poll(driver: CameraDriver) -> dict[str, Any]:
    await driver.open()
    try:
        (reading,) = await driver.poll()
    finally:
        await driver.close()
    assert abs(reading.ts_ms - time.time() * 1000) < 5000
    return dict(reading.metrics)


def onvif_part(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k.startswith("onvif_")}


async def test_up_with_auth_reports_identity_clock_and_response_time(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim))
    assert metrics["onvif_state"] == int(OnvifState.UP_WITH_AUTH) == 0
    assert metrics["onvif_state_name"] == "up_with_auth"
    assert metrics["onvif_up"] == 1
    assert metrics["onvif_manufacturer"] == "Acme & Co"  # escaped on the wire, intact here
    assert (metrics["onvif_model"], metrics["onvif_firmware"], metrics["onvif_serial"]) == ("AC-900", "5.1", "X42")
    assert metrics["onvif_hardware_id"] == "HW-1.0"
    assert metrics["onvif_auth"] == "ws-security"
    assert 0 < metrics["onvif_response_ms"] < BUDGET_S * 1000
    assert abs(metrics["onvif_clock_offset_s"]) <= 1.0
    assert "onvif_error" not in metrics
    # The check made exactly its three requests; the unauthenticated one was refused as "no token".
    assert sim.requests == {"GetSystemDateAndTime": 1, "GetDeviceInformation": 2}
    assert sim.auth_failures == {"no token": 1}
    # No stream configured: said so, not hidden.
    assert metrics["rtsp_state_name"] == "unavailable"
    assert metrics["rtsp_error"] == "no rtsp_url configured"


async def test_up_without_auth_when_the_camera_serves_anyone(sim: OnvifSimulator) -> None:
    sim.auth_required = False
    metrics = await poll(camera(sim))
    assert onvif_part(metrics) | {"onvif_response_ms": 0, "onvif_clock_offset_s": 0} == {
        "onvif_state": 1,
        "onvif_state_name": "up_without_auth",
        "onvif_up": 1,
        "onvif_response_ms": 0,
        "onvif_clock_offset_s": 0,
        "onvif_auth": "none",
        "onvif_manufacturer": "Acme & Co",
        "onvif_model": "AC-900",
        "onvif_firmware": "5.1",
        "onvif_serial": "X42",
        "onvif_hardware_id": "HW-1.0",
    }
    assert sim.requests == {"GetSystemDateAndTime": 1, "GetDeviceInformation": 1}


async def test_an_open_camera_is_found_even_without_credentials_configured(sim: OnvifSimulator) -> None:
    sim.auth_required = False
    metrics = await poll(camera(sim, username=None, password=None))
    assert metrics["onvif_state_name"] == "up_without_auth"


async def test_check_without_auth_off_goes_straight_to_credentials(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim, check_without_auth=False))
    assert metrics["onvif_state_name"] == "up_with_auth"
    assert sim.requests == {"GetSystemDateAndTime": 1, "GetDeviceInformation": 1}
    assert not sim.auth_failures


async def test_wrong_password_is_refusing_credentials_refused(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim, password="wrong"))
    assert metrics["onvif_state"] == int(OnvifState.REFUSING) == 2
    assert metrics["onvif_up"] == 0
    assert metrics["onvif_error"] == f"credentials refused by GetDeviceInformation: {NOT_AUTHORIZED}"
    assert "onvif_model" not in metrics
    assert metrics["onvif_response_ms"] > 0
    assert sim.auth_failures == {"no token": 1, "wrong username or password": 1}


async def test_wrong_username_is_refused_too(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim, username="intruder"))
    assert metrics["onvif_state_name"] == "refusing"
    assert sim.auth_failures["wrong username or password"] == 1


async def test_no_credentials_configured_for_a_protected_camera_is_refusing(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim, username=None, password=None))
    assert metrics["onvif_state_name"] == "refusing"
    assert metrics["onvif_error"] == f"GetDeviceInformation without credentials (none configured): {NOT_AUTHORIZED}"


async def test_a_camera_clock_an_hour_off_is_measured_and_the_token_follows_it(sim: OnvifSimulator) -> None:
    sim.clock_offset_s = 3600.0
    metrics = await poll(camera(sim))
    assert metrics["onvif_state_name"] == "up_with_auth"
    assert metrics["onvif_clock_offset_s"] == pytest.approx(3600.0, abs=1.0)


async def test_without_adjust_clock_a_camera_an_hour_off_refuses_the_token(sim: OnvifSimulator) -> None:
    sim.clock_offset_s = 3600.0
    metrics = await poll(camera(sim, adjust_clock=False))
    assert metrics["onvif_state_name"] == "refusing"
    assert metrics["onvif_error"] == f"credentials refused by GetDeviceInformation: {NOT_AUTHORIZED}"
    assert sim.auth_failures["created too far from the device clock"] == 1


# -- fault knobs ------------------------------------------------------------------------------------------


async def test_silent_camera_is_unreachable_within_the_budget(sim: OnvifSimulator) -> None:
    sim.set_fault("silent")
    started = time.monotonic()
    metrics = await poll(camera(sim))
    elapsed = time.monotonic() - started
    assert onvif_part(metrics) == {
        "onvif_state": 3,
        "onvif_state_name": "unreachable",
        "onvif_up": 0,
        "onvif_error": f"connected, but no answer within {BUDGET_S:g} s",
    }
    assert BUDGET_S * 0.9 <= elapsed < BUDGET_S + 1.0
    assert sim.requests == {"GetSystemDateAndTime": 1}  # the first request hung; nothing more was tried


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("garbage", "GetDeviceInformation: answer is not XML (not well-formed (invalid token): line 1, column 0)"),
        ("not_http", "GetDeviceInformation: not an HTTP answer (illegal request line)"),
        (
            "soap_fault",
            (
                "GetDeviceInformation: SOAP fault Receiver/ActionFailed: The device failed to process the request "
                "(HTTP 500)"
            ),
        ),
        ("http_error", "GetDeviceInformation: HTTP 503 Service Unavailable"),
    ],
)
async def test_answers_that_are_not_onvif_are_refusing_with_the_reason(
    sim: OnvifSimulator, fault: Any, error: str
) -> None:
    sim.set_fault(fault)
    metrics = await poll(camera(sim))
    assert metrics["onvif_state_name"] == "refusing"
    assert metrics["onvif_error"] == error
    assert "onvif_clock_offset_s" not in metrics  # GetSystemDateAndTime was answered the same way
    assert "onvif_model" not in metrics
    assert sim.requests == {"GetSystemDateAndTime": 1, "GetDeviceInformation": 2}


async def test_refuse_auth_is_refusing_while_the_clock_still_answers(sim: OnvifSimulator) -> None:
    sim.set_fault("refuse_auth")
    metrics = await poll(camera(sim))
    assert metrics["onvif_state_name"] == "refusing"
    assert metrics["onvif_error"] == f"credentials refused by GetDeviceInformation: {NOT_AUTHORIZED}"
    assert "onvif_clock_offset_s" in metrics
    assert sim.auth_failures == {"account locked": 2}


async def test_a_slow_camera_is_up_and_its_response_time_shows_the_delay(sim: OnvifSimulator) -> None:
    sim.set_delay(0.25)
    metrics = await poll(camera(sim, onvif_timeout_s=3.0))
    assert metrics["onvif_state_name"] == "up_with_auth"
    assert 250 <= metrics["onvif_response_ms"] < 3000


async def test_a_camera_slower_than_the_budget_is_unreachable(sim: OnvifSimulator) -> None:
    sim.set_delay(BUDGET_S * 3)
    metrics = await poll(camera(sim))
    assert metrics["onvif_state_name"] == "unreachable"
    assert metrics["onvif_error"] == f"connected, but no answer within {BUDGET_S:g} s"


async def test_the_budget_covers_the_whole_check_not_each_request(sim: OnvifSimulator) -> None:
    # Each answer alone fits the budget; three of them do not: the third request gets what is left.
    sim.set_delay(BUDGET_S * 0.4)
    started = time.monotonic()
    metrics = await poll(camera(sim))
    assert time.monotonic() - started < BUDGET_S + 1.0
    assert metrics["onvif_state_name"] == "unreachable"


async def test_offline_is_unreachable_connection_refused_and_comes_back(sim: OnvifSimulator) -> None:
    driver = camera(sim)
    await driver.open()
    try:
        (up,) = await driver.poll()
        await sim.set_offline()
        (down,) = await driver.poll()
        await sim.set_online()
        (again,) = await driver.poll()
    finally:
        await driver.close()
    assert up.metrics["onvif_state_name"] == "up_with_auth"
    assert down.metrics["onvif_state_name"] == "unreachable"
    assert down.metrics["onvif_error"] == "cannot connect: Connection refused"
    assert again.metrics["onvif_state_name"] == "up_with_auth"


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen backlog is full: SYNs are dropped, so connecting times out (Linux default
    net.ipv4.tcp_abort_on_overflow = 0)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for s in [*fillers, listener]:
        s.close()


async def test_no_tcp_connection_in_time_is_unreachable(sim: OnvifSimulator, full_backlog: int) -> None:
    metrics = await poll(camera(sim, onvif_port=full_backlog))
    assert metrics["onvif_state_name"] == "unreachable"
    assert metrics["onvif_error"] == f"no TCP connection within {BUDGET_S:g} s"


async def test_a_dead_camera_does_not_hold_up_a_live_one_or_the_event_loop(sim: OnvifSimulator) -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD) as dead:
        dead.set_fault("silent")
        live_driver, dead_driver = camera(sim), camera(dead, onvif_timeout_s=2.0)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        tick_task = asyncio.create_task(ticker())
        dead_poll = asyncio.create_task(poll(dead_driver))
        started = time.monotonic()
        live = await poll(live_driver)
        live_done = time.monotonic() - started
        dead_metrics = await dead_poll
        tick_task.cancel()
    assert live["onvif_state_name"] == "up_with_auth"
    assert live_done < 1.5  # answered while the dead camera was still hanging (its budget is 2 s)
    assert dead_metrics["onvif_state_name"] == "unreachable"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 1.0  # the loop kept running throughout (margin for a loaded machine)


# -- the simulator checks WS-Security for real --------------------------------------------------------------


async def post(sim: OnvifSimulator, body: bytes, operation: str = soap.GET_DEVICE_INFORMATION) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(sim.url, content=body, headers={"Content-Type": soap.content_type(operation)})


async def test_a_replayed_token_is_refused(sim: OnvifSimulator) -> None:
    created = soap.created_stamp(sim.now())
    body = soap.request_envelope(soap.GET_DEVICE_INFORMATION, soap.security_header(USER, PASSWORD, created))
    first, second = await post(sim, body), await post(sim, body)
    assert first.status_code == 200
    assert second.status_code == 400
    assert sim.auth_failures == {"nonce replayed": 1}


async def test_a_tampered_digest_and_a_plain_text_password_are_refused(sim: OnvifSimulator) -> None:
    created = soap.created_stamp(sim.now())
    header = soap.security_header(USER, PASSWORD, created)
    digest = header.split('#PasswordDigest">', 1)[1].split("<", 1)[0]
    tampered = header.replace(digest, "AAAA" + digest[4:])
    plain = header.replace("#PasswordDigest", "#PasswordText")
    assert (await post(sim, soap.request_envelope(soap.GET_DEVICE_INFORMATION, tampered))).status_code == 400
    assert (await post(sim, soap.request_envelope(soap.GET_DEVICE_INFORMATION, plain))).status_code == 400
    assert sim.auth_failures == {"wrong username or password": 1, "not a password digest": 1}


async def test_unknown_operations_and_paths_are_refused_as_a_device_would(sim: OnvifSimulator) -> None:
    answer = await post(sim, soap.request_envelope("GetUsers"), "GetUsers")
    assert answer.status_code == 500
    with pytest.raises(soap.SoapFault) as info:
        soap.parse_response(answer.content, answer.status_code, "GetUsers")
    assert info.value.subcode == "ActionNotSupported"
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.post(f"http://127.0.0.1:{sim.port}/other", content=b"x")).status_code == 404
        assert (await client.get(sim.url)).status_code == 405
        assert (await client.post(sim.url, content=b"not xml")).status_code == 400


# -- the restart ability (ONVIF SystemReboot) ------------------------------------------------------------


async def test_restart_reboots_the_camera_which_is_gone_then_back(sim: OnvifSimulator) -> None:
    sim.reboot_s = 1.5
    driver = camera(sim, onvif_timeout_s=2.0)
    assert isinstance(driver, CommandCapable)
    assert driver.supported_actions() == {"restart"}
    await driver.open()
    try:
        detail = await driver.execute("restart", {})
        await asyncio.sleep(0.3)
        (during,) = await driver.poll()
        await asyncio.sleep(sim.reboot_s + 0.5)
        (after,) = await driver.poll()
    finally:
        await driver.close()
    assert detail == "Rebooting in 2 seconds"
    assert sim.reboots == 1
    assert during.metrics["onvif_state_name"] == "unreachable"
    assert during.metrics["onvif_error"] == "cannot connect: Connection refused"
    assert after.metrics["onvif_state_name"] == "up_with_auth"


async def test_restart_with_wrong_credentials_is_refused_and_nothing_reboots(sim: OnvifSimulator) -> None:
    driver = camera(sim, password="wrong")
    with pytest.raises(DeviceResponseError, match=re.escape(f"credentials refused by SystemReboot: {NOT_AUTHORIZED}")):
        await driver.execute("restart", {})
    await driver.close()
    assert sim.reboots == 0
    assert sim.auth_failures == {"wrong username or password": 1}


async def test_restart_of_a_silent_camera_is_unavailable(sim: OnvifSimulator) -> None:
    sim.set_fault("silent")
    driver = camera(sim)
    with pytest.raises(DeviceUnavailable, match=f"connected, but no answer within {BUDGET_S:g} s"):
        await driver.execute("restart", {})
    await driver.close()


async def test_restart_takes_no_params_and_other_actions_are_unsupported(sim: OnvifSimulator) -> None:
    driver = camera(sim)
    with pytest.raises(UnsupportedCommand, match="restart takes no params, got delay_s"):
        await driver.execute("restart", {"delay_s": 5})
    with pytest.raises(UnsupportedCommand, match="no action 'zoom'"):
        await driver.execute("zoom", {})
    await driver.close()
    stream_only = CameraDriver(
        CameraConfig(host="127.0.0.1", onvif_port=0, rtsp_url="rtsp://127.0.0.1/x"),
        load_profile("camera-onvif-generic"),
    )
    assert stream_only.supported_actions() == frozenset({"accept_view"})  # no restart without ONVIF
    with pytest.raises(UnsupportedCommand, match="no action 'restart'"):
        await stream_only.execute("restart", {})
    assert sim.reboots == 0


# -- HTTP Digest (RFC 7616), the Core spec's other user authentication -----------------------------------


@pytest.mark.parametrize("auth", ["auto", "digest"])
async def test_a_digest_only_camera_is_up_with_auth_over_http_digest(auth: str) -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, auth_mode="digest") as sim:
        metrics = await poll(camera(sim, auth=auth))
        assert metrics["onvif_state_name"] == "up_with_auth"
        assert metrics["onvif_auth"] == "digest"
        # Without credentials: challenged ("no digest"); with them: challenged once more, then let in.
        assert sim.auth_failures == {"no digest": 2}


async def test_ws_security_only_does_not_answer_a_digest_challenge() -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, auth_mode="digest") as sim:
        metrics = await poll(camera(sim, auth="ws-security"))
        assert metrics["onvif_state_name"] == "refusing"
        assert metrics["onvif_error"] == (
            "credentials refused by GetDeviceInformation: SOAP fault Sender/NotAuthorized: Sender not Authorized "
            "(HTTP 401)"
        )


async def test_digest_only_client_against_a_token_only_camera_is_refused(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim, auth="digest"))
    assert metrics["onvif_state_name"] == "refusing"
    assert sim.auth_failures == {"no token": 2}  # no 401 challenge from this camera, so no digest either


async def test_digest_with_a_wrong_password_is_refused() -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, auth_mode="digest") as sim:
        metrics = await poll(camera(sim, password="wrong"))
        assert metrics["onvif_state_name"] == "refusing"
        assert str(metrics["onvif_error"]).startswith("credentials refused by GetDeviceInformation")
        assert sim.auth_failures["digest: wrong username or password"] == 1


async def test_a_camera_taking_both_lets_the_token_in_first() -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, auth_mode="both") as sim:
        metrics = await poll(camera(sim))
        assert metrics["onvif_auth"] == "ws-security"
        driver = camera(sim)
        try:
            restarted = await driver.execute("restart", {})
        finally:
            await driver.close()
        assert restarted.startswith("Rebooting in")
        assert sim.reboots == 1


# -- HTTPS ------------------------------------------------------------------------------------------------


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    """A TLS server context with a fresh self-signed certificate for 127.0.0.1 (made by the openssl CLI)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_https_camera_with_its_certificate_not_checked_is_up(server_tls: ssl.SSLContext) -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, tls=server_tls) as sim:
        assert sim.url.startswith("https://")
        metrics = await poll(camera(sim, onvif_scheme="https", verify_tls=False))
    assert metrics["onvif_state_name"] == "up_with_auth"


async def test_https_camera_with_an_untrusted_certificate_is_refusing(server_tls: ssl.SSLContext) -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, tls=server_tls) as sim:
        metrics = await poll(camera(sim, onvif_scheme="https"))
        assert not sim.requests  # nothing got past the handshake
    assert metrics["onvif_state_name"] == "refusing"
    assert metrics["onvif_error"] == "GetDeviceInformation: TLS handshake failed: self-signed certificate"


async def test_https_to_a_plain_http_camera_is_refusing_tls(sim: OnvifSimulator) -> None:
    metrics = await poll(camera(sim, onvif_scheme="https"))
    assert metrics["onvif_state_name"] == "refusing"
    # The simulator answers the ClientHello with a plain "400", as web servers do: not TLS.
    assert metrics["onvif_error"] == "GetDeviceInformation: TLS handshake failed: WRONG_VERSION_NUMBER"


async def test_plain_http_to_an_https_camera_is_refusing_not_http(server_tls: ssl.SSLContext) -> None:
    async with OnvifSimulator(username=USER, password=PASSWORD, tls=server_tls) as sim:
        metrics = await poll(camera(sim))
    assert metrics["onvif_state_name"] == "refusing"
    assert str(metrics["onvif_error"]).startswith("GetDeviceInformation: not an HTTP answer")


# -- realistic answers: latency, spikes, cameras' own clocks ------------------------------------------------


async def test_latency_and_spikes_show_in_the_response_time(sim: OnvifSimulator) -> None:
    sim.set_latency(0.10, 0.15)
    slow = await poll(camera(sim, onvif_timeout_s=3.0))
    sim.set_latency(0.0, 0.0, spike_probability=1.0, spike_s=0.3)
    spiky = await poll(camera(sim, onvif_timeout_s=3.0))
    assert slow["onvif_state_name"] == spiky["onvif_state_name"] == "up_with_auth"
    assert 100 <= slow["onvif_response_ms"] < 1000
    assert 300 <= spiky["onvif_response_ms"] < 1500
    with pytest.raises(ValueError, match="latency needs"):
        sim.set_latency(0.2, 0.1)


async def test_simulated_cameras_have_their_own_clocks_and_are_still_let_in() -> None:
    async with SimulatedCameras(10, rtsp=False, seed=1) as cameras:
        offsets = [c.onvif.clock_offset_s for c in cameras.cameras]
        drifted = max(cameras.cameras, key=lambda c: abs(c.onvif.clock_offset_s))
        assert abs(drifted.onvif.clock_offset_s) > 30  # one in five drifts for minutes (seeded: repeatable)
        assert sum(abs(o) < 5 for o in offsets) >= 5
        metrics = await poll(CameraDriver(CameraConfig(**cameras.device_options(drifted)), PROFILE))
    assert metrics["onvif_state_name"] == "up_with_auth"  # the token follows the camera's clock
    assert metrics["onvif_clock_offset_s"] == pytest.approx(drifted.onvif.clock_offset_s, abs=1.0)
    assert 10 <= metrics["onvif_response_ms"] < 3000


async def test_state_changes_are_logged_once_each(sim: OnvifSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devices.drivers.camera.driver")
    driver = camera(sim)
    await driver.open()
    try:
        for fault in (None, None, "refuse_auth", "refuse_auth", None):
            sim.set_fault(fault)
            await driver.poll()
    finally:
        await driver.close()
    states = [r for r in caplog.records if "ONVIF http" not in r.getMessage()]  # not the plan's lines
    onvif_lines = [(r.levelname, r.getMessage()) for r in states if ": ONVIF " in r.getMessage()]
    assert onvif_lines == [
        ("INFO", "camera 127.0.0.1: ONVIF up_with_auth"),
        ("WARNING", f"camera 127.0.0.1: ONVIF refusing: credentials refused by GetDeviceInformation: {NOT_AUTHORIZED}"),
        ("INFO", "camera 127.0.0.1: ONVIF up_with_auth"),
    ]
    rtsp_lines = [r.getMessage() for r in states if ": RTSP " in r.getMessage() and "not probed" not in r.getMessage()]
    assert rtsp_lines == ["camera 127.0.0.1: RTSP unavailable: no rtsp_url configured"]
