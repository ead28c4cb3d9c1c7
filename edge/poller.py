"""One device's task: its driver polled on a fixed monotonic grid, with the failure policy.

The task opens its driver, polls every ``interval_s`` on ticks ``origin + k * interval_s`` (no drift; a poll
that overruns skips the ticks it missed instead of bursting to catch up), each open and each poll under
``asyncio.timeout(timeout_s)``. What happens after a failed attempt depends only on the error's type
(:mod:`devices.errors`):

- :class:`DeviceBusy`: the driver already retried; the next regular tick tries again, connection kept;
- :class:`DeviceUnavailable`, :class:`DeviceResponseError`, a timeout, or any unexpected exception (logged with
  its traceback): the driver is closed, and reopened after a capped exponential backoff with jitter
  (:class:`~edge.backoff.Backoff`, base ``interval_s``, cap ``min(10 x interval_s, 300 s)`` but at least one
  interval), then the grid is resumed.

A device's state changes (first known state, down, up) are logged once each and queued as events; repeated
failures are logged at DEBUG only. A health-probe driver (:class:`~devices.driver.HealthReporting`, the camera)
polls fine while its device is dead: after each successful poll its ``down_reason()`` decides up or down, with
the same events (its readings are queued either way, and its schedule is kept: no backoff, the probe worked).
A driver that names its device's problems (:class:`~devices.driver.ProblemReporting`, the camera's image
problems) is asked for them after each poll that finds the device up: ``device_degraded`` when the set of raised
problems becomes non-empty or changes (the reason: :func:`edge.events.problems_reason`), ``device_up`` when it
is empty again. ``device_down`` takes precedence (a failed poll, a probe's verdict); coming back up with problems
still raised sends ``device_degraded``, not ``device_up``. The task never dies of a device error.

Run-time control: :meth:`DevicePoller.set_interval` re-anchors the grid on the new interval at once;
:meth:`DevicePoller.poll_now` polls outside the grid and :meth:`DevicePoller.execute` runs a driver command.
Every use of the driver holds the device's lock, so a device sees one request at a time however polls and
commands interleave.

Report-by-exception (optional, :mod:`edge.exception`) filters a regular poll's readings before they reach the
outbox; a ``poll_now`` is always sent whole (and counts as reported).

Snapshots: a driver that takes pictures (:class:`~devices.driver.FrameTaking`, the camera) hands its frames over
after each successful poll to the :class:`~edge.snapshots.SnapshotBox`, which decides which leave the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from devices.driver import CommandCapable, FrameTaking, HealthReporting, MetricValue, ProblemReporting, now_ms
from devices.errors import DeviceBusy, DeviceResponseError, DeviceUnavailable, UnsupportedCommand
from edge.backoff import Backoff
from edge.config import ReportConfig
from edge.events import DeviceEvent, EventQueue, problems_reason
from edge.exception import ExceptionFilter
from edge.outbox import Outbox
from edge.plan import DevicePlan
from edge.readings import ReadingFilter
from edge.snapshots import SnapshotBox
from edge.stats import EdgeStats
from wire.v1 import EventType, Reading

log = logging.getLogger(__name__)

#: Backoff cap: this many intervals...
BACKOFF_CAP_INTERVALS: Final = 10.0
#: ...but never more than this (unless the interval itself is longer).
BACKOFF_CAP_S: Final = 300.0
#: How long closing a driver may take (``Driver.close`` never raises, but may hang on a dead link).
CLOSE_TIMEOUT_S: Final = 5.0
#: How long stopping one device (remove, replace, restart) waits for a command holding the device.
DEVICE_STOP_TIMEOUT_S: Final = 15.0


def backoff_for(interval_s: float, rng: random.Random | None = None) -> Backoff:
    """The device backoff policy: base one interval, cap ``min(10 intervals, 300 s)``, at least one interval."""
    cap = max(interval_s, min(BACKOFF_CAP_INTERVALS * interval_s, BACKOFF_CAP_S))
    return Backoff(interval_s, cap, rng)


class Health(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class ActionNotSupported(UnsupportedCommand):
    """The device's driver does not declare this action (:meth:`CommandCapable.supported_actions`)."""


class PollFailed(Exception):
    """A poll requested outside the grid (``read_now``) failed; ``timed_out`` when the device did not answer."""

    def __init__(self, reason: str, *, timed_out: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    #: Close the driver and come back after a backoff (False: keep the connection, retry on the next tick).
    reconnect: bool
    timed_out: bool = False


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
        report: ReportConfig | None = None,
        snapshots: SnapshotBox | None = None,
    ) -> None:
        self.plan = plan
        self.health = Health.UNKNOWN
        self._outbox = outbox
        self._events = events
        self._stats = stats
        self._rng = rng
        self._filter = ReadingFilter(plan.id, plan.kind, stats)
        self._exceptions = ExceptionFilter(plan.id, report) if report is not None else None
        self._backoff = backoff_for(plan.interval_s, rng)
        #: A health-probe driver's verdict after a successful poll (None: a successful poll means up).
        self._verdict = plan.driver.down_reason if isinstance(plan.driver, HealthReporting) else None
        #: A problem-reporting driver's problems (None: the driver names none).
        self._problems = plan.driver.problems if isinstance(plan.driver, ProblemReporting) else None
        #: The problems the last up or degraded event reported (empty: none, or no such event yet).
        self._reported: Mapping[str, str] = {}
        #: Where a picture-taking driver's frames go after each poll (None: nowhere, they are not asked for).
        self._snapshots = snapshots if isinstance(plan.driver, FrameTaking) else None
        self._opened = False
        self._down_since = 0.0
        #: Held by every use of the driver: one request at a time per device.
        self._lock = asyncio.Lock()
        #: Set by :meth:`set_interval`; wakes the task's sleep so the new grid starts at once.
        self._retime = False
        self._wake = asyncio.Event()
        #: Removed from the scheduler: commands that were waiting for the lock must not reopen the driver.
        self._retired = False

    @property
    def interval_s(self) -> float:
        return self.plan.interval_s

    @property
    def suppressed(self) -> int:
        """Metric values held back by report-by-exception."""
        return self._exceptions.suppressed if self._exceptions is not None else 0

    def set_interval(self, interval_s: float) -> None:
        """Poll every ``interval_s`` from now on: the grid is re-anchored one new interval after the last poll
        (at once if that is past); a device in backoff keeps its current wait. The backoff base follows."""
        if not math.isfinite(interval_s) or interval_s <= 0:
            raise ValueError(f"interval_s must be a positive number, not {interval_s!r}")
        self.plan = dataclasses.replace(self.plan, interval_s=interval_s)
        failures = self._backoff.failures
        self._backoff = backoff_for(interval_s, self._rng)
        self._backoff.failures = failures
        self._retime = True
        self._wake.set()

    async def run(self) -> None:
        """Poll until cancelled; the driver is closed on the way out."""
        origin = time.monotonic()
        next_at = origin
        last_start = origin
        backing_off = False
        try:
            while True:
                if await self._sleep_until(next_at):
                    if not backing_off:
                        origin = next_at = max(time.monotonic(), last_start + self.plan.interval_s)
                    continue
                last_start = time.monotonic()
                async with self._lock:
                    failure = await self._attempt(self._exceptions)
                    if isinstance(failure, _Failure) and failure.reconnect:
                        await self._close()
                now = time.monotonic()
                interval = self.plan.interval_s
                if isinstance(failure, _Failure):
                    self._stats.polls_failed += 1
                    self._mark_down(failure.reason)
                    if failure.reconnect:
                        backing_off = True
                        next_at = now + self._backoff.next()
                        continue
                else:
                    self._backoff.reset()
                    self._mark_by_verdict()
                if backing_off:
                    # Back on the grid after a backoff: re-anchored on this attempt.
                    backing_off = False
                    origin = last_start
                # The next tick of the grid strictly after now: ticks missed by a slow poll are skipped.
                next_at = origin + (math.floor((now - origin) / interval) + 1) * interval
        finally:
            await self._close()

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (monotonic). True if :meth:`set_interval` woke it first."""
        while True:
            if self._retime:
                self._retime = False
                return True
            delay = deadline - time.monotonic()
            if delay <= 0:
                return False
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def poll_now(self) -> list[Reading]:
        """Poll once, now, outside the grid (waiting for a poll or command in progress on this device first).

        The readings are queued in the outbox whole (no report-by-exception) and returned. Raises
        :class:`PollFailed`; the failure counts like a regular one (health event, driver closed on a
        connection-level error, the regular task reopens it).
        """
        async with self._lock:
            if self._retired:
                raise PollFailed(f"device {self.plan.id!r} was removed meanwhile", timed_out=False)
            outcome = await self._attempt(None)
            if isinstance(outcome, _Failure) and outcome.reconnect:
                await self._close()
        if isinstance(outcome, _Failure):
            self._stats.polls_failed += 1
            self._mark_down(outcome.reason)
            raise PollFailed(outcome.reason, timed_out=outcome.timed_out)
        self._mark_by_verdict()
        if self._exceptions is not None:
            self._exceptions.note_reported(outcome)
        return outcome

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        """Run a driver command (opening the driver first if needed), one request at a time with the polls.

        Raises :class:`ActionNotSupported` when the driver has no ``action``, :class:`TimeoutError` when
        opening takes longer than the device's timeout, :class:`DeviceError` from the driver. Any failure but
        :class:`DeviceBusy` and :class:`UnsupportedCommand` (or a cancelled command) closes the driver; the
        regular task reopens it.
        After a successful ``restart`` the driver is closed too: the old connection died with the device.
        """
        driver = self.plan.driver
        if not isinstance(driver, CommandCapable) or action not in driver.supported_actions():
            raise ActionNotSupported(f"driver {self.plan.driver_name!r} cannot {action!r}")
        async with self._lock:
            if self._retired:
                raise DeviceUnavailable(f"device {self.plan.id!r} was removed meanwhile")
            try:
                if not self._opened:
                    self._opened = True
                    async with asyncio.timeout(self.plan.timeout_s):
                        await self.plan.driver.open()
                detail = await driver.execute(action, params)
            except (DeviceBusy, UnsupportedCommand):
                raise  # the device is there and said no: keep the connection
            except BaseException:
                # Unreachable, a wrong answer, a timeout, a cancelled command or a driver bug: the connection
                # may be half-open or hold a late answer; the regular task reopens it.
                await self._close()
                raise
            if action == "restart":
                await self._close()
        return detail

    async def _attempt(self, exceptions: ExceptionFilter | None) -> list[Reading] | _Failure:
        """Open if needed, poll once, queue the readings (through ``exceptions`` if given).

        Returns the readings queued, or the failure. The caller holds the lock. A cancellation (scheduler
        stopping, a command's timeout) closes the driver: a late answer must not be taken for the next one.
        """
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
            return _Failure(f"{step} timed out after {plan.timeout_s:g} s", reconnect=True, timed_out=True)
        except asyncio.CancelledError:
            await self._close()
            raise
        except Exception as exc:
            # A driver bug must not kill the device's task: log the traceback once per outage, then retry.
            if self.health is not Health.DOWN:
                log.exception("device %s: unexpected error in %s", plan.id, step)
            else:
                log.debug("device %s: unexpected error in %s", plan.id, step, exc_info=True)
            return _Failure(f"unexpected error in {step}: {type(exc).__name__}: {exc}", reconnect=True)
        self._stats.polls_ok += 1
        queued = exceptions.filter(converted) if exceptions is not None else converted
        await self._outbox.put(queued)
        if self._snapshots is not None:
            self._offer_frames(self._snapshots)
        return converted

    def _offer_frames(self, snapshots: SnapshotBox) -> None:
        assert isinstance(self.plan.driver, FrameTaking)
        try:
            frames = self.plan.driver.frames()
        except Exception:  # a driver bug must not kill the task; the poll itself worked
            log.exception("device %s: frames() failed", self.plan.id)
            return
        snapshots.offer(self.plan.id, frames)

    async def _close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.plan.driver.close()
        except Exception:  # close "never raises"; if a driver does anyway, the next open starts afresh
            log.debug("device %s: error while closing the driver", self.plan.id, exc_info=True)

    async def close_when_idle(self, *, retire: bool) -> None:
        """Close the driver once no command holds it (after the task was stopped). ``retire``: the device is
        being removed, so a command still waiting for it fails instead of opening the driver again."""
        self._retired = retire
        try:
            async with asyncio.timeout(DEVICE_STOP_TIMEOUT_S):
                await self._lock.acquire()
        except TimeoutError:
            log.warning("device %s: a command still holds it; closing the driver anyway", self.plan.id)
            await self._close()
            return
        try:
            await self._close()
        finally:
            self._lock.release()

    def _mark_by_verdict(self) -> None:
        """After a successful poll: down if a health-probe driver says so; else up, or degraded with the
        problems a problem-reporting driver names."""
        reason: str | None = None
        if self._verdict is not None:
            try:
                reason = self._verdict()
            except Exception:  # a driver bug must not kill the task; the poll itself worked
                log.exception("device %s: down_reason() failed", self.plan.id)
        if reason:
            self._mark_down(reason)
        else:
            self._mark_up(self._current_problems())

    def _current_problems(self) -> Mapping[str, str]:
        if self._problems is None:
            return {}
        try:
            return dict(self._problems())
        except Exception:  # a driver bug must not kill the task: the problems stay as last reported
            log.exception("device %s: problems() failed", self.plan.id)
            return self._reported

    def _mark_up(self, problems: Mapping[str, str]) -> None:
        """Up; one event when that is news: ``device_up`` without problems, ``device_degraded`` with them (a
        change of the problems' set while up is news; a change of their details alone is not)."""
        previous = self.health
        if previous is Health.UP and problems.keys() == self._reported.keys():
            return
        if previous is Health.DOWN:
            log.info("device %s is up again after %.1f s", self.plan.id, time.monotonic() - self._down_since)
        elif previous is Health.UNKNOWN:
            log.info("device %s is up (first poll ok)", self.plan.id)
        self.health = Health.UP
        self._reported = problems
        if problems:
            reason = problems_reason(problems)
            log.warning("device %s is degraded: %s", self.plan.id, reason)
            self._events.put(DeviceEvent(self.plan.id, EventType.DEVICE_DEGRADED, now_ms(), reason))
            return
        if previous is Health.UP:
            log.info("device %s: its problems cleared", self.plan.id)
        self._events.put(DeviceEvent(self.plan.id, EventType.DEVICE_UP, now_ms()))

    def _mark_down(self, reason: str) -> None:
        if self.health is Health.DOWN:
            log.debug("device %s still down: %s", self.plan.id, reason)
            return
        log.warning("device %s is down: %s", self.plan.id, reason)
        self.health = Health.DOWN
        self._down_since = time.monotonic()
        self._events.put(DeviceEvent(self.plan.id, EventType.DEVICE_DOWN, now_ms(), reason))
