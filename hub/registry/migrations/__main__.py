"""``python -m hub.registry.migrations revision "what changes"``: draft the next revision (a developer's tool).

The models are compared with a temporary SQLite database at head (Alembic's autogenerate, in batch operations,
which SQLite needs and PostgreSQL runs as plain ALTERs). The module written to ``versions/`` is a draft: read
it, complete what autogenerate cannot see (a rename is a drop and an add to it; data to carry over), format it
(``ruff format``) and run ``tests/integration/hub/test_registry_migrations.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from alembic import command

from hub.registry.db import Database
from hub.registry.migrations.runner import alembic_config, head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.registry.migrations", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    revision = commands.add_parser("revision", help="draft the next revision from the models")
    revision.add_argument("message", help="what the revision changes, one line")
    args = parser.parse_args(argv)
    next_id = f"{int(head()) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="ioc-migrations-") as folder:
        db = Database(f"sqlite:///{Path(folder) / 'head.db'}")
        try:
            db.create_schema()
            with db.engine.begin() as connection:  # Alembic names the file it writes
                command.revision(alembic_config(connection), message=args.message, autogenerate=True, rev_id=next_id)
        finally:
            db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
