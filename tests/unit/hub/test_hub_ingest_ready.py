"""While every write slot is taken, the pipeline goes on decoding and building lines (bounded by
``max_pending_messages``), and the batches that waited go out merged into fewer, larger writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hub.ingest import InboundMessage, Pipeline, RetryPolicy
from hub.ingest import pipeline as pipeline_side
from hub.ingest import storage as storage_side

TS = 1_764_331_200_000
SESSION = "sess-0001"
DATA = "ioc/v1/site-a/gw-1/data"


@dataclass
class GatedWriter:
    """A LineWriter whose writes wait at ``gate``; records the lines of each write."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    writes: list[list[str]] = field(default_factory=list)
    running: int = 0
    most_running: int = 0

    async def write(self, body: bytes) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            self.writes.append(body.decode().split("\n"))
        finally:
            self.running -= 1


@dataclass
class Acks:
    acked: list[int] = field(default_factory=list)

    def ack(self, message: InboundMessage) -> bool:
        self.acked.append(message.mid)
        return True


def msg(mid: int) -> InboundMessage:
    reading = f'{{"device": "aq-01", "kind": "air_quality", "ts": {TS + mid}, "metrics": {{"pm25": {mid}}}}}'
    payload = f'{{"session": "{SESSION}", "seq": {mid}, "readings": [{reading}]}}'.encode()
    return InboundMessage(topic=DATA, payload=payload, mid=mid, qos=1, received=TS / 1000)


async def until(condition: object, within_s: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - polling the pipeline from outside
            await asyncio.sleep(0.005)


async def test_intake_goes_on_while_slots_are_taken_and_waiting_batches_are_merged() -> None:
    writer = GatedWriter()
    acks = Acks()
    queue: asyncio.Queue[InboundMessage] = asyncio.Queue()
    pipeline = Pipeline(queue, acks, writer, max_lines=1, max_delay_ms=1, max_in_flight=1, retry=RetryPolicy(0.01))
    task = asyncio.create_task(pipeline.run())
    try:
        await queue.put(msg(1))
        await until(lambda: writer.running == 1)  # message 1's write holds the only slot
        for mid in range(2, 10):
            await queue.put(msg(mid))
        # All eight decoded and turned into lines while the slot is taken: nothing waits on the queue.
        await until(lambda: pipeline.stats.messages_received == 9)
        assert queue.qsize() == 0
        assert pipeline.gauges()["ready_lines"] == 8
        assert pipeline.gauges()["pending_messages"] == 9
        assert acks.acked == []
        writer.gate.set()
        await until(lambda: len(acks.acked) == 9)
        assert acks.acked == list(range(1, 10))
        # One line per batch (max_lines=1); the eight that waited went out as writes of 4 (_MERGE_BATCHES).
        assert storage_side._MERGE_BATCHES == 4
        assert [len(w) for w in writer.writes] == [1, 4, 4]
        assert [line.split(" ")[1] for w in writer.writes for line in w] == [f"pm25={m}.0" for m in range(1, 10)]
        assert writer.most_running == 1
        assert pipeline.gauges()["ready_lines"] == 0
    finally:
        pipeline.close()
        await asyncio.wait_for(task, 5)


async def test_ready_batches_are_bounded_by_max_pending_messages() -> None:
    writer = GatedWriter()
    acks = Acks()
    queue: asyncio.Queue[InboundMessage] = asyncio.Queue()
    pipeline = Pipeline(queue, acks, writer, max_lines=1, max_delay_ms=1, max_in_flight=1, max_pending_messages=5)
    task = asyncio.create_task(pipeline.run())
    try:
        for mid in range(1, 21):
            await queue.put(msg(mid))
        await until(lambda: pipeline.gauges()["pending_messages"] == 5)
        await asyncio.sleep(0.1)
        assert pipeline.gauges()["pending_messages"] == 5  # stays at the cap while the write waits
        assert queue.qsize() == 15
        writer.gate.set()
        await until(lambda: len(acks.acked) == 20)
        assert acks.acked == list(range(1, 21))
        assert sum(len(w) for w in writer.writes) == 20
    finally:
        pipeline.close()
        await asyncio.wait_for(task, 5)


async def test_a_stop_writes_every_waiting_batch_before_returning() -> None:
    writer = GatedWriter()
    acks = Acks()
    queue: asyncio.Queue[InboundMessage] = asyncio.Queue()
    pipeline = Pipeline(queue, acks, writer, max_lines=1, max_delay_ms=1, max_in_flight=1)
    task = asyncio.create_task(pipeline.run())
    for mid in range(1, 8):
        await queue.put(msg(mid))
    await until(lambda: pipeline.stats.messages_received == 7)
    pipeline.close()
    await asyncio.sleep(0.05)
    assert not task.done()  # the drain waits for the slot
    writer.gate.set()
    await asyncio.wait_for(task, 5)
    assert acks.acked == list(range(1, 8))
    assert sum(len(w) for w in writer.writes) == 7


async def test_the_lines_waiting_for_a_slot_are_capped_whatever_the_message_count_allows() -> None:
    writer = GatedWriter()
    acks = Acks()
    queue: asyncio.Queue[InboundMessage] = asyncio.Queue()
    pipeline = Pipeline(queue, acks, writer, max_lines=1, max_delay_ms=1, max_in_flight=1)
    cap = 1 * pipeline_side._READY_BATCHES
    task = asyncio.create_task(pipeline.run())
    try:
        for mid in range(1, 31):
            await queue.put(msg(mid))
        await until(lambda: pipeline.gauges()["ready_lines"] == cap)
        await asyncio.sleep(0.1)
        # One line in the write that holds the slot, eight waiting; the rest stays on the queue, unread.
        assert pipeline.gauges()["ready_lines"] == cap
        assert pipeline.stats.messages_received == cap + 1
        assert queue.qsize() == 30 - cap - 1
        writer.gate.set()
        await until(lambda: len(acks.acked) == 30)
        assert acks.acked == list(range(1, 31))
    finally:
        pipeline.close()
        await asyncio.wait_for(task, 5)
