"""common.child_process: a child started with die_with_parent gets SIGTERM when its parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.child_process import die_with_parent, load_prctl

ROOT = Path(__file__).parents[3]

# The middle process: starts `sleep 60` dying with it, prints the child's pid, then waits to be killed.
PARENT = """
import os, subprocess, sys, time
from common.child_process import die_with_parent
child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent(os.getpid()))
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with Path(f"/proc/{pid}/stat").open() as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has died, it waits for its reaper
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_its_killed_parent() -> None:
    assert load_prctl() is not None
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # no cleanup of its own runs
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child_pid)
    finally:
        parent.kill()
        parent.wait(5)
        if parent.stdout is not None:
            parent.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_whose_parent_is_already_gone_stops_at_once() -> None:
    """The parent died between fork and prctl (here: the pid given is not the parent's): the child ends itself."""
    child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent(os.getpid() + 10_000_000))  # noqa: PLW1509
    try:
        assert child.wait(5) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait(5)


def test_a_child_of_a_live_parent_runs() -> None:
    child = subprocess.Popen(["sleep", "0.2"], preexec_fn=die_with_parent(os.getpid()))  # noqa: PLW1509
    assert child.wait(5) == 0
