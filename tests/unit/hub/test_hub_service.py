"""The composed hub without a stack: unreachable broker and database do not stop it; a taken port does."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from hub.config import HttpSettings, HubSettings, InfluxSettings, MqttSettings
from hub.errors import StartupError
from hub.service import Hub, run_hub


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def settings(mqtt_port: int, http_port: int = 0) -> HubSettings:
    return HubSettings(
        mqtt=MqttSettings(port=mqtt_port, client_id="hub-unit", reconnect_max_s=1),
        influx=InfluxSettings(url=f"http://127.0.0.1:{mqtt_port}", timeout_s=1),
        http=HttpSettings(port=http_port),
    )


async def test_unreachable_broker_and_influx_leave_the_hub_up_and_degraded(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_hub(settings(closed_port), stop, on_ready=ready.set_result))
    hub = await asyncio.wait_for(ready, 10)
    assert hub.http_port > 0
    token, _ = await hub.operations.tokens.create("technician", wards=None, name="test", created_by="test")
    async with httpx.AsyncClient(base_url=hub.api_url, timeout=5) as api:
        health = await api.get("/api/v1/health")
        letters = await api.get("/api/v1/dead-letters", headers={"Authorization": f"Bearer {token}"})
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["mqtt"] == {"connected": False}
    assert health.json()["influx"] == {"reachable": False}
    assert letters.json() == {"total": 0, "items": []}
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 5
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "hub.mqtt" and r.levelno == logging.WARNING]
    assert warnings == [f"cannot reach the broker 127.0.0.1:{closed_port}; retrying with backoff up to 1 s"]
    await asyncio.sleep(0.1)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-hub-unit")]


async def test_a_taken_api_port_fails_start_up_naming_it(closed_port: int, taken_port: int) -> None:
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        async with Hub(settings(closed_port, taken_port)):
            pass  # pragma: no cover
