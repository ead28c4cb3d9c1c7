"""Stopping tasks that swallow a cancellation (as Python 3.11's wait_for can, gh-86296)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from edge.tasks import cancel_and_wait


async def swallows_first_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await asyncio.sleep(60)


async def test_a_swallowed_cancellation_is_repeated() -> None:
    task = asyncio.create_task(swallows_first_cancel())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait([task], 5.0) == set()
    assert task.cancelled()
    assert time.monotonic() - started < 2.0


async def test_a_task_that_never_stops_is_reported_at_the_deadline() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait([task], 0.5) == {task}
    assert 0.4 <= time.monotonic() - started < 2.0
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.done()


async def test_exceptions_of_finished_tasks_are_retrieved() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], 1.0) == set()
    assert isinstance(task.exception(), RuntimeError)
