"""The hub's relational database (SQLAlchemy 2): SQLite by default, PostgreSQL for several hub instances.

Blocking SQLAlchemy calls never run on the event loop. :meth:`Database.write` runs a function in the one writer
thread (writes are applied in the order they were submitted, and SQLite has a single writer anyway);
:meth:`Database.read` runs one in a small pool of reader threads (SQLite in WAL mode lets readers run beside
the writer). Each call gets its own session and commits when the function returns.

URLs: ``sqlite:///path/to/hub.db`` (default ``sqlite:///ioc-hub.db``, created on first start; one hub process)
or ``postgresql+psycopg://user:password@host/ioc`` (several hub processes; the ``psycopg`` driver comes with the
``hub`` extra). Other databases are refused at start. The schema is created on start when missing
(``create_all``); it is the same on both. On PostgreSQL, hubs starting together create it one after the other
(an advisory lock), and every write that two hubs may make at once is one the database settles: an upsert
for the registry, a unique key for open alerts.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import JSON, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from hub.errors import StartupError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long SQLite waits for a lock held by another connection before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Modules that declare tables on :class:`Base`.
TABLE_MODULES = ("hub.registry.models", "hub.health.store", "hub.alerts.store", "hub.commands", "hub.auth")
#: Reader threads (API list and history queries).
READERS = 4
#: How long connecting to PostgreSQL may take before the call fails (libpq ``connect_timeout``, seconds).
PG_CONNECT_TIMEOUT_S = 10
#: The key of the advisory lock hubs take on PostgreSQL while creating the schema (any fixed bigint).
PG_SCHEMA_LOCK = 0x10C_5C4E
#: The backends the hub supports.
BACKENDS = ("sqlite", "postgresql")


class Base(DeclarativeBase):
    """Every table of the hub (registry, health, alerts, commands, tokens) shares this metadata."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 - SQLAlchemy's documented form


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

    def create_schema(self) -> None:
        """Create missing tables, and the indexes an older database's tables lack (blocking; once at start).

        ``create_all`` makes a table's indexes only with the table; an index added to the models later (e.g.
        ``alerts.resolved_at``) is created here on a database made before it (``checkfirst``)."""
        # The modules that declare tables, imported here so that the metadata is complete whoever calls this.
        for module in TABLE_MODULES:
            importlib.import_module(module)
        shown = make_url(self.url).render_as_string(hide_password=True)
        try:
            with self.engine.begin() as connection:
                if not self.is_sqlite:
                    # Two hubs starting together would both find a table missing and both create it; the loser
                    # fails on a duplicate name. The lock is held until this transaction (DDL included) commits.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_SCHEMA_LOCK})")
                Base.metadata.create_all(connection)
                for table in Base.metadata.sorted_tables:
                    for index in table.indexes:
                        index.create(connection, checkfirst=True)
        except SQLAlchemyError as exc:
            raise StartupError(f"registry.url {shown}: cannot create the schema: {exc}") from exc
        log.debug("database %s ready", shown)

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
