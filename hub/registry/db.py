"""The hub's relational database (SQLAlchemy 2): SQLite by default, PostgreSQL for several hub instances.

Blocking SQLAlchemy calls never run on the event loop. :meth:`Database.write` runs a function in the one writer
thread (writes are applied in the order they were submitted, and SQLite has a single writer anyway);
:meth:`Database.read` runs one in a small pool of reader threads (SQLite in WAL mode lets readers run beside
the writer). Each call gets its own session and commits when the function returns.

URLs: ``sqlite:///path/to/hub.db`` (default ``sqlite:///ioc-hub.db``, created on first start; one hub process)
or ``postgresql+psycopg://user:password@host/ioc`` (several hub processes; the ``psycopg`` driver comes with the
``hub`` extra). Other databases are refused at start. At every start the hub brings the schema to the newest
revision of its Alembic migrations (:mod:`hub.registry.migrations`): an empty database gets the whole schema, a
database of an older hub is upgraded in place, its rows kept. The schema is the same on both. On PostgreSQL,
hubs starting together migrate one after the other (an advisory lock), and every write that two hubs may make
at once is one the database settles: an upsert for the registry, a unique key for open alerts.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import JSON, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from hub.errors import StartupError

if TYPE_CHECKING:
    from hub.registry.migrations.runner import Status, Upgrade

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long SQLite waits for a lock held by another connection before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Modules that declare tables on :class:`Base`.
TABLE_MODULES = ("hub.registry.models", "hub.health.store", "hub.alerts.store", "hub.operations.commands", "hub.auth")
#: Reader threads (API list and history queries).
READERS = 4
#: How long connecting to PostgreSQL may take before the call fails (libpq ``connect_timeout``, seconds).
PG_CONNECT_TIMEOUT_S = 10
#: The key of the advisory lock hubs take on PostgreSQL while migrating the schema (any fixed bigint).
PG_SCHEMA_LOCK = 0x10C_5C4E
#: The backends the hub supports.
BACKENDS = ("sqlite", "postgresql")


class Base(DeclarativeBase):
    """Every table of the hub (registry, health, alerts, commands, tokens) shares this metadata."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 - SQLAlchemy's documented form


def hub_metadata() -> MetaData:
    """Every table of the hub as its models declare them (the modules that declare tables are imported here, so
    the metadata is complete whoever asks): what the newest migration must make."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return Base.metadata


def utcnow() -> datetime:
    """Now, UTC, timezone-aware (stored naive-UTC by SQLite, timestamptz by PostgreSQL)."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset; SQLite gives back naive datetimes, which were stored as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer nor the writer the readers (https://sqlite.org/wal.html).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; :class:`StartupError` naming the URL (without its password) when it is unusable."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StartupError(f"registry.url is not a database URL: {exc}") from exc
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in BACKENDS:
        raise StartupError(f"registry.url {shown}: the hub supports {' and '.join(BACKENDS)} only")
    try:
        if parsed.get_backend_name() == "sqlite":
            connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            engine = create_engine(url, connect_args=connect_args)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
            engine = create_engine(url, pool_pre_ping=True, pool_size=READERS + 1, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise StartupError(f"registry.url {shown}: the database driver is not installed ({exc})") from exc
    return engine


class Database:
    """The engine, a session factory and the threads that run blocking calls. ``close()`` stops them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-db-write")
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="hub-db-read")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def create_schema(self) -> Upgrade:
        """Bring the schema to the newest migration (blocking; once at start): create it in an empty database,
        upgrade an older hub's in place (also one made before migrations). What was done is logged and returned.

        :class:`StartupError` naming the URL (without its password) when the database is unreachable, a
        migration fails, or a newer hub migrated the database past what this one knows."""
        from hub.registry.migrations import runner  # noqa: PLC0415 - Alembic only where a schema is prepared

        shown = make_url(self.url).render_as_string(hide_password=True)
        try:
            with self.engine.begin() as connection:
                if self.is_sqlite:
                    # pysqlite opens no transaction for DDL, so each statement of a migration would commit on its
                    # own; in an explicit one a failed migration leaves nothing behind (SQLite's DDL is
                    # transactional). IMMEDIATE takes the write lock at once: another process on the file waits
                    # (busy_timeout) instead of migrating beside this one.
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    # Two hubs starting together would both find the database behind and both migrate it; the
                    # loser would fail on a duplicate table, or apply a revision twice. The lock is held until
                    # this transaction (DDL included: PostgreSQL's DDL is transactional) commits.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_SCHEMA_LOCK})")
                done = runner.upgrade(connection)
        except (SQLAlchemyError, StartupError) as exc:
            raise StartupError(f"registry.url {shown}: cannot prepare the schema: {exc}") from exc
        log.debug("database %s ready: %s", shown, done.describe())
        return done

    def schema_status(self) -> Status:
        """Where the database's schema stands against this hub's migrations (reads only; ``ioc hub db status``)."""
        from hub.registry.migrations import runner  # noqa: PLC0415 - Alembic only where a schema is looked at

        try:
            with self.engine.connect() as connection:
                return runner.status(connection)
        except SQLAlchemyError as exc:
            shown = make_url(self.url).render_as_string(hide_password=True)
            raise StartupError(f"registry.url {shown}: cannot read the schema's revision: {exc}") from exc

    def run_sync(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` with a session in the calling thread and commit (for start-up, the CLI and tests)."""
        with self.sessions.begin() as session:
            return fn(session)

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in the writer thread, in submission order, and commit."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, partial(self.run_sync, fn))

    async def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, partial(self.run_sync, fn))

    def close(self) -> None:
        """Wait for submitted work, then release the threads and the connections."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
