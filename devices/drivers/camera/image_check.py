"""The image checks of one camera: ffmpeg run on the stream, the picture judged, problems kept with hysteresis.

:meth:`ImageChecker.check` runs one check (the command and the measures: :mod:`.image_filters`; the rules and
thresholds: :mod:`.image_profile`; the reference views: :mod:`.reference`). ffmpeg runs as an asyncio
subprocess, killed and reaped at ``image_timeout_s`` or when the check is cancelled, and at most
:data:`CHECKS_AT_ONCE` checks of the process run at once (the others wait their turn), so that a site box's
cameras, all started together, do not all decode together.

A check that could not judge the picture (no ffmpeg here, the stream refused or silent, too few frames) holds
every problem as it was: no evidence is not good evidence. ``image_check_state`` says which:

| ``image_check_state`` | ``image_check_state_name`` | meaning |
|---|---|---|
| 0 | ``ok`` | the picture was judged |
| 1 | ``failed`` | ffmpeg gave too few frames, or frames damaged by lost packets: ``image_check_error`` says why |
| 2 | ``unavailable`` | no ffmpeg on this host (``image_check_error``) |
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devices.driver import MetricValue, StateCode, now_ms
from devices.drivers.camera.config import CameraConfig
from devices.drivers.camera.image_filters import (
    ANALYSIS_FPS,
    FilterPlan,
    ImageMeasures,
    ImageOutputError,
    decoding_errors,
    ffmpeg_argv,
    jpeg_size,
    measure,
    parse_metadata,
    png_size,
)
from devices.drivers.camera.image_profile import (
    Hysteresis,
    ImageCheckProfile,
    Mode,
    Problem,
    Verdict,
    judge,
)
from devices.drivers.camera.reference import ReferenceViews, camera_key
from devices.drivers.camera.rtsp import MAX_ERROR, kill_and_reap, redact, resolve_tool

log = logging.getLogger(__name__)

#: Checks of this process running at once; the rest wait. A check is mostly waiting for the stream (its frames
#: come in real time), so this bounds the burst of decoders, not the throughput: one check takes about
#: ``image_sample_s`` + 1 s, so N slots get through N x 300 / 4 cameras every 5 minutes.
CHECKS_AT_ONCE: Final = max(2, os.cpu_count() or 1)
#: The fewest frames that make a judgement: half the sample, and at least 5 (a freeze needs a second of them).
MIN_FRAMES_SHARE: Final = 0.5

_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slots() -> asyncio.Semaphore:
    """The event loop's semaphore of :data:`CHECKS_AT_ONCE` (one per loop: a semaphore belongs to its loop)."""
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = asyncio.Semaphore(CHECKS_AT_ONCE)
    return slots


class ImageCheckState(StateCode):
    """``image_check_state`` (code) and ``image_check_state_name``."""

    OK = 0
    FAILED = 1
    UNAVAILABLE = 2


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One check: its state, the measures and the mode when judged, and every problem's state after it."""

    ts_ms: int
    state: ImageCheckState
    problems: Mapping[Problem, bool]
    error: str = ""
    measures: ImageMeasures | None = None
    mode: Mode | None = None
    check_ms: float | None = None
    #: The mode whose reference view this check learned, if it learned one.
    learned: Mode | None = None
    verdicts: Mapping[Problem, Verdict] = field(default_factory=dict)
    #: The problems this check raised and cleared.
    raised: frozenset[Problem] = frozenset()
    cleared: frozenset[Problem] = frozenset()
    #: The sample's middle frame in colour as a JPEG, and its size (a judged check with snapshots on), else None.
    jpeg: bytes | None = None
    jpeg_size: tuple[int, int] | None = None

    def metrics(self) -> dict[str, MetricValue]:
        """``image_*`` metrics (see the driver's README); problem states always, measures when judged."""
        out: dict[str, MetricValue] = {
            "image_check_state": int(self.state),
            "image_check_state_name": self.state.label,
        }
        if self.check_ms is not None:
            out["image_check_ms"] = round(self.check_ms, 1)
        m = self.measures
        if m is not None:
            out["image_frames"] = m.frames
            out["image_luma"] = round(m.luma, 2)
            out["image_saturation"] = round(m.saturation, 2)
            out["image_black_pct"] = round(m.black_pct, 2)
            out["image_spatial_info"] = round(m.spatial_info, 2)
            out["image_temporal_info"] = round(m.temporal_info, 2)
            out["image_entropy"] = round(m.entropy, 4)
            out["image_frozen_pct"] = round(m.frozen_pct, 1)
            if m.blur is not None:
                out["image_blur"] = round(m.blur, 3)
            if m.view_ssim is not None:
                out["image_view_ssim"] = round(m.view_ssim, 4)
        if self.mode is not None:
            out["image_night"] = int(self.mode is Mode.NIGHT)
        for problem, active in self.problems.items():
            out[problem.value] = int(active)
        if self.error:
            out["image_check_error"] = self.error[:MAX_ERROR]
        return out


def _error_line(stderr: bytes) -> str:
    """The last error ffmpeg logged (``-loglevel level+error`` tags each line ``[error]`` or ``[fatal]``)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    tagged = [line for line in lines if "[error]" in line or "[fatal]" in line]
    last = (tagged or lines or [""])[-1]
    for tag in ("[error] ", "[fatal] "):
        last = last.replace(tag, "")
    return redact(last)


class ImageChecker:
    """Image checks of one camera (see the module docstring)."""

    def __init__(self, config: CameraConfig, thresholds: ImageCheckProfile, source: str, where: str) -> None:
        url = config.image_url
        assert url is not None, "image checks need a stream"
        self.config = config
        self.url = url
        self.thresholds = thresholds
        self.source = source
        self.where = where
        sample_frames = round(config.image_sample_s * ANALYSIS_FPS)
        self.plan = FilterPlan(thresholds.black_luma_max, thresholds.frozen_noise_db, sample_frames)
        self.min_frames = max(5, round(sample_frames * MIN_FRAMES_SHARE))
        self.states = {p: Hysteresis(thresholds.raise_after, thresholds.clear_after) for p in Problem}
        #: Why each raised problem was raised (the bad check that raised it).
        self.reasons: dict[Problem, str] = {}
        self.references = ReferenceViews(config.image_reference_dir, camera_key(url), where)
        #: The mode of the last judged picture: which reference view the next check is compared with.
        self.last_mode = Mode.DAY
        #: ``time.monotonic()`` when the last check started (after waiting for its slot).
        self.last_started: float | None = None
        self._ffmpeg: str | None = None
        self._reason = ""

    def describe_plan(self) -> str:
        c = self.config
        keep = f"reference views in {c.image_reference_dir}" if c.image_reference_dir else "reference views in memory"
        return (
            f"image checks of {redact(self.url)} every {c.image_check_interval_s:g} s (sooner, after "
            f"{c.image_confirm_s:g} s, to confirm a change): {c.ffmpeg} ({c.rtsp_transport}), "
            f"{self.plan.sample_frames} frames over {c.image_sample_s:g} s, within {c.image_timeout_s:g} s; "
            f"thresholds {self.source}; raised after {self.thresholds.raise_after}, cleared after "
            f"{self.thresholds.clear_after} checks; {keep}"
        )

    @property
    def pending(self) -> bool:
        """A problem's state has begun to change: the next check should come soon to confirm or deny it."""
        return any(state.pending for state in self.states.values())

    def problems(self) -> dict[str, str]:
        """The raised problems, by name, with the reason each was raised."""
        return {p.value: self.reasons.get(p, "") for p, state in self.states.items() if state.active}

    async def accept_view(self) -> None:
        """Forget the reference views (memory and disk) and ``view_changed``: the next sound picture becomes
        the reference. For a camera turned on purpose."""
        await asyncio.to_thread(self.references.clear)
        self.states[Problem.VIEW_CHANGED].reset()
        self.reasons.pop(Problem.VIEW_CHANGED, None)
        log.warning("%s: reference view cleared; the next sound picture becomes the new one", self.where)

    def resolve(self) -> str:
        """Look for ffmpeg (again); the reason the checks are unavailable, or "" (a change is logged once)."""
        path, reason = resolve_tool(self.config.ffmpeg, "ffmpeg")
        if reason and reason != self._reason:
            log.warning("%s: image checks unavailable: %s", self.where, reason)
        elif not reason and self._reason:
            log.info("%s: image checks available again (%s)", self.where, path)
        self._ffmpeg, self._reason = path, reason
        return reason

    async def check(self) -> ImageResult:
        """One check, when a slot is free (never raises for what the camera or ffmpeg does)."""
        async with _slots():
            self.last_started = time.monotonic()
            ts_ms = now_ms()
            if self._ffmpeg is None and self.resolve():
                return ImageResult(ts_ms, ImageCheckState.UNAVAILABLE, self._states(), self._reason)
            return await self._check(ts_ms)

    async def _check(self, ts_ms: int) -> ImageResult:
        await asyncio.to_thread(self.references.load)
        # The reference view ffmpeg reads and the frame it keeps live in a folder of the check's own, gone when
        # the check ends (left behind only by a process killed in the middle of one).
        with tempfile.TemporaryDirectory(prefix="ioc-camera-image-") as workdir:
            return await self._check_in(ts_ms, Path(workdir))

    async def _check_in(self, ts_ms: int, workdir: Path) -> ImageResult:
        assert self._ffmpeg is not None
        frame_out = workdir / "frame.png"
        snapshot_out = workdir / "snapshot.jpg"
        mode = self.last_mode
        reference = self.references.get(mode)
        ref_arg: tuple[Path, tuple[int, int]] | None = None
        if reference is not None:
            size = png_size(reference)
            assert size is not None, "only PNGs are kept"
            ref_path = workdir / "reference.png"
            await asyncio.to_thread(ref_path.write_bytes, reference)
            ref_arg = (ref_path, size)
        argv = ffmpeg_argv(
            self._ffmpeg,
            self.url,
            transport=self.config.rtsp_transport,
            # ffmpeg's own I/O timeout: past ours, so that ours decides while we live.
            io_timeout_s=2 * self.config.image_timeout_s + 1,
            plan=self.plan,
            frame_out=frame_out,
            reference=ref_arg,
            snapshot=(snapshot_out, self.config.snapshot_quality) if self.config.snapshots else None,
        )
        started = time.perf_counter()
        outcome = await self._run(argv)
        check_ms = (time.perf_counter() - started) * 1000
        if isinstance(outcome, str):
            return ImageResult(ts_ms, ImageCheckState.FAILED, self._states(), outcome, check_ms=check_ms)
        stdout, stderr = outcome
        errors = decoding_errors(stderr.decode(errors="replace"))
        if errors:
            last = redact(errors[-1])
            reason = f"{len(errors)} decoding error(s), lost or damaged packets: not judged (last: {last})"
            return ImageResult(ts_ms, ImageCheckState.FAILED, self._states(), reason, check_ms=check_ms)
        try:
            measures = measure(parse_metadata(stdout.decode(errors="replace")), self.min_frames)
        except ImageOutputError as exc:
            return ImageResult(ts_ms, ImageCheckState.FAILED, self._states(), str(exc), check_ms=check_ms)
        judgement = judge(measures, self.thresholds, mode if reference is not None else None)
        changed = {
            problem
            for problem, verdict in judgement.verdicts.items()
            if self._update(problem, verdict, judgement.reasons.get(problem, ""))
        }
        if judgement.verdicts[Problem.BLACK] is not Verdict.BAD:
            self.last_mode = judgement.mode  # a black picture has no colour to tell day from night by
        learned = await self._learn(judgement.mode, judgement.verdicts, frame_out)
        jpeg = await self._snapshot(snapshot_out) if self.config.snapshots else None
        return ImageResult(
            ts_ms,
            ImageCheckState.OK,
            self._states(),
            measures=measures,
            mode=judgement.mode,
            check_ms=check_ms,
            learned=learned,
            verdicts=judgement.verdicts,
            raised=frozenset(p for p in changed if self.states[p].active),
            cleared=frozenset(p for p in changed if not self.states[p].active),
            jpeg=jpeg[0] if jpeg else None,
            jpeg_size=jpeg[1] if jpeg else None,
        )

    async def _snapshot(self, path: Path) -> tuple[bytes, tuple[int, int]] | None:
        """The JPEG ffmpeg wrote and its size, or None when it wrote none or not a whole JPEG (logged)."""
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            log.debug("%s: no snapshot written by this check", self.where)
            return None
        size = jpeg_size(data)
        if size is None:
            log.warning("%s: the snapshot ffmpeg wrote is not a whole JPEG (%d bytes): dropped", self.where, len(data))
            return None
        return data, size

    async def _run(self, argv: list[str]) -> tuple[bytes, bytes] | str:
        """ffmpeg's stdout and stderr, or why it failed."""
        timeout = self.config.image_timeout_s
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            # Removed or made unrunnable since it was found: look again next time.
            self._ffmpeg = None
            return f"cannot run {argv[0]}: {exc.strerror or exc}"
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await proc.communicate()
        except TimeoutError:
            return f"no picture within {timeout:g} s (ffmpeg killed)"
        finally:
            if proc.returncode is None:
                await kill_and_reap(proc)
        code = proc.returncode
        if code != 0:
            status = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
            return _error_line(stderr) or f"ffmpeg exited with {status}"
        return stdout, stderr

    def _update(self, problem: Problem, verdict: Verdict, reason: str) -> bool:
        """Take one verdict; True when it raised or cleared ``problem``."""
        state = self.states[problem]
        if verdict is Verdict.BAD and not state.active:
            self.reasons[problem] = reason  # the reason of the check that raises it
        if not state.update(verdict):
            return False
        if state.active:
            log.warning("%s: %s raised: %s", self.where, problem.value, self.reasons.get(problem, ""))
        else:
            self.reasons.pop(problem, None)
            log.info("%s: %s cleared", self.where, problem.value)
        return True

    async def _learn(self, mode: Mode, verdicts: Mapping[Problem, Verdict], frame: Path) -> Mode | None:
        """Keep the sample's middle frame as the reference view of ``mode`` if there is none yet and the
        picture is sound (not black, covered, frozen or blurred)."""
        if self.references.get(mode) is not None:
            return None
        sound = all(verdicts.get(p) is Verdict.GOOD for p in Problem if p is not Problem.VIEW_CHANGED)
        if not sound:
            return None
        try:
            data = await asyncio.to_thread(frame.read_bytes)
        except OSError:
            return None  # no frame written (the sample ended early): learn next time
        if png_size(data) is None:
            return None
        await asyncio.to_thread(self.references.put, mode, data)
        log.info("%s: %s reference view learned", self.where, mode.value)
        return mode

    def _states(self) -> dict[Problem, bool]:
        return {p: state.active for p, state in self.states.items()}
