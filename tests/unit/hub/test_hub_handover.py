"""The intake's hand-over: a thread puts, the loop gets; bounded, in order, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import threading

from hub.ingest import InboundMessage
from hub.mqtt import Handover


def message(n: int) -> InboundMessage:
    return InboundMessage(topic="t", payload=b"", mid=n, qos=1)


async def test_a_producer_thread_hands_over_everything_in_order_and_waits_when_full() -> None:
    handover = Handover(maxsize=10)
    handover.bind(asyncio.get_running_loop())
    total = 5000
    max_seen = 0

    def produce() -> None:
        for n in range(total):
            assert handover.put_blocking(message(n), timeout_s=5)

    thread = threading.Thread(target=produce)
    thread.start()
    got: list[int] = []
    async with asyncio.timeout(20):
        while len(got) < total:
            max_seen = max(max_seen, handover.qsize())
            if len(got) % 97 == 0:
                await asyncio.sleep(0.001)  # a slow consumer: the producer must wait, not overfill
            got.append((await handover.get()).mid)
    await asyncio.to_thread(thread.join, 5)
    assert got == list(range(total))
    assert max_seen <= 10


async def test_a_full_handover_times_out_without_appending_and_a_cancelled_get_loses_nothing() -> None:
    handover = Handover(maxsize=1)
    handover.bind(asyncio.get_running_loop())
    assert await asyncio.to_thread(handover.put_blocking, message(1), 1.0)
    assert not await asyncio.to_thread(handover.put_blocking, message(2), 0.05)
    assert handover.qsize() == 1
    assert (await handover.get()).mid == 1
    waiting = asyncio.create_task(handover.get())
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    handover.put_nowait(message(3))
    assert (await asyncio.wait_for(handover.get(), 1)).mid == 3
