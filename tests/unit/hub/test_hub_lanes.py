"""The lanes (hub/ingest/lanes.py) and their overflow files (hub/ingest/overflow.py): each gateway's turn, its
share of the pipeline, its order kept through memory, disk and a restart, and every broker message acknowledged
exactly once: when stored, or when its overflow record is on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest

from hub.config import load_settings
from hub.errors import ConfigError
from hub.ingest.lanes import MISC_LANE, FairQueue, lane_key
from hub.ingest.messages import InboundMessage
from hub.ingest.overflow import recover

KIB = 1024


class Broker:
    """The acker the lanes forward broker messages' acknowledgements to (the intake's part)."""

    def __init__(self) -> None:
        self.acked: list[InboundMessage] = []

    def ack(self, message: InboundMessage) -> bool:
        self.acked.append(message)
        return True


def msg(gateway: str, n: int, size: int = 100, channel: str = "data") -> InboundMessage:
    """Message ``n`` of ``gateway`` (site ``s-{gateway}``), its payload ``size`` bytes starting with its label."""
    label = f"{gateway}#{n};".encode()
    return InboundMessage(f"ioc/v1/s-{gateway}/{gateway}/{channel}", label.ljust(size, b"."), n, 1, received=float(n))


def label(message: InboundMessage) -> str:
    return message.payload.split(b";", 1)[0].decode()


def take_all(queue: FairQueue, ack: bool = True) -> list[InboundMessage]:
    """Everything the queue hands over now, acknowledging each as the pipeline would once stored."""
    out: list[InboundMessage] = []
    while True:
        try:
            message = queue.get_nowait()
        except asyncio.QueueEmpty:
            return out
        out.append(message)
        if ack:
            queue.ack(message)


def labels(messages: Iterable[InboundMessage]) -> list[str]:
    return [label(m) for m in messages]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def settle(queue: FairQueue) -> None:
    """Until the overflow writer has written everything bound for disk."""
    for _ in range(500):
        if queue.writing_bytes == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{queue.writing_bytes} bytes still not written")


# ------------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize(
    ("topic", "key"),
    [
        ("ioc/v1/site-a/gw-1/data", "site-a/gw-1"),
        ("ioc/v1/site-a/gw-1/cmd/ack", "site-a/gw-1"),
        ("ioc/v1/site-a/gw-1/anything", "site-a/gw-1"),  # an unknown channel: dead-lettered, in its gateway's lane
        ("ioc/v1/Site-A/gw-1/data", MISC_LANE),
        ("ioc/v1/site-a/gw-1", MISC_LANE),
        ("ioc/v2/site-a/gw-1/data", MISC_LANE),
        ("other/v1/site-a/gw-1/data", MISC_LANE),
        ("ioc/v1/site-a/gw\n1/data", MISC_LANE),
    ],
)
def test_a_lane_is_the_topics_site_and_gateway(topic: str, key: str) -> None:
    assert lane_key(topic) == key


# ------------------------------------------------------------------------------------------------ turns


def test_a_gateway_with_one_reading_waits_at_most_one_quantum_behind_a_flooding_one() -> None:
    queue = FairQueue(10_000, 10**9, quantum_bytes=256 * KIB, lane_max_bytes=10**9)
    queue.put_many([msg("gw-2", n, 150 * KIB) for n in range(100)])
    queue.put_many([msg("gw-1", 0, 200)])
    order = labels(take_all(queue))
    # gw-2's first turn: 256 KiB of credit, so two 150 KiB messages (the second takes it below zero); then gw-1.
    assert order[:3] == ["gw-2#0", "gw-2#1", "gw-1#0"]
    assert order[3:] == [f"gw-2#{n}" for n in range(2, 100)]


def test_busy_gateways_share_the_pipeline_in_bytes_whatever_their_message_sizes() -> None:
    queue = FairQueue(100_000, 10**9, quantum_bytes=64 * KIB, lane_max_bytes=10**9)
    queue.put_many([msg("gw-1", n, 64 * KIB) for n in range(100)])  # 6.4 MiB in big messages
    queue.put_many([msg("gw-2", n, 1 * KIB) for n in range(10_000)])  # 10 MiB in small ones
    first = take_all(queue)[:3000]
    by_gateway = {g: sum(len(m.payload) for m in first if label(m).startswith(g)) for g in ("gw-1", "gw-2")}
    # Over the first ~3000 hand-overs each got the same bytes to within one message and one quantum.
    assert abs(by_gateway["gw-1"] - by_gateway["gw-2"]) <= 2 * 64 * KIB, by_gateway


def test_a_gateway_at_its_pending_share_waits_until_its_messages_are_stored() -> None:
    broker = Broker()
    queue = FairQueue(1000, 10**9, lane_max_bytes=10**9, lane_max_pending_bytes=300 * KIB)
    queue.bind(broker)
    queue.put_many([msg("gw-2", n, 100 * KIB) for n in range(10)])
    held = take_all(queue, ack=False)
    assert labels(held) == ["gw-2#0", "gw-2#1", "gw-2#2"]  # 300 KiB taken, none stored: gw-2 waits
    queue.put_many([msg("gw-1", 0)])
    assert labels(take_all(queue, ack=False)) == ["gw-1#0"]  # another gateway does not
    assert queue.ack(held[0]) is True  # one of gw-2's is stored: acknowledged to the broker, gw-2 goes on
    assert broker.acked == [held[0]]
    assert labels(take_all(queue, ack=False)) == ["gw-2#3"]


async def test_get_waits_for_a_message_and_for_a_lane_to_have_room_again() -> None:
    queue = FairQueue(1000, 10**9, lane_max_bytes=10**9, lane_max_pending_bytes=100)
    queue.bind(Broker())
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_many([msg("gw-1", 0), msg("gw-1", 1)])
    first = await asyncio.wait_for(getter, 1)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()  # gw-1 has 100 bytes taken and not stored: its share
    queue.ack(first)
    assert label(await asyncio.wait_for(getter, 1)) == "gw-1#1"


def test_full_and_on_space_follow_the_memory_bounds() -> None:
    queue = FairQueue(4, 10**9, lane_max_bytes=10**9)
    woken: list[str] = []
    queue.put_many([msg("gw-1", n) for n in range(4)])
    assert queue.full
    queue.on_space(lambda: woken.append("space"))
    queue.get_nowait()
    assert (queue.full, woken) == (False, [])  # 3 of 4: not yet half
    queue.get_nowait()
    assert woken == ["space"]


# ------------------------------------------------------------------------------------------------ overflow


async def test_past_its_memory_share_a_gateway_goes_to_disk_in_order_and_is_acknowledged_once_written(
    tmp_path: Path,
) -> None:
    broker = Broker()
    async with FairQueue(1000, 10**9, lane_max_bytes=10 * KIB, overflow_dir=tmp_path) as queue:
        queue.bind(broker)
        sent = [msg("gw-2", n, 4 * KIB) for n in range(20)]
        queue.put_many(sent[:10])  # 3 in memory (12 KiB >= 10 KiB), then the rest for the disk
        assert queue.bytes == 3 * 4 * KIB
        await settle(queue)
        assert broker.acked == sent[3:10]  # the overflowed ones, once fsynced; none of those in memory
        queue.put_many(sent[10:])  # while the disk holds unread records, the newer ones go after them
        queue.put_many([msg("gw-1", 0)])
        await settle(queue)
        assert broker.acked == sent[3:]
        assert queue.overflow_by_gateway() == {"s-gw-2/gw-2": queue.overflow_bytes}
        handed = take_all(queue)
        assert labels(m for m in handed if label(m).startswith("gw-2")) == [f"gw-2#{n}" for n in range(20)]
        assert "gw-1#0" in labels(handed)
        # The read-back ones are not acknowledged again; the memory ones now are, and gw-1's.
        assert broker.acked == sent[3:] + sent[:3] + [m for m in handed if label(m) == "gw-1#0"]
        # Read back: the broker's fields, not the broker's packet ids (QoS 0: nothing more to acknowledge).
        back = handed[3]
        assert (back.topic, back.payload, back.received, back.qos) == (sent[3].topic, sent[3].payload, 3.0, 0)
        # Every record stored: the file is gone.
        assert (queue.overflow_bytes, names(tmp_path)) == (0, [])


async def test_a_restart_feeds_what_was_not_stored_and_only_that(tmp_path: Path) -> None:
    sent = [msg("gw-2", n, 4 * KIB) for n in range(12)]
    async with FairQueue(1000, 10**9, lane_max_bytes=4 * KIB, overflow_dir=tmp_path) as queue:
        queue.bind(Broker())
        queue.put_many(sent)  # #0 in memory, #1..#11 on disk
        await settle(queue)
        stored = [queue.get_nowait() for _ in range(5)]  # #0 from memory, #1..#4 read back
        for m in stored:
            queue.ack(m)
        taken_not_stored = queue.get_nowait()  # #5: handed over, the hub stops before it is stored
        assert label(taken_not_stored) == "gw-2#5"
    # Left cleanly: the committed offset saved, so the next start feeds #5 (not stored) to #11.
    async with FairQueue(1000, 10**9, lane_max_bytes=4 * KIB, overflow_dir=tmp_path) as queue:
        assert labels(take_all(queue)) == [f"gw-2#{n}" for n in range(5, 12)]
    assert names(tmp_path) == []


async def test_after_a_crash_a_torn_record_is_cut_off_and_the_whole_ones_are_fed(tmp_path: Path) -> None:
    async with FairQueue(1000, 10**9, lane_max_bytes=1, overflow_dir=tmp_path) as queue:
        queue.bind(Broker())
        queue.put_many([msg("gw-1", 0, 10), *(msg("gw-1", n, 1000) for n in range(1, 4))])
        await settle(queue)
    [name] = [n for n in names(tmp_path) if n.endswith(".lane")]
    path = tmp_path / name
    with path.open("ab") as f:
        f.write(b"IOCL\x00\x01")  # a crash in the middle of the next append
    found = recover(tmp_path)
    assert [f.written for f in found["s-gw-1/gw-1"]] == [path.stat().st_size]
    async with FairQueue(1000, 10**9, lane_max_bytes=1, overflow_dir=tmp_path) as queue:
        assert labels(take_all(queue)) == ["gw-1#1", "gw-1#2", "gw-1#3"]


async def test_at_its_disk_bound_a_gateways_messages_wait_unacknowledged_and_the_intake_stops(tmp_path: Path) -> None:
    broker = Broker()
    async with FairQueue(
        1000, 48 * KIB, lane_max_bytes=4 * KIB, overflow_dir=tmp_path, overflow_lane_max_bytes=40 * KIB
    ) as queue:
        queue.bind(broker)
        sent = [msg("gw-2", n, 8 * KIB) for n in range(20)]
        queue.put_many(sent)  # #0 in memory; 5 x 8 KiB fill the disk bound; 14 wait (112 KiB)
        await settle_some(queue, 5)
        assert broker.acked == sent[1:6]
        full_at_the_bound = queue.full  # 112 KiB waiting to be written >= 2 x 48 KiB: the intake stops reading
        handed: list[InboundMessage] = []
        for _ in range(200):  # as they are stored, room on disk again, and the rest is written, 5 at a time
            handed += take_all(queue)
            if len(handed) == len(sent):
                break
            await asyncio.sleep(0.01)
        assert labels(handed) == [f"gw-2#{n}" for n in range(20)]
        assert (full_at_the_bound, queue.full) == (True, False)
        assert sorted(labels(broker.acked)) == sorted(labels(sent))  # each acknowledged once


async def settle_some(queue: FairQueue, written: int) -> None:
    for _ in range(500):
        if queue.counters["overflowed_messages"] >= written:
            await asyncio.sleep(0.05)  # and nothing more comes
            assert queue.counters["overflowed_messages"] == written
            return
        await asyncio.sleep(0.01)
    raise AssertionError(queue.counters)


# ------------------------------------------------------------------------------------------------ settings


def test_one_gateways_share_must_be_less_than_the_pipelines_whole(tmp_path: Path) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text("batch: {max_pending_bytes: 8388608}\nlanes: {max_pending_bytes: 8388608}\n")
    with pytest.raises(ConfigError, match=r"lanes.max_pending_bytes .*must be less than batch.max_pending_bytes"):
        load_settings(config, environ={})
    config.write_text("spill: {dir: /var/lib/ioc-hub/spill}\n")
    assert load_settings(config, environ={}).overflow_dir == Path("/var/lib/ioc-hub/spill/overflow")
