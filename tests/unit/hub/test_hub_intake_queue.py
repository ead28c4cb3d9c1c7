"""The intake's queue: in order, a cancelled get loses nothing, and the reader is told when there is room again."""

from __future__ import annotations

import asyncio

from hub.ingest import InboundMessage
from hub.mqtt.intake import IntakeQueue


def message(n: int) -> InboundMessage:
    return InboundMessage(topic="t", payload=b"", mid=n, qos=1)


async def test_items_come_out_in_order_and_a_waiting_get_is_woken_by_put_many() -> None:
    queue = IntakeQueue(maxsize=10)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_many([message(n) for n in range(1, 4)])
    assert (await asyncio.wait_for(waiting, 1)).mid == 1
    assert [queue.get_nowait().mid for _ in range(2)] == [2, 3]
    assert queue.qsize() == 0


async def test_a_cancelled_get_loses_nothing() -> None:
    queue = IntakeQueue(maxsize=1)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    # The race that matters: a put wakes the waiting get, which is cancelled before it resumes.
    queue.put_nowait(message(3))
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert queue.qsize() == 1
    assert (await asyncio.wait_for(queue.get(), 1)).mid == 3


async def test_full_and_the_space_callback_fires_once_at_half() -> None:
    queue = IntakeQueue(maxsize=4)
    calls: list[int] = []
    queue.put_many([message(n) for n in range(6)])  # a whole read may overshoot maxsize
    assert queue.full
    queue.on_space(lambda: calls.append(queue.qsize()))
    queue.get_nowait()
    queue.get_nowait()
    queue.get_nowait()
    assert calls == []
    queue.get_nowait()  # 2 left = maxsize // 2
    assert calls == [2]
    queue.get_nowait()
    assert calls == [2]
    assert not queue.full
