"""Replay from the disk outbox against the real Mosquitto: the backlog an earlier run left is sent in order,
marked ``replay``, no faster than ``replay_rate``, while live readings keep going out between its batches."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from edge_support import gateway_publisher, left_by_an_earlier_run, recording_data

from edge.config import PublishConfig
from edge.outbox_replay import burst
from edge.outbox_sqlite import SqliteOutbox
from edge.stats import EdgeStats
from ioc.stack import StackEndpoints
from wire.v1 import Reading

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-a", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"
TS = 1_764_331_200_000
BACKLOG, RATE, MAX_BATCH = 1500, 300.0, 50


@pytest.mark.timeout(90)
async def test_the_backlog_is_replayed_in_order_under_the_rate_while_live_readings_flow(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite"
    left_by_an_earlier_run(
        path, (Reading(device=f"b-{i % 5}", kind="k", ts=TS + i, metrics={"seq": i // 5}) for i in range(BACKLOG))
    )
    stats = EdgeStats()
    outbox = SqliteOutbox(path, max_bytes=1 << 30, max_readings=10**6, stats=stats)
    async with (
        recording_data(stack, "replay", ROOT, lambda _, batch: (time.monotonic(), batch)) as received,
        outbox,
    ):

        async def live() -> None:
            n = 0
            while True:
                await outbox.put([Reading(device="l-0", kind="k", ts=int(time.time() * 1000), metrics={"seq": n})])
                n += 1
                await asyncio.sleep(0.05)

        producer = asyncio.create_task(live())
        publisher = gateway_publisher(
            stack,
            SITE,
            GATEWAY,
            outbox,
            stats,
            PublishConfig(max_batch=MAX_BATCH, max_delay_ms=100, replay_rate=RATE, drain_timeout_s=2),
        )
        try:
            async with publisher:
                for _ in range(600):  # the recorder's list: no event to wait on
                    if sum(r.device != "l-0" for _, b in received if b.replay for r in b.readings) >= BACKLOG:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    replayed = [(at, b) for at, b in received if b.replay]
    # The backlog: what the earlier run left, and the live readings put before the connect attempt began.
    early_live = [r for _, b in replayed for r in b.readings if r.device == "l-0"]
    readings = [r for _, b in replayed for r in b.readings if r.device != "l-0"]
    assert len(readings) == BACKLOG == stats.readings_replayed - len(early_live)  # every one, once
    assert [r.ts for r in readings] == [TS + i for i in range(BACKLOG)]  # in order, globally and per device
    for k in range(5):
        assert [r.metrics["seq"] for r in readings if r.device == f"b-{k}"] == list(range(BACKLOG // 5))
    assert all(len(b.readings) <= MAX_BATCH for _, b in replayed)
    # No faster than the rate: the bucket's first burst, then RATE readings per second.
    took = replayed[-1][0] - replayed[0][0]
    assert took >= 0.9 * (BACKLOG - burst(RATE, MAX_BATCH) - len(replayed[-1][1].readings)) / RATE
    # Live readings kept going out during the replay, in order, never marked replay.
    during = [b for at, b in received if not b.replay and replayed[0][0] < at < replayed[-1][0]]
    assert len(during) >= 10
    live_seqs = [int(r.metrics["seq"]) for _, b in received if not b.replay for r in b.readings]
    # At least once: a publish not acknowledged in time redoes the session and resends what was unacknowledged,
    # so a reading may come twice (InfluxDB collapses it), but never out of order and never missing.
    first_seen = list(dict.fromkeys(live_seqs))
    assert first_seen == list(range(len(early_live), len(early_live) + len(first_seen)))
    assert len(live_seqs) == len(first_seen) or stats.reconnects > 0, "a duplicate without a redone session"
    assert {r.device for _, b in received if not b.replay for r in b.readings} == {"l-0"}
    assert [b.seq for _, b in received] == list(range(1, len(received) + 1))  # one session, no gap
