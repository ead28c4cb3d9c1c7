"""Migrations of the hub database (Alembic), shipped in the package and run by the hub at every start.

:meth:`hub.registry.db.Database.create_schema` runs :func:`.runner.upgrade` on one connection, in one
transaction (on PostgreSQL under an advisory lock, so hubs starting together migrate one after the other and
the later ones find the database at head). There is no alembic.ini: :mod:`.runner` builds the configuration,
``env.py`` runs on the connection it is handed. ``ioc hub db status|upgrade`` shows and applies the same.

Revisions live in ``versions/``, one module each, ``rNNNN_<slug>.py`` with revision id ``NNNN``, in one line
(each revises the one before). The first, 0001, is the schema of the last hub before migrations; it also adopts
a database made before migrations (no ``alembic_version`` table), whatever hub made it (its docstring says
how). To change the schema, change the models, then ``python -m hub.registry.migrations revision "what
changes"`` drafts the next revision from the difference between the models and a database at head: read it and
complete it by hand (renames, data). ``tests/integration/hub/test_registry_migrations.py`` fails while head and
the models differ, on SQLite and on PostgreSQL, and upgrades the older schemas kept in
``tests/integration/hub/registry_schemas/``.
"""

import logging

# Alembic reports its own set-up at INFO on every run, some of it when first imported (context implementation,
# plugins); the hub logs what a run changed itself (runner.upgrade). Set here, before any Alembic module is
# imported; a level that the operator's logging configuration gives is left alone.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)
