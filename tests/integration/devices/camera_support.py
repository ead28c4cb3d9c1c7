"""Helpers of the camera tests: the ffmpeg tools' processes seen in /proc, and an RTSP server that never answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
