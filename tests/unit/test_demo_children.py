"""``ioc demo``'s child processes: stop_all stops every child (SIGTERM, then SIGKILL for one that ignores it) and
closes every pipe and log file it opened, so nothing is left for the garbage collector (ResourceWarning); a child
that exited is started again as it was first started, its log appended to."""

from __future__ import annotations

import gc
import sys
import time
import warnings
from pathlib import Path

import pytest

from ioc.demo_processes import Children, DemoError

PRINT_THEN_WAIT = "import sys, time; print('{\"port\": 1}', flush=True); time.sleep(60)"
IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
)


def test_stop_all_stops_every_child_and_closes_its_pipes_and_logs(tmp_path: Path) -> None:
    children = Children(tmp_path)
    sim = children.start("sim-city", [sys.executable, "-c", PRINT_THEN_WAIT])  # stdout is a pipe
    stubborn = children.start("edge-site-1", [sys.executable, "-c", IGNORE_TERM])
    assert sim.stdout is not None
    assert sim.stdout.readline() == b'{"port": 1}\n'
    deadline = time.monotonic() + 10
    while b"up" not in (tmp_path / "edge-site-1.log").read_bytes():  # SIGTERM ignored from here on
        assert time.monotonic() < deadline, "the child did not start within 10 s"
        time.sleep(0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        children.stop_all(timeout_s=1.0)
        assert sim.returncode is not None
        assert stubborn.returncode == -9  # killed after the timeout
        assert sim.stdout.closed
        assert all(f.closed for f in children._logs.values())
        del sim, stubborn, children
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


PRINT_ENV_THEN_EXIT = "import os; print(os.environ['DEMO_TEST_VALUE'], flush=True)"


def test_restart_runs_the_first_command_and_environment_again_and_appends_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children = Children(tmp_path)
    try:
        first = children.start("hub", [sys.executable, "-c", PRINT_ENV_THEN_EXIT], env={"DEMO_TEST_VALUE": "first"})
        assert first.wait(timeout=10) == 0
        monkeypatch.setenv("DEMO_TEST_VALUE", "changed since")  # a restart keeps the first start's environment
        second = children.restart("hub")
        assert second.pid != first.pid
        assert children.procs["hub"] is second
        assert second.wait(timeout=10) == 0
        assert (tmp_path / "hub.log").read_text() == "first\nfirst\n"
        running = children.start("edge-site-1", [sys.executable, "-c", "import time; time.sleep(60)"])
        with pytest.raises(DemoError, match=f"edge-site-1 \\(pid {running.pid}\\) is still running"):
            children.restart("edge-site-1")
    finally:
        children.stop_all(timeout_s=1.0)
