"""The camera driver's RTSP probe against a real RTSP server: Debian's VLC looping a clip made with ffmpeg.

The probe is the real ffprobe over RTP/UDP. The clip's codec, size and rate are known (``ClipSpec``), so the
reading must report exactly them; its bitrate is compared with the clip file's own. Faults: the server
stopped, crashed and restarted, one stream frozen (RTSP answers, no video) or stopped (404) while the other
plays, an unknown stream, a server that accepts and never answers (ffprobe killed at
the timeout, no process left), a poll cancelled mid-probe, and the RTSP server (VLC) or ffmpeg missing, which
degrade to an "unavailable" reason. Not marked ``integration``: no broker or database is involved.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from camera_support import silent_rtsp_server, tool_pids, wait_for_tool

from devices.drivers.camera import CameraConfig, CameraDriver
from devices.profile import load_profile
from devices.sim.onvif import SimulatedCameras
from devices.sim.rtsp import ClipSpec, RtspSimulator, RtspUnavailable

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[3]
CLIP = ClipSpec()
TIMEOUT_S = 8.0


@pytest.fixture
async def vlc() -> AsyncIterator[RtspSimulator]:
    async with RtspSimulator(["cam-1", "cam-2"]) as sim:
        yield sim


def driver_for(url: str, **options: Any) -> CameraDriver:
    base: dict[str, Any] = {"rtsp_transport": "udp", "rtsp_timeout_s": TIMEOUT_S}
    config = CameraConfig(host="127.0.0.1", onvif_port=0, rtsp_url=url, **(base | options))
    return CameraDriver(config, load_profile("camera-onvif-generic"))


async def probe(url: str, **options: Any) -> dict[str, Any]:
    driver = driver_for(url, **options)
    await driver.open()
    try:
        (reading,) = await driver.poll()
    finally:
        await driver.close()
    return dict(reading.metrics)


def file_bitrate_kbps(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=bit_rate", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return float(json.loads(out)["format"]["bit_rate"]) / 1000


def real_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("Uid:")))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"


async def test_the_probe_reports_the_clip_codec_size_rate_and_bitrate(vlc: RtspSimulator) -> None:
    metrics = await probe(vlc.url("cam-1"))
    assert metrics["rtsp_state"] == 0
    assert metrics["rtsp_state_name"] == "up"
    assert metrics["rtsp_up"] == 1
    assert metrics["rtsp_codec"] == "h264"
    assert (metrics["rtsp_width"], metrics["rtsp_height"]) == (CLIP.width, CLIP.height)
    assert metrics["rtsp_fps"] == float(CLIP.fps)
    assert vlc.clip_path is not None
    reference = file_bitrate_kbps(vlc.clip_path)
    # A window of 30 packets around one or two keyframes: the same order as the file's average, not equal.
    assert reference / 2 <= metrics["rtsp_bitrate_kbps"] <= reference * 2, (metrics, reference)
    assert 0 < metrics["rtsp_probe_ms"] < TIMEOUT_S * 1000
    assert "rtsp_error" not in metrics


async def test_two_cameras_on_one_server_are_probed_side_by_side(vlc: RtspSimulator) -> None:
    one, two = await asyncio.gather(probe(vlc.url("cam-1")), probe(vlc.url("cam-2")))
    assert one["rtsp_state_name"] == two["rtsp_state_name"] == "up"
    assert one["rtsp_codec"] == two["rtsp_codec"] == "h264"


async def test_the_clip_loops(vlc: RtspSimulator) -> None:
    await asyncio.sleep(CLIP.seconds + 1)
    assert (await probe(vlc.url("cam-2")))["rtsp_state_name"] == "up"


async def test_vlc_runs_unprivileged(vlc: RtspSimulator) -> None:
    assert vlc.pid is not None
    assert real_uid(vlc.pid) == (65534 if os.geteuid() == 0 else os.geteuid())


async def test_an_unknown_stream_is_down_404(vlc: RtspSimulator) -> None:
    url = f"rtsp://127.0.0.1:{vlc.port}/no-such-stream"
    metrics = await probe(url)
    assert metrics["rtsp_state_name"] == "down"
    assert metrics["rtsp_up"] == 0
    assert metrics["rtsp_error"] == f"{url}: Server returned 404 Not Found"
    assert "rtsp_codec" not in metrics


async def test_server_stopped_is_down_and_restarted_is_up(vlc: RtspSimulator) -> None:
    url = vlc.url("cam-1")
    await vlc.stop()
    down = await probe(url)
    await vlc.start()
    up = await probe(url)
    assert down["rtsp_state_name"] == "down"
    assert down["rtsp_error"] == f"{url}: Connection refused"
    assert up["rtsp_state_name"] == "up"


async def test_server_crash_is_down(vlc: RtspSimulator) -> None:
    url = vlc.url("cam-2")
    await vlc.kill()
    assert not vlc.running
    metrics = await probe(url)
    assert metrics["rtsp_error"] == f"{url}: Connection refused"


async def test_credentials_in_the_url_never_reach_the_reading(vlc: RtspSimulator) -> None:
    url = f"rtsp://ops:s3cret@127.0.0.1:{vlc.port}/no-such-stream"
    metrics = await probe(url)
    assert metrics["rtsp_error"] == f"rtsp://127.0.0.1:{vlc.port}/no-such-stream: Server returned 404 Not Found"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """The port of a TCP server that accepts RTSP connections and never says a word."""
    with silent_rtsp_server() as port:
        yield port


async def test_a_server_that_never_answers_is_down_and_ffprobe_is_killed(silent_server: int) -> None:
    url = f"rtsp://127.0.0.1:{silent_server}/silent"
    started = time.monotonic()
    metrics = await probe(url, rtsp_timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert metrics["rtsp_state_name"] == "down"
    assert metrics["rtsp_error"] == "no stream within 1 s (ffprobe killed)"
    assert 1.0 <= elapsed < 3.0
    assert tool_pids("ffprobe", f":{silent_server}/silent") == []


async def test_a_cancelled_poll_kills_its_ffprobe(silent_server: int) -> None:
    url = f"rtsp://127.0.0.1:{silent_server}/cancelled"
    driver = driver_for(url)
    await driver.open()
    task = asyncio.create_task(driver.poll())
    assert await wait_for_tool("ffprobe", "/cancelled"), "ffprobe never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await driver.close()
    assert tool_pids("ffprobe", "/cancelled") == []


async def test_rtsp_server_missing_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    sim = RtspSimulator(["cam-1"], cvlc=str(tmp_path / "cvlc"))
    with pytest.raises(RtspUnavailable) as info:
        await sim.start()
    reason = f"RTSP server unavailable: '{tmp_path / 'cvlc'}' not found (Debian packages vlc-bin, vlc-plugin-base)"
    assert str(info.value) == reason
    assert sim.describe() == {"available": False, "reason": reason}
    await sim.close()


async def test_ffmpeg_missing_for_the_clip_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    sim = RtspSimulator(["cam-1"], ffmpeg=str(tmp_path / "ffmpeg"))
    with pytest.raises(RtspUnavailable, match="not found to make the clip \\(Debian package ffmpeg\\)"):
        await sim.start()
    assert not sim.running
    await sim.close()


async def test_cameras_without_an_rtsp_server_still_report_onvif_and_say_why_no_stream(tmp_path: Path) -> None:
    async with SimulatedCameras(2, cvlc=str(tmp_path / "cvlc")) as cameras:
        described = cameras.describe()
        assert described["rtsp"]["available"] is False
        reason = described["rtsp"]["reason"]
        assert reason == (
            f"RTSP server unavailable: '{tmp_path / 'cvlc'}' not found (Debian packages vlc-bin, vlc-plugin-base)"
        )
        entry = described["cameras"][0]
        assert entry["rtsp_url"] is None
        assert "rtsp_url" not in entry["options"]
        driver = CameraDriver(CameraConfig(**entry["options"]), load_profile("camera-onvif-generic"))
        await driver.open()
        (reading,) = await driver.poll()
        await driver.close()
    assert reading.metrics["onvif_state_name"] == "up_with_auth"
    assert reading.metrics["rtsp_state_name"] == "unavailable"
    assert reading.metrics["rtsp_error"] == reason  # the reason reaches the reading


async def test_simulated_cameras_report_onvif_and_stream_together() -> None:
    async with SimulatedCameras(2) as cameras:
        described = cameras.describe()
        assert described["rtsp"]["available"] is True
        serials = []
        for entry in described["cameras"]:
            driver = CameraDriver(CameraConfig(**entry["options"]), load_profile("camera-onvif-generic"))
            await driver.open()
            (reading,) = await driver.poll()
            await driver.close()
            assert reading.metrics["onvif_state_name"] == "up_with_auth"
            assert reading.metrics["rtsp_state_name"] == "up"
            assert reading.metrics["rtsp_width"] == CLIP.width
            serials.append(reading.metrics["onvif_serial"])
    assert serials == ["SIM0001", "SIM0002"]


CHILD = """
import asyncio, sys
from devices.sim.rtsp import RtspSimulator

async def main():
    sim = RtspSimulator(["cam-1"])
    await sim.start()
    print(sim.pid, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def test_vlc_dies_with_the_process_that_started_it() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert child.stdout is not None
        vlc_pid = int(child.stdout.readline())
        assert alive(vlc_pid)
        child.kill()  # SIGKILL: no cleanup code runs in the parent
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(vlc_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(vlc_pid)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


async def test_a_frozen_stream_is_down_no_stream_and_comes_back(vlc: RtspSimulator) -> None:
    await vlc.freeze("cam-1")
    frozen = await probe(vlc.url("cam-1"), rtsp_timeout_s=2.0)
    other = await probe(vlc.url("cam-2"))
    await vlc.unfreeze("cam-1")
    back = await probe(vlc.url("cam-1"))
    assert frozen["rtsp_state_name"] == "down"
    assert frozen["rtsp_error"] == "no stream within 2 s (ffprobe killed)"
    assert other["rtsp_state_name"] == "up"  # the other camera on the same server is unaffected
    assert back["rtsp_state_name"] == "up"


async def test_a_stopped_stream_is_down_404_while_the_others_play(vlc: RtspSimulator) -> None:
    await vlc.stop_stream("cam-2")
    gone = await probe(vlc.url("cam-2"))
    other = await probe(vlc.url("cam-1"))
    await vlc.start_stream("cam-2")
    back = await probe(vlc.url("cam-2"))
    assert gone["rtsp_error"] == f"{vlc.url('cam-2')}: Server returned 404 Not Found"
    assert other["rtsp_state_name"] == "up"
    assert back["rtsp_state_name"] == "up"


async def test_transport_auto_finds_udp_and_tcp_only_is_refused_by_vlc(vlc: RtspSimulator) -> None:
    url = vlc.url("cam-1")
    auto = await probe(url, rtsp_transport="auto")
    tcp = await probe(url, rtsp_transport="tcp")
    assert auto["rtsp_state_name"] == "up"
    # VLC's RTSP server has no RTP-over-RTSP (interleaved TCP): SETUP is answered 461 Unsupported transport.
    assert tcp["rtsp_state_name"] == "down"
    assert tcp["rtsp_error"] == f"{url}: Protocol not supported"
