"""The per-device scheduler: each device in its own task, polled on a fixed monotonic grid.

A device's task opens its driver, polls every ``interval_s`` on ticks ``origin + k * interval_s`` (no drift;
a poll that overruns skips the ticks it missed instead of bursting to catch up), each open and each poll under
``asyncio.timeout(timeout_s)``. What happens after a failed attempt depends only on the error's type
(:mod:`devices.errors`):

- :class:`DeviceBusy`: the driver already retried; the next regular tick tries again, connection kept;
- :class:`DeviceUnavailable`, :class:`DeviceResponseError`, a timeout, or any unexpected exception (logged with
  its traceback): the driver is closed, and reopened after a capped exponential backoff with jitter
  (:class:`~edge.backoff.Backoff`, base ``interval_s``, cap ``min(10 x interval_s, 300 s)`` but at least one
  interval), then the grid is resumed.

A device's state changes (first known state, down, up) are logged once each and queued as events; repeated
failures are logged at DEBUG only. The task never dies of a device error, and one device never waits for
another: they share nothing but the outbox and the event queue, neither of which blocks.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from devices.driver import now_ms
from devices.errors import DeviceBusy, DeviceResponseError, DeviceUnavailable
from edge.backoff import Backoff
from edge.events import DeviceEvent, EventQueue
from edge.outbox import Outbox
from edge.plan import DevicePlan
from edge.readings import ReadingFilter
from edge.stats import EdgeStats
from edge.tasks import cancel_and_wait
from wire.v1 import EventType

log = logging.getLogger(__name__)

#: Backoff cap: this many intervals...
BACKOFF_CAP_INTERVALS: Final = 10.0
#: ...but never more than this (unless the interval itself is longer).
BACKOFF_CAP_S: Final = 300.0
#: How long closing a driver may take (``Driver.close`` never raises, but may hang on a dead link).
CLOSE_TIMEOUT_S: Final = 5.0
#: How long stopping the scheduler waits for the device tasks to finish closing their drivers.
STOP_TIMEOUT_S: Final = 10.0


def backoff_for(interval_s: float, rng: random.Random | None = None) -> Backoff:
    """The device backoff policy: base one interval, cap ``min(10 intervals, 300 s)``, at least one interval."""
    cap = max(interval_s, min(BACKOFF_CAP_INTERVALS * interval_s, BACKOFF_CAP_S))
    return Backoff(interval_s, cap, rng)


class Health(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    #: Close the driver and come back after a backoff (False: keep the connection, retry on the next tick).
    reconnect: bool


class DevicePoller:
    """Runs one device until cancelled. See the module docstring for the policy."""

    def __init__(
        self,
        plan: DevicePlan,
        outbox: Outbox,
        events: EventQueue,
        stats: EdgeStats,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.plan = plan
        self.health = Health.UNKNOWN
        self._outbox = outbox
        self._events = events
        self._stats = stats
        self._filter = ReadingFilter(plan.id, plan.kind, stats)
        self._backoff = backoff_for(plan.interval_s, rng)
        self._opened = False
        self._down_since = 0.0

    async def run(self) -> None:
        """Poll until cancelled; the driver is closed on the way out."""
        interval = self.plan.interval_s
        origin = time.monotonic()
        next_at = origin
        try:
            while True:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                failure = await self._attempt()
                now = time.monotonic()
                if failure is None:
                    self._backoff.reset()
                    self._mark_up()
                    # The next tick of the grid strictly after now: ticks missed by a slow poll are skipped.
                    next_at = origin + (math.floor((now - origin) / interval) + 1) * interval
                    continue
                self._stats.polls_failed += 1
                self._mark_down(failure.reason)
                if failure.reconnect:
                    await self._close()
                    next_at = now + self._backoff.next()
                else:
                    next_at = origin + (math.floor((now - origin) / interval) + 1) * interval
        finally:
            await self._close()

    async def _attempt(self) -> _Failure | None:
        """Open if needed, poll once, queue the readings. Returns the failure, or None on success."""
        plan = self.plan
        step = "open"
        try:
            if not self._opened:
                # From here on a close() is due, even if open() fails half-way (a socket may be left).
                self._opened = True
                async with asyncio.timeout(plan.timeout_s):
                    await plan.driver.open()
            step = "poll"
            async with asyncio.timeout(plan.timeout_s):
                readings = await plan.driver.poll()
            step = "conversion of the readings"
            converted = self._filter.convert(readings)
        except DeviceBusy as exc:
            return _Failure(f"device busy: {exc}", reconnect=False)
        except (DeviceUnavailable, DeviceResponseError) as exc:
            return _Failure(str(exc) or type(exc).__name__, reconnect=True)
        except TimeoutError:
            return _Failure(f"{step} timed out after {plan.timeout_s:g} s", reconnect=True)
        except Exception as exc:
            # A driver bug must not kill the device's task: log the traceback once per outage, then retry.
            if self.health is not Health.DOWN:
                log.exception("device %s: unexpected error in %s", plan.id, step)
            else:
                log.debug("device %s: unexpected error in %s", plan.id, step, exc_info=True)
            return _Failure(f"unexpected error in {step}: {type(exc).__name__}: {exc}", reconnect=True)
        self._stats.polls_ok += 1
        await self._outbox.put(converted)
        return None

    async def _close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.plan.driver.close()
        except Exception:  # close "never raises"; if a driver does anyway, the next open starts afresh
            log.debug("device %s: error while closing the driver", self.plan.id, exc_info=True)

    def _mark_up(self) -> None:
        if self.health is Health.UP:
            return
        if self.health is Health.DOWN:
            log.info("device %s is up again after %.1f s", self.plan.id, time.monotonic() - self._down_since)
        else:
            log.info("device %s is up (first poll ok)", self.plan.id)
        self.health = Health.UP
        self._events.put(DeviceEvent(self.plan.id, EventType.DEVICE_UP, now_ms()))

    def _mark_down(self, reason: str) -> None:
        if self.health is Health.DOWN:
            log.debug("device %s still down: %s", self.plan.id, reason)
            return
        log.warning("device %s is down: %s", self.plan.id, reason)
        self.health = Health.DOWN
        self._down_since = time.monotonic()
        self._events.put(DeviceEvent(self.plan.id, EventType.DEVICE_DOWN, now_ms(), reason))


class Scheduler:
    """``async with Scheduler(plans, ...):`` runs one :class:`DevicePoller` task per device; leaving stops them."""

    def __init__(
        self,
        plans: Sequence[DevicePlan],
        outbox: Outbox,
        events: EventQueue,
        stats: EdgeStats,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.pollers = {p.id: DevicePoller(p, outbox, events, stats, rng=rng) for p in plans}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        for device, poller in self.pollers.items():
            task = asyncio.create_task(poller.run(), name=f"edge-device-{device}")
            task.add_done_callback(_report_death)
            self._tasks.append(task)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks, STOP_TIMEOUT_S)


def _report_death(task: asyncio.Task[None]) -> None:
    """A device task ends only when cancelled; anything else is a bug worth a loud log line."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("%s died", task.get_name(), exc_info=exc)
