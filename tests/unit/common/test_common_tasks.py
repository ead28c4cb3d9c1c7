"""common.tasks.cancel_and_wait: tasks that swallow a cancellation (as Python 3.11's wait_for can, gh-86296) are
cancelled again, tasks that never stop are given up at the deadline, and the caller's own cancellation is raised;
common.tasks.running runs a job for the duration of a block."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from common.tasks import cancel_and_wait, running


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


async def test_a_task_that_never_stops_is_reported_at_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="common.tasks"):
        assert await cancel_and_wait([task], 0.5) == {task}
    assert 0.4 <= time.monotonic() - started < 2.0
    assert [r.getMessage() for r in caplog.records] == ["1 tasks did not stop within 0.5 s: ['stubborn']"]
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.done()


async def test_exceptions_of_finished_tasks_are_retrieved_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], 1.0) == set()
    assert isinstance(task.exception(), RuntimeError)


async def test_a_task_that_fails_while_stopping_does_not_fail_the_caller() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task]) == set()
    assert str(task.exception()) == "cleanup failed"


async def test_the_callers_cancellation_while_waiting_is_raised() -> None:
    """A task with a slow cleanup; the caller, waiting for it, is cancelled: the caller must end cancelled
    (awaiting the task under ``suppress(CancelledError)`` would have swallowed this and returned normally)."""
    cleaning = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaning.set()
            await asyncio.shield(asyncio.sleep(0.5))

    task = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    after_wait: list[str] = []

    async def caller() -> None:
        await cancel_and_wait([task], 5.0)
        after_wait.append("carried on")

    waiter = asyncio.create_task(caller())
    await cleaning.wait()
    started = time.monotonic()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()
    assert after_wait == []
    assert time.monotonic() - started < 0.4  # not held until the task's cleanup ended
    assert await cancel_and_wait([task], 5.0) == set()
    assert task.done()


async def test_the_caller_cancelled_while_waiting_for_a_stubborn_task_is_raised() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cancel_and_wait([task], 30.0))
    await asyncio.sleep(0.3)  # past the first re-cancellation
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await cancel_and_wait([task], 1.0) == set()


async def test_no_tasks_and_done_tasks_return_at_once() -> None:
    async def quick() -> int:
        return 1

    task = asyncio.create_task(quick())
    await task
    started = time.monotonic()
    assert await cancel_and_wait([]) == set()
    assert await cancel_and_wait([task]) == set()
    assert time.monotonic() - started < 0.1
    assert task.result() == 1


async def test_running_runs_the_job_for_the_block_and_stops_it_at_its_end() -> None:
    ticks: list[int] = []
    stopped = asyncio.Event()

    async def job() -> None:
        try:
            while True:
                ticks.append(len(ticks))
                await asyncio.sleep(0)
        finally:
            stopped.set()

    async with running(job(), "ticker") as task:
        for _ in range(5):
            await asyncio.sleep(0)
        assert task.get_name() == "ticker"
        assert not task.done()
        assert ticks
    assert task.cancelled()
    assert stopped.is_set()
    seen = len(ticks)
    await asyncio.sleep(0)
    assert len(ticks) == seen


async def test_running_stops_the_job_when_the_block_raises() -> None:
    async def job() -> None:
        await asyncio.sleep(60)

    started: list[asyncio.Task[None]] = []

    async def block() -> None:
        async with running(job(), "sleeper") as task:
            started.append(task)
            await asyncio.sleep(0)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await block()
    assert started[0].cancelled()
