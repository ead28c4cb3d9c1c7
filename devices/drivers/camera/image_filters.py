"""The image check's ffmpeg command, and what its filters print turned into measures.

One ffmpeg run per check reads the stream for :data:`ANALYSIS_FPS` x ``image_sample_s`` frames and puts each
sampled frame through ffmpeg's own filters (FFmpeg Filters Documentation, ffmpeg 5.1):

- ``select`` keeps at most :data:`ANALYSIS_FPS` frames a second, whatever the camera's rate, and ``setpts``
  numbers them (frame n at n / 5 s): the stream's own timestamps may jump (a camera's clock reset, a
  simulator's clip starting over), the frame count does not;
- ``scale`` to :data:`ANALYSIS_WIDTH` pixels wide, so one set of thresholds fits every camera's sub-stream;
- ``signalstats``: mean luma ``YAVG`` and mean saturation ``SATAVG`` (0 when the picture has no colour: an
  infrared camera at night);
- ``blackframe`` with ``amount=0``: ``pblack``, the share of pixels darker than ``black_luma_max``, on every
  frame (``blackdetect`` gives intervals only);
- ``freezedetect``: when the picture stops changing by more than ``frozen_noise_db`` for 1 s (5 frames), the
  start of the freeze, and its end if it ends within the sample;
- ``siti`` (ITU-T P.910): spatial information ``si`` (how much edge detail) and temporal information ``ti``;
- ``entropy``: the normalised entropy of the luma histogram (0 flat .. 1 every level equally used);
- ``blurdetect``: the width of the picture's edges (larger is blurrier; none at all on a flat picture);
- ``ssim`` against the camera's reference view (a grey picture :data:`SSIM_WIDTH` pixels wide), when the driver
  has one for the current mode (day or night).

The ``metadata`` filter prints every frame's values on stdout (``frame:N pts:N pts_time:T`` then
``lavfi.key=value`` lines); a second output keeps one grey frame from the middle of the sample, the candidate
reference view. Errors go to stderr, each line tagged with its level (``-loglevel level+error``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Frames analysed per second of stream.
ANALYSIS_FPS: Final = 5
#: Width the frames are scaled to before they are measured (height keeps the aspect ratio).
ANALYSIS_WIDTH: Final = 320
#: Width of the grey frames compared with the reference view: small, so that the structure of the view counts
#: and moving details (cars, people, leaves) count little.
SSIM_WIDTH: Final = 160
#: A freeze shorter than this (seconds of sampled frames) is not one: a scene may hold still for a moment.
FREEZE_MIN_S: Final = 1.0

_FRAME: Final = "frame:"
_KEYS: Final = {
    "luma": "lavfi.signalstats.YAVG",
    "saturation": "lavfi.signalstats.SATAVG",
    "black_pct": "lavfi.blackframe.pblack",
    "spatial_info": "lavfi.siti.si",
    "temporal_info": "lavfi.siti.ti",
    "entropy": "lavfi.entropy.normalized_entropy.normal.Y",
    "blur": "lavfi.blur",
}
_SSIM_KEYS: Final = ("lavfi.ssim.Y", "lavfi.ssim.All")
#: The decoders of the streams cameras send (their log lines are named after them).
VIDEO_DECODERS: Final = frozenset({"h264", "hevc", "mjpeg", "mpeg4"})
#: ``[h264 @ 0x55bd93f46dc0] [error] error while decoding MB 4 0``
_LOGGED_ERROR: Final = re.compile(r"^\[(?P<context>[\w-]+) @ 0x[0-9a-fA-F]+\] \[error\] (?P<message>.*)$")
_FREEZE_START: Final = "lavfi.freezedetect.freeze_start"
_FREEZE_END: Final = "lavfi.freezedetect.freeze_end"


class ImageOutputError(Exception):
    """ffmpeg ran but what it printed does not describe enough frames to judge the picture."""


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """The parts of the command that come from the profile (fixed for a driver's life)."""

    black_luma_max: int
    frozen_noise_db: float
    sample_frames: int


@dataclass(frozen=True, slots=True)
class ImageMeasures:
    """One check's figures: medians over the sampled frames (robust to one odd frame), and the share of the
    sample inside a freeze."""

    frames: int
    luma: float
    saturation: float
    black_pct: float
    spatial_info: float
    temporal_info: float
    entropy: float
    #: None when no frame had an edge to measure (a flat picture).
    blur: float | None
    frozen_pct: float
    #: None without a reference view to compare with.
    view_ssim: float | None


def filter_graph(plan: FilterPlan, reference_size: tuple[int, int] | None, *, snapshot: bool = False) -> str:
    """The ``-filter_complex`` text: outputs ``[out]`` (measured frames) and ``[keep]`` (one grey frame); with
    ``snapshot`` also ``[snap]``, the same middle frame in colour, :data:`ANALYSIS_WIDTH` pixels wide, in the
    full-range YUV a JPEG holds (``yuvj420p``).

    With ``reference_size`` the second input (the reference view, a grey PNG of that size) is compared with
    each frame; the frame is scaled to exactly that size (a camera whose aspect changed no longer matches).
    """
    middle = plan.sample_frames // 2
    # The snapshot is split off the frames the check measures: no second decoding, no second stream.
    snap = f"split[v][s];[s]trim=start_frame={middle},format=yuvj420p[snap];[v]" if snapshot else ""
    measured = (
        # One frame every 1/ANALYSIS_FPS s at most (abs: a timestamp that steps back must not stop the selection).
        f"[0:v]select='isnan(prev_selected_t)+gte(abs(t-prev_selected_t)\\,{0.95 / ANALYSIS_FPS:.2f})',"
        f"setpts=N/({ANALYSIS_FPS}*TB),settb=1/{ANALYSIS_FPS},"
        f"scale={ANALYSIS_WIDTH}:-2,format=yuv420p,{snap}"
        f"signalstats,blackframe=amount=0:threshold={plan.black_luma_max},"
        f"freezedetect=n={plan.frozen_noise_db:g}dB:d={FREEZE_MIN_S:g},siti,entropy,blurdetect,"
    )
    small = f"scale={reference_size[0]}:{reference_size[1]}" if reference_size else f"scale={SSIM_WIDTH}:-2"
    compare = f"[1:v]format=gray,settb=1/{ANALYSIS_FPS}[ref];[m][ref]ssim," if reference_size else "[m]"
    return (
        f"{measured}{small},format=gray,split[m][k];"
        f"{compare}metadata=mode=print:file=-[out];"
        f"[k]trim=start_frame={middle}[keep]"
    )


def ffmpeg_argv(
    ffmpeg: str,
    url: str,
    *,
    transport: str,
    io_timeout_s: float,
    plan: FilterPlan,
    frame_out: Path,
    reference: tuple[Path, tuple[int, int]] | None,
    snapshot: tuple[Path, int] | None = None,
) -> list[str]:
    """The command of one check. ``frame_out``: where the middle frame is written (PNG); ``reference``: the
    reference view's PNG and its size, or None; ``snapshot``: where the middle frame in colour is written as a
    JPEG, and its quality (ffmpeg's ``-q:v``, 2 best .. 31 smallest), or None for no snapshot."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+error"]
    # One decoding and one filtering thread: a site box runs many checks, each small; threads would only add
    # their overhead (and a burst of them per check).
    argv += ["-threads", "1"]
    if transport != "auto":
        argv += ["-rtsp_transport", transport]
    # ffmpeg's own socket timeout (microseconds), so it ends by itself should we die; ours is the one that acts.
    argv += ["-timeout", str(math.ceil(io_timeout_s * 1_000_000)), "-an", "-sn", "-dn", "-i", url]
    if reference is not None:
        argv += ["-i", str(reference[0])]
    graph = filter_graph(plan, reference[1] if reference else None, snapshot=snapshot is not None)
    argv += ["-filter_threads", "1", "-filter_complex", graph]
    argv += ["-map", "[out]", "-frames:v", str(plan.sample_frames), "-f", "null", "-"]
    argv += ["-map", "[keep]", "-frames:v", "1", "-update", "1", "-y", str(frame_out)]
    if snapshot is not None:
        path, quality = snapshot
        argv += ["-map", "[snap]", "-frames:v", "1", "-update", "1", "-c:v", "mjpeg", "-q:v", str(quality)]
        argv += ["-y", str(path)]
    return argv


def decoding_errors(stderr: str) -> list[str]:
    """The errors a video decoder logged (``-loglevel level+error`` tags them ``[error]``, after the decoder's
    name: ``[h264 @ 0x...]``) in a run that otherwise ended well, for packets lost or damaged on the way ("error
    while decoding MB 31 16", "concealing 160 DC, 160 AC, 160 MV errors in I frame"). A sample with any is not
    judged: a damaged frame holds until the next keyframe, and its edges, histogram and stillness are the
    damage's, not the scene's. Other errors of a run that ended well were overcome (``[udp @ 0x...] bind failed:
    Address already in use``: the RTP port pair taken, ffmpeg tried another)."""
    errors = []
    for line in stderr.splitlines():
        found = _LOGGED_ERROR.match(line)
        if found is not None and found["context"] in VIDEO_DECODERS:
            errors.append(found["message"].strip())
    return errors


def parse_metadata(text: str) -> list[dict[str, str]]:
    """The ``metadata`` filter's print: one dict of ``lavfi.*`` values per frame, ``pts_time`` included."""
    frames: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith(_FRAME):
            # "frame:3    pts:3       pts_time:0.6"
            fields = dict(part.split(":", 1) for part in line.split() if ":" in part)
            frames.append({"pts_time": fields.get("pts_time", "")})
        elif frames and line.startswith("lavfi.") and "=" in line:
            key, _, value = line.partition("=")
            frames[-1][key] = value.strip()
    return frames


def _number(value: str | None) -> float | None:
    """A finite float, or None for a missing value, ``nan``, ``-nan`` or ``inf``."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _median(frames: Sequence[Mapping[str, str]], key: str) -> float | None:
    values = [v for v in (_number(f.get(key)) for f in frames) if v is not None]
    return statistics.median(values) if values else None


def _frozen_pct(frames: Sequence[Mapping[str, str]]) -> float:
    """The share of the sample inside freezes. A freeze is announced (``freeze_start``, backdated to its first
    frame) once it has lasted :data:`FREEZE_MIN_S`, and closed by ``freeze_end``; one still on runs to the end."""
    frame_s = 1 / ANALYSIS_FPS
    times = [_number(f.get("pts_time")) for f in frames]
    known = [t for t in times if t is not None]
    if not known:
        return 0.0
    first, last = min(known), max(known)
    span = last - first + frame_s
    frozen = 0.0
    start: float | None = None
    for frame in frames:
        begun = _number(frame.get(_FREEZE_START))
        ended = _number(frame.get(_FREEZE_END))
        if begun is not None:
            start = begun
        if ended is not None and start is not None:
            frozen += max(0.0, ended - start)
            start = None
    if start is not None:
        frozen += max(0.0, last + frame_s - start)
    return round(min(100.0, 100 * frozen / span), 1)


def measure(frames: Sequence[Mapping[str, str]], min_frames: int) -> ImageMeasures:
    """The check's measures from :func:`parse_metadata`'s frames; :class:`ImageOutputError` below ``min_frames``
    frames or without the filters' values."""
    if len(frames) < min_frames:
        raise ImageOutputError(f"{len(frames)} frame(s) analysed, {min_frames} needed")
    values = {name: _median(frames, key) for name, key in _KEYS.items()}
    missing = sorted(name for name, value in values.items() if value is None and name != "blur")
    if missing:
        raise ImageOutputError(f"ffmpeg printed no {', '.join(missing)}")
    ssim = next((m for m in (_median(frames, key) for key in _SSIM_KEYS) if m is not None), None)

    def get(name: str) -> float:
        value = values[name]
        assert value is not None
        return value

    return ImageMeasures(
        frames=len(frames),
        luma=get("luma"),
        saturation=get("saturation"),
        black_pct=get("black_pct"),
        spatial_info=get("spatial_info"),
        temporal_info=get("temporal_info"),
        entropy=get("entropy"),
        blur=values["blur"],
        frozen_pct=_frozen_pct(frames),
        view_ssim=ssim,
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (PNG specification, 11.2.2), or None if ``data`` is no PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return (width, height) if width > 0 and height > 0 else None


#: JPEG markers (ITU-T T.81, B.1.1.3 and table B.1): start and end of image, and the start-of-frame markers
#: that carry the picture's size (SOF0..SOF15 but DHT C4, JPG C8 and DAC CC).
_SOI: Final = b"\xff\xd8"
_EOI: Final = b"\xff\xd9"
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS: Final = 0xDA


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's start-of-frame segment (ITU-T T.81, B.2.2), or None if ``data`` is not a
    whole JPEG (SOI first, EOI last, a frame header before the first scan)."""
    if len(data) < 4 or not data.startswith(_SOI) or not data.endswith(_EOI):
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte before a marker (B.1.1.2)
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF and length >= 7 and at + 9 <= len(data):
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return (width, height) if width > 0 and height > 0 else None
        if marker == _SOS or length < 2:
            break  # a scan before any frame header, or a broken segment
        at += 2 + length
    return None
