"""The hub database's migrations, on SQLite: revisions in one line, a database a newer hub migrated refused,
``ioc hub db status|upgrade``. Head against the models, the upgrade of every older schema on both backends and
hubs starting together are in tests/integration/hub/test_registry_migrations.py."""

from __future__ import annotations

import ast
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hub.errors import StartupError
from hub.registry.db import Database
from hub.registry.migrations.runner import SCRIPT_LOCATION, head, script_directory

VERSIONS = SCRIPT_LOCATION / "versions"


def test_revisions_form_one_line_numbered_from_0001_each_in_a_file_named_after_it() -> None:
    scripts = list(script_directory().walk_revisions())  # newest first
    ids = [s.revision for s in reversed(scripts)]
    assert ids == [f"{n:04d}" for n in range(1, len(ids) + 1)]
    assert [s.down_revision for s in reversed(scripts)] == [None, *ids[:-1]]
    assert head() == ids[-1]
    for script in scripts:
        assert re.fullmatch(rf"r{script.revision}_[a-z0-9_]+\.py", Path(script.path).name), script.path
    modules = {p.name for p in VERSIONS.glob("*.py")} - {"__init__.py"}
    assert modules == {Path(s.path).name for s in scripts}


def test_the_first_revision_does_not_import_the_models() -> None:
    """Its tables are frozen in the file: the models move on with later revisions, the first schema must not."""
    tree = ast.parse((VERSIONS / "r0001_first_schema.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m is not None and m.startswith("hub")} == set()


def test_a_database_a_newer_hub_migrated_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = Database(f"sqlite:///{path}")
    try:
        db.create_schema()
        with sqlite3.connect(path) as connection:
            connection.execute("UPDATE alembic_version SET version_num = '9999'")
        connection.close()
        status = db.schema_status()
        assert (status.current, status.known, status.at_head) == ("9999", False, False)
        with pytest.raises(StartupError) as err:
            db.create_schema()
    finally:
        db.close()
    assert str(err.value) == (
        f"registry.url sqlite:///{path}: cannot prepare the schema: revision 9999: unknown to this hub (its newest "
        f"is {head()}); a newer hub migrated this database: run that hub or a newer one"
    )
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]
    connection.close()


def run_db_cli(*args: str, url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_HUB_")}
    if url is not None:
        env["IOC_HUB_REGISTRY__URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "ioc.cli", "hub", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ioc_hub_db_status_and_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    steps = [run_db_cli(action, url=url) for action in ("status", "upgrade", "status", "upgrade")]
    assert [(r.returncode, r.stdout) for r in steps] == [
        (0, f"{url}: empty: the next start (or upgrade) creates the schema at revision {head()}\n"),
        (0, f"{url}: empty: schema created at revision {head()}\n"),
        (0, f"{url}: revision {head()}: up to date\n"),
        (0, f"{url}: at revision {head()} (head), nothing to do\n"),
    ]


def test_ioc_hub_db_on_a_database_made_before_migrations(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE sites (id VARCHAR(64) NOT NULL, PRIMARY KEY (id))")
    connection.close()
    url = f"sqlite:///{path}"
    status = run_db_cli("status", url=url)
    assert (status.returncode, status.stdout) == (
        0,
        f"{url}: no revision, made before migrations: the next start (or upgrade) adopts it at {head()}\n",
    )


def test_ioc_hub_db_without_a_database_url_exits_2() -> None:
    result = run_db_cli("status", url=None)
    assert result.returncode == 2
    assert "ioc hub db: registry.url is not set" in result.stderr
