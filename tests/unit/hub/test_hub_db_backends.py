"""The hub database's URL checks: only SQLite and PostgreSQL, errors name the URL without its password."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import inspect

from hub.errors import StartupError
from hub.registry.db import Database


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql+pymysql://hub:s3cret@db/ioc",
         "registry.url mysql+pymysql://hub:***@db/ioc: the hub supports sqlite and postgresql only"),
        ("not a url", "registry.url is not a database URL"),
        ("postgresql+nosuchdriver://hub:s3cret@db/ioc", "hub:***@db/ioc: the database driver is not installed"),
    ],
)  # fmt: skip
def test_unusable_urls_are_refused_at_start(url: str, expected: str) -> None:
    with pytest.raises(StartupError) as err:
        Database(url)
    assert expected in str(err.value)
    assert "s3cret" not in str(err.value)


def test_an_unreachable_postgresql_is_a_startup_error_without_the_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgresql+psycopg://hub:s3cret@127.0.0.1:{port}/ioc")
    try:
        with pytest.raises(StartupError) as err:
            db.create_schema()
    finally:
        db.close()
    shown = f"postgresql+psycopg://hub:***@127.0.0.1:{port}/ioc"
    assert f"registry.url {shown}: cannot prepare the schema" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_an_index_added_to_the_models_later_is_created_on_an_older_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        db.create_schema()

        def indexes() -> set[str]:
            return {str(i["name"]) for i in inspect(db.engine).get_indexes("alerts")}

        assert "ix_alerts_resolved_at" in indexes()
        with db.engine.begin() as connection:  # a database made before the index existed (and migrations)
            connection.exec_driver_sql("DROP INDEX ix_alerts_resolved_at")
            connection.exec_driver_sql("DROP TABLE alembic_version")
        assert "ix_alerts_resolved_at" not in indexes()
        db.create_schema()
        assert "ix_alerts_resolved_at" in indexes()
        db.create_schema()  # and again: nothing to do, no error
    finally:
        db.close()
