"""A PostgreSQL database made before tokens could expire: two hubs starting on it together add the ``expires``
column once (under the schema lock), its tokens keep working and never expire, and new tokens can expire."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import create_engine, text

from hub.auth import Principal, TokenStore, _hash, create_token_in
from hub.registry.db import Database

pytestmark = pytest.mark.integration

#: ``api_tokens`` exactly as the hub made it on PostgreSQL before tokens could expire (SQLAlchemy's DDL).
OLD_TOKENS_TABLE = """
CREATE TABLE api_tokens (
    id VARCHAR(12) NOT NULL,
    name VARCHAR(100) NOT NULL,
    role VARCHAR(16) NOT NULL,
    wards JSON,
    secret_sha256 VARCHAR(64) NOT NULL,
    created TIMESTAMP WITH TIME ZONE NOT NULL,
    created_by VARCHAR(100) NOT NULL,
    revoked TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (id)
)
"""
OLD_SECRET = "p" * 43


def test_an_old_postgres_database_gets_the_expiry_column_once(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text(OLD_TOKENS_TABLE))
        connection.execute(
            text(
                "INSERT INTO api_tokens VALUES ('0123456789ab', 'wall', 'viewer', '[\"quan-1\"]', :digest, "
                "'2026-01-01 00:00:00+00', 'cli', NULL)"
            ),
            {"digest": _hash(OLD_SECRET)},
        )
    engine.dispose()
    hubs = [Database(postgres_url) for _ in range(2)]
    try:
        errors: list[BaseException] = []

        def start(db: Database) -> None:
            try:
                db.create_schema()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(db,)) for db in hubs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        store = TokenStore(hubs[0])
        principal = asyncio.run(store.authenticate(f"ioc_0123456789ab_{OLD_SECRET}"))
        assert principal == Principal("0123456789ab", "wall", "viewer", frozenset({"quan-1"}), None)
        _, row = hubs[1].run_sync(lambda s: create_token_in(s, "viewer", expires_in_s=600))
        listed = {t["id"]: t["expires"] for t in asyncio.run(store.list_tokens())}
        assert listed["0123456789ab"] is None
        assert listed[row["id"]] == row["expires"]
    finally:
        for db in hubs:
            db.close()
