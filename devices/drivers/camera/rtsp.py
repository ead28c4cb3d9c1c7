"""RTSP stream probe: ``ffprobe`` opens the stream, reads a few video packets, and says what it saw.

One ffprobe run per poll, as an asyncio subprocess (the event loop never blocks), killed and reaped when it
outlives ``rtsp_timeout_s`` or when the poll is cancelled. From its JSON: the codec, width and height of the
first video stream; the frame rate from the stream's average (else nominal) rate; the bitrate from the sizes
of ``rtsp_sample_packets`` packets over the time their timestamps span.

States (``rtsp_state`` / ``rtsp_state_name``): ``up`` (a video stream was read), ``down`` (the camera refused,
had no stream, or sent nothing in time: ``rtsp_error`` says which), ``unavailable`` (the probe could not run:
no ``rtsp_url``, or no ``ffprobe`` on this host, which is optional; ``rtsp_error`` says which). URL
credentials never appear in a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devices.driver import MetricValue, StateCode
from devices.drivers.camera.config import CameraConfig

log = logging.getLogger(__name__)

#: Reasons are cut to this length.
MAX_ERROR: Final = 300
#: A frame rate above this is a timestamp clock (90000/1), not a frame rate.
MAX_FPS: Final = 300.0
#: How long reaping a killed ffprobe may take before we give up on it.
REAP_TIMEOUT_S: Final = 5.0
_USERINFO: Final = re.compile(r"(?i)\b(rtsps?://)[^/@\s]*@")


class RtspState(StateCode):
    """Stream state, as ``rtsp_state`` (code) and ``rtsp_state_name``."""

    UP = 0
    DOWN = 1
    UNAVAILABLE = 2


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What ffprobe saw of the first video stream."""

    codec: str
    width: int | None
    height: int | None
    fps: float | None
    bitrate_kbps: float | None
    packets: int


@dataclass(frozen=True, slots=True)
class RtspResult:
    """The outcome of one probe."""

    state: RtspState
    error: str = ""
    stream: StreamInfo | None = None
    probe_ms: float | None = None

    def metrics(self) -> dict[str, MetricValue]:
        """``rtsp_*`` metrics: the state always (``rtsp_up`` only when a probe ran); stream facts when up."""
        out: dict[str, MetricValue] = {"rtsp_state": int(self.state), "rtsp_state_name": self.state.label}
        if self.state is not RtspState.UNAVAILABLE:
            out["rtsp_up"] = int(self.state is RtspState.UP)
        if self.probe_ms is not None:
            out["rtsp_probe_ms"] = round(self.probe_ms, 3)
        if self.stream is not None:
            out["rtsp_codec"] = self.stream.codec
            if self.stream.width is not None:
                out["rtsp_width"] = self.stream.width
            if self.stream.height is not None:
                out["rtsp_height"] = self.stream.height
            if self.stream.fps is not None:
                out["rtsp_fps"] = round(self.stream.fps, 3)
            if self.stream.bitrate_kbps is not None:
                out["rtsp_bitrate_kbps"] = round(self.stream.bitrate_kbps, 1)
        if self.error:
            out["rtsp_error"] = self.error[:MAX_ERROR]
        return out


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` of every rtsp URL removed."""
    return _USERINFO.sub(r"\1", text)


def ffprobe_argv(ffprobe: str, config: CameraConfig) -> list[str]:
    """The ffprobe command line of one probe (``rtsp_url`` must be set)."""
    assert config.rtsp_url is not None
    argv = [ffprobe, "-hide_banner", "-v", "error"]
    if config.rtsp_transport != "auto":
        argv += ["-rtsp_transport", config.rtsp_transport]
    argv += [
        # ffprobe's own socket timeout (microseconds), so that it ends by itself if we die meanwhile. Longer
        # than ours: while we live, our timeout decides (and kills it).
        "-timeout",
        str(math.ceil((2 * config.rtsp_timeout_s + 1) * 1_000_000)),
        "-select_streams",
        "v:0",
        "-read_intervals",
        f"%+#{config.rtsp_sample_packets}",
        "-show_entries",
        "stream=codec_name,width,height,avg_frame_rate,r_frame_rate:packet=size,pts_time,dts_time",
        "-of",
        "json",
        config.rtsp_url,
    ]
    return argv


def _rate(text: Any) -> float | None:
    """``"15/1"`` -> 15.0; ``"0/0"``, junk, or something above :data:`MAX_FPS` -> None."""
    if not isinstance(text, str) or "/" not in text:
        return None
    num, _, den = text.partition("/")
    try:
        value = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return None
    return value if 0 < value <= MAX_FPS and math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _bitrate_kbps(packets: Sequence[Mapping[str, Any]], fps: float | None) -> float | None:
    """Bits of the packets over the span of their timestamps plus one frame (each packet is one frame)."""
    times: list[float] = []
    bits = 0
    for packet in packets:
        size = _float(packet.get("size"))
        stamp = _float(packet.get("pts_time", packet.get("dts_time")))
        if size is None or stamp is None:
            continue
        times.append(stamp)
        bits += int(size) * 8
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    if span <= 0:
        return None
    frame = 1 / fps if fps else span / (len(times) - 1)
    return bits / (span + frame) / 1000


class FfprobeOutputError(Exception):
    """ffprobe exited normally but its output does not describe a video stream."""


def parse_ffprobe_json(stdout: bytes) -> StreamInfo:
    """Read ffprobe's JSON; :class:`FfprobeOutputError` naming what is missing."""
    try:
        doc = json.loads(stdout or b"{}")
    except ValueError:
        raise FfprobeOutputError("ffprobe printed no JSON") from None
    if not isinstance(doc, dict):
        raise FfprobeOutputError("ffprobe printed no JSON object")
    streams = doc.get("streams")
    if not isinstance(streams, list) or not streams or not isinstance(streams[0], dict):
        raise FfprobeOutputError("no video stream")
    stream = streams[0]
    codec = stream.get("codec_name")
    if not isinstance(codec, str) or not codec:
        raise FfprobeOutputError("video stream without a codec")
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    packets = doc.get("packets")
    packet_list = [p for p in packets if isinstance(p, dict)] if isinstance(packets, list) else []
    return StreamInfo(
        codec=codec[:64],
        width=_int(stream.get("width")),
        height=_int(stream.get("height")),
        fps=fps,
        bitrate_kbps=_bitrate_kbps(packet_list, fps),
        packets=len(packet_list),
    )


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return redact(lines[-1]) if lines else ""


def resolve_tool(name: str, option: str) -> tuple[str | None, str]:
    """``(path, "")`` when the ffmpeg tool ``name`` (set by the driver option ``option``: ``ffprobe`` or
    ``ffmpeg``) can be run, else ``(None, reason)``."""
    if os.sep in name:
        path = Path(name)
        if not path.is_file():
            return None, f"{option} not found at {name} (install ffmpeg, or set the {option} option)"
        if not os.access(path, os.X_OK):
            return None, f"{option} at {name} is not executable"
        return str(path), ""
    found = shutil.which(name)
    if found is None:
        return None, f"{option} not found: {name!r} is not on PATH (install ffmpeg, or set the {option} option)"
    return found, ""


def resolve_ffprobe(name: str) -> tuple[str | None, str]:
    """``(path, "")`` when ffprobe can be run, else ``(None, reason)``."""
    return resolve_tool(name, "ffprobe")


class RtspProber:
    """Probes one camera's stream (see the module docstring)."""

    def __init__(self, config: CameraConfig, where: str) -> None:
        self.config = config
        self.where = where
        self._ffprobe: str | None = None
        self._reason = ""

    def resolve(self) -> str:
        """Look for ffprobe (again); the reason the probe is unavailable, or "" when it can run.

        A change (ffprobe gone, ffprobe back) is logged once; a missing ``rtsp_url`` is a choice, not logged.
        """
        if self.config.rtsp_url is None:
            path, reason = None, self.config.no_rtsp_reason or "no rtsp_url configured"
        else:
            path, reason = resolve_ffprobe(self.config.ffprobe)
            if reason and reason != self._reason:
                log.warning("%s: RTSP probe unavailable: %s", self.where, reason)
            elif not reason and self._reason:
                log.info("%s: RTSP probe available again (%s)", self.where, path)
        self._ffprobe, self._reason = path, reason
        return reason

    async def probe(self) -> RtspResult:
        """Run ffprobe once (never raises for what the camera or ffprobe does)."""
        if self._ffprobe is None and self.resolve():
            return RtspResult(RtspState.UNAVAILABLE, self._reason)
        assert self._ffprobe is not None
        argv = ffprobe_argv(self._ffprobe, self.config)
        timeout = self.config.rtsp_timeout_s
        started = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            # Removed or made unrunnable since it was found: unavailable, and look again next time.
            self._ffprobe = None
            self._reason = f"cannot run {argv[0]}: {exc.strerror or exc}"
            log.warning("%s: RTSP probe unavailable: %s", self.where, self._reason)
            return RtspResult(RtspState.UNAVAILABLE, self._reason)
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await proc.communicate()
        except TimeoutError:
            ms = (time.perf_counter() - started) * 1000
            return RtspResult(RtspState.DOWN, f"no stream within {timeout:g} s (ffprobe killed)", None, ms)
        finally:
            if proc.returncode is None:
                await kill_and_reap(proc)
        ms = (time.perf_counter() - started) * 1000
        code = proc.returncode
        if code != 0:
            status = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
            reason = _last_line(stderr) or f"ffprobe exited with {status}"
            return RtspResult(RtspState.DOWN, reason, None, ms)
        try:
            info = parse_ffprobe_json(stdout)
        except FfprobeOutputError as exc:
            detail = _last_line(stderr)
            return RtspResult(RtspState.DOWN, f"{exc}{f': {detail}' if detail else ''}", None, ms)
        return RtspResult(RtspState.UP, "", info, ms)


async def kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL and reap, even while the surrounding task is being cancelled (ffprobe and ffmpeg alike)."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError):
        # shield: a cancelled poll must still reap its child, or it stays a zombie.
        await asyncio.shield(asyncio.wait_for(proc.wait(), REAP_TIMEOUT_S))
