"""The per-device scheduler: one :class:`~edge.poller.DevicePoller` task per device, and run-time control.

Each device runs in its own task (the polling and failure policy are in :mod:`edge.poller`); one device never
waits for another: they share nothing but the outbox and the event queue, neither of which blocks.

Run-time control (the agent's commands, a config reload), by device id: :meth:`Scheduler.set_interval`,
:meth:`Scheduler.poll_now` and :meth:`Scheduler.execute` act on one device (serialized with its own polls,
never with the others'); :meth:`Scheduler.add`, :meth:`Scheduler.remove`, :meth:`Scheduler.replace` and
:meth:`Scheduler.restart` start and stop single device tasks while the others keep running.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final, Self

from common.tasks import cancel_and_wait
from devices.driver import MetricValue
from edge.config import ReportConfig
from edge.events import EventQueue
from edge.outbox import Outbox
from edge.plan import DevicePlan
from edge.poller import (
    BACKOFF_CAP_INTERVALS,
    BACKOFF_CAP_S,
    CLOSE_TIMEOUT_S,
    ActionNotSupported,
    DevicePoller,
    Health,
    PollFailed,
    backoff_for,
)
from edge.snapshots import SnapshotBox
from edge.stats import EdgeStats
from wire.v1 import Reading

__all__ = [
    "BACKOFF_CAP_INTERVALS",
    "BACKOFF_CAP_S",
    "CLOSE_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "ActionNotSupported",
    "DevicePoller",
    "Health",
    "PollFailed",
    "Scheduler",
    "UnknownDevice",
    "backoff_for",
]

log = logging.getLogger(__name__)

#: How long stopping the scheduler waits for the device tasks to finish closing their drivers.
STOP_TIMEOUT_S: Final = 10.0


class UnknownDevice(KeyError):
    """The scheduler runs no device with this id (never configured, or removed)."""

    def __init__(self, device: str, known: Sequence[str]) -> None:
        super().__init__(device)
        self.device = device
        self.known = sorted(known)

    def __str__(self) -> str:
        return f"unknown device {self.device!r}"


class Scheduler:
    """``async with Scheduler(plans, ...):`` runs one :class:`DevicePoller` task per device; leaving stops them.

    ``report`` gives the report-by-exception settings of the devices that have them (by device id);
    ``snapshots`` takes the frames of the drivers that take pictures (cameras), None: they are not asked for.
    """

    def __init__(
        self,
        plans: Sequence[DevicePlan],
        outbox: Outbox,
        events: EventQueue,
        stats: EdgeStats,
        *,
        rng: random.Random | None = None,
        report: Mapping[str, ReportConfig] | None = None,
        snapshots: SnapshotBox | None = None,
    ) -> None:
        self._outbox = outbox
        self._events = events
        self._stats = stats
        self._rng = rng
        self._snapshots = snapshots
        report = report or {}
        self.pollers: dict[str, DevicePoller] = {
            p.id: DevicePoller(p, outbox, events, stats, rng=rng, report=report.get(p.id), snapshots=snapshots)
            for p in plans
        }
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        #: Values held back by the report-by-exception filters of devices since removed or replaced.
        self.values_suppressed = 0

    async def __aenter__(self) -> Self:
        self._running = True
        for device in self.pollers:
            self._start(device)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._running = False
        tasks, self._tasks = self._tasks, {}
        await cancel_and_wait(tasks.values(), STOP_TIMEOUT_S)

    def plans(self) -> list[DevicePlan]:
        """The devices run now, with their current intervals."""
        return [p.plan for p in self.pollers.values()]

    def figures(self) -> dict[str, MetricValue]:
        """For the agent's self-metrics: devices scheduled, up, down; values held back by report-by-exception."""
        health = [p.health for p in self.pollers.values()]
        return {
            "devices": len(health),
            "devices_up": health.count(Health.UP),
            "devices_down": health.count(Health.DOWN),
            "values_suppressed": self.values_suppressed + sum(p.suppressed for p in self.pollers.values()),
        }

    def poller(self, device: str) -> DevicePoller:
        """The poller of ``device``; raises :class:`UnknownDevice`."""
        try:
            return self.pollers[device]
        except KeyError:
            raise UnknownDevice(device, list(self.pollers)) from None

    def set_interval(self, device: str, interval_s: float) -> float:
        """Change a device's poll interval at once; returns the previous one."""
        poller = self.poller(device)
        before = poller.interval_s
        poller.set_interval(interval_s)
        log.info("device %s: poll interval %g s (was %g s)", device, interval_s, before)
        return before

    async def poll_now(self, device: str) -> list[Reading]:
        """See :meth:`DevicePoller.poll_now`."""
        return await self.poller(device).poll_now()

    async def execute(self, device: str, action: str, params: Mapping[str, MetricValue]) -> str:
        """See :meth:`DevicePoller.execute`."""
        return await self.poller(device).execute(action, params)

    async def add(self, plan: DevicePlan, report: ReportConfig | None = None) -> None:
        """Start polling a new device. Raises :class:`ValueError` if its id is taken."""
        if plan.id in self.pollers:
            raise ValueError(f"device {plan.id!r} is already scheduled")
        self.pollers[plan.id] = DevicePoller(
            plan, self._outbox, self._events, self._stats, rng=self._rng, report=report, snapshots=self._snapshots
        )
        if self._running:
            self._start(plan.id)
        log.info("device %s added (every %g s)", plan.id, plan.interval_s)

    async def remove(self, device: str) -> None:
        """Stop polling ``device`` and close its driver (after a command in progress on it)."""
        self.poller(device)
        await self._stop(device, retire=True)
        self.values_suppressed += self.pollers.pop(device).suppressed
        if self._snapshots is not None:
            self._snapshots.forget(device)
        log.info("device %s removed", device)

    async def replace(self, plan: DevicePlan, report: ReportConfig | None = None) -> None:
        """Stop ``plan.id``'s task and driver, then start it afresh with ``plan`` (a changed config)."""
        await self.remove(plan.id)
        await self.add(plan, report)

    async def restart(self, device: str) -> None:
        """Stop the device's task (closing its driver) and start a new one: reconnect, and a new grid."""
        self.poller(device)
        await self._stop(device, retire=False)
        if self._running:
            self._start(device)
        log.info("device %s: task restarted", device)

    def _start(self, device: str) -> None:
        task = asyncio.create_task(self.pollers[device].run(), name=f"edge-device-{device}")
        task.add_done_callback(_report_death)
        self._tasks[device] = task

    async def _stop(self, device: str, *, retire: bool) -> None:
        task = self._tasks.pop(device, None)
        if task is not None:
            await cancel_and_wait([task], STOP_TIMEOUT_S)
        await self.pollers[device].close_when_idle(retire=retire)


def _report_death(task: asyncio.Task[None]) -> None:
    """A device task ends only when cancelled; anything else is a bug worth a loud log line."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("%s died", task.get_name(), exc_info=exc)
