"""Fixtures shared by every test tier.

``stack`` starts the real Mosquitto and InfluxDB once per session (lazily: a unit-only run never starts it);
``influx_db`` gives each test its own fresh database on that InfluxDB.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

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
