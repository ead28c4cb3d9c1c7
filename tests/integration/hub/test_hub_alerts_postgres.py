"""The alert tests of ``tests/unit/hub/test_hub_alerts.py``, run again on a real PostgreSQL.

Not a copy: every test of that file that takes the ``db`` fixture is taken from it as is, and ``db`` here is a
fresh PostgreSQL database. Among them the race of two engines, each with its own connection pool, opening the
same alert at once (one row, the loser gets the winner's alert). The stress test below races more openers per
round, through two pools, and checks the partial uniqueness survives resolve/re-open cycles.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import func, select

from hub.alerts.store import AlertConflict, AlertRow, AlertStore
from hub.registry.db import Database

pytestmark = pytest.mark.integration

_SUITE_PATH = Path(__file__).parents[2] / "unit" / "hub" / "test_hub_alerts.py"


def _load_suite() -> ModuleType:
    # Loaded under its own name, so pytest's own import of the unit file (as ``test_hub_alerts``) is untouched.
    spec = importlib.util.spec_from_file_location("_alerts_suite_on_postgres", _SUITE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_suite = _load_suite()
#: The unit file's fixtures other than ``db`` (the webhook receiver), used as they are.
receiver = _suite.receiver
_taken = [
    name
    for name, fn in vars(_suite).items()
    if name.startswith("test_") and callable(fn) and "db" in inspect.signature(fn).parameters
]
globals().update({name: getattr(_suite, name) for name in _taken})


def test_the_suite_was_taken() -> None:
    """A rename in the unit file must not silently leave nothing to run here."""
    assert len(_taken) >= 8
    assert "test_two_engines_racing_on_one_database_open_one_alert" in _taken


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    assert not database.is_sqlite
    database.create_schema()
    yield database
    database.close()


async def test_many_openers_through_two_pools_leave_one_open_alert_per_round(db: Database) -> None:
    other = Database(db.url)
    try:
        stores = [AlertStore(db), AlertStore(other)]
        values = {"rule": "pm25-high", "subject": "aq-01", "severity": "critical", "message": "x"}
        for round_ in range(5):
            results = await asyncio.gather(*(stores[i % 2].open(dict(values)) for i in range(16)))
            assert sum(created for _, created in results) == 1, f"round {round_}"
            (alert_id,) = {alert["id"] for alert, _ in results}
            resolved = await stores[round_ % 2].resolve(alert_id, "t", "cleared")
            assert resolved is not None
            assert resolved["state"] == "resolved"
        rows = db.run_sync(lambda s: s.scalar(select(func.count()).select_from(AlertRow)))
        open_rows = db.run_sync(
            lambda s: s.scalar(select(func.count()).select_from(AlertRow).where(AlertRow.open_key.is_not(None)))
        )
        assert (rows, open_rows) == (5, 0)
    finally:
        other.close()


async def test_two_hubs_clearing_the_same_alert_resolve_it_once(db: Database) -> None:
    """Both hubs see the condition clear: one resolves the alert (and notifies), the other finds nothing open."""
    other = Database(db.url)
    try:
        stores = [AlertStore(db), AlertStore(other)]
        values = {"rule": "fps-low", "subject": "cam-01", "severity": "major", "message": "x"}
        for round_ in range(10):
            await stores[0].open(dict(values))
            results = await asyncio.gather(*(s.resolve_open("cam-01", "fps-low", "system", "cleared") for s in stores))
            assert sum(r is not None for r in results) == 1, f"round {round_}: {results}"
    finally:
        other.close()


async def test_two_operators_resolving_one_alert_through_two_hubs_one_wins(db: Database) -> None:
    """The other gets the conflict (HTTP 409 in the API), not a second resolution over the first."""
    other = Database(db.url)
    try:
        stores = [AlertStore(db), AlertStore(other)]
        values = {"rule": "fps-low", "subject": "cam-01", "severity": "major", "message": "x"}
        for round_ in range(10):
            alert, _ = await stores[0].open(dict(values))
            results = await asyncio.gather(
                *(s.resolve(alert["id"], f"op-{n}", "fixed") for n, s in enumerate(stores)), return_exceptions=True
            )
            conflicts = [r for r in results if isinstance(r, AlertConflict)]
            done = [r for r in results if isinstance(r, dict)]
            assert (len(done), len(conflicts)) == (1, 1), f"round {round_}: {results}"
            stored = await stores[1].get(alert["id"])
            assert stored is not None
            assert stored["resolved_by"] == done[0]["resolved_by"]
    finally:
        other.close()
