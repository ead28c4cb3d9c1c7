"""The camera's snapshot: the image check's command with the JPEG output, and reading a JPEG's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.drivers.camera import CameraConfig
from devices.drivers.camera.image_filters import FilterPlan, ffmpeg_argv, filter_graph, jpeg_size

PLAN = FilterPlan(black_luma_max=32, frozen_noise_db=-60, sample_frames=15)


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def jpeg(width: int, height: int, *, sof: int = 0xC0) -> bytes:
    """A JPEG's structure (ITU-T T.81, B.2): SOI, APP0 (JFIF), DQT, a frame header, a scan, EOI."""
    frame_header = bytes([8]) + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    return (
        b"\xff\xd8"
        + segment(0xE0, b"JFIF\x00\x01\x02\x00\x00\x01\x00\x01\x00\x00")
        + segment(0xDB, bytes(65))
        + segment(sof, frame_header)
        + segment(0xDA, bytes([1, 1, 0, 0, 63, 0]))
        + b"\x12\x34\x56"
        + b"\xff\xd9"
    )


SIZES: dict[str, tuple[bytes, tuple[int, int] | None]] = {
    "baseline 320x240": (jpeg(320, 240), (320, 240)),
    "progressive 320x180": (jpeg(320, 180, sof=0xC2), (320, 180)),
    "a fill byte before a marker": (b"\xff\xd8\xff" + jpeg(320, 240)[2:], (320, 240)),
    "no EOI": (jpeg(320, 240)[:-2], None),
    "no SOI": (jpeg(320, 240)[2:], None),
    "a scan before any frame header": (b"\xff\xd8" + segment(0xDA, bytes(6)) + b"\xff\xd9", None),
    "a zero side": (jpeg(0, 240), None),
    "a segment length under 2": (b"\xff\xd8\xff\xe0\x00\x01\xff\xd9", None),
    "a frame header cut short": (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\xff\xd9", None),
    "a PNG": (b"\x89PNG\r\n\x1a\n" + bytes(20), None),
}


@pytest.mark.parametrize("case", SIZES)
def test_jpeg_size(case: str) -> None:
    data, expected = SIZES[case]
    assert jpeg_size(data) == expected


def test_the_snapshot_is_split_off_the_measured_frames() -> None:
    graph = filter_graph(PLAN, None, snapshot=True)
    assert graph == (
        "[0:v]select='isnan(prev_selected_t)+gte(abs(t-prev_selected_t)\\,0.19)',setpts=N/(5*TB),settb=1/5,"
        "scale=320:-2,format=yuv420p,split[v][s];[s]trim=start_frame=7,format=yuvj420p[snap];"
        "[v]signalstats,blackframe=amount=0:threshold=32,freezedetect=n=-60dB:d=1,siti,"
        "entropy,blurdetect,scale=160:-2,format=gray,split[m][k];[m]metadata=mode=print:file=-[out];"
        "[k]trim=start_frame=7[keep]"
    )
    # Without it, the graph is the image check's own, unchanged.
    assert "[snap]" not in filter_graph(PLAN, None)


def test_the_command_writes_the_snapshot_at_its_quality() -> None:
    argv = ffmpeg_argv(
        "ffmpeg",
        "rtsp://cam/s2",
        transport="udp",
        io_timeout_s=31,
        plan=PLAN,
        frame_out=Path("/tmp/w/frame.png"),
        reference=None,
        snapshot=(Path("/tmp/w/snapshot.jpg"), 4),
    )
    assert argv[argv.index("-filter_complex") + 1] == filter_graph(PLAN, None, snapshot=True)
    assert argv[argv.index("/tmp/w/frame.png") + 1 :] == [
        *("-map", "[snap]", "-frames:v", "1", "-update", "1", "-c:v", "mjpeg", "-q:v", "4"),
        *("-y", "/tmp/w/snapshot.jpg"),
    ]


def test_snapshot_options() -> None:
    config = CameraConfig(host="cam", rtsp_url="rtsp://cam/s1")
    assert (config.snapshots, config.snapshot_quality) == (True, 4)
    for bad in (1, 32):
        with pytest.raises(ValueError, match="snapshot_quality"):
            CameraConfig(host="cam", rtsp_url="rtsp://cam/s1", snapshot_quality=bad)
