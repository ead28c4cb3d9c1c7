"""A message published by hand, exactly as docs/protocol.md shows, lands in InfluxDB as docs/storage.md says.

Nothing of ours produces the message: it is the JSON from the docs, sent with Mosquitto's own
``mosquitto_pub`` under a gateway's broker account. The hub runs as a child process (``ioc hub``), as it does
in production.
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
    env = {
        **os.environ,
        "IOC_HUB_MQTT__HOST": stack.mqtt_host,
        "IOC_HUB_MQTT__PORT": str(stack.mqtt_port),
        "IOC_HUB_MQTT__USERNAME": user,
        "IOC_HUB_MQTT__PASSWORD": password,
        "IOC_HUB_MQTT__CLIENT_ID": f"hub-by-hand-{influx_db}",
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


def mosquitto_pub(stack: StackEndpoints, account: str, topic: str, payload: str) -> None:
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
            "-q",
            "1",
            "-V",
            "mqttv311",
            "-t",
            topic,
            "-m",
            payload,
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
    # The example of docs/protocol.md, section `data`, verbatim apart from whitespace.
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
                    "ts": 1764331200123,
                    "metrics": {"pm25": 35.2, "pm10": 61.0},
                },
                {
                    "device": "wl-02",
                    "kind": "water_level",
                    "ts": 1764331201000,
                    "metrics": {"level_m": 1.82, "alarm": False},
                },
            ],
        }
    )
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", f"ioc/v1/{SITE}/{GATEWAY}/data", payload)

    aq = wait_rows(stack, influx_db, 'SELECT * FROM "air_quality"', 1)
    assert aq == [
        {
            "time": 1764331200123,
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
            "time": 1764331201000,
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
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", topic, "{not json")
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", topic, '{"v":1,"session":"k3J9xQ2mPzA1","seq":1,"readings":[]}')
    good = (
        '{"v":1,"session":"k3J9xQ2mPzA1","seq":2,"readings":[{"device":"aq-01","kind":"air_quality",'
        '"ts":1764331260000,"metrics":{"pm25":40}}]}'
    )
    mosquitto_pub(stack, f"{SITE}.{GATEWAY}", topic, good)
    rows = wait_rows(stack, influx_db, 'SELECT "pm25" FROM "air_quality"', 1)
    assert rows == [{"time": 1764331260000, "pm25": 40.0}]
    token = create_token(registry_url(tmp_path), "technician")  # dead letters hold raw payloads
    letters = httpx.get(f"{hub}/api/v1/dead-letters", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    items = letters["items"] if isinstance(letters, dict) else letters
    assert len(items) == 2
    assert all(item["topic"] == topic for item in items)
    assert httpx.get(f"{hub}/api/v1/health", timeout=5).status_code == 200
