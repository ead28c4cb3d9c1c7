"""Camera availability over a month, from the health history (the definitions are docs/reports.md's).

Pure computation: :func:`camera_figures` takes a camera's state at the month's start (its last transition before
it) and its transitions within the month, and returns time per state, time per fault kind and fault episodes;
:func:`pooled` adds cameras up (a ward, every camera of the report). Times are integer milliseconds until the
answer is built, so sums are exact.

- **Fault kinds** (:data:`FAULT_KINDS`): ``offline``; each image problem listed in a ``degraded`` state's reason
  (``device_degraded: image_black: ...; view_changed: ...``, also after flapping settled: ``stable for 130 s:
  device_degraded: ...``); ``degraded`` for any other reason to be degraded (``flapping``, a driver's degraded
  report without an image problem). ``online`` and ``unknown`` are no fault.
- **Availability** = time ``online`` / (observed time - time ``unknown``): ``unknown`` is the hub not knowing (the
  camera's gateway down, or no history yet), so it is neither up nor down and is shown on its own.
- **An episode of a kind** starts when the camera enters a state with that fault while no episode of that kind
  is open; every open episode ends when the camera returns to ``online`` (a stretch of ``unknown`` neither ends
  nor starts one). An **outage** is the same with any fault kind. An episode counts in the month it starts;
  its time to restore is from its start to the return to ``online``; one still open at the end of the period is
  counted as ``open`` and left out of the mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from hub.health.machine import Health

FaultKind = Literal[
    "offline", "image_black", "image_frozen", "image_blurred", "image_covered", "view_changed", "degraded"
]
#: The order faults are listed in, everywhere (JSON, CSV, the printed report).
FAULT_KINDS: Final[tuple[FaultKind, ...]] = (
    "offline",
    "image_black",
    "image_frozen",
    "image_blurred",
    "image_covered",
    "view_changed",
    "degraded",
)
#: The image problems the edge raises (devices/drivers/camera/), in a ``device_degraded`` reason.
IMAGE_PROBLEMS: Final[frozenset[FaultKind]] = frozenset(
    ("image_black", "image_frozen", "image_blurred", "image_covered", "view_changed")
)
DEVICE_DEGRADED: Final = "device_degraded: "
#: The hub's reason after flapping ends (hub/health/machine.py ``tick``): ``stable for N s: <raw reason>``.
_SETTLED: Final = re.compile(r"stable for \d+ s: ")
#: A problem of the list: at the start or after ``"; "``, its name, then ``": "`` (the detail may hold anything).
_PROBLEM: Final = re.compile(r"(?:^|; )(" + "|".join(sorted(IMAGE_PROBLEMS)) + r"): ")
_MONTH: Final = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); ValueError saying what is expected."""
    match = _MONTH.fullmatch(text)
    if match is None or int(match.group(1)) < 1970:
        raise ValueError(f"{text!r} is not a month as YYYY-MM (1970-01 or later), such as 2026-11")
    return int(match.group(1)), int(match.group(2))


def month_bounds(year: int, month: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, local time in ``tz``."""
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    return start, end


def faults_of(state: str, reason: str) -> tuple[FaultKind, ...]:
    """The fault kinds a state with its reason stands for (none for ``online`` and ``unknown``)."""
    if state == Health.OFFLINE:
        return ("offline",)
    if state != Health.DEGRADED:
        return ()
    settled = _SETTLED.match(reason)
    if settled is not None:
        reason = reason[settled.end() :]
    if reason.startswith(DEVICE_DEGRADED):
        found = {m.group(1) for m in _PROBLEM.finditer(reason[len(DEVICE_DEGRADED) :])}
        kinds = tuple(k for k in FAULT_KINDS if k in found)
        if kinds:
            return kinds
    return ("degraded",)


@dataclass(frozen=True, slots=True)
class Step:
    """A transition of the camera: from ``ts_ms`` on it is ``state`` for ``reason``."""

    ts_ms: int
    state: str
    reason: str


@dataclass(slots=True)
class Episodes:
    """Episodes that started in the period: how many, how many came back online (and their total time to restore),
    how many were still open at its end."""

    started: int = 0
    restored: int = 0
    restore_ms: int = 0
    open: int = 0

    def add(self, other: Episodes) -> None:
        self.started += other.started
        self.restored += other.restored
        self.restore_ms += other.restore_ms
        self.open += other.open

    @property
    def mean_time_to_restore_ms(self) -> float | None:
        return self.restore_ms / self.restored if self.restored else None


@dataclass(slots=True)
class Figures:
    """One camera's figures, or several cameras' pooled. State times add up to ``observed_ms``."""

    observed_ms: int = 0
    state_ms: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Health, 0))
    #: Time in a state with the fault (a state with two image problems counts for both).
    fault_ms: dict[FaultKind, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    faults: dict[FaultKind, Episodes] = field(default_factory=lambda: {k: Episodes() for k in FAULT_KINDS})
    outages: Episodes = field(default_factory=Episodes)
    cameras: int = 1

    @property
    def known_ms(self) -> int:
        return self.observed_ms - self.state_ms[Health.UNKNOWN]

    @property
    def availability(self) -> float | None:
        """Share of the known time online; None when nothing of the period is known."""
        known = self.known_ms
        return self.state_ms[Health.ONLINE] / known if known > 0 else None

    def add(self, other: Figures) -> None:
        self.observed_ms += other.observed_ms
        for state, ms in other.state_ms.items():
            self.state_ms[state] += ms
        for kind in FAULT_KINDS:
            self.fault_ms[kind] += other.fault_ms[kind]
            self.faults[kind].add(other.faults[kind])
        self.outages.add(other.outages)
        self.cameras += other.cameras


def camera_figures(before: Step | None, steps: Sequence[Step], start_ms: int, end_ms: int) -> Figures:
    """The figures of one camera over [start_ms, end_ms).

    ``before`` is its last transition before ``start_ms`` (None: no history then, so ``unknown``); ``steps`` its
    transitions within the period, oldest first. Episodes open at the start began before the period: they are not
    counted here (they were in their own month), and their return to ``online`` ends them without a count."""
    out = Figures()
    state, reason = (before.state, before.reason) if before is not None else (Health.UNKNOWN.value, "")
    kinds = faults_of(state, reason)
    # Open episodes: kind -> start, None for one carried in from before the period.
    opened: dict[FaultKind, int | None] = dict.fromkeys(kinds)
    outage: int | None = None
    outage_open = bool(kinds)
    since = start_ms
    for step in steps:
        if not start_ms <= step.ts_ms < end_ms:
            continue
        _account(out, state, kinds, step.ts_ms - since)
        since, state, reason = step.ts_ms, step.state, step.reason
        kinds = faults_of(state, reason)
        if state == Health.ONLINE:
            for kind, began in opened.items():
                if began is not None:
                    out.faults[kind].restored += 1
                    out.faults[kind].restore_ms += step.ts_ms - began
            if outage_open and outage is not None:
                out.outages.restored += 1
                out.outages.restore_ms += step.ts_ms - outage
            opened, outage, outage_open = {}, None, False
            continue
        for kind in kinds:
            if kind not in opened:
                opened[kind] = step.ts_ms
                out.faults[kind].started += 1
        if kinds and not outage_open:
            outage, outage_open = step.ts_ms, True
            out.outages.started += 1
    _account(out, state, kinds, end_ms - since)
    out.observed_ms = end_ms - start_ms
    for kind, began in opened.items():
        if began is not None:
            out.faults[kind].open += 1
    if outage_open and outage is not None:
        out.outages.open += 1
    return out


def _account(out: Figures, state: str, kinds: Iterable[FaultKind], ms: int) -> None:
    out.state_ms[Health(state)] += ms
    for kind in kinds:
        out.fault_ms[kind] += ms


def pooled(figures: Iterable[Figures]) -> Figures:
    """Cameras added up: times and episodes summed, availability and mean time to restore over the sums."""
    total = Figures(cameras=0)
    for f in figures:
        total.add(f)
    return total
