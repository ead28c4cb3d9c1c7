"""API tokens on a real SQLite database: optional expiry (refused from then on, shown when listed, set by the CLI's
``--expires-in``), a database made before tokens could expire still opens and its tokens keep working, and an
admin limited to wards lists and revokes only tokens within its wards."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hub.auth import Principal, TokenStore, _hash, create_token_in
from hub.cli import duration_s
from hub.registry.db import Database, utcnow

#: ``api_tokens`` exactly as the hub made it before tokens could expire (SQLAlchemy's DDL for SQLite, taken from
#: a database that code created), with one token in it.
OLD_TOKENS_TABLE = """
CREATE TABLE api_tokens (
	id VARCHAR(12) NOT NULL,
	name VARCHAR(100) NOT NULL,
	role VARCHAR(16) NOT NULL,
	wards JSON,
	secret_sha256 VARCHAR(64) NOT NULL,
	created DATETIME NOT NULL,
	created_by VARCHAR(100) NOT NULL,
	revoked DATETIME,
	PRIMARY KEY (id)
)
"""
OLD_SECRET = "s" * 43


def test_a_database_made_before_expiry_opens_and_its_tokens_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(OLD_TOKENS_TABLE)
        old.execute(
            "INSERT INTO api_tokens VALUES "
            "('0123456789ab', 'wall', 'viewer', NULL, ?, '2026-01-01 00:00:00', 'cli', NULL)",
            (_hash(OLD_SECRET),),
        )
    old.close()
    db = Database(f"sqlite:///{path}")
    try:
        db.create_schema()
        db.create_schema()  # a second start finds the column there
        with sqlite3.connect(path) as check:
            columns = [row[1] for row in check.execute("PRAGMA table_info(api_tokens)")]
        check.close()
        assert columns[-1] == "expires"
        store = TokenStore(db)
        principal = asyncio.run(store.authenticate(f"ioc_0123456789ab_{OLD_SECRET}"))
        assert principal == Principal("0123456789ab", "wall", "viewer", None, None)
        listed = asyncio.run(store.list_tokens())
        assert [(t["id"], t["expires"]) for t in listed] == [("0123456789ab", None)]
        # New tokens with an expiry go into the upgraded table.
        _, row = db.run_sync(lambda s: create_token_in(s, "viewer", expires_in_s=3600))
        assert row["expires"] is not None
    finally:
        db.close()


async def test_an_expired_token_is_refused_and_listed_with_its_expiry(db: Database) -> None:
    store = TokenStore(db)
    before = utcnow()
    short, short_row = await db.write(lambda s: create_token_in(s, "viewer", name="short", expires_in_s=1))
    lasting, _ = await db.write(lambda s: create_token_in(s, "viewer", name="lasting"))
    expires = datetime.fromisoformat(short_row["expires"])
    assert before + timedelta(seconds=1) <= expires <= utcnow() + timedelta(seconds=1)
    principal = await store.authenticate(short)
    assert principal is not None
    assert principal.expires == expires
    assert await store.active(principal)
    await asyncio.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.05)
    # Refused from the expiry on, although the lookup is still in the cache.
    assert await store.authenticate(short) is None
    assert not await store.active(principal)
    assert await store.authenticate(lasting) is not None
    listed = {t["name"]: t["expires"] for t in await store.list_tokens()}
    assert listed == {"short": short_row["expires"], "lasting": None}


@pytest.mark.parametrize("expires_in_s", [0, -5, 10 * 366 * 86_400 + 1])
def test_an_expiry_out_of_bounds_is_refused(db: Database, expires_in_s: int) -> None:
    with pytest.raises(ValueError, match="expiry must be between"):
        db.run_sync(lambda s: create_token_in(s, "viewer", expires_in_s=expires_in_s))


async def test_a_ward_limited_admin_manages_only_tokens_within_its_wards(db: Database) -> None:
    store = TokenStore(db)
    ids: dict[str, str] = {}
    for name, wards in (
        ("every", None),
        ("w1", ["quan-1"]),
        ("w1-w3", ["quan-1", "quan-3"]),
        ("w3", ["quan-3"]),
        ("admin-w1", ["quan-1"]),
    ):
        _, row = await db.write(
            lambda s, n=name, w=wards: create_token_in(  # type: ignore[misc]
                s, "admin" if n.startswith("admin") else "viewer", wards=w, name=n
            )
        )
        ids[name] = row["id"]
    admin_w1 = Principal(ids["admin-w1"], "admin-w1", "admin", frozenset({"quan-1"}))
    admin_w13 = Principal("x", "admin-w13", "admin", frozenset({"quan-1", "quan-3"}))
    admin_all = Principal("y", "admin", "admin", None)
    assert [t["name"] for t in await store.list_tokens(by=admin_w1)] == ["w1", "admin-w1"]
    assert [t["name"] for t in await store.list_tokens(by=admin_w13)] == ["w1", "w1-w3", "w3", "admin-w1"]
    assert len(await store.list_tokens(by=admin_all)) == 5
    # Revoking a token outside its wards: as if there were no such token, and it stays valid.
    for name in ("every", "w1-w3", "w3"):
        assert await store.revoke(ids[name], by=admin_w1) is None, name
    assert all(t["revoked"] is None for t in await store.list_tokens())
    revoked = await store.revoke(ids["w1"], by=admin_w1)
    assert revoked is not None
    assert revoked["revoked"] is not None
    assert (await store.revoke(ids["w3"], by=admin_all) or {}).get("revoked") is not None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86_400), ("12h", 43_200), ("30m", 1800), ("600s", 600), ("600", 600), (" 2h ", 7200)],
)
def test_expires_in_durations(text: str, seconds: int) -> None:
    assert duration_s(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "is not a duration"),
        ("1w", "is not a duration"),
        ("-5m", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("59s", "not between 1 minute and 10 years"),
        ("3661d", "not between 1 minute and 10 years"),
    ],
)
def test_bad_expires_in_durations(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        duration_s(text)


def test_ioc_hub_token_create_expires_in(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_HUB_")}
    env["IOC_HUB_REGISTRY__URL"] = f"sqlite:///{tmp_path / 'hub.db'}"
    run = [sys.executable, "-m", "ioc.cli", "hub", "token"]
    # The expiry is measured against the creation time the CLI itself stored, not against this process's clock:
    # the two processes' wall clocks need not agree (``make timeless`` moves this one only). The CLI stamps
    # ``expires`` and then ``created`` within the one run, so the expiry is 2 h after creation, less at most the
    # run's own duration (measured on the monotonic clock, which no one moves).
    started = time.monotonic()
    created = subprocess.run(
        [*run, "create", "--role", "viewer", "--name", "temp", "--expires-in", "2h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    took = timedelta(seconds=time.monotonic() - started)
    assert created.stdout.startswith("ioc_")
    listed = subprocess.run([*run, "list"], env=env, capture_output=True, text=True, timeout=60, check=True)
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["name"] == "temp"
    expires, created_at = datetime.fromisoformat(row["expires"]), datetime.fromisoformat(row["created"])
    assert timedelta(hours=2) - took <= expires - created_at <= timedelta(hours=2)
    bad = subprocess.run(
        [*run, "create", "--role", "viewer", "--expires-in", "soon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "--expires-in: 'soon' is not a duration" in bad.stderr
