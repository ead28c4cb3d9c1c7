"""A message published by hand, exactly as docs/protocol.md shows, lands in InfluxDB as docs/storage.md says.

Nothing of ours produces the message: it is the JSON from the docs, sent with Mosquitto's own
``mosquitto_pub`` under a gateway's broker account. The hub runs as a child process (``ioc hub``), as it does
in production. As the docs say, the gateway's birth (retained) comes first, and timestamps are those of now: the
hub stores data only for devices the birth announced, stamped within its accepted window (hub/ingest/admission.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.auth import create_token
from ioc.stack import StackEndpoints, influx_query

pytestmark = pytest.mark.integration

SITE, GATEWAY = "site-b", "gw-2"


def birth(ts: int) -> str:
    """The birth example of docs/protocol.md, section `state`, verbatim apart from whitespace and its ``ts``."""
    return json.dumps(
        {
            "v": 1,
            "online": True,
            "session": "k3J9xQ2mPzA1",
            "ts": ts,
            "agent": "0.1.0",
            "devices": [
                {
                    "id": "aq-01",
                    "kind": "air_quality",
                    "profile": "pm-sensor-rs485",
                    "interval_s": 5.0,
                    "driver": "modbus_tcp",
                },
                {
                    "id": "wl-02",
                    "kind": "water_level",
                    "profile": "water-level-rs485",
                    "interval_s": 10.0,
                    "driver": "modbus_rtu",
                },
            ],
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry_url(tmp_path: Path) -> str:
    """The hub's registry (and token) database, so that a test can create a token for it."""
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def hub(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> Iterator[str]:
    user, password = stack.credentials("hub")
    port = free_port()
    client_id = f"hub-by-hand-{influx_db}"
    env = {
        **os.environ,
        "IOC_HUB_MQTT__HOST": stack.mqtt_host,
        "IOC_HUB_MQTT__PORT": str(stack.mqtt_port),
        "IOC_HUB_MQTT__USERNAME": user,
        "IOC_HUB_MQTT__PASSWORD": password,
        "IOC_HUB_MQTT__CLIENT_ID": client_id,
        "IOC_HUB_INFLUX__URL": stack.influx_url,
        "IOC_HUB_INFLUX__DATABASE": influx_db,
        "IOC_HUB_HTTP__PORT": str(port),
        "IOC_HUB_REGISTRY__URL": registry_url(tmp_path),
    }
    log = (tmp_path / "hub.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "ioc.cli", "hub"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "hub.log").read_text()
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "hub API did not come up:\n" + (tmp_path / "hub.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=15) == 0, (tmp_path / "hub.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
            # The hub's session outlives it (mqtt.session_expiry_s, an hour by default), subscribed to every
            # gateway's data: on the shared session stack it would hold later tests' messages (a flood's too).
            end_session(stack, "hub", client_id)


def end_session(stack: StackEndpoints, account: str, client_id: str) -> None:
    """End ``client_id``'s persistent session by hand: ``mosquitto_sub`` connects with that id and a clean start
    (MQTT 5, no session expiry), subscribes and exits (``-E``), so the broker discards the session and its queue."""
    binary = shutil.which("mosquitto_sub")
    assert binary, "mosquitto_sub missing: the stack runner installs mosquitto-clients"
    user, password = stack.credentials(account)
    subprocess.run(
        [
            binary,
            "-h",
            stack.mqtt_host,
            "-p",
            str(stack.mqtt_port),
            "-u",
            user,
            "-P",
            password,
            "-i",
            client_id,
            "-V",
            "mqttv5",
            "-t",
            "ioc/v1/+/+/state",
            "-E",
        ],
        check=True,
        timeout=10,
    )


def mosquitto_pub(stack: StackEndpoints, account: str, topic: str, payload: str, *, retain: bool = False) -> None:
    binary = shutil.which("mosquitto_pub")
    assert binary, "mosquitto_pub missing: the stack runner installs mosquitto-clients"
    user, password = stack.credentials(account)
    subprocess.run(
        [
            binary,
            "-h",
            stack.mqtt_host,
            "-p",
            str(stack.mqtt_port),
            "-u",
            user,
            "-P",
            password,
            "-i",
            stack.client_id(account, "by-hand"),
            "-q",
            "1",
            "-V",
            "mqttv311",
            "-t",
            topic,
            "-m",
            payload,
            *(["-r"] if retain else []),
        ],
        check=True,
        timeout=10,
    )


def wait_rows(stack: StackEndpoints, db: str, q: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = influx_query(stack.influx_url, db, q)
        if len(rows) >= n:
            return rows
        time.sleep(0.3)
    raise AssertionError(f"expected {n} rows for {q!r}, got {rows}")


def test_documented_data_message_is_stored_exactly(stack: StackEndpoints, influx_db: str, hub: str) -> None:
    ts = int(time.time() * 1000) - 60_000
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", f"ioc/v1/{SITE}/{GATEWAY}/state", birth(ts - 1000), retain=True)
    # The example of docs/protocol.md, section `data`, verbatim apart from whitespace and the times (moved to now,
    # 877 ms apart as in the docs).
    payload = json.dumps(
        {
            "v": 1,
            "session": "k3J9xQ2mPzA1",
            "seq": 42,
            "replay": False,
            "readings": [
                {
                    "device": "aq-01",
                    "kind": "air_quality",
                    "ts": ts,
                    "metrics": {"pm25": 35.2, "pm10": 61.0},
                },
                {
                    "device": "wl-02",
                    "kind": "water_level",
                    "ts": ts + 877,
                    "metrics": {"level_m": 1.82, "alarm": False},
                },
            ],
        }
    )
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", f"ioc/v1/{SITE}/{GATEWAY}/data", payload)

    aq = wait_rows(stack, influx_db, 'SELECT * FROM "air_quality"', 1)
    assert aq == [
        {
            "time": ts,
            "device": "aq-01",
            "gateway": GATEWAY,
            "kind": "air_quality",
            "site": SITE,
            "pm10": 61.0,
            "pm25": 35.2,
        }
    ]
    wl = wait_rows(stack, influx_db, 'SELECT * FROM "water_level"', 1)
    assert wl == [
        {
            "time": ts + 877,
            "alarm": False,
            "device": "wl-02",
            "gateway": GATEWAY,
            "kind": "water_level",
            "level_m": 1.82,
            "site": SITE,
        }
    ]
    # Tags are tags (indexed), not fields: InfluxDB lists exactly the allow-list.
    tag_keys = influx_query(stack.influx_url, influx_db, 'SHOW TAG KEYS FROM "air_quality"')
    assert sorted(r["tagKey"] for r in tag_keys) == ["device", "gateway", "kind", "site"]
    # Integers are stored as floats, so a later 3.5 on the same field can never be refused.
    field_keys = influx_query(stack.influx_url, influx_db, 'SHOW FIELD KEYS FROM "air_quality"')
    assert {r["fieldKey"]: r["fieldType"] for r in field_keys} == {"pm10": "float", "pm25": "float"}


def test_malformed_message_by_hand_is_dead_lettered_and_the_next_one_stored(
    stack: StackEndpoints, influx_db: str, hub: str, tmp_path: Path
) -> None:
    topic = f"ioc/v1/{SITE}/{GATEWAY}/data"
    ts = int(time.time() * 1000) - 60_000
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", f"ioc/v1/{SITE}/{GATEWAY}/state", birth(ts), retain=True)
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", topic, "{not json")
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", topic, '{"v":1,"session":"k3J9xQ2mPzA1","seq":1,"readings":[]}')
    good = (
        '{"v":1,"session":"k3J9xQ2mPzA1","seq":2,"readings":[{"device":"aq-01","kind":"air_quality",'
        f'"ts":{ts + 1000},"metrics":{{"pm25":40}}}}]}}'
    )
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", topic, good)
    rows = wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 1)
    assert rows == [{"time": ts + 1000, "pm25": 40.0}]
    token = create_token(registry_url(tmp_path), "technician")  # dead letters hold raw payloads
    letters = httpx.get(f"{hub}/api/v1/dead-letters", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    items = letters["items"] if isinstance(letters, dict) else letters
    assert len(items) == 2
    assert all(item["topic"] == topic for item in items)
    assert httpx.get(f"{hub}/api/v1/health", timeout=5).status_code == 200
