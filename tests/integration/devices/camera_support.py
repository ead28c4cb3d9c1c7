"""Helpers of the camera tests: the ffmpeg tools' processes seen in /proc, an RTSP server that never answers, and
the edge agent's configuration for one simulated camera (also tests/integration/hub/test_snapshots_end_to_end.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devices.sim.onvif import OnvifSimulator
from devices.sim.rtsp import RtspSimulator
from edge.config import BrokerConfig, DeviceConfig, EdgeConfig, PublishConfig
from ioc.stack import StackEndpoints

#: The camera agent's gateway, its own in the test session's broker (tests/conftest.py): the only client of it.
CAMERA_SITE, CAMERA_GATEWAY = "cameras", "gw-1"


def tool_pids(tool: str, marker: str) -> list[int]:
    """Live (not zombie) processes of ``tool`` (``ffprobe``, ``ffmpeg``) whose command line contains ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(tool.encode()) and marker.encode() in b" ".join(cmdline) and state != "Z":
            pids.append(int(entry.name))
    return pids


async def wait_for_tool(tool: str, marker: str, old: frozenset[int] = frozenset(), timeout_s: float = 5.0) -> set[int]:
    """The processes of :func:`tool_pids` other than ``old``, once there is one (an empty set after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    pids = set(tool_pids(tool, marker)) - old
    while not pids and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling /proc: a process start has no event to await
        pids = set(tool_pids(tool, marker)) - old
    return pids


@contextmanager
def silent_rtsp_server() -> Iterator[int]:
    """A TCP server (its port) that accepts RTSP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def camera_agent_config(
    stack: StackEndpoints, sim: RtspSimulator, onvif: OnvifSimulator, *, interval_s: float, check_interval_s: float
) -> EdgeConfig:
    """The agent of gateway cameras/gw-1 with one camera "cam-1": its stream ``sim``'s "cam-1" (UDP), its ONVIF
    service ``onvif`` (user admin, password pw), polled every ``interval_s``, its picture checked every
    ``check_interval_s`` (2 s of frames, a confirming check 2 s after a suspicious one)."""
    user, password = stack.credentials(f"{CAMERA_SITE}.{CAMERA_GATEWAY}")
    camera = DeviceConfig(
        id="cam-1",
        driver="camera",
        profile="camera-onvif-generic",
        interval_s=interval_s,
        timeout_s=8.0,
        options={
            "host": "127.0.0.1",
            # Reachability by ONVIF, as a site's cameras: the stream switching pictures is not the camera going down.
            "onvif_port": onvif.port,
            "username": "admin",
            "password": "pw",
            "rtsp_url": sim.url("cam-1"),
            "rtsp_transport": "udp",
            "rtsp_sample_packets": 2,
            "rtsp_timeout_s": 5.0,
            "image_check_interval_s": check_interval_s,
            "image_confirm_s": 2.0,
            "image_sample_s": 2.0,
            "image_timeout_s": 8.0,
        },
    )
    return EdgeConfig(
        site=CAMERA_SITE,
        gateway=CAMERA_GATEWAY,
        broker=BrokerConfig(host=stack.mqtt_host, port=stack.mqtt_port, username=user, password=password),
        publish=PublishConfig(max_batch=50, max_delay_ms=200, drain_timeout_s=5),
        devices=[camera],
    )
