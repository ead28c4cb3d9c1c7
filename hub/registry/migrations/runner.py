"""Running the hub database's migrations: the Alembic configuration (no alembic.ini), head, a database's
revision, and the upgrade the hub runs at start."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from hub.errors import StartupError

log = logging.getLogger(__name__)

#: This folder: env.py, the revision template and versions/.
SCRIPT_LOCATION = Path(__file__).parent
#: How a revision's module is named (Alembic's file_template): ``r0002_devices_firmware.py``.
FILE_TEMPLATE = "r%(rev)s_%(slug)s"
#: Alembic runs env.py through module-level proxies (``alembic.context``, ``alembic.op``), one per process: two
#: databases migrated at once from two threads (hubs in one process, on two SQLite files) would share them.
_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What :func:`upgrade` did: the revision before (None: no revision yet) and after, and whether the database
    had tables without a revision (made before migrations: adopted by revision 0001)."""

    before: str | None
    after: str
    made_before_migrations: bool

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        if not self.changed:
            return f"at revision {self.after} (head), nothing to do"
        if self.made_before_migrations:
            return f"made before migrations: adopted and upgraded to revision {self.after}"
        if self.before is None:
            return f"empty: schema created at revision {self.after}"
        return f"upgraded from revision {self.before} to {self.after}"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the hub database; ``env.py`` runs on ``connection``."""
    config = Config(attributes={"connection": connection})
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("file_template", FILE_TEMPLATE.replace("%", "%%"))
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this hub knows."""
    found = script_directory().get_current_head()
    if found is None:  # a package without versions/: a broken install
        raise StartupError(f"no migration found in {SCRIPT_LOCATION / 'versions'}")
    return found


def revision_of(connection: Connection) -> str | None:
    """The database's revision (None: empty, or made before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def has_tables(connection: Connection) -> bool:
    """Whether the database holds any table (besides Alembic's own)."""
    return bool(set(inspect(connection).get_table_names()) - {"alembic_version"})


@dataclass(frozen=True, slots=True)
class Status:
    """Where a database stands: its revision (None: none yet), this hub's head, whether it holds tables and
    whether this hub knows its revision."""

    current: str | None
    head: str
    has_tables: bool
    known: bool

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.at_head:
            return f"revision {self.current}: up to date"
        if not self.known:
            return (
                f"revision {self.current}: unknown to this hub (its newest is {self.head}); "
                "a newer hub migrated this database"
            )
        if self.current is None and self.has_tables:
            return f"no revision, made before migrations: the next start (or upgrade) adopts it at {self.head}"
        if self.current is None:
            return f"empty: the next start (or upgrade) creates the schema at revision {self.head}"
        return f"revision {self.current}: behind {self.head}; the next start (or upgrade) upgrades it"


def status(connection: Connection) -> Status:
    """Where the database on ``connection`` stands (reads only)."""
    current = revision_of(connection)
    known = current is None or current in {s.revision for s in script_directory().walk_revisions()}
    return Status(current, head(), has_tables(connection), known)


def upgrade(connection: Connection) -> Upgrade:
    """Bring the database on ``connection`` to head, in the caller's transaction (blocking).

    :class:`StartupError` when the database is at a revision this hub does not know: a newer hub migrated it,
    and this one would misread it."""
    found = status(connection)
    if not found.known:
        raise StartupError(f"{found.describe()}: run that hub or a newer one")
    try:
        with _ONE_AT_A_TIME:
            command.upgrade(alembic_config(connection), "head")
    except CommandError as exc:  # a revision that does not apply (its SQL errors are SQLAlchemy's own)
        raise StartupError(f"migration to {found.head} failed: {exc}") from exc
    done = Upgrade(found.current, found.head, found.current is None and found.has_tables)
    if done.changed:
        log.info("hub database: %s", done.describe())
    return done
