"""Fixtures shared by every test tier.

``stack`` starts the real Mosquitto and InfluxDB once per session (lazily: a unit-only run never starts it);
``influx_db`` gives each test its own fresh database on that InfluxDB. ``postgres`` starts a PostgreSQL server
the same way (skipped, with the reason, where PostgreSQL cannot be had); ``postgres_url`` gives each test its
own fresh database on it, as a SQLAlchemy URL for the hub's ``registry.url``. ``db`` is a hub registry database
in SQLite in the test's folder, its schema created (a module that needs another database names its own ``db``).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.registry.db import Database
from ioc.stack import (
    LocalStack,
    PostgresServer,
    StackEndpoints,
    StackError,
    create_database,
    drop_database,
    ensure_packages,
    postgres_available,
)

#: The gateways every test session's broker has accounts for (account names "site-a.gw-1", ...).
STACK_GATEWAYS: tuple[tuple[str, str], ...] = (
    ("site-a", "gw-1"),
    ("site-b", "gw-2"),
    ("demo", "gw-1"),
    # Its own for tests that must be the only client of their gateway: with client ids bound to accounts, another
    # test's client of the same gateway still connected (with auto-reconnect) would take the id over and back.
    ("replay", "gw-1"),
    # The camera agent's, its own for the same reason (tests/integration/devices/test_camera_health_events.py).
    ("cameras", "gw-1"),
)
#: The gateways that also have a second account ("site-b.gw-2.second": the gateway's ACL, a client id of its own),
#: for a test that needs two connections on one gateway's topics at once: tests/integration/hub/
#: test_captured_gateway.py sends an oversized packet on gw-2's data topic while gw-2 floods.
STACK_SECOND_ACCOUNTS: tuple[tuple[str, str], ...] = (("site-b", "gw-2"),)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """The session's local stack: Mosquitto with accounts hub, hub-observe, hub-cmd, admin and one per gateway,
    each gateway's bound to the agent's client id as in production (a test playing a gateway connects with
    ``stack.client_id(account, ...)``); InfluxDB."""
    ensure_packages()
    state_dir = tmp_path_factory.mktemp("stack")
    with LocalStack(state_dir, gateways=STACK_GATEWAYS, second_accounts=STACK_SECOND_ACCOUNTS) as endpoints:
        yield endpoints


@pytest.fixture
def influx_db(stack: StackEndpoints) -> Iterator[str]:
    """A database created for this test only on the session's InfluxDB, dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    create_database(stack.influx_url, name)
    yield name
    drop_database(stack.influx_url, name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (``ioc.stack.postgres``), started on first use.

    Its folder is one of its own under /tmp, not pytest's: as root, PostgreSQL runs as the ``postgres`` user,
    who cannot enter /tmp/pytest-of-root."""
    try:
        ensure_packages()  # as root, installs postgresql when missing
    except StackError as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    reason = postgres_available()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    state_dir = Path(tempfile.mkdtemp(prefix="ioc-test-pg-"))
    state_dir.chmod(0o711)
    server = PostgresServer(state_dir)
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A database created for this test only on the session's PostgreSQL (its SQLAlchemy URL), dropped after."""
    assert postgres.endpoints is not None
    name = f"test_{secrets.token_hex(6)}"
    postgres.create_database(name)
    yield postgres.endpoints.url(name)
    postgres.drop_database(name)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    database.create_schema()
    yield database
    database.close()


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
