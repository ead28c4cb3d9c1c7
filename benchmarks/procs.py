"""What the kernel knows about a process: peak RSS and CPU time, read from ``/proc`` (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from benchmarks.errors import BenchmarkError

_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int:
    """``VmHWM`` of ``pid``: the most resident memory it has had since it started (proc(5))."""
    path = Path(f"/proc/{pid}/status")
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise BenchmarkError(f"cannot read {path}: {exc}") from exc
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise BenchmarkError(f"{path}: unexpected unit in {line!r}")
            return int(value) * 1024
    raise BenchmarkError(f"{path} has no VmHWM line")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``utime`` + ``stime`` of ``/proc/<pid>/stat``, all threads)."""
    path = Path(f"/proc/{pid}/stat")
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise BenchmarkError(f"cannot read {path}: {exc}") from exc
    # The command name (field 2) is in parentheses and may contain spaces: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


class CpuMeter:
    """CPU time of a few processes between :meth:`start` and :meth:`stop`, as a percentage of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = dict(pids)
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def stop(self, wall_s: float) -> dict[str, float]:
        """name -> CPU % of one core over ``wall_s`` (processes that have exited are left out)."""
        out: dict[str, float] = {}
        for name, pid in self._pids.items():
            try:
                used = cpu_seconds(pid) - self._start[name]
            except (BenchmarkError, KeyError):
                continue
            out[name] = 100.0 * used / max(wall_s, 1e-9)
        return out
