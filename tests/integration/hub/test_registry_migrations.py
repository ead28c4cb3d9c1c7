"""The hub database's migrations (hub/registry/migrations/) on SQLite and on a real PostgreSQL.

- Head is the schema the models make: an empty database upgraded to head and one made by ``create_all`` have the
  same tables, columns, keys and indexes, and Alembic finds no difference between head and the models.
- A database of each older schema kept in ``registry_schemas/`` (a folder per schema: the DDL the hub of that
  time ran, per backend; adding a case is adding a folder), holding rows in every table it has, upgrades to head
  when a hub starts: the same schema as a new database, stamped at head, every row kept, and the hub works on it.
- A migration that fails leaves the database as it was (one transaction, on both backends).
- On PostgreSQL, two hubs starting together on a database made before migrations migrate it once.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, create_engine, inspect, select, text

from hub.auth import Principal, TokenStore, _hash
from hub.errors import StartupError
from hub.registry.db import PG_SCHEMA_LOCK, Database, hub_metadata
from hub.registry.migrations.runner import Upgrade, head
from hub.registry.registry import Registry
from ioc.stack import PostgresServer
from wire.v1 import State

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parent / "registry_schemas"
#: Every older schema a city's database may still have (folder names).
CASES = sorted(p.name for p in SCHEMAS.iterdir() if p.is_dir())
SECRET = "m" * 43

NewDatabase = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewDatabase]:
    """Makes fresh, empty databases of one backend (a URL each; PostgreSQL: on the session's server), dropped
    after the test."""
    made: list[str] = []
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")

    def make() -> str:
        name = f"test_{secrets.token_hex(6)}"
        made.append(name)
        if server is None:
            return f"sqlite:///{tmp_path / name}.db"
        assert server.endpoints is not None
        server.create_database(name)
        return server.endpoints.url(name)

    yield make
    if server is not None:
        for name in made:
            server.drop_database(name)


def rows_of_every_table(now: datetime) -> dict[str, list[dict[str, Any]]]:
    """One row for each table any hub made; a schema without a table or column gets the rest."""
    t = now - timedelta(days=30)
    place = {"site": "ben-thanh", "gateway": "gw-1"}
    return {
        "sites": [
            {"id": "ben-thanh", "name": "Chợ Bến Thành", "ward": "quan-1", "lat": 10.7725, "lon": 106.698, "updated": t}
        ],
        "devices": [
            {"id": "aq-01", "kind": "air_quality", "profile": "pm-sensor-rs485", "driver": "modbus_rtu", **place,
             "lat": 10.7726, "lon": 106.6981, "installed": date(2025, 3, 1), "interval_s": 5.0, "inactivity_s": 30.0,
             "tags": {"owner": "doe"}, "announced": {"kind": "air_quality", "interval_s": 5.0, **place},
             "inventory": {**place, "installed": "2025-03-01", "tags": {"owner": "doe"}}, "conflicts": [],
             "first_seen": t, "updated": t},
        ],
        "device_moves": [
            {"device": "aq-01", "from_site": "ben-thanh", "from_gateway": "gw-9", "to_site": "ben-thanh",
             "to_gateway": "gw-1", "source": "api", "by": "tech (t-1)", "reason": "re-homed", "at": t},
        ],
        "health_transitions": [
            {"entity": "device", "key": "ben-thanh/gw-1/aq-01", **place, "device": "aq-01", "kind": "air_quality",
             "old": "unknown", "new": "online", "reason": "birth", "ts_ms": int(t.timestamp() * 1000), "at": t},
        ],
        "alerts": [
            {"rule": "pm25-high", "subject": "aq-01", "subject_type": "device", **place, "ward": "quan-1",
             "kind": "air_quality", "severity": "major", "state": "firing", "message": "pm25 61.5 > 55",
             "value": 61.5, "open_key": "aq-01|pm25-high", "opened_at": t, "acked_at": None, "acked_by": None,
             "resolved_at": None, "resolved_by": None, "resolution": None},
        ],
        "webhook_deliveries": [
            {"alert_id": 1, "event": "fired", "url": "https://ops.example/hook", "attempt": 1, "ok": True,
             "status_code": 204, "error": "", "duration_ms": 12, "at": t},
        ],
        "commands": [
            {"id": "cmd-0001", "device": "aq-01", **place, "action": "read_now", "params": {}, "timeout_s": 10.0,
             "requested_by": "tech (t-1)", "status": "ok", "detail": "", "result": {"pm25": 61.5}, "created": t,
             "finished": t, "duration_ms": 120.0},
        ],
        "api_tokens": [
            {"id": "0123456789ab", "name": "wall", "role": "viewer", "wards": ["quan-1"],
             "secret_sha256": _hash(SECRET), "created": t, "created_by": "cli", "revoked": None, "expires": None},
        ],
    }  # fmt: skip


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def make_old_database(url: str, case: str, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The database as the hub of ``case`` made it, with a row in each of its tables (the rows it was given,
    restricted to its columns, are returned)."""
    ddl = (SCHEMAS / case / f"{backend_of(url)}.sql").read_text(encoding="utf-8")
    sql = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    inserted: dict[str, list[dict[str, Any]]] = {}
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in filter(str.strip, sql.split(";")):
                connection.exec_driver_sql(statement)
            existing = set(inspect(connection).get_table_names())
            for name, rows in rows_of_every_table(now).items():
                if name not in existing:
                    continue
                table = Table(name, MetaData(), autoload_with=connection)
                inserted[name] = [{k: v for k, v in row.items() if k in table.c} for row in rows]
                connection.execute(table.insert(), inserted[name])
    finally:
        engine.dispose()
    return inserted


def schema_of(url: str) -> dict[str, Any]:
    """Every table (Alembic's own aside) with its columns in order, keys, unique constraints and indexes."""
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in found.get_columns(table)
                ],
                "primary key": found.get_pk_constraint(table),
                "foreign keys": sorted(
                    (str(fk["name"]), tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in found.get_foreign_keys(table)
                ),
                "unique": sorted(
                    (str(u["name"]), tuple(u["column_names"])) for u in found.get_unique_constraints(table)
                ),
                "indexes": sorted(
                    (str(i["name"]), tuple(map(str, i["column_names"])), i["unique"]) for i in found.get_indexes(table)
                ),
            }
            for table in sorted(set(found.get_table_names()) - {"alembic_version"})
        }
    finally:
        engine.dispose()


def differences_from_the_models(url: str) -> list[Any]:
    """What Alembic's autogenerate would write to make the database the models' (nothing when they agree)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), hub_metadata()))
    finally:
        engine.dispose()


def rows_in(url: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``names``, datetimes as aware UTC (SQLite gives back the naive UTC it stored)."""

    def utc(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            out = {}
            for name in names:
                table = Table(name, MetaData(), autoload_with=connection)
                out[name] = [
                    {k: utc(v) for k, v in row.items()} for row in connection.execute(select(table)).mappings()
                ]
            return out
    finally:
        engine.dispose()


def test_head_is_the_schema_the_models_make(new_database: NewDatabase) -> None:
    migrated, created = new_database(), new_database()
    db = Database(migrated)
    try:
        assert db.create_schema() == Upgrade(None, head(), made_before_migrations=False)
    finally:
        db.close()
    engine = create_engine(created)
    hub_metadata().create_all(engine)
    engine.dispose()
    assert differences_from_the_models(migrated) == []
    assert schema_of(migrated) == schema_of(created)
    assert set(schema_of(migrated)) == set(hub_metadata().tables)


@pytest.mark.parametrize("case", CASES)
async def test_a_database_of_an_older_schema_upgrades_to_head_keeping_its_rows(
    case: str, new_database: NewDatabase
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    url, fresh = new_database(), new_database()
    inserted = make_old_database(url, case, now)
    assert "sites" in inserted
    db = Database(url)
    try:
        assert db.create_schema() == Upgrade(None, head(), made_before_migrations=True)
        # The same schema as a database made at head, and nothing left for the models to ask.
        new = Database(fresh)
        new.create_schema()
        new.close()
        assert schema_of(url) == schema_of(fresh)
        assert differences_from_the_models(url) == []
        # Every row kept, every column of it (an autoincremented id as the database gave it).
        kept = rows_in(url, sorted(inserted))
        for name, rows in inserted.items():
            assert [{k: v for k, v in row.items() if k in rows[0]} for row in kept[name]] == rows, name
        # The hub works on it: the registry loads and records a move; an old token authenticates, never expiring.
        registry = Registry(db)
        registry.load()
        assert registry.owners() == {"aq-01": ("ben-thanh", "gw-1")}
        now_ms = int(now.timestamp() * 1000)
        registry.apply_birth("ben-thanh", "gw-2", State(online=True, session="sess-0002", ts=now_ms, devices=[]))
        registry.move("aq-01", "ben-thanh", "gw-2", by="tech (t-2)")
        await registry.flush()
        newest = (await registry.moves("aq-01"))[0]
        assert (newest["to_gateway"], newest["by"]) == ("gw-2", "tech (t-2)")
        if "api_tokens" in inserted:
            principal = await TokenStore(db).authenticate(f"ioc_0123456789ab_{SECRET}")
            assert principal == Principal("0123456789ab", "wall", "viewer", frozenset({"quan-1"}), None)
        # The next start finds it at head.
        assert db.create_schema() == Upgrade(head(), head(), made_before_migrations=False)
    finally:
        db.close()


def test_a_migration_that_fails_leaves_the_database_as_it_was(new_database: NewDatabase) -> None:
    """An index of the same name as one the first revision makes (index names are per schema, not per table):
    the revision fails on it after creating most tables, and none of them stays."""
    url = new_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, alert_id INTEGER)"))
        connection.execute(text("CREATE INDEX ix_webhook_deliveries_alert_id ON notes (alert_id)"))
    before = schema_of(url)
    db = Database(url)
    try:
        with pytest.raises(StartupError, match="cannot prepare the schema"):
            db.create_schema()
    finally:
        db.close()
    assert schema_of(url) == before
    assert "alembic_version" not in inspect(engine).get_table_names()
    engine.dispose()


def start_together(hubs: list[Database]) -> list[Upgrade]:
    """Every hub's :meth:`Database.create_schema` at once, each from its own thread; what each did."""
    barrier = threading.Barrier(len(hubs))
    done: list[Upgrade] = []
    errors: list[BaseException] = []

    def start(db: Database) -> None:
        barrier.wait()
        try:
            done.append(db.create_schema())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in hubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return done


def test_two_hubs_starting_together_on_a_database_made_before_migrations_migrate_it_once(postgres_url: str) -> None:
    """Both find no revision and tables missing; under the advisory lock one migrates, the other then finds the
    database at head. (PostgreSQL only: several hubs on one SQLite file is not a deployment.)"""
    make_old_database(postgres_url, "sites_and_devices", datetime.now(UTC).replace(microsecond=0))
    hubs = [Database(postgres_url) for _ in range(2)]
    try:
        done = start_together(hubs)
        assert sorted(done, key=lambda u: str(u.before)) == [
            Upgrade(head(), head(), made_before_migrations=False),
            Upgrade(None, head(), made_before_migrations=True),
        ]
        versions = hubs[0].run_sync(lambda s: s.execute(text("SELECT version_num FROM alembic_version")).all())
        assert [v for (v,) in versions] == [head()]
        registry = Registry(hubs[1])
        registry.load()
        assert registry.owners() == {"aq-01": ("ben-thanh", "gw-1")}
    finally:
        for db in hubs:
            db.close()


def test_hubs_of_one_process_starting_together_each_migrate_their_own_database(tmp_path: Path) -> None:
    """Alembic's run context is one per process (module-level proxies): hubs of one process starting together,
    here on SQLite files of their own, take turns with it and each gets its database migrated."""
    hubs = [Database(f"sqlite:///{tmp_path / f'hub-{n}.db'}") for n in range(4)]
    try:
        assert start_together(hubs) == [Upgrade(None, head(), made_before_migrations=False)] * len(hubs)
    finally:
        for db in hubs:
            db.close()


def test_a_hub_waits_for_the_schema_lock_another_hub_holds(postgres_url: str) -> None:
    """The advisory lock hubs take while migrating (here held by the test, as another hub process would)."""
    holder = create_engine(postgres_url)
    db = Database(postgres_url)
    done: list[Upgrade] = []
    try:
        with holder.connect() as connection:
            connection.execute(text(f"SELECT pg_advisory_lock({PG_SCHEMA_LOCK})"))
            start = threading.Thread(target=lambda: done.append(db.create_schema()))
            start.start()
            start.join(1.0)
            assert start.is_alive()
            assert "alembic_version" not in inspect(connection).get_table_names()
            connection.execute(text(f"SELECT pg_advisory_unlock({PG_SCHEMA_LOCK})"))
            start.join(30)
        assert done == [Upgrade(None, head(), made_before_migrations=False)]
    finally:
        db.close()
        holder.dispose()


def test_the_registry_reads_what_it_wrote_before_the_upgrade_on_both_backends_alike(new_database: NewDatabase) -> None:
    """The rows of a first-schema database read back through the current models (not only raw): the devices'
    JSON columns, dates and the sites' names survive as the registry's own objects."""
    url = new_database()
    make_old_database(url, "first_schema", datetime.now(UTC).replace(microsecond=0))
    db = Database(url)
    try:
        db.create_schema()
        registry = Registry(db)
        registry.load()
        device = registry.devices["aq-01"]
        assert (device.kind, device.installed, dict(device.tags)) == ("air_quality", date(2025, 3, 1), {"owner": "doe"})
        assert registry.sites["ben-thanh"].name == "Chợ Bến Thành"
        assert asyncio.run(registry.moves("aq-01"))[0]["from_gateway"] == "gw-9"
    finally:
        db.close()
