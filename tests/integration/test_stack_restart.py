"""``LocalStack`` brings back a service that died by itself (what ``ioc demo``'s supervision calls): the exit
status is read without stopping anything, and the service comes back on the same port with its data (restart_service
waits for it as start does: a real MQTT login, InfluxDB's /ping)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ioc.stack import LocalStack, StackError, influx_query, influx_write
from ioc.stack.runner import Service

pytestmark = pytest.mark.integration


def wait_exit_status(stack: LocalStack, name: Service, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (status := stack.exit_status(name)) is None:
        assert time.monotonic() < deadline, f"{name} still running {timeout:.0f} s after SIGKILL"
        time.sleep(0.05)
    return status


def test_a_killed_service_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack")
    with stack as ep:
        influx_write(ep.influx_url, ep.influx_db, "m,device=d v=1 1700000000000")
        services: tuple[Service, ...] = ("influxd", "mosquitto")
        for name in services:
            old = stack.pids[name]
            assert stack.exit_status(name) is None
            with pytest.raises(StackError, match="still running"):
                stack.restart_service(name)
            os.kill(old, signal.SIGKILL)
            assert wait_exit_status(stack, name) == -signal.SIGKILL
            new = stack.restart_service(name)
            assert new != old
            assert stack.pids[name] == new
            assert stack.exit_status(name) is None
        rows = influx_query(ep.influx_url, ep.influx_db, 'SELECT "v" FROM "m"')
        assert [(r["time"], r["v"]) for r in rows] == [(1_700_000_000_000, 1.0)]
