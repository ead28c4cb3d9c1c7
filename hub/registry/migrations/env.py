"""Alembic's environment for the hub database, run by :mod:`hub.registry.migrations` on the connection it hands
over (``config.attributes["connection"]``): no alembic.ini, no URL, no logging setup of its own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hub.registry.db import hub_metadata

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    # What autogenerate and the tests compare a migrated database with.
    target_metadata=hub_metadata(),
    # SQLite alters a column or a constraint only by copying the table (https://sqlite.org/lang_altertable.html):
    # Alembic's "batch" operations do that copy.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
