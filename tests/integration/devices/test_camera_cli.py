"""``ioc sim camera``: one JSON line with the endpoints, the cameras answer on them, SIGTERM stops everything.

Run as a child process, as ``ioc demo`` and an operator run it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from devices.drivers.camera import CameraConfig, CameraDriver
from devices.drivers.camera.image_check import ImageChecker
from devices.drivers.camera.image_profile import ImageCheckProfile
from devices.profile import load_profile

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[3]


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ioc.cli", "sim", "camera", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        assert proc.stderr is not None
        pytest.fail(f"no JSON line; status {proc.returncode}; stderr: {proc.stderr.read()}")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def poll(options: dict[str, Any]) -> dict[str, Any]:
    driver = CameraDriver(CameraConfig(**options), load_profile("camera-onvif-generic"))
    await driver.open()
    try:
        (reading,) = await driver.poll()
    finally:
        await driver.close()
    return dict(reading.metrics)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def vlc_pids_serving(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"vlc" in cmdline.split(b"\0")[0] and alive(int(entry.name)):
                conf = next((a for a in cmdline.split(b"\0") if a.endswith(b".vlm")), None)
                if conf is not None and f":{port}/".encode() in Path(conf.decode()).read_bytes():
                    pids.append(int(entry.name))
    return pids


def vlc_left_after(port: int, timeout_s: float) -> list[int]:
    """VLC processes still serving ``port`` once they had ``timeout_s`` to go (nothing else runs meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while vlc_pids_serving(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return vlc_pids_serving(port)


async def test_two_cameras_answer_on_the_printed_endpoints_and_sigterm_stops_all() -> None:
    proc, described = start("--count", "2", "--username", "ops", "--password", "pw-1")
    try:
        assert described["rtsp"]["available"] is True
        assert [c["name"] for c in described["cameras"]] == ["cam-1", "cam-2"]
        rtsp_port = int(described["cameras"][0]["rtsp_url"].rsplit(":", 1)[1].split("/")[0])
        assert len(vlc_pids_serving(rtsp_port)) == 1  # one VLC for both streams
        for camera in described["cameras"]:
            assert camera["options"]["username"] == "ops"
            metrics = await poll(camera["options"])
            assert metrics["onvif_state_name"] == "up_with_auth"
            assert metrics["rtsp_state_name"] == "up"
            assert (metrics["rtsp_codec"], metrics["rtsp_width"], metrics["rtsp_height"]) == ("h264", 320, 240)
    finally:
        status = stop(proc)
    assert status == 0
    assert vlc_left_after(rtsp_port, 5.0) == []


async def test_without_vlc_the_cameras_run_and_the_line_says_why_there_is_no_stream(tmp_path: Path) -> None:
    proc, described = start("--cvlc", str(tmp_path / "cvlc"), "--no-auth")
    try:
        reason = described["rtsp"]["reason"]
        assert described["rtsp"]["available"] is False
        assert reason == (
            f"RTSP server unavailable: '{tmp_path / 'cvlc'}' not found (Debian packages vlc-bin, vlc-plugin-base)"
        )
        (camera,) = described["cameras"]
        assert camera["rtsp_url"] is None
        metrics = await poll(camera["options"])
        assert metrics["onvif_state_name"] == "up_without_auth"
        assert metrics["rtsp_state_name"] == "unavailable"
        assert metrics["rtsp_error"] == reason
    finally:
        assert stop(proc) == 0


def test_no_rtsp_and_a_bad_count() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "sim", "camera", "--no-rtsp", "--duration", "0.2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    described = json.loads(done.stdout)
    assert described["rtsp"] == {"available": False, "reason": "RTSP server not requested"}
    bad = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "sim", "camera", "--count", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "ioc sim camera: count must be 1..100, not 0" in bad.stderr


async def image_check(options: dict[str, Any]) -> dict[str, Any]:
    """One image check of the camera's stream (measures only: the hysteresis is not under test here)."""
    config = CameraConfig(**options, image_sample_s=2, image_timeout_s=8)
    checker = ImageChecker(config, ImageCheckProfile(), "defaults", "camera test")
    return dict((await checker.check()).metrics())


def wait_for_line(stream: IO[str], needle: str, timeout_s: float = 20) -> str:
    """The first line of ``stream`` (a child's stderr) containing ``needle``; fails at EOF or past the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if needle in line:
            return line
    pytest.fail(f"no line with {needle!r}")


def start_with_stdin(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ioc.cli", "sim", "camera", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_a_picture_at_start_and_pictures_on_command_from_stdin() -> None:
    proc = start_with_stdin("--count", "2", "--picture", "cam-2=black", "--commands")
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        described = json.loads(proc.stdout.readline())
        one, two = (camera["options"] for camera in described["cameras"])
        black, good = await asyncio.gather(image_check(two), image_check(one))
        assert black["image_black_pct"] == 100
        assert good["image_black_pct"] == 0

        proc.stdin.write("picture cam-2 covered\npicture cam-9 black\npicture cam-1 sepia\n")
        proc.stdin.flush()
        assert "camera cam-2 now shows covered" in await asyncio.to_thread(wait_for_line, proc.stderr, "now shows")
        refused = await asyncio.to_thread(wait_for_line, proc.stderr, "cam-9")
        assert "command 'picture cam-9 black' refused: no camera 'cam-9'" in refused
        refused = await asyncio.to_thread(wait_for_line, proc.stderr, "sepia")
        assert "command 'picture cam-1 sepia' refused: picture 'cam-1=sepia': CAMERA=PICTURE, PICTURE one of" in refused
        covered = await image_check(two)
        assert covered["image_black_pct"] < 98
        assert covered["image_spatial_info"] < 12
    finally:
        proc.stdin.close()
        assert stop(proc) == 0


def test_a_bad_picture_argument_is_refused_naming_it() -> None:
    for args, message in (
        (["--picture", "cam-1=sepia"], "ioc sim camera: --picture 'cam-1=sepia': CAMERA=PICTURE, PICTURE one of good,"),
        (["--picture", "cam-3=black"], "ioc sim camera: --picture: no camera 'cam-3' (cameras: cam-1)"),
        (["--no-rtsp", "--picture", "cam-1=black"], "ioc sim camera: --picture needs the RTSP server:"),
    ):
        bad = subprocess.run(
            [sys.executable, "-m", "ioc.cli", "sim", "camera", *args, "--duration", "0.2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode == 2, bad.stderr
        assert bad.stdout == ""
        assert message in bad.stderr
