"""ONVIF reachability of one camera: four states, decided by at most three requests per poll.

1. ``GetSystemDateAndTime`` without credentials (every device must answer it: ONVIF Core, access class
   PRE_AUTH). Gives the camera's clock; no TCP connection, or no answer at all, ends the check: *unreachable*.
2. ``GetDeviceInformation`` without credentials (unless ``check_without_auth`` is off and credentials are
   set). An answer means the camera serves anyone: *up_without_auth*.
3. ``GetDeviceInformation`` with a WS-Security digest token, stamped in the camera's time when
   ``adjust_clock`` (cameras refuse tokens "created" too far from their own clock), and/or HTTP Digest when
   the camera challenges (``auth``). An answer: *up_with_auth*, ``onvif_auth`` saying which one worked.

Anything else that answered (a SOAP fault, credentials refused, an HTTP error, bytes that are not SOAP or not
even HTTP, a TLS handshake that fails: untrusted certificate, not TLS) is *refusing*, with the reason in
``onvif_error``. The whole check runs within ``onvif_timeout_s``; each request gets what is left. Nothing
here raises for a camera fault: the state is the result.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx

from devices.driver import MetricValue, StateCode
from devices.drivers.camera import soap
from devices.drivers.camera.config import CameraConfig
from devices.errors import DeviceResponseError, DeviceUnavailable

#: Requests a camera checked once per poll needs no more connections than this.
_LIMITS: Final = httpx.Limits(max_connections=2, max_keepalive_connections=1)
#: Reasons are cut to this length.
MAX_ERROR: Final = 300
#: Added to ``onvif_timeout_s`` for the outer guard of a check.
GUARD_MARGIN_S: Final = 0.25


class OnvifState(StateCode):
    """ONVIF reachability, as ``onvif_state`` (code) and ``onvif_state_name``."""

    UP_WITH_AUTH = 0
    UP_WITHOUT_AUTH = 1
    REFUSING = 2
    UNREACHABLE = 3


@dataclass(frozen=True, slots=True)
class OnvifResult:
    """The outcome of one check."""

    state: OnvifState
    error: str = ""
    info: soap.DeviceInformation | None = None
    response_ms: float | None = None
    clock_offset_s: float | None = None
    #: How the camera let us in when up: "none", "ws-security" or "digest".
    auth: str = ""

    def metrics(self) -> dict[str, MetricValue]:
        """``onvif_*`` metrics: the state always; device facts when up; the reason when not."""
        out: dict[str, MetricValue] = {
            "onvif_state": int(self.state),
            "onvif_state_name": self.state.label,
            "onvif_up": int(self.state in (OnvifState.UP_WITH_AUTH, OnvifState.UP_WITHOUT_AUTH)),
        }
        if self.response_ms is not None:
            out["onvif_response_ms"] = round(self.response_ms, 3)
        if self.clock_offset_s is not None:
            out["onvif_clock_offset_s"] = round(self.clock_offset_s, 3)
        if self.auth:
            out["onvif_auth"] = self.auth
        if self.info is not None:
            out["onvif_manufacturer"] = self.info.manufacturer
            out["onvif_model"] = self.info.model
            out["onvif_firmware"] = self.info.firmware_version
            out["onvif_serial"] = self.info.serial_number
            out["onvif_hardware_id"] = self.info.hardware_id
        if self.error:
            out["onvif_error"] = self.error[:MAX_ERROR]
        return out


class _Unreachable(Exception):
    """No TCP connection, or no answer: the check ends here."""


class _Answered(Exception):
    """The camera answered, but not with the expected response."""

    def __init__(self, message: str, response_ms: float | None, auth_refused: bool = False) -> None:
        super().__init__(message)
        self.response_ms = response_ms
        self.auth_refused = auth_refused


def make_client(config: CameraConfig) -> httpx.AsyncClient:
    """The HTTP client of one camera. ``trust_env=False``: a proxy set for the internet must not carry
    requests to devices on the site network."""
    return httpx.AsyncClient(verify=config.verify_tls, trust_env=False, follow_redirects=False, limits=_LIMITS)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (httpx wraps httpcore wraps the OS error), at most ten deep."""
    out: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and len(out) < 10:
        out.append(node)
        node = node.__cause__ or node.__context__
    return out


def _tls_reason(exc: BaseException) -> str | None:
    """Why a TLS handshake failed (``certificate verify failed: self-signed certificate``), or None."""
    for node in _chain(exc):
        if isinstance(node, ssl.SSLError):
            # SSLError is an OSError whose errno is OpenSSL's, not the OS's: its own text is the reason.
            text = getattr(node, "verify_message", None) or node.reason or str(node)
            return f"TLS handshake failed: {text}"[:MAX_ERROR]
    return None


def _connect_reason(exc: BaseException) -> str:
    """The most precise reason in an httpx error's chain: the OS error (``Connection refused``) if any."""
    for node in _chain(exc):
        if isinstance(node, OSError) and not isinstance(node, ssl.SSLError) and node.errno is not None:
            return os.strerror(node.errno)
    return (str(exc) or type(exc).__name__)[:MAX_ERROR]


class OnvifChecker:
    """Runs the check of :mod:`devices.drivers.camera.onvif` against one camera."""

    def __init__(self, config: CameraConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.url = config.onvif_url
        self._client = client
        self._budget_s = config.onvif_timeout_s
        self._credentials: tuple[str, str] | None = None
        self._digest: httpx.DigestAuth | None = None
        if config.username is not None and config.password is not None:
            self._credentials = (config.username, config.password.get_secret_value())
            if config.auth in ("auto", "digest"):
                self._digest = httpx.DigestAuth(*self._credentials)
        #: Whether the last answered request needed an HTTP Digest round (a 401 challenge first).
        self._used_digest = False

    async def check(self) -> OnvifResult:
        """Classify the camera (never raises for what the camera does)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget_s
        try:
            # The guard has a margin so that httpx's own timeouts, which say what timed out, fire first.
            async with asyncio.timeout(self._budget_s + GUARD_MARGIN_S):
                return await self._check(deadline)
        except TimeoutError:
            return OnvifResult(OnvifState.UNREACHABLE, f"no answer within {self._budget_s:g} s")
        except _Unreachable as exc:
            return OnvifResult(OnvifState.UNREACHABLE, str(exc))

    async def _check(self, deadline: float) -> OnvifResult:
        offset = await self._clock_offset(deadline)
        if self.config.check_without_auth or self._credentials is None:
            try:
                answer, ms = await self._call(soap.GET_DEVICE_INFORMATION, deadline, secured=False)
                return self._up(OnvifState.UP_WITHOUT_AUTH, answer, ms, offset)
            except _Answered as exc:
                if self._credentials is None:
                    what = "GetDeviceInformation without credentials (none configured)"
                    return OnvifResult(OnvifState.REFUSING, f"{what}: {exc}", None, exc.response_ms, offset)
        try:
            answer, ms = await self._call(soap.GET_DEVICE_INFORMATION, deadline, secured=True, offset_s=offset)
            return self._up(OnvifState.UP_WITH_AUTH, answer, ms, offset)
        except _Answered as exc:
            what = "credentials refused by GetDeviceInformation" if exc.auth_refused else "GetDeviceInformation"
            return OnvifResult(OnvifState.REFUSING, f"{what}: {exc}", None, exc.response_ms, offset)

    async def reboot(self) -> str:
        """``SystemReboot`` with the configured credentials; the device's message.

        Raises :class:`DeviceUnavailable` (no answer), :class:`DeviceResponseError` (refused, or not the
        expected answer). The clock is read first so that the token is stamped in the camera's time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget_s
        try:
            async with asyncio.timeout(self._budget_s + GUARD_MARGIN_S):
                offset = await self._clock_offset(deadline)
                answer, _ = await self._call(
                    soap.SYSTEM_REBOOT, deadline, secured=self._credentials is not None, offset_s=offset
                )
        except TimeoutError:
            raise DeviceUnavailable(f"{self.url}: no answer to SystemReboot within {self._budget_s:g} s") from None
        except _Unreachable as exc:
            raise DeviceUnavailable(f"{self.url}: {exc}") from None
        except _Answered as exc:
            what = "credentials refused by SystemReboot" if exc.auth_refused else "SystemReboot"
            raise DeviceResponseError(f"{self.url}: {what}: {exc}") from None
        return soap.reboot_message(answer) or "rebooting"

    async def _clock_offset(self, deadline: float) -> float | None:
        """Camera clock minus ours, from an unauthenticated GetSystemDateAndTime; None if it does not say."""
        try:
            sent = time.time()
            answer, _ = await self._call(soap.GET_SYSTEM_DATE_AND_TIME, deadline, secured=False)
            local_mid = (sent + time.time()) / 2
            # The camera gives whole seconds (truncated): its clock is half a second later on average.
            return soap.system_utc_time(answer).timestamp() + 0.5 - local_mid
        except (_Answered, soap.SoapError):
            return None  # some cameras want credentials even here; the next steps still decide

    def _up(self, state: OnvifState, answer: ET.Element, ms: float, offset: float | None) -> OnvifResult:
        try:
            info = soap.device_information(answer)
        except soap.SoapError as exc:
            return OnvifResult(OnvifState.REFUSING, f"GetDeviceInformation: {exc}", None, ms, offset)
        used = "digest" if self._used_digest else "ws-security"
        auth = "none" if state is OnvifState.UP_WITHOUT_AUTH else used
        return OnvifResult(state, "", info, ms, offset, auth)

    def _security(self, offset_s: float | None) -> str:
        assert self._credentials is not None  # only called for the secured request
        now = datetime.now(UTC)
        if self.config.adjust_clock and offset_s is not None:
            now += timedelta(seconds=offset_s)
        return soap.security_header(*self._credentials, created=soap.created_stamp(now))

    async def _call(
        self, operation: str, deadline: float, *, secured: bool, offset_s: float | None = None
    ) -> tuple[ET.Element, float]:
        """POST one request; the response element and the round trip in ms, or :class:`_Answered`."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise _Unreachable(f"no answer within {self._budget_s:g} s")
        token = secured and self.config.auth in ("auto", "ws-security")
        body = soap.request_envelope(operation, self._security(offset_s) if token else "")
        headers = {"Content-Type": soap.content_type(operation)}
        # httpx answers a 401 Digest challenge by itself (one more round trip) when given DigestAuth.
        auth = self._digest if secured and self._digest is not None else None
        started = time.perf_counter()
        self._used_digest = False
        try:
            async with self._client.stream(
                "POST", self.url, content=body, headers=headers, timeout=httpx.Timeout(remaining), auth=auth
            ) as response:
                data = await _read_capped(response)
                status, phrase = response.status_code, response.reason_phrase
                self._used_digest = bool(response.history) and auth is not None
        except httpx.ConnectTimeout:
            raise _Unreachable(f"no TCP connection within {self._budget_s:g} s") from None
        except httpx.ConnectError as exc:
            tls = _tls_reason(exc)
            if tls is not None:
                # The camera is there and speaks, but we cannot trust (or understand) its TLS.
                raise _Answered(tls, (time.perf_counter() - started) * 1000) from None
            raise _Unreachable(f"cannot connect: {_connect_reason(exc)}") from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise _Unreachable(f"connected, but no answer within {self._budget_s:g} s") from None
        except httpx.HTTPError as exc:
            # RemoteProtocolError and friends: something answered, but not in HTTP.
            ms = (time.perf_counter() - started) * 1000
            raise _Answered(f"not an HTTP answer ({_connect_reason(exc)})", ms) from None
        ms = (time.perf_counter() - started) * 1000
        if data is None:
            raise _Answered(f"answer larger than {soap.MAX_BODY_BYTES} bytes", ms)
        try:
            return soap.parse_response(data, status, operation), ms
        except soap.SoapFault as fault:
            raise _Answered(str(fault), ms, auth_refused=fault.not_authorized or status == 401) from None
        except soap.SoapError as exc:
            if status != 200:
                message = f"HTTP {status} {phrase}".rstrip()
                raise _Answered(message, ms, auth_refused=status == 401) from None
            raise _Answered(str(exc), ms) from None


async def _read_capped(response: httpx.Response) -> bytes | None:
    """The body, or None once it grows past :data:`soap.MAX_BODY_BYTES` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > soap.MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
