"""The hub against the real InfluxDB and Mosquitto: it creates its database and retention policy, logs the
server version, serves ``/metrics`` in the Prometheus text format and writes ``hub_health`` points."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from ops_support import birth_payload
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from hub.config import (
    AqiSettings,
    BatchSettings,
    DeadLetterSettings,
    HttpSettings,
    HubSettings,
    InfluxSettings,
    MetricsSettings,
    MqttSettings,
    SpillSettings,
)
from hub.service import Hub, run_hub
from ioc.stack import StackEndpoints, drop_database, influx_query

pytestmark = pytest.mark.integration


def settings(stack: StackEndpoints, database: str, tmp_path: Path, **influx: object) -> HubSettings:
    user, password = stack.credentials("hub")
    return HubSettings(
        mqtt=MqttSettings(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            username=user,
            password=SecretStr(password),
            client_id=f"selfhealth-{secrets.token_hex(3)}",
            session_expiry_s=0,
        ),
        influx=InfluxSettings(url=stack.influx_url, database=database, **influx),
        batch=BatchSettings(max_delay_ms=20, drain_timeout_s=5),
        http=HttpSettings(port=0),
        metrics=MetricsSettings(interval_s=0.3, instance="hub-test"),
        spill=SpillSettings(dir=tmp_path / "spill"),
        dead_letters=DeadLetterSettings(path=tmp_path / "dead.sqlite"),
        aqi=AqiSettings(enabled=False),
    )


@contextlib.asynccontextmanager
async def running(s: HubSettings) -> AsyncIterator[Hub]:
    stop = asyncio.Event()
    ready: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_hub(s, stop, on_ready=ready.set_result))
    waiters: list[asyncio.Future[Any]] = [ready, task]
    await asyncio.wait(waiters, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    hub = ready.result()
    try:
        assert await hub.intake.wait_subscribed(10)
        yield hub
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def publish(stack: StackEndpoints, topic: str, payload: bytes, *, retain: bool = False) -> None:
    user, password = stack.credentials("site-a.gw-1")
    client_id = stack.client_id("site-a.gw-1", f"selfhealth-gw-{secrets.token_hex(3)}")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(user, password)
    client.connect(stack.mqtt_host, stack.mqtt_port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


async def test_the_hub_creates_its_database_with_a_retention_policy_and_logs_the_version(
    stack: StackEndpoints, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"test_created_{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="hub.storage.influx")
    try:
        async with running(settings(stack, database, tmp_path, retention="2w")):
            names = [row["name"] for row in influx_query(stack.influx_url, "", "SHOW DATABASES")]
            assert database in names
            policies = influx_query(stack.influx_url, database, f'SHOW RETENTION POLICIES ON "{database}"')
            ours = [p for p in policies if p["name"] == "ioc_retention"]
            assert ours
            assert ours[0]["duration"] == "336h0m0s"
            assert ours[0]["default"] is True
    finally:
        drop_database(stack.influx_url, database)
    assert any("version 1." in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_metrics_are_served_as_prometheus_text_and_written_as_hub_health_points(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with running(settings(stack, influx_db, tmp_path)) as hub:
        # The birth first (admission stores data only for announced devices): its gateway_state point is a line.
        birth = birth_payload("selfhealth-1", [("aq-01", "air_quality")])
        await asyncio.to_thread(publish, stack, "ioc/v1/site-a/gw-1/state", birth, retain=True)
        ts = int(time.time() * 1000)
        reading = f'{{"device": "aq-01", "kind": "air_quality", "ts": {ts}, "metrics": {{"pm25": 1}}}}'
        body = f'{{"session": "selfhealth-1", "seq": 1, "readings": [{reading}]}}'
        await asyncio.to_thread(publish, stack, "ioc/v1/site-a/gw-1/data", body.encode())
        await asyncio.to_thread(publish, stack, "ioc/v1/site-a/gw-1/data", b"{broken")
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=5) as http:
            while True:
                response = await http.get("/metrics")
                text = response.text
                if "ioc_hub_lines_written_total 2\n" in text or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "ioc_hub_lines_written_total 2\n" in text
        assert 'ioc_hub_dead_letters_total{kind="malformed"} 1\n' in text
        assert "ioc_hub_mqtt_connected 1\n" in text
        assert "ioc_hub_spill_bytes 0\n" in text
        assert "# TYPE ioc_hub_write_seconds histogram" in text
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline + 5:
            rows = influx_query(stack.influx_url, influx_db, 'SELECT * FROM "hub_health" WHERE "hub" = \'hub-test\'')
            if any(r.get("lines_written", 0) == 2.0 for r in rows):
                break
            await asyncio.sleep(0.2)
    assert any(r.get("lines_written") == 2.0 and r.get("dead_letters") == 1.0 for r in rows), rows[-1:]
    assert rows[-1]["mqtt_connected"] is True
