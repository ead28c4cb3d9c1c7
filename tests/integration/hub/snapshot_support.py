"""What the snapshot tests share: real JPEGs made by ffmpeg (the tool the agent takes snapshots with) and a
gateway's snapshot message."""

from __future__ import annotations

import subprocess

from ioc.stack.packages import find_binary
from wire.v1 import Snapshot, SnapshotTrigger, encode


def jpeg(width: int = 320, height: int = 180, source: str = "testsrc2", quality: int = 5) -> bytes:
    """One frame of ffmpeg's ``source`` (a lavfi test pattern, or ``color=c=black`` and the like) as a JPEG."""
    ffmpeg = find_binary("ffmpeg")
    assert ffmpeg is not None, "ffmpeg is not installed: ioc stack ensure (or apt-get install ffmpeg)"
    spec = f"{source}=s={width}x{height}" if "=" not in source else f"{source}:s={width}x{height}"
    command = [str(ffmpeg), "-loglevel", "error", "-f", "lavfi", "-i", spec, "-frames:v", "1", "-q:v", str(quality)]
    return subprocess.run(
        [*command, "-f", "image2pipe", "-c:v", "mjpeg", "-"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def snapshot_payload(
    session: str,
    device: str,
    ts: int,
    data: bytes,
    trigger: SnapshotTrigger = SnapshotTrigger.PERIODIC,
    problems: tuple[str, ...] = (),
) -> bytes:
    return encode(Snapshot(session=session, device=device, ts=ts, jpeg=data, trigger=trigger, problems=list(problems)))
