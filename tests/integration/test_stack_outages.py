"""``LocalStack.stop_service``/``start_service``: the outages the no-loss tests stage, on a stack of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ioc.stack import LocalStack, StackError, ensure_packages, influx_query, influx_write
from ioc.stack.mosquitto import ConnectRefused, probe

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    ensure_packages()
    stack = LocalStack(tmp_path / "stack", gateways=[("site-a", "gw-1")])
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_broker_outage_and_return_on_the_same_port(own_stack: LocalStack) -> None:
    ep = own_stack.endpoints
    assert ep is not None
    user, password = ep.credentials("admin")
    first_pid = own_stack.pids["mosquitto"]
    own_stack.stop_service("mosquitto")
    with pytest.raises((OSError, ConnectRefused, StackError)):
        probe(ep.mqtt_host, ep.mqtt_port, user, password, timeout=2.0)
    own_stack.start_service("mosquitto")
    probe(ep.mqtt_host, ep.mqtt_port, user, password)
    assert own_stack.pids["mosquitto"] != first_pid
    with pytest.raises(StackError, match="already running"):
        own_stack.start_service("mosquitto")


def test_influxdb_killed_keeps_what_it_stored(own_stack: LocalStack) -> None:
    ep = own_stack.endpoints
    assert ep is not None
    influx_write(ep.influx_url, ep.influx_db, "m,device=d value=1 1700000000000")
    own_stack.stop_service("influxd", kill=True)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ep.influx_url}/ping", timeout=2.0)
    with pytest.raises(StackError, match="not running"):
        own_stack.stop_service("influxd")
    own_stack.start_service("influxd")
    rows = influx_query(ep.influx_url, ep.influx_db, "SELECT value FROM m")
    assert [row["value"] for row in rows] == [1.0]
