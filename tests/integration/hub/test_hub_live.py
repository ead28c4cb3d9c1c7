"""The hub against the real Mosquitto and InfluxDB: exact points, dead letters, refused writes, ack after storage.

The hub runs in the test's event loop with ``run_hub``, exactly as ``ioc hub`` runs it; publishers are plain
paho clients logged in with the stack's broker accounts (a gateway account can publish only under its own
topics). Each test has its own database and its own hub client id.

Other tests may leave retained ``state`` messages on the broker, so state assertions filter by session. Each test
publishes the gateway's birth before its data (the hub's admission stores data only for announced devices), with
times relative to now (it refuses readings older than 30 days).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from ops_support import birth_payload
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from hub.config import BatchSettings, HttpSettings, HubSettings, InfluxSettings, MqttSettings
from hub.service import Hub, run_hub
from ioc.stack import StackEndpoints, influx_query

pytestmark = pytest.mark.integration

SITE, GATEWAY = "site-a", "gw-1"
GATEWAY_ACCOUNT = f"{SITE}.{GATEWAY}"
TOPIC = f"ioc/v1/{SITE}/{GATEWAY}"
SESSION = "live-sess-0001"
TS = int(time.time() * 1000) - 60_000
#: What the gateway's birth announces (id, kind).
DEVICES = (("aq-01", "air_quality"), ("wl-02", "water_level"))


def hub_settings(
    stack: StackEndpoints,
    database: str,
    *,
    client_id: str,
    influx_url: str | None = None,
    session_expiry_s: int = 0,
    shared_group: str | None = None,
    max_delay_ms: int = 50,
    drain_timeout_s: float = 5.0,
) -> HubSettings:
    user, password = stack.credentials("hub")
    return HubSettings(
        mqtt=MqttSettings(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            username=user,
            password=SecretStr(password),
            client_id=client_id,
            session_expiry_s=session_expiry_s,
            shared_group=shared_group,
            observe="none" if shared_group else None,
        ),
        influx=InfluxSettings(
            url=influx_url or stack.influx_url, database=database, retry_initial_s=0.05, retry_max_s=0.2
        ),
        batch=BatchSettings(max_delay_ms=max_delay_ms, drain_timeout_s=drain_timeout_s),
        http=HttpSettings(port=0),
    )


@dataclass
class HubRunner:
    """Starts hubs with ``run_hub`` in the running loop and stops them (at the latest when the test ends)."""

    running: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=dict)

    async def start(self, settings: HubSettings) -> Hub:
        stop = asyncio.Event()
        ready: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_hub(settings, stop, on_ready=ready.set_result))
        waiters: list[asyncio.Future[Any]] = [ready, task]
        await asyncio.wait(waiters, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises the start-up error
        hub = ready.result()
        self.running[id(hub)] = (stop, task)
        assert await hub.intake.wait_subscribed(10), "the hub did not connect and subscribe within 10 s"
        return hub

    async def stop(self, hub: Hub) -> None:
        stop, task = self.running.pop(id(hub))
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def hubs() -> AsyncIterator[HubRunner]:
    runner = HubRunner()
    yield runner
    for stop, task in list(runner.running.values()):
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)


Publish = Callable[..., Awaitable[None]]


@pytest.fixture
def publish(stack: StackEndpoints) -> Iterator[Publish]:
    """``await publish(topic, payload, account=..., retain=False)``: QoS 1, returns once the broker has it."""
    clients: dict[str, paho.Client] = {}

    def client_for(account: str) -> paho.Client:
        if account not in clients:
            user, password = stack.credentials(account)
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=stack.client_id(account, f"test-pub-{account}-{time.monotonic_ns()}"),
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            client.username_pw_set(user, password)
            client.connect(stack.mqtt_host, stack.mqtt_port)
            client.loop_start()
            clients[account] = client
        return clients[account]

    def publish_sync(topic: str, payload: bytes | str, account: str, retain: bool) -> None:
        info = client_for(account).publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), f"the broker did not acknowledge the publish on {topic}"

    async def publish_async(
        topic: str, payload: bytes | str, account: str = GATEWAY_ACCOUNT, retain: bool = False
    ) -> None:
        await asyncio.to_thread(publish_sync, topic, payload, account, retain)

    yield publish_async
    for client in clients.values():
        client.disconnect()
        client.loop_stop()


async def wait_rows(stack: StackEndpoints, db: str, q: str, n: int, within_s: float = 15) -> list[dict[str, Any]]:
    """Poll InfluxDB until ``q`` returns at least ``n`` rows (off the loop, so the hub keeps running)."""
    deadline = time.monotonic() + within_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(influx_query, stack.influx_url, db, q)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} rows for {q!r}, got {rows}")


async def wait_for(condition: Callable[[], bool], what: str, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------- helpers


async def announce(publish: Publish, *, ts: int | None = None) -> None:
    """The gateway's birth (retained, as an agent publishes it) announcing :data:`DEVICES`."""
    await publish(f"{TOPIC}/state", birth_payload(SESSION, DEVICES, ts=ts), retain=True)


def data(seq: int, *readings: dict[str, Any], session: str = SESSION) -> str:
    return json.dumps({"v": 1, "session": session, "seq": seq, "readings": list(readings)})


def reading(device: str, kind: str, ts: int, **metrics: Any) -> dict[str, Any]:
    return {"device": device, "kind": kind, "ts": ts, "metrics": metrics}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- tests


async def test_data_state_and_events_are_stored_exactly(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    hub = await hubs.start(hub_settings(stack, influx_db, client_id=f"hub-{influx_db}"))
    await announce(publish, ts=TS - 1000)
    await publish(
        f"{TOPIC}/data",
        data(
            1,
            reading("aq-01", "air_quality", TS, pm25=35, pm10=61.5, ok=True, mode='run "A" \\ b, c=d'),
            reading("wl-02", "water_level", TS + 877, level_m=1.82, alarm=False),
        ),
    )
    await publish(f"{TOPIC}/data", data(2, reading("aq-01", "air_quality", TS + 5000, pm25=36.5)))
    await publish(
        f"{TOPIC}/event",
        json.dumps(
            {"session": SESSION, "device": "aq-01", "type": "device_down", "ts": TS + 6000, "reason": "timeout"}
        ),
    )

    aq = await wait_rows(stack, influx_db, 'SELECT * FROM "air_quality"', 2)
    tags = {"device": "aq-01", "gateway": GATEWAY, "kind": "air_quality", "site": SITE}
    assert aq == [
        {"time": TS, **tags, "mode": 'run "A" \\ b, c=d', "ok": True, "pm10": 61.5, "pm25": 35.0},
        {"time": TS + 5000, **tags, "mode": None, "ok": None, "pm10": None, "pm25": 36.5},
    ]
    wl = await wait_rows(stack, influx_db, 'SELECT * FROM "water_level"', 1)
    assert wl == [
        {
            "time": TS + 877,
            "alarm": False,
            "device": "wl-02",
            "gateway": GATEWAY,
            "kind": "water_level",
            "level_m": 1.82,
            "site": SITE,
        }
    ]
    tag_keys = await asyncio.to_thread(influx_query, stack.influx_url, influx_db, 'SHOW TAG KEYS FROM "air_quality"')
    assert sorted(r["tagKey"] for r in tag_keys) == ["device", "gateway", "kind", "site"]
    field_keys = await asyncio.to_thread(
        influx_query, stack.influx_url, influx_db, 'SHOW FIELD KEYS FROM "air_quality"'
    )
    assert {r["fieldKey"]: r["fieldType"] for r in field_keys} == {
        "mode": "string",
        "ok": "boolean",
        "pm10": "float",
        "pm25": "float",  # 35 was sent as an integer
    }
    state = await wait_rows(stack, influx_db, f'SELECT * FROM "gateway_state" WHERE "session" = \'{SESSION}\'', 1)
    assert state == [{"time": TS - 1000, "gateway": GATEWAY, "online": True, "session": SESSION, "site": SITE}]
    events = await wait_rows(stack, influx_db, 'SELECT * FROM "device_event"', 1)
    assert events == [
        {
            "time": TS + 6000,
            "device": "aq-01",
            "gateway": GATEWAY,
            "reason": "timeout",
            "site": SITE,
            "type": "device_down",
        }
    ]

    await wait_for(lambda: hub.pipeline.stats.lines_written >= 5, "5 lines written")
    async with httpx.AsyncClient(base_url=hub.api_url, timeout=5) as api:
        health = (await api.get("/api/v1/health")).json()
        stats = (await api.get("/api/v1/ingest/stats")).json()
    assert health["status"] == "ok"
    assert health["mqtt"] == {"connected": True}
    assert health["influx"] == {"reachable": True}
    assert stats["messages_by_channel"]["data"] == 2
    assert stats["messages_by_channel"]["event"] == 1
    assert stats["readings"] == 3
    assert stats["seq_gaps"] == 0
    assert stats["dead_letters_total"] == 0
    assert stats["ingest_latency"]["count"] == 2
    assert stats["gateways"]["online"] >= 1
    assert hub.http_port > 0


async def test_bad_messages_are_dead_lettered_and_the_ones_around_them_stored(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    hub = await hubs.start(hub_settings(stack, influx_db, client_id=f"hub-{influx_db}"))
    await announce(publish)
    await publish(f"{TOPIC}/data", data(1, reading("aq-01", "air_quality", TS, pm25=1)))
    await publish(f"{TOPIC}/data", b"{not json")
    await publish(f"{TOPIC}/data", data(2, reading("aq-01", "Air Quality", TS + 1, pm25=2)))  # kind violates pattern
    await publish("ioc/v1/Site_A/gw-1/data", data(3, reading("aq-01", "air_quality", TS + 2, pm25=3)), "admin")
    await publish(f"{TOPIC}/data", data(4, reading("aq-01", "air_quality", TS + 3, pm25=4)))

    rows = await wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 2)
    assert rows == [{"time": TS, "pm25": 1.0}, {"time": TS + 3, "pm25": 4.0}]
    await wait_for(lambda: hub.pipeline.stats.acks >= 6, "6 acks (the birth and the 5 data messages)")
    stats = hub.pipeline.stats
    assert stats.dead_letters == {"malformed": 1, "contract": 1, "bad_topic": 1}
    assert stats.seq_gaps == 2  # seq 2 and 3 never reached the pipeline as data of this gateway session
    token, _ = await hub.operations.tokens.create("technician", wards=None, name="test", created_by="test")
    headers = {"Authorization": f"Bearer {token}"}  # dead letters hold raw payloads: a technician token
    async with httpx.AsyncClient(base_url=hub.api_url, timeout=5, headers=headers) as api:
        letters = (await api.get("/api/v1/dead-letters", params={"limit": 10})).json()
        one = (await api.get("/api/v1/dead-letters", params={"limit": 1})).json()
        health = await api.get("/api/v1/health")
    assert letters["total"] == 3
    assert [(d["topic"], d["kind"]) for d in letters["items"]] == [
        ("ioc/v1/Site_A/gw-1/data", "bad_topic"),
        (f"{TOPIC}/data", "contract"),
        (f"{TOPIC}/data", "malformed"),
    ]
    assert letters["items"][2]["payload"] == "{not json"
    assert "Air Quality" in letters["items"][1]["payload"]
    assert "site 'Site_A' is not a valid ID" in letters["items"][0]["error"]
    assert len(one["items"]) == 1
    assert health.status_code == 200
    assert health.json()["counters"]["dead_letters"] == 3


async def test_a_field_type_conflict_dead_letters_only_that_message(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    hub = await hubs.start(hub_settings(stack, influx_db, client_id=f"hub-{influx_db}", max_delay_ms=400))
    await announce(publish)
    await publish(f"{TOPIC}/data", data(1, reading("wl-02", "water_level", TS, level=1.5)))
    await wait_rows(stack, influx_db, 'SELECT "level" FROM "water_level"', 1)
    # One batch: a string where a float was stored first, between two good messages. Admission refuses it
    # (the type of water_level.level is fixed by its first value), so InfluxDB never refuses the batch.
    await publish(f"{TOPIC}/data", data(2, reading("wl-02", "water_level", TS + 1, level=2.5)))
    await publish(f"{TOPIC}/data", data(3, reading("wl-02", "water_level", TS + 2, level="high")))
    await publish(f"{TOPIC}/data", data(4, reading("wl-02", "water_level", TS + 3, level=3.5)))

    await wait_for(lambda: hub.pipeline.stats.acks >= 5, "5 acks (the birth and the 4 data messages)")
    rows = await wait_rows(stack, influx_db, 'SELECT "level" FROM "water_level"', 3)
    assert rows == [
        {"time": TS, "level": 1.5},
        {"time": TS + 1, "level": 2.5},
        {"time": TS + 3, "level": 3.5},
    ]
    assert hub.pipeline.stats.dead_letters == {"refused": 1}
    (letter,) = hub.pipeline.dead_letters.latest(10)
    assert letter.kind == "refused"
    assert letter.error == "field_type wl-02: water_level.level is a float field, got a string"
    assert json.loads(letter.payload)["seq"] == 3


async def test_nothing_is_acked_before_storage_so_the_broker_redelivers_to_the_next_hub(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    client_id = f"hub-redelivery-{influx_db}"
    dead_influx = f"http://127.0.0.1:{closed_port()}"
    first = await hubs.start(
        hub_settings(
            stack, influx_db, client_id=client_id, influx_url=dead_influx, session_expiry_s=120, drain_timeout_s=0.5
        )
    )
    await announce(publish)
    for seq in (1, 2, 3):
        await publish(f"{TOPIC}/data", data(seq, reading("aq-01", "air_quality", TS + seq, pm25=seq)))
    await wait_for(
        lambda: first.intake.counters["received"] >= 4 and first.pipeline.stats.write_retries >= 2,
        "the birth and 3 data messages received and the writes retried",
    )
    assert first.pipeline.stats.acks == 0
    assert first.intake.counters["acks_sent"] == 0
    assert first.pipeline.gauges()["pending_messages"] == 4  # the birth (its gateway_state point) and the data
    async with httpx.AsyncClient(base_url=first.api_url, timeout=5) as api:
        health = (await api.get("/api/v1/health")).json()
    assert health["status"] == "degraded"
    assert health["influx"] == {"reachable": False}
    await hubs.stop(first)  # gives up after the 0.5 s drain timeout, acks nothing
    assert await asyncio.to_thread(influx_query, stack.influx_url, influx_db, 'SELECT * FROM "air_quality"') == []

    # Same client id: the broker kept the session and resends the unacknowledged messages.
    second = await hubs.start(hub_settings(stack, influx_db, client_id=client_id))
    rows = await wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 3)
    assert rows == [{"time": TS + seq, "pm25": float(seq)} for seq in (1, 2, 3)]
    await wait_for(lambda: second.pipeline.stats.acks >= 3, "3 acks")
    assert second.pipeline.stats.messages_by_channel["data"] == 3


async def test_a_graceful_stop_writes_and_acks_what_is_pending(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    client_id = f"hub-drain-{influx_db}"
    # A batch delay longer than the test: only the stop's drain can write the message.
    first = await hubs.start(
        hub_settings(stack, influx_db, client_id=client_id, session_expiry_s=120, max_delay_ms=60_000)
    )
    await announce(publish)
    await publish(f"{TOPIC}/data", data(1, reading("aq-01", "air_quality", TS, pm25=7)))
    # The birth's gateway_state point and the reading.
    await wait_for(lambda: first.pipeline.gauges()["batch_lines"] == 2, "the birth and the message in the open batch")
    assert await asyncio.to_thread(influx_query, stack.influx_url, influx_db, 'SELECT * FROM "air_quality"') == []
    await hubs.stop(first)
    rows = await asyncio.to_thread(influx_query, stack.influx_url, influx_db, 'SELECT "pm25" FROM "air_quality"')
    assert rows == [{"time": TS, "pm25": 7.0}]
    assert first.pipeline.stats.acks == 2

    # It was acknowledged: the session of the same client id holds nothing to redeliver.
    second = await hubs.start(hub_settings(stack, influx_db, client_id=client_id))
    await asyncio.sleep(1.0)
    assert second.pipeline.stats.messages_by_channel.get("data", 0) == 0


async def test_shared_subscription(stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish) -> None:
    hub = await hubs.start(hub_settings(stack, influx_db, client_id=f"hub-{influx_db}", shared_group="hubs"))
    assert hub.intake.filters[0] == "$share/hubs/ioc/v1/+/+/data"
    await announce(publish)  # after subscribing: a shared subscription gets no retained message (MQTT 5 4.8.2)
    await publish(f"{TOPIC}/data", data(1, reading("aq-01", "air_quality", TS, pm25=9)))
    rows = await wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 1)
    assert rows == [{"time": TS, "pm25": 9.0}]


async def test_a_stalled_pipeline_leaves_messages_with_the_broker(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    client_id = f"hub-backpressure-{influx_db}"
    dead_influx = f"http://127.0.0.1:{closed_port()}"
    settings = hub_settings(
        stack, influx_db, client_id=client_id, influx_url=dead_influx, session_expiry_s=120, drain_timeout_s=0.2
    )
    small = settings.model_copy(
        update={"batch": settings.batch.model_copy(update={"queue_size": 2, "max_pending_messages": 3})}
    )
    first = await hubs.start(small)
    await announce(publish)
    for seq in range(1, 13):
        await publish(f"{TOPIC}/data", data(seq, reading("aq-01", "air_quality", TS + seq, pm25=seq)))
    await wait_for(lambda: first.pipeline.gauges()["pending_messages"] == 3, "the pipeline full")
    await asyncio.sleep(0.5)
    # Receive Maximum = pending cap + queue: the broker holds back the rest instead of the hub buffering them.
    assert first.intake.counters["received"] <= 5
    assert first.pipeline.stats.acks == 0
    await hubs.stop(first)

    second = await hubs.start(hub_settings(stack, influx_db, client_id=client_id))
    rows = await wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 12)
    assert [r["pm25"] for r in rows] == [float(seq) for seq in range(1, 13)]
    await wait_for(lambda: second.pipeline.stats.acks >= 13, "13 acks (the birth and the 12 data messages)")


async def test_a_refused_login_is_an_error_naming_the_reason_and_the_hub_keeps_retrying(
    stack: StackEndpoints, influx_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = hub_settings(stack, influx_db, client_id=f"hub-refused-{influx_db}")
    wrong = settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(update={"password": SecretStr("wrong"), "reconnect_max_s": 1}),
        }
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_hub(wrong, stop, on_ready=ready.set_result))
    hub = await asyncio.wait_for(ready, 15)
    await asyncio.sleep(3)  # a few attempts (backoff 1 s)
    assert not hub.intake.connected
    stop.set()
    await asyncio.wait_for(task, 20)
    errors = [r.getMessage() for r in caplog.records if r.name == "hub.mqtt" and r.levelno == logging.ERROR]
    expected = f"the broker {stack.mqtt_host}:{stack.mqtt_port} refused the connection: "
    assert len(errors) == 1, errors  # once per reason, though retried
    assert errors[0].startswith(expected)
    assert "not authorized (0x87)" in errors[0] or "bad user name or password (0x86)" in errors[0]


@pytest.mark.slow
async def test_an_idle_hub_keeps_its_connection_alive_with_pings(
    stack: StackEndpoints, influx_db: str, hubs: HubRunner, publish: Publish
) -> None:
    settings = hub_settings(stack, influx_db, client_id=f"hub-idle-{influx_db}")
    quick = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"keepalive_s": 5})})
    hub = await hubs.start(quick)
    # Mosquitto drops a client silent for 1.5 x keep-alive (7.5 s): only the PINGREQs keep this one.
    await asyncio.sleep(9)
    assert hub.intake.connected
    assert (hub.intake.counters["connects"], hub.intake.counters["disconnects"]) == (1, 0)
    await announce(publish)
    await publish(f"{TOPIC}/data", data(1, reading("aq-01", "air_quality", TS, pm25=3)))
    rows = await wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 1)
    assert rows == [{"time": TS, "pm25": 3.0}]
