"""Stopping a simulator (the NTCIP sign's, over a real UDP socket on loopback): its update task is stopped even if
it ignores one cancellation, a cancellation of the caller of ``stop()`` reaches the caller, and an update loop that
crashed is raised by ``stop()`` once the socket is closed."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from devices.sim.ntcip import NtcipSimulator


async def swallows_first_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await asyncio.sleep(60)


async def _replace_updater(sim: NtcipSimulator) -> asyncio.Task[None]:
    """Put an update task that ignores its first cancellation in place of the simulator's own."""
    own = sim._updater
    assert own is not None
    own.cancel()
    await asyncio.wait([own])
    task = asyncio.create_task(swallows_first_cancel())
    await asyncio.sleep(0)
    sim._updater = task
    return task


async def test_an_update_task_that_ignores_one_cancel_is_still_stopped() -> None:
    async with NtcipSimulator() as sim:
        task = await _replace_updater(sim)
        started = time.monotonic()
        await asyncio.wait_for(sim.stop(), 5.0)
        assert time.monotonic() - started < 2.0
        assert task.cancelled()
        assert sim._protocol is None


async def test_a_cancellation_of_the_caller_of_stop_reaches_the_caller() -> None:
    async with NtcipSimulator() as sim:
        task = await _replace_updater(sim)
        stopping = asyncio.create_task(sim.stop())
        await asyncio.sleep(0.05)  # stop() has cancelled the updater once (ignored) and waits for it
        stopping.cancel()
        await asyncio.wait([stopping], timeout=2.0)
        assert stopping.cancelled()  # not carried on as if nothing happened
        task.cancel()
        await asyncio.wait([task], timeout=2.0)
        await sim.stop()  # closes the socket the cancelled stop() did not reach
        assert sim._protocol is None


async def test_a_crashed_update_loop_is_raised_by_stop_after_closing() -> None:
    async with NtcipSimulator(update_interval_s=0.01) as sim:

        def tick() -> None:
            raise RuntimeError("tick failed")

        sim.state.tick = tick  # type: ignore[method-assign]
        await asyncio.sleep(0.1)
        with pytest.raises(RuntimeError, match="tick failed"):
            await sim.stop()
        assert sim._protocol is None
