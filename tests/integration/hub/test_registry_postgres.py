"""The hub's relational database on both backends: SQLite (one hub) and a real PostgreSQL (several hubs).

Each test runs on a fresh database of each backend (``db_url``). What PostgreSQL changes is concurrency: two hub
processes write the same rows at once. Two :class:`Database` objects on one URL stand for them here (each its
own engine, connection pool and writer thread), and each test checks the database, not the code, keeps order:
the schema created by two hubs starting together, the same birth persisted by both, tokens and transitions
written by one and read by the other.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.auth import ROLES, TokenStore
from hub.health.machine import FlapPolicy
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.health.store import TransitionSink, recent_transitions
from hub.registry.db import Database
from hub.registry.inventory import parse_yaml
from hub.registry.models import DeviceRow, SiteRow
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, Reading, State

pytestmark = pytest.mark.integration

TS = 1_764_331_200_000
INVENTORY_YAML = """
sites:
  - {id: ben-thanh, name: "Chợ Bến Thành", ward: quan-1, lat: 10.7725, lon: 106.698}
devices:
  - {id: aq-01, kind: air_quality, profile: pm-sensor-rs485, site: ben-thanh, gateway: gw-1,
     installed: 2025-03-01, inactivity_s: 30, tags: {owner: doe}}
  - {id: cam-01, kind: camera, site: ben-thanh, gateway: gw-1}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each backend (PostgreSQL: one database per test on the session's server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.create_schema()
    yield database
    database.close()


def birth(*devices: DeviceInfo, session: str = "sess-0001") -> State:
    return State(online=True, session=session, ts=TS, devices=list(devices))


def test_the_url_reaches_the_backend_it_names(db: Database, db_url: str) -> None:
    """Not SQLite under another name: the PostgreSQL case really talks to the server."""
    if db_url.startswith("postgresql"):
        version = db.run_sync(lambda s: s.connection().exec_driver_sql("SELECT version()").scalar())
        assert not db.is_sqlite
        assert str(version).startswith("PostgreSQL ")
    else:
        assert db.is_sqlite


async def test_registry_persists_merges_and_reloads(db: Database) -> None:
    registry = Registry(db)
    registry.apply_inventory(parse_yaml(INVENTORY_YAML, "inv.yaml"))
    conflicts = registry.apply_birth("ben-thanh", "gw-1", birth(DeviceInfo("cam-01", "display", "vms", 10.0)))
    assert [c.field for c in conflicts] == ["kind"]
    await registry.flush()
    again = Registry(Database(db.url))
    try:
        again.load()
    finally:
        assert again._db is not None
        again._db.close()
    assert again.sites["ben-thanh"].ward == "quan-1"
    assert again.sites["ben-thanh"].name == "Chợ Bến Thành"
    cam = again.devices["cam-01"]
    assert (cam.kind, cam.interval_s, cam.gateway) == ("display", 10.0, "gw-1")
    assert [(c.field, c.announced, c.inventory) for c in cam.conflicts] == [("kind", "display", "camera")]
    aq = again.devices["aq-01"]
    assert (aq.installed, aq.inactivity_s, aq.tags) == (date(2025, 3, 1), 30.0, {"owner": "doe"})
    # The conflict is stored as well as recomputed: the API reads it from the row.
    stored = db.run_sync(lambda s: s.get(DeviceRow, "cam-01").conflicts)  # type: ignore[union-attr]
    assert stored == [
        {"device": "cam-01", "field": "kind", "announced": "display", "inventory": "camera", "source": "inventory"}
    ]


async def test_a_correction_clears_the_conflict_in_the_database(db: Database) -> None:
    registry = Registry(db)
    registry.apply_inventory(parse_yaml(INVENTORY_YAML, "inv.yaml"))
    registry.apply_birth("ben-thanh", "gw-1", birth(DeviceInfo("cam-01", "display", "vms", 10.0)))
    corrected = INVENTORY_YAML.replace("{id: cam-01, kind: camera", "{id: cam-01, kind: display")
    result = registry.apply_inventory(parse_yaml(corrected, "inv.yaml"))
    assert (result.devices_updated, result.conflicts) == (1, [])
    await registry.flush()
    stored = db.run_sync(lambda s: s.get(DeviceRow, "cam-01").conflicts)  # type: ignore[union-attr]
    assert stored == []


async def test_an_update_keeps_first_seen_and_moves_updated(db: Database) -> None:
    registry = Registry(db)
    registry.apply_birth("site-a", "gw-1", birth(DeviceInfo("aq-01", "air_quality", "pm", 5.0)))
    await registry.flush()
    before = db.run_sync(lambda s: s.execute(select(DeviceRow.first_seen, DeviceRow.updated)).one())
    registry.apply_birth("site-a", "gw-1", birth(DeviceInfo("aq-01", "air_quality", "pm", 10.0), session="s-2"))
    await registry.flush()
    after = db.run_sync(
        lambda s: s.execute(select(DeviceRow.first_seen, DeviceRow.updated, DeviceRow.interval_s)).one()
    )
    assert after.first_seen == before.first_seen
    assert after.updated > before.updated
    assert after.interval_s == 10.0


def test_two_hubs_starting_together_create_the_schema_once(postgres_url: str) -> None:
    """Both check for the tables, find none and create them: the loser would fail on a duplicate type or
    relation unless creation is serialised. (PostgreSQL only: several hubs on one SQLite file is not a
    deployment; SQLite answers "database is locked" to this race.)"""
    hubs = [Database(postgres_url) for _ in range(2)]
    barrier = threading.Barrier(len(hubs))
    errors: list[BaseException] = []

    def start(database: Database) -> None:
        barrier.wait()
        try:
            database.create_schema()
        except BaseException as exc:  # collected, reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(h,)) for h in hubs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert hubs[1].run_sync(lambda s: s.scalar(select(func.count()).select_from(DeviceRow))) == 0
    finally:
        for h in hubs:
            h.close()


async def test_two_hubs_persist_the_same_births_at_once(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """Two hubs on one shared subscription both receive every birth and both write it: each device ends up once,
    and neither hub fails its write (a failed write would leave that hub's later changes unsaved)."""
    other = Database(db.url)
    try:
        hubs = [Registry(db), Registry(other)]
        with caplog.at_level(logging.ERROR, logger="hub.registry.registry"):
            for round_ in range(10):
                devices = [DeviceInfo(f"aq-{round_:02d}-{i:02d}", "air_quality", "pm", 5.0) for i in range(20)]
                state = birth(*devices, session=f"sess-{round_:04d}")
                for hub in hubs:
                    hub.apply_birth(f"site-{round_}", "gw-1", state)
                await asyncio.gather(*(hub.flush() for hub in hubs))
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        count = db.run_sync(lambda s: s.scalar(select(func.count()).select_from(DeviceRow)))
        sites = db.run_sync(lambda s: s.scalar(select(func.count()).select_from(SiteRow)))
        assert (count, sites) == (200, 10)
    finally:
        other.close()


async def test_tokens_created_by_one_hub_authenticate_on_the_other_until_revoked(db: Database) -> None:
    other = Database(db.url)
    try:
        clock = [0.0]
        here, there = TokenStore(db), TokenStore(other, clock=lambda: clock[0])
        tokens = {role: await here.create(role, wards=None, name=role, created_by="t") for role in ROLES}
        limited, _ = await here.create("viewer", wards=["quan-1", "quan-3"], name="ward", created_by="t")
        for role, (token, _row) in tokens.items():
            principal = await there.authenticate(token)
            assert principal is not None
            assert (principal.role, principal.wards) == (role, None)
        principal = await there.authenticate(limited)
        assert principal is not None
        assert principal.wards == frozenset({"quan-1", "quan-3"})
        assert await there.authenticate(limited[:-1] + ("A" if limited[-1] != "A" else "B")) is None
        assert [t["name"] for t in await there.list_tokens()] == [*ROLES, "ward"]
        token_id = tokens["operator"][1]["id"]
        revoked = await here.revoke(token_id)
        assert revoked is not None
        assert revoked["revoked"] is not None
        clock[0] += 31  # past the other hub's cache
        assert await there.authenticate(tokens["operator"][0]) is None
        assert await there.authenticate(tokens["admin"][0]) is not None
    finally:
        other.close()


async def test_health_transitions_are_stored_and_read_newest_first(db: Database) -> None:
    sink = TransitionSink(db, None)
    monitor = HealthMonitor(None, HealthPolicy(flap=FlapPolicy(60, 4, 30)), clock=lambda: 1000.0)
    monitor.subscribe(sink.add)
    monitor.observe("site-a", "gw-1", birth(DeviceInfo("aq-01", "air_quality", "pm", 2.0)))
    monitor.observe("site-a", "gw-1", DataBatch("sess-0001", 1, [Reading("aq-01", "air_quality", TS, {"pm25": 1})]))
    monitor.observe("site-a", "gw-1", Event("sess-0001", "aq-01", EventType.DEVICE_DOWN, TS, reason="no reply"))
    await sink.flush()
    other = Database(db.url)
    try:
        rows = await other.read(lambda s: recent_transitions(s, "aq-01", 10))
    finally:
        other.close()
    assert [(r["old"], r["new"]) for r in rows] == [("online", "offline"), ("unknown", "online")]
    assert "no reply" in rows[0]["reason"]
    gateway = await db.read(lambda s: recent_transitions(s, "site-a/gw-1", 10))
    assert [r["new"] for r in gateway] == ["online"]
