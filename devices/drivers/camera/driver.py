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

Image checks (:mod:`.image_check`): from the first poll, a task of the driver's runs one every
``image_check_interval_s`` (sooner, after ``image_confirm_s``, when the last one began a change of a
problem's state or could not judge the picture), so a poll's budget stays that of its two checks; each poll
adds the readings of the checks that ended since the last, stamped when their frames were sampled. Problems
(``image_black``, ``image_frozen``, ``image_blurred``, ``image_covered``, ``view_changed``) are metrics (1
raised, 0 not) of those readings, and :meth:`CameraDriver.problems` names them with their reasons
(:class:`devices.driver.ProblemReporting`: the edge sends them as ``device_degraded``). A camera with image
problems is up: it answers. Each judged check also keeps its middle frame as a small JPEG (``snapshots``), which
:meth:`CameraDriver.frames` hands to the edge (:class:`devices.driver.FrameTaking`). Closing the driver stops
the checks (ffmpeg killed); the problems' states outlive a reopen.

Abilities (:class:`devices.driver.CommandCapable`): ``restart``, sent as ONVIF ``SystemReboot``;
``accept_view``, which makes the next sound picture the camera's reference view (after it was turned on
purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Final

import httpx

from devices.driver import Frame, MetricValue, Reading, now_ms
from devices.drivers.camera.config import CameraConfig
from devices.drivers.camera.image_check import ImageChecker, ImageCheckState, ImageResult
from devices.drivers.camera.image_profile import load_image_profile
from devices.drivers.camera.onvif import OnvifChecker, OnvifResult, OnvifState, make_client
from devices.drivers.camera.rtsp import RtspProber, RtspResult, RtspState, redact
from devices.errors import DeviceConfigError, UnsupportedCommand
from devices.profile import Profile

log = logging.getLogger(__name__)

#: The profile family this driver serves.
PROFILE_DRIVER: Final = "camera"
#: How long closing the HTTP client may take.
CLOSE_TIMEOUT_S: Final = 2.0
#: Image-check results kept for the next poll; past it the oldest go (a poll every interval_s hands them out).
IMAGE_RESULTS_KEPT: Final = 16
#: Snapshot JPEGs kept for :meth:`CameraDriver.frames`; past it the oldest go. Polls hand one out per check, and
#: the edge takes them after each poll; a bound in bytes too (at most 4 x 96 KiB) when nothing takes them.
FRAMES_KEPT: Final = 4
#: The abilities, each offered when its check is on.
RESTART: Final = "restart"
ACCEPT_VIEW: Final = "accept_view"


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
        self._image: ImageChecker | None = None
        if config.image_checks_enabled:
            thresholds, source = load_image_profile(profile)
            self._image = ImageChecker(config, thresholds, source, self.where)
        #: The task running the image checks on their own schedule (from the first poll until close).
        self._image_loop: asyncio.Task[None] | None = None
        #: Checks ended and not yet handed out by a poll (bounded: polls normally come far more often).
        self._image_results: deque[ImageResult] = deque(maxlen=IMAGE_RESULTS_KEPT)
        #: The judged checks' JPEGs handed out by polls and not yet taken by :meth:`frames`.
        self._frames: deque[Frame] = deque(maxlen=FRAMES_KEPT)
        #: ``time.monotonic()`` from which the next image check may start; set to wake the loop early.
        self._image_due = 0.0
        self._image_wake = asyncio.Event()
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
        if self._image is not None:
            lines.append(self._image.describe_plan())
        elif c.image_url is not None:
            lines.append("image checks: off (image_check_interval_s 0)")
        lines.append(f"a poll takes at most {c.poll_budget_s:g} s")
        return lines

    async def open(self) -> None:
        """Make the HTTP client and look for ffprobe; nothing is connected until a poll."""
        if self.config.onvif_enabled and self._client is None:
            self._client = make_client(self.config)
            self._onvif = OnvifChecker(self.config, self._client)
        self._rtsp.resolve()
        if self._image is not None:
            self._image.resolve()

    async def poll(self) -> list[Reading]:
        """Both checks at once: one reading with the ``onvif_*`` and ``rtsp_*`` metrics, then one per image
        check that ended since the last poll (the first poll starts the image checks)."""
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
        readings = [Reading(ts_ms=ts_ms, metrics=metrics)]
        readings += self._image_readings()
        self._start_image_checks()
        return readings

    def down_reason(self) -> str | None:
        """See the module docstring: ONVIF unreachable (or, with ONVIF off, the stream down), else None."""
        return self._down_reason

    def problems(self) -> dict[str, str]:
        """The image problems raised now, by name (``image_black``...), each with the reason it was raised."""
        return self._image.problems() if self._image is not None else {}

    def frames(self) -> list[Frame]:
        """The snapshots of the image checks handed out by polls since the last call (:class:`FrameTaking`): each
        judged check's middle frame, with the problems raised after it and those it raised and cleared."""
        frames = list(self._frames)
        self._frames.clear()
        return frames

    def supported_actions(self) -> frozenset[str]:
        """``restart`` (ONVIF SystemReboot) when the ONVIF check is on; ``accept_view`` with image checks."""
        actions = set()
        if self.config.onvif_enabled:
            actions.add(RESTART)
        if self._image is not None:
            actions.add(ACCEPT_VIEW)
        return frozenset(actions)

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        """``restart``: ask the camera to reboot; the detail is its message ("Rebooting in 30 seconds").
        ``accept_view``: forget the reference views; the next sound picture becomes the reference.

        Raises :class:`UnsupportedCommand` for another action or any params, :class:`DeviceUnavailable` when
        the camera does not answer, :class:`DeviceResponseError` when it refuses.
        """
        if action not in self.supported_actions():
            raise UnsupportedCommand(
                f"{self.where}: no action {action!r} (supported: restart with ONVIF on, accept_view with image checks)"
            )
        if params:
            raise UnsupportedCommand(f"{self.where}: {action} takes no params, got {', '.join(sorted(params))}")
        if action == ACCEPT_VIEW:
            assert self._image is not None
            await self._image.accept_view()
            self._image_due = 0.0  # check now, so that the new view is learned soon
            self._image_wake.set()
            return "reference view cleared: the next sound picture becomes the camera's reference view"
        if self._onvif is None:
            await self.open()
        assert self._onvif is not None
        message = await self._onvif.reboot()
        log.warning("%s: restart requested; the camera says %r", self.where, message)
        return message

    async def close(self) -> None:
        """Stop the image checks (one under way: ffmpeg killed) and close the HTTP client. Never raises."""
        task, self._image_loop = self._image_loop, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        client, self._client, self._onvif = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.aclose()

    def _image_readings(self) -> list[Reading]:
        """The readings of the image checks that ended since the last poll, each stamped at its sampling."""
        readings = []
        while self._image_results:
            result = self._image_results.popleft()
            self._note("image check", result.state.label, result.error)
            readings.append(Reading(ts_ms=result.ts_ms, metrics=result.metrics()))
            if result.jpeg is not None:
                self._frames.append(_frame_of(result, result.jpeg))
        return readings

    def _start_image_checks(self) -> None:
        if self._image is not None and self._image_loop is None:
            self._image_loop = asyncio.get_running_loop().create_task(
                self._run_image_checks(self._image), name=f"image checks {self.where}"
            )

    async def _run_image_checks(self, image: ImageChecker) -> None:
        """Check, wait, check... until cancelled: after ``image_check_interval_s`` from the start of the last
        check, or ``image_confirm_s`` when it began a change of a problem's state or could not judge."""
        c = self.config
        while True:
            delay = self._image_due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._image_wake.wait(), delay)
            self._image_wake.clear()
            result: ImageResult | None = None
            try:
                result = await image.check()
            except Exception:  # a bug in a check must not end the checks; the next runs as planned
                log.exception("%s: image check failed", self.where)
            started = image.last_started or time.monotonic()
            soon = result is None or result.state is ImageCheckState.FAILED or image.pending
            self._image_due = started + (c.image_confirm_s if soon else c.image_check_interval_s)
            if result is not None:
                self._image_results.append(result)

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


def _frame_of(result: ImageResult, jpeg: bytes) -> Frame:
    width, height = result.jpeg_size or (None, None)
    return Frame(
        ts_ms=result.ts_ms,
        jpeg=jpeg,
        width=width,
        height=height,
        problems=tuple(sorted(p.value for p, active in result.problems.items() if active)),
        raised=tuple(sorted(p.value for p in result.raised)),
        cleared=tuple(sorted(p.value for p in result.cleared)),
    )


def _down_reason(onvif: OnvifResult | None, rtsp: RtspResult) -> str | None:
    if onvif is not None:
        if onvif.state is OnvifState.UNREACHABLE:
            return f"ONVIF unreachable: {onvif.error}" if onvif.error else "ONVIF unreachable"
        return None
    if rtsp.state is RtspState.DOWN:
        return f"RTSP stream down: {rtsp.error}" if rtsp.error else "RTSP stream down"
    return None
