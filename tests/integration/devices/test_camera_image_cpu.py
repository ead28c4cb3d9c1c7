"""What one image check costs: the CPU time (user + system) of its ffmpeg process, and its wall time.

The checks run one after another against the RTSP simulator (VLC, a child of this process that is reaped only
at the end, so it is not counted), at the driver's defaults (3 s of frames, 5 a second, compared with the
reference view from the second check on). ``resource.getrusage(RUSAGE_CHILDREN)`` before and after each check
gives the ffmpeg's own time, as it is the only child reaped in between; ``RUSAGE_SELF`` the driver's own work
in this process (starting ffmpeg, reading and judging its output), as nothing else runs here meanwhile. Three
streams: the simulator's 320x240, a 640x360 one at 15 fps (a common sub-stream) and a 1280x720 one at 25 fps
(a main stream, for a camera without a sub-stream). The figures (medians of :data:`ROUNDS`) are printed;
docs/cameras.md quotes them:

    .venv/bin/python -m pytest tests/integration/devices/test_camera_image_cpu.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import resource
import statistics

import pytest

from devices.drivers.camera import CameraConfig
from devices.drivers.camera.image_check import ImageChecker, ImageCheckState
from devices.drivers.camera.image_profile import ImageCheckProfile
from devices.drivers.camera.rtsp import RtspProber
from devices.sim.rtsp import ClipSpec, RtspSimulator

pytestmark = pytest.mark.slow

ROUNDS = 9


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize(
    "clip",
    [
        ClipSpec(),
        ClipSpec(width=640, height=360, fps=15, bitrate_kbps=800),
        ClipSpec(width=1280, height=720, fps=25, bitrate_kbps=2000),
    ],
    ids=["320x240", "640x360", "1280x720"],
)
async def test_cpu_per_image_check(clip: ClipSpec) -> None:
    """The figures are printed (run with -s); the bound only catches a gross regression."""
    cpu: list[float] = []
    agent: list[float] = []
    wall: list[float] = []
    async with RtspSimulator(["cam-1"], clip=clip) as sim:
        config = CameraConfig(host="127.0.0.1", onvif_port=0, rtsp_url=sim.url("cam-1"), rtsp_transport="udp")
        probed = (await RtspProber(config, "camera cpu").probe()).metrics()
        assert (probed["rtsp_width"], probed["rtsp_height"]) == (clip.width, clip.height)
        checker = ImageChecker(config, ImageCheckProfile(), "defaults", "camera cpu")
        for _ in range(ROUNDS):
            before, before_self = cpu_s(resource.RUSAGE_CHILDREN), cpu_s(resource.RUSAGE_SELF)
            result = await checker.check()
            cpu.append(cpu_s(resource.RUSAGE_CHILDREN) - before)
            agent.append(cpu_s(resource.RUSAGE_SELF) - before_self)
            assert result.state is ImageCheckState.OK, result.error
            assert result.check_ms is not None
            wall.append(result.check_ms / 1000)
    median = statistics.median(cpu)
    print(
        f"\n{clip.width}x{clip.height} {clip.fps} fps {clip.bitrate_kbps} kbps: CPU per check median {median:.3f} s "
        f"(min {min(cpu):.3f}, max {max(cpu):.3f}, n={ROUNDS}); the driver's own (Python) CPU median "
        f"{statistics.median(agent):.3f} s; wall median {statistics.median(wall):.2f} s; "
        f"per camera-hour at a 5-minute interval: {12 * median:.2f} s"
    )
    assert median < 1.0  # an order of magnitude above what it costs here: a regression, not noise


async def test_cpu_per_stream_probe_for_comparison() -> None:
    """The stream probe of every poll (ffprobe, 30 packets) on the 640x360 stream, measured the same way."""
    clip = ClipSpec(width=640, height=360, fps=15, bitrate_kbps=800)
    cpu: list[float] = []
    async with RtspSimulator(["cam-1"], clip=clip) as sim:
        config = CameraConfig(host="127.0.0.1", onvif_port=0, rtsp_url=sim.url("cam-1"), rtsp_transport="udp")
        prober = RtspProber(config, "camera cpu")
        for _ in range(ROUNDS):
            before = cpu_s(resource.RUSAGE_CHILDREN)
            result = await prober.probe()
            cpu.append(cpu_s(resource.RUSAGE_CHILDREN) - before)
            assert result.state.label == "up", result.error
    median = statistics.median(cpu)
    print(f"\nffprobe of {clip.width}x{clip.height}: CPU per probe median {median:.3f} s (n={ROUNDS})")
    assert median < 1.0
