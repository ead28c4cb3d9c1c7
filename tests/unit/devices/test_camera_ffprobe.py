"""The RTSP probe without a stream: ffprobe's JSON read (table cases), the command line, and a missing ffprobe
degrading to ``rtsp_state`` ``unavailable`` with the reason (absence simulated with PATH or a bad path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.drivers.camera import CameraConfig, CameraDriver, RtspState
from devices.drivers.camera.rtsp import (
    FfprobeOutputError,
    RtspProber,
    StreamInfo,
    ffprobe_argv,
    parse_ffprobe_json,
    redact,
    resolve_ffprobe,
)
from devices.profile import load_profile


def doc(stream: dict[str, Any] | None = None, packets: list[dict[str, Any]] | None = None) -> bytes:
    base = {"codec_name": "h264", "width": 1920, "height": 1080, "avg_frame_rate": "25/1", "r_frame_rate": "25/1"}
    body: dict[str, Any] = {"streams": [{**base, **(stream or {})}]}
    if packets is not None:
        body["packets"] = packets
    return json.dumps(body).encode()


def packets(n: int, fps: float, size: int, first_without_pts: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"pts_time": f"{1 + i / fps:.6f}", "size": str(size)} for i in range(n)]
    if first_without_pts:
        out[0] = {"size": str(size)}
    return out


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (doc(), StreamInfo("h264", 1920, 1080, 25.0, None, 0)),
        # 25 packets of 5000 bytes at 25 fps: 25 frames * 40 ms = 1 s of video, 1,000,000 bits -> 1000 kbps.
        (doc(packets=packets(25, 25, 5000)), StreamInfo("h264", 1920, 1080, 25.0, 1000.0, 25)),
        # A packet without a timestamp is not counted (its time is unknown).
        (doc(packets=packets(26, 25, 5000, first_without_pts=True)), StreamInfo("h264", 1920, 1080, 25.0, 1000.0, 26)),
        # NTSC rate as a fraction.
        (doc({"avg_frame_rate": "30000/1001"}), StreamInfo("h264", 1920, 1080, 30000 / 1001, None, 0)),
        # avg unknown (0/0): the nominal rate is used.
        (doc({"avg_frame_rate": "0/0", "r_frame_rate": "15/1"}), StreamInfo("h264", 1920, 1080, 15.0, None, 0)),
        # A timestamp clock instead of a rate (90000/1) is no frame rate.
        (doc({"avg_frame_rate": "0/0", "r_frame_rate": "90000/1"}), StreamInfo("h264", 1920, 1080, None, None, 0)),
        # H.265 without a known size.
        (doc({"codec_name": "hevc", "width": 0, "height": None}), StreamInfo("hevc", None, None, 25.0, None, 0)),
        # Without a frame rate the bitrate uses the mean packet spacing: 10 packets 0.1 s apart = 1 s.
        (
            doc({"avg_frame_rate": "0/0", "r_frame_rate": "0/0"}, packets(10, 10, 1250)),
            StreamInfo("h264", 1920, 1080, None, 100.0, 10),
        ),
    ],
)
def test_ffprobe_json_is_read(stdout: bytes, expected: StreamInfo) -> None:
    got = parse_ffprobe_json(stdout)
    assert got.codec == expected.codec
    assert (got.width, got.height, got.packets) == (expected.width, expected.height, expected.packets)
    assert got.fps == pytest.approx(expected.fps)
    assert got.bitrate_kbps == pytest.approx(expected.bitrate_kbps)


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"", "no video stream"),
        (b"{", "ffprobe printed no JSON"),
        (b"[1, 2]", "no JSON object"),
        (b'{"streams": []}', "no video stream"),
        (b'{"streams": [{"width": 10}]}', "video stream without a codec"),
    ],
)
def test_ffprobe_output_without_a_stream_is_an_error(stdout: bytes, message: str) -> None:
    with pytest.raises(FfprobeOutputError, match=message):
        parse_ffprobe_json(stdout)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://ops:s3cret@10.0.0.5:554/s1: 401 Unauthorized", "rtsp://10.0.0.5:554/s1: 401 Unauthorized"),
        ("RTSPS://a@h/x and rtsp://b:c@h/y", "RTSPS://h/x and rtsp://h/y"),
        ("rtsp://h/no-credentials", "rtsp://h/no-credentials"),
    ],
)
def test_credentials_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_ffprobe_command_line() -> None:
    config = CameraConfig(
        host="h", rtsp_url="rtsp://h/s", rtsp_transport="udp", rtsp_timeout_s=2, rtsp_sample_packets=9
    )
    argv = ffprobe_argv("/usr/bin/ffprobe", config)
    assert argv[0] == "/usr/bin/ffprobe"
    assert argv[-1] == "rtsp://h/s"
    assert argv[argv.index("-rtsp_transport") + 1] == "udp"
    assert argv[argv.index("-read_intervals") + 1] == "%+#9"
    # ffprobe's own timeout (5 s in microseconds) outlasts ours, which kills it first.
    assert argv[argv.index("-timeout") + 1] == "5000000"
    auto = ffprobe_argv("ffprobe", CameraConfig(host="h", rtsp_url="rtsp://h/s"))
    assert "-rtsp_transport" not in auto


def test_resolve_ffprobe(tmp_path: Path) -> None:
    assert resolve_ffprobe(str(tmp_path / "nope")) == (
        None,
        f"ffprobe not found at {tmp_path / 'nope'} (install ffmpeg, or set the ffprobe option)",
    )
    plain = tmp_path / "ffprobe"
    plain.write_text("#!/bin/sh\n")
    assert resolve_ffprobe(str(plain)) == (None, f"ffprobe at {plain} is not executable")
    plain.chmod(0o755)
    assert resolve_ffprobe(str(plain)) == (str(plain), "")


async def poll_rtsp(config: CameraConfig) -> dict[str, Any]:
    driver = CameraDriver(config, load_profile("camera-onvif-generic"))
    await driver.open()
    try:
        (reading,) = await driver.poll()
    finally:
        await driver.close()
    return dict(reading.metrics)


async def test_ffprobe_missing_at_its_configured_path_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    config = CameraConfig(host="h", onvif_port=0, rtsp_url="rtsp://127.0.0.1:9/s", ffprobe=str(tmp_path / "ffprobe"))
    metrics = await poll_rtsp(config)
    assert metrics == {
        "rtsp_state": int(RtspState.UNAVAILABLE),
        "rtsp_state_name": "unavailable",
        "rtsp_error": f"ffprobe not found at {tmp_path / 'ffprobe'} (install ffmpeg, or set the ffprobe option)",
    }


async def test_ffprobe_not_on_path_is_unavailable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without ffmpeg on it
    config = CameraConfig(host="h", onvif_port=0, rtsp_url="rtsp://127.0.0.1:9/s")
    metrics = await poll_rtsp(config)
    assert metrics["rtsp_state_name"] == "unavailable"
    assert "rtsp_up" not in metrics  # unknown, not "down"
    assert metrics["rtsp_error"] == (
        "ffprobe not found: 'ffprobe' is not on PATH (install ffmpeg, or set the ffprobe option)"
    )
    warnings = [r for r in caplog.records if "RTSP probe unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, although open() and poll() both looked


async def test_an_ffprobe_that_cannot_be_run_is_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "ffprobe"
    broken.write_text("not a program\n")
    broken.chmod(0o755)  # executable bit, but no interpreter line: exec fails with ENOEXEC
    config = CameraConfig(host="h", onvif_port=0, rtsp_url="rtsp://127.0.0.1:9/s", ffprobe=str(broken))
    metrics = await poll_rtsp(config)
    assert metrics["rtsp_state_name"] == "unavailable"
    assert str(metrics["rtsp_error"]).startswith(f"cannot run {broken}: ")


async def test_ffprobe_found_again_after_it_was_missing(tmp_path: Path) -> None:
    path = tmp_path / "ffprobe"
    config = CameraConfig(host="h", onvif_port=0, rtsp_url="rtsp://127.0.0.1:9/s", ffprobe=str(path))
    prober = RtspProber(config, "camera h")
    assert (await prober.probe()).state is RtspState.UNAVAILABLE
    path.write_text('#!/bin/sh\necho "$0: Connection refused" >&2\nexit 1\n')  # stands in for an installed ffprobe
    path.chmod(0o755)
    result = await prober.probe()
    assert result.state is RtspState.DOWN
    assert result.error == f"{path}: Connection refused"


async def test_no_rtsp_url_is_unavailable_and_says_so() -> None:
    prober = RtspProber(CameraConfig(host="h"), "camera h")
    result = await prober.probe()
    assert result.metrics() == {
        "rtsp_state": 2,
        "rtsp_state_name": "unavailable",
        "rtsp_error": "no rtsp_url configured",
    }


async def test_the_reason_for_no_stream_can_be_given() -> None:
    prober = RtspProber(CameraConfig(host="h", no_rtsp_reason="thermal camera, no RTSP"), "camera h")
    assert (await prober.probe()).error == "thermal camera, no RTSP"
