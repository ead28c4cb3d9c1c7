"""Fixtures shared by every test tier.

``stack`` starts the real Mosquitto and InfluxDB once per session (lazily: a unit-only run never starts it);
``influx_db`` gives each test its own fresh database on that InfluxDB.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ioc.stack import LocalStack, StackEndpoints, create_database, drop_database, ensure_packages

#: The gateways every test session's broker has accounts for (account names "site-a.gw-1", ...).
STACK_GATEWAYS: tuple[tuple[str, str], ...] = (("site-a", "gw-1"), ("site-b", "gw-2"), ("demo", "gw-1"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """The session's local stack: Mosquitto with accounts hub, admin and one per gateway; InfluxDB."""
    ensure_packages()
    with LocalStack(tmp_path_factory.mktemp("stack"), gateways=STACK_GATEWAYS) as endpoints:
        yield endpoints


@pytest.fixture
def influx_db(stack: StackEndpoints) -> Iterator[str]:
    """A database created for this test only on the session's InfluxDB, dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    create_database(stack.influx_url, name)
    yield name
    drop_database(stack.influx_url, name)


@pytest.fixture(autouse=True)
def _clear_retained_states(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the broker, delete the retained birth/death messages it left on the gateways'
    state topics, so the next test's subscribers see only their own traffic."""
    yield
    if "stack" not in request.fixturenames:
        return
    endpoints: StackEndpoints = request.getfixturevalue("stack")
    clear_retained(endpoints, [f"ioc/v1/{site}/{gateway}/state" for site, gateway in STACK_GATEWAYS])


def clear_retained(endpoints: StackEndpoints, topics: list[str], timeout: float = 5.0) -> None:
    """Publish an empty retained message (MQTT's way to delete a retained one) on each topic, as admin."""
    user, password = endpoints.credentials("admin")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"retained-cleaner-{secrets.token_hex(4)}")
    client.username_pw_set(user, password)
    client.connect(endpoints.mqtt_host, endpoints.mqtt_port, keepalive=10)
    client.loop_start()
    try:
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
        for info in infos:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"could not clear the retained message on {topics}"
    finally:
        client.disconnect()
        client.loop_stop()
