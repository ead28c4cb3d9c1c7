"""A replay of large readings against the real Mosquitto: batches of up to 10,000 readings are cut where the
contract's byte limit (``wire.v1.MAX_MESSAGE_BYTES``) runs out, so the broker, which refuses larger packets,
takes every message, and each reading arrives once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from edge_support import gateway_publisher, left_by_an_earlier_run, recording_data

from edge.config import PublishConfig
from edge.outbox_sqlite import SqliteOutbox
from edge.stats import EdgeStats
from ioc.stack import StackEndpoints
from wire.v1 import MAX_MESSAGE_BYTES, MAX_READINGS_PER_BATCH, Reading

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A gateway of its own (tests/conftest.py): in CI another test's client of site-a/gw-1 took the bound client id
#: over in the middle of the replay, and the publisher, reconnected, sent its last batch again.
SITE, GATEWAY = "replay", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"
TS = 1_764_331_200_000
BACKLOG = MAX_READINGS_PER_BATCH + 2000


def meter(i: int) -> Reading:
    """A power meter's reading: 24 metrics (~950 bytes encoded), as the eastron-sdm630 profile gives them."""
    return Reading(
        device=f"pm-{i % 7}",
        kind="power_meter",
        ts=TS + i,
        metrics={f"metric_{m:02d}_total_w": 230.12345886230469 + i + m for m in range(24)},
    )


@pytest.mark.timeout(120)
async def test_a_replay_larger_than_a_message_goes_as_several_each_within_the_limit(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite"
    left_by_an_earlier_run(path, (meter(i) for i in range(BACKLOG)))
    stats = EdgeStats()
    outbox = SqliteOutbox(path, max_bytes=1 << 30, max_readings=10**6, stats=stats)
    async with (
        recording_data(stack, "replay-bytes", ROOT, lambda payload, batch: (len(payload), batch)) as received,
        outbox,
    ):
        publisher = gateway_publisher(
            stack,
            SITE,
            GATEWAY,
            outbox,
            stats,
            PublishConfig(max_batch=MAX_READINGS_PER_BATCH, max_delay_ms=100, replay_rate=0, drain_timeout_s=2),
            # A 4 MiB publish on a machine loaded by make test's other workers may be slow to be acknowledged; past
            # the publish timeout the publisher would resend it (at least once), and "each once" below is about
            # batching, not about that.
            publish_timeout_s=60,
        )
        async with publisher:
            for _ in range(600):  # the recorder's list: no event to wait on
                # And the publisher has its acknowledgements committed: leaving the block while the last batch's
                # PUBACK, or the outbox's commit after it, is on its way left it in the outbox, and the drain sent
                # it again (the last batch twice, in CI). readings_sent counts a batch once acknowledged, before
                # its commit is done, so the outbox's own level is what tells.
                if sum(len(b.readings) for _, b in received) >= BACKLOG and len(outbox) == 0:
                    break
                await asyncio.sleep(0.1)

    sizes = [size for size, _ in received]
    assert all(size <= MAX_MESSAGE_BYTES for size in sizes), sizes
    whole = sum(sizes)
    # As few as the bytes allow, give or take the cut at a 10,000-reading batch.
    fewest = -(-whole // MAX_MESSAGE_BYTES)
    assert fewest <= len(received) <= fewest + 1, sizes
    readings = [r for _, b in received for r in b.readings]
    assert [r.ts for r in readings] == [TS + i for i in range(BACKLOG)]  # each once, in order
    assert all(b.replay for _, b in received)
    assert [b.seq for _, b in received] == list(range(1, len(received) + 1))
    assert stats.reconnects == 0  # no message was refused (a refused packet closes the connection)
