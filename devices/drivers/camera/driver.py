"""The camera driver: each poll runs the ONVIF check and the RTSP probe side by side, one reading with both.

A camera driver is a health probe: what the camera does (refuse, stall, vanish) is the *result* of a poll,
reported as ``onvif_state`` and ``rtsp_state`` with their reasons, so a poll succeeds whenever the checks
could run. Neither check blocks the event loop (httpx async client, asyncio subprocess), each has its own
time budget, and a poll takes at most the larger of the two (:attr:`CameraConfig.poll_budget_s`): give the
device a ``timeout_s`` above it in the edge config. State changes are logged once each, not every poll.

Health (:class:`devices.driver.HealthReporting`): the camera counts as down when ONVIF is unreachable (no
connection, or no answer in time), or, with ONVIF off, when the RTSP stream is down; the edge scheduler then
publishes ``device_down`` with that reason, and ``device_up`` when it answers again, like any driver's. A
camera that answers but refuses (bad credentials, a SOAP fault) is reachable: up, its state says the rest.
A missing ffprobe is not the camera's fault either.

Ability (:class:`devices.driver.CommandCapable`): ``restart``, sent as ONVIF ``SystemReboot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Final

import httpx

from devices.driver import MetricValue, Reading, now_ms
from devices.drivers.camera.config import CameraConfig
from devices.drivers.camera.onvif import OnvifChecker, OnvifResult, OnvifState, make_client
from devices.drivers.camera.rtsp import RtspProber, RtspResult, RtspState, redact
from devices.errors import DeviceConfigError, UnsupportedCommand
from devices.profile import Profile

log = logging.getLogger(__name__)

#: The profile family this driver serves.
PROFILE_DRIVER: Final = "camera"
#: How long closing the HTTP client may take.
CLOSE_TIMEOUT_S: Final = 2.0


class CameraDriver:
    """ONVIF reachability plus RTSP stream health of one camera."""

    def __init__(self, config: CameraConfig, profile: Profile) -> None:
        if profile.driver != PROFILE_DRIVER:
            raise DeviceConfigError(f"profile {profile.id!r} is for driver {profile.driver!r}, not {PROFILE_DRIVER}")
        if not config.onvif_enabled and config.rtsp_url is None:
            raise DeviceConfigError("camera: nothing to check (onvif_port is 0 and no rtsp_url)")
        self.config = config
        self.profile = profile
        self.where = f"camera {config.host}"
        self._client: httpx.AsyncClient | None = None
        self._onvif: OnvifChecker | None = None
        self._rtsp = RtspProber(config, self.where)
        #: The last state logged, per check ("ONVIF", "RTSP").
        self._logged: dict[str, str] = {}
        #: Why the camera is down after the last poll (None: up).
        self._down_reason: str | None = None
        for line in self.describe_plan():
            log.info("%s: %s", self.where, line)

    def describe_plan(self) -> list[str]:
        """What one poll does."""
        c = self.config
        lines: list[str] = []
        if c.onvif_enabled:
            how = {"auto": "WS-Security token, HTTP Digest if challenged", "ws-security": "WS-Security token"}
            auth = f"as {c.username!r} ({how.get(c.auth, 'HTTP Digest')})" if c.username else "without credentials"
            calls = f"GetSystemDateAndTime, GetDeviceInformation {auth}"
            lines.append(f"ONVIF {c.onvif_url}: {calls}, within {c.onvif_timeout_s:g} s")
        else:
            lines.append("ONVIF: not checked (onvif_port 0)")
        if c.rtsp_url is not None:
            lines.append(
                f"RTSP {redact(c.rtsp_url)}: {c.ffprobe} ({c.rtsp_transport}), {c.rtsp_sample_packets} packets, "
                f"within {c.rtsp_timeout_s:g} s"
            )
        else:
            lines.append("RTSP: not probed (no rtsp_url)")
        lines.append(f"a poll takes at most {c.poll_budget_s:g} s")
        return lines

    async def open(self) -> None:
        """Make the HTTP client and look for ffprobe; nothing is connected until a poll."""
        if self.config.onvif_enabled and self._client is None:
            self._client = make_client(self.config)
            self._onvif = OnvifChecker(self.config, self._client)
        self._rtsp.resolve()

    async def poll(self) -> list[Reading]:
        """Both checks at once; one reading with the ``onvif_*`` and ``rtsp_*`` metrics."""
        if self.config.onvif_enabled and self._onvif is None:
            await self.open()
        ts_ms = now_ms()
        onvif, rtsp = await asyncio.gather(self._check_onvif(), self._rtsp.probe())
        metrics: dict[str, MetricValue] = {}
        if onvif is not None:
            metrics.update(onvif.metrics())
            self._note("ONVIF", onvif.state.label, onvif.error)
        metrics.update(rtsp.metrics())
        self._note("RTSP", rtsp.state.label, rtsp.error)
        self._down_reason = _down_reason(onvif, rtsp)
        return [Reading(ts_ms=ts_ms, metrics=metrics)]

    def down_reason(self) -> str | None:
        """See the module docstring: ONVIF unreachable (or, with ONVIF off, the stream down), else None."""
        return self._down_reason

    def supported_actions(self) -> frozenset[str]:
        """``restart`` (ONVIF SystemReboot) when the ONVIF check is on."""
        return frozenset({"restart"}) if self.config.onvif_enabled else frozenset()

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        """``restart``: ask the camera to reboot; the detail is its message ("Rebooting in 30 seconds").

        Raises :class:`UnsupportedCommand` for another action or any params, :class:`DeviceUnavailable` when
        the camera does not answer, :class:`DeviceResponseError` when it refuses.
        """
        if action not in self.supported_actions():
            raise UnsupportedCommand(f"{self.where}: no action {action!r} (supported: restart, with ONVIF on)")
        if params:
            raise UnsupportedCommand(f"{self.where}: restart takes no params, got {', '.join(sorted(params))}")
        if self._onvif is None:
            await self.open()
        assert self._onvif is not None
        message = await self._onvif.reboot()
        log.warning("%s: restart requested; the camera says %r", self.where, message)
        return message

    async def close(self) -> None:
        """Close the HTTP client. Never raises."""
        client, self._client, self._onvif = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.aclose()

    async def _check_onvif(self) -> OnvifResult | None:
        return await self._onvif.check() if self._onvif is not None else None

    def _note(self, what: str, state: str, error: str) -> None:
        """Log a state change once (the first state too); repeats are not logged."""
        previous = self._logged.get(what)
        if previous == state:
            return
        self._logged[what] = state
        detail = f": {error}" if error else ""
        level = logging.INFO if previous is None or state.startswith("up") else logging.WARNING
        log.log(level, "%s: %s %s%s", self.where, what, state, detail)

    def __repr__(self) -> str:
        return f"CameraDriver({self.where}, profile={self.profile.id})"


def _down_reason(onvif: OnvifResult | None, rtsp: RtspResult) -> str | None:
    if onvif is not None:
        if onvif.state is OnvifState.UNREACHABLE:
            return f"ONVIF unreachable: {onvif.error}" if onvif.error else "ONVIF unreachable"
        return None
    if rtsp.state is RtspState.DOWN:
        return f"RTSP stream down: {rtsp.error}" if rtsp.error else "RTSP stream down"
    return None
