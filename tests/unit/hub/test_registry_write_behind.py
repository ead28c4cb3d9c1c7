"""Registry write-behind: the changes of a storm of births share database transactions, none is lost, and
``flush`` writes what waits at once."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from hub.registry.db import Database
from hub.registry.registry import WRITE_COALESCE_S, Registry
from wire.v1 import DeviceInfo, State


def birth(session: str, *devices: DeviceInfo) -> State:
    return State(online=True, session=session, ts=1_764_331_200_000, devices=list(devices))


def count_commits(db: Database) -> list[int]:
    commits = [0]

    def committed(_conn: Any) -> None:
        commits[0] += 1

    event.listen(db.engine, "commit", committed)
    return commits


async def test_a_storm_of_births_is_written_in_a_few_transactions_and_every_row_lands(db: Database) -> None:
    registry = Registry(db)
    commits = count_commits(db)
    for n in range(200):
        info = DeviceInfo(f"aq-{n:04d}", "air_quality", "pm-sensor-rs485", 10.0)
        registry.apply_birth(f"site-{n:04d}", f"gw-{n:04d}", birth("s-1", info))
    await registry.flush()
    assert commits[0] == 1  # 200 births on one loop turn: one write
    again = Registry(db)
    again.load()
    assert len(again.sites) == 200
    assert len(again.devices) == 200
    assert (again.devices["aq-0199"].site, again.devices["aq-0199"].gateway) == ("site-0199", "gw-0199")


async def test_changes_wait_at_most_the_coalescing_delay_and_the_latest_values_are_written(db: Database) -> None:
    registry = Registry(db)
    commits = count_commits(db)
    registry.apply_birth("s1", "gw-1", birth("s-1", DeviceInfo("aq-01", "air_quality", "p", 10.0)))
    registry.apply_birth("s1", "gw-1", birth("s-2", DeviceInfo("aq-01", "air_quality", "p", 5.0)))
    assert commits[0] == 0  # written behind, not at once
    await asyncio.sleep(WRITE_COALESCE_S + 0.5)
    assert commits[0] == 1
    registry.apply_birth("s1", "gw-1", birth("s-3", DeviceInfo("aq-01", "air_quality", "p", 2.0)))
    await registry.flush()
    assert commits[0] == 2
    again = Registry(db)
    again.load()
    assert again.devices["aq-01"].interval_s == 2.0


async def test_changes_made_while_a_write_runs_are_written_by_the_next_one(db: Database) -> None:
    registry = Registry(db)
    registry.apply_birth("s1", "gw-1", birth("s-1", DeviceInfo("aq-01", "air_quality", "p", 10.0)))
    await asyncio.sleep(WRITE_COALESCE_S + 0.01)  # the first write is submitted (it may still run)
    registry.apply_birth("s2", "gw-2", birth("s-1", DeviceInfo("aq-02", "air_quality", "p", 10.0)))
    await registry.flush()
    again = Registry(db)
    again.load()
    assert set(again.devices) == {"aq-01", "aq-02"}
    assert set(again.sites) == {"s1", "s2"}
