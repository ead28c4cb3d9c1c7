"""Alert figures for the boards: open alerts per ward and severity, and every resolved alert, written to InfluxDB.

The hub keeps alerts in its relational database (:mod:`hub.alerts.store`); Grafana reads InfluxDB. This job
copies the figures the leadership board needs, every ``interval_s`` (default 60 s), through the hub's writer:

- ``alerts`` (a gauge), tags ``ward``, ``severity``; fields ``open`` (firing + acknowledged), ``firing``,
  ``acknowledged``. One point per ward and severity on every run, **also when the count is 0**, so a trend
  shows the zeros; wards are those of the registry's sites plus those of open alerts; alerts whose site has no
  ward are counted in the series without a ``ward`` tag (also written as zeros), so a city total is the sum of
  all series.
- ``alert_resolved`` (one point per resolved alert), tags ``ward``, ``severity``, ``rule``, ``subject``;
  fields ``resolve_s`` (resolved minus opened), ``target_s`` (the target of its severity), ``in_time``
  (1.0 when ``resolve_s <= target_s``, else 0.0: its mean is the share resolved in time), ``alert_id``,
  ``manual`` (true when resolved by a person, false when the condition cleared).

**Idempotent, also across restarts**: the point of a resolved alert is at its resolve time, with tags that never
change for that alert (the ward stored with the alert when it opened; the registry's only when none was
stored), so writing it again overwrites the same point (InfluxDB keeps one point per series and timestamp)
instead of counting it twice. One (subject, rule) has at most one open alert (the database's unique key), so two
alerts never share series and millisecond. The first run after a start rewrites the last ``backfill_s``
(default 7 days, the leadership board's range); each later run re-reads from ``overlap_s`` (default 5 min)
before the previous run, so a resolve committed late (another hub instance, a slow database) is not missed.
A run whose write fails is retried whole at the next interval (the window does not move).

Wards: open alerts take the ward of their site in the registry now (a site moved to another ward counts
there at once), falling back to the ward stored with the alert; resolved alerts take the stored ward first,
for the stable tags above.

Targets (:data:`RESOLVE_TARGETS_S`) are the defaults of the time to resolve by severity, to be replaced by the
city's own service levels (``targets=``; proposed hub setting ``alerts.resolve_targets_s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, get_args

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from hub.alerts.rules import Severity
from hub.alerts.store import ACKNOWLEDGED, FIRING, AlertRow
from hub.errors import StorageError
from hub.registry.db import Database
from hub.registry.registry import Registry
from hub.storage.lineproto import LineProtocolError, line

log = logging.getLogger(__name__)

OPEN_MEASUREMENT: Final = "alerts"
RESOLVED_MEASUREMENT: Final = "alert_resolved"
SEVERITIES: Final[tuple[str, ...]] = get_args(Severity)

#: Default run interval (s): the boards refresh every 30 s, and an open-alert count a minute old is current
#: enough for a leadership screen; each run is two small indexed queries.
DEFAULT_INTERVAL_S: Final = 60.0
#: The first run after a start rewrites the resolved alerts of this long ago (s): the leadership board's range
#: (7 days), so a hub that was down, or ran without this job, fills the board's window again.
BACKFILL_S: Final = 7 * 86_400.0
#: Later runs re-read resolved alerts from this long before the previous run (s): a resolve stamped by one
#: process and committed a little later (or by another hub instance with a slightly different clock) is still
#: seen; the rewrite of the others collapses.
OVERLAP_S: Final = 300.0

#: Default time to resolve, by severity (s). The usual service-desk practice (priority 1 within the hour,
#: priority 2 within half a shift, the rest by the next working day):
#: - critical (a gateway down, rising water, PM2.5 at a hazardous level): someone must act at once; 1 h;
#: - major (a device offline, a camera or a sign failing): a crew can reach the site in a shift; 4 h;
#: - warning and info (stale data, degraded readings): the next working day; 24 h.
#: A city replaces them with its own service levels (``targets=``).
RESOLVE_TARGETS_S: Final[Mapping[str, float]] = {
    "critical": 3_600.0,
    "major": 4 * 3_600.0,
    "warning": 24 * 3_600.0,
    "info": 24 * 3_600.0,
}


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """What the gauge needs of an open alert."""

    site: str
    ward: str | None
    severity: str
    state: str


@dataclass(frozen=True, slots=True)
class ResolvedAlert:
    """What one ``alert_resolved`` point needs of a resolved alert."""

    id: int
    rule: str
    subject: str
    site: str
    ward: str | None
    severity: str
    opened_at: datetime
    resolved_at: datetime
    resolved_by: str | None


@dataclass(frozen=True, slots=True)
class Counts:
    firing: int = 0
    acknowledged: int = 0

    @property
    def open(self) -> int:
        return self.firing + self.acknowledged


@dataclass(frozen=True, slots=True)
class RunResult:
    open_points: int
    resolved_points: int


def check_targets(targets: Mapping[str, float]) -> dict[str, float]:
    """``targets`` as a dict; ValueError naming the severity that is missing or not a positive number of seconds."""
    missing = [s for s in SEVERITIES if s not in targets]
    if missing:
        raise ValueError(f"alert resolve targets: no target for severity {', '.join(missing)}")
    out: dict[str, float] = {}
    for severity, seconds in targets.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"alert resolve target of {severity!r} must be a positive number of seconds: {seconds!r}")
        out[severity] = float(seconds)
    return out


def target_of(severity: str, targets: Mapping[str, float]) -> float:
    """The target of ``severity``; an unknown one (a newer rules file) gets the loosest target, not none."""
    found = targets.get(severity)
    return found if found is not None else max(targets.values())


def count_open(
    alerts: Iterable[OpenAlert],
    wards: Iterable[str],
    ward_of_site: Callable[[str], str | None] = lambda _site: None,
) -> dict[tuple[str, str], Counts]:
    """(ward, severity) -> counts of firing and acknowledged alerts, with a zero entry for every ward of
    ``wards`` and for no ward ('') in every severity. A site's ward from ``ward_of_site`` wins over the
    alert's stored one."""
    counts: dict[tuple[str, str], Counts] = {}
    for ward in {"", *wards}:
        for severity in SEVERITIES:
            counts[(ward, severity)] = Counts()
    for alert in alerts:
        ward = ward_of_site(alert.site) or alert.ward or ""
        key = (ward, alert.severity)
        found = counts.get(key, Counts())
        if alert.state == FIRING:
            counts[key] = Counts(found.firing + 1, found.acknowledged)
        elif alert.state == ACKNOWLEDGED:
            counts[key] = Counts(found.firing, found.acknowledged + 1)
        else:
            counts.setdefault(key, found)
    return counts


def open_lines(counts: Mapping[tuple[str, str], Counts], ts_ms: int) -> list[str]:
    """The ``alerts`` gauge lines of one run, in a stable order."""
    return [
        line(
            OPEN_MEASUREMENT,
            {"ward": ward, "severity": severity},
            {"open": float(c.open), "firing": float(c.firing), "acknowledged": float(c.acknowledged)},
            ts_ms,
        )
        for (ward, severity), c in sorted(counts.items())
    ]


def _utc(value: datetime) -> datetime:
    """SQLite gives back naive datetimes, stored as UTC (hub.registry.db.utcnow)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ms(value: datetime) -> int:
    return int(_utc(value).timestamp() * 1000)


def resolved_line(
    alert: ResolvedAlert,
    targets: Mapping[str, float],
    ward_of_site: Callable[[str], str | None] = lambda _site: None,
) -> str:
    """The ``alert_resolved`` line of one alert, at its resolve time (millisecond, the writer's precision)."""
    # Millisecond times on both sides, so the figure is the one the points' timestamps show.
    resolve_s = max(0, _ms(alert.resolved_at) - _ms(alert.opened_at)) / 1000
    target_s = target_of(alert.severity, targets)
    ward = alert.ward or ward_of_site(alert.site) or ""
    return line(
        RESOLVED_MEASUREMENT,
        {"ward": ward, "severity": alert.severity, "rule": alert.rule, "subject": alert.subject},
        {
            "resolve_s": resolve_s,
            "target_s": target_s,
            "in_time": 1.0 if resolve_s <= target_s else 0.0,
            "alert_id": float(alert.id),
            "manual": (alert.resolved_by or "system") != "system",
        },
        _ms(alert.resolved_at),
    )


def _fetch(session: Session, since: datetime) -> tuple[list[OpenAlert], list[ResolvedAlert]]:
    open_rows = session.execute(
        select(AlertRow.site, AlertRow.ward, AlertRow.severity, AlertRow.state).where(
            AlertRow.state.in_((FIRING, ACKNOWLEDGED))
        )
    )
    resolved_rows = session.scalars(
        select(AlertRow).where(AlertRow.resolved_at.is_not(None), AlertRow.resolved_at >= since)
    )
    return (
        [OpenAlert(site, ward, severity, state) for site, ward, severity, state in open_rows],
        [
            ResolvedAlert(
                r.id, r.rule, r.subject, r.site, r.ward, r.severity, r.opened_at, r.resolved_at, r.resolved_by
            )
            for r in resolved_rows
            if r.resolved_at is not None
        ],
    )


class AlertSeriesJob:
    """Every ``interval_s``: count open alerts and copy newly resolved ones from the database to InfluxDB.

    ``db`` is the hub's database (the alert table), ``write`` the hub's InfluxDB writer (line protocol body,
    raising :class:`StorageError`), ``registry`` gives the wards of sites (None: only the wards stored with
    the alerts).
    """

    def __init__(
        self,
        db: Database,
        write: Callable[[bytes], Awaitable[Any]],
        registry: Registry | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        targets: Mapping[str, float] = RESOLVE_TARGETS_S,
        backfill_s: float = BACKFILL_S,
        overlap_s: float = OVERLAP_S,
    ) -> None:
        for name, value in (("interval_s", interval_s), ("backfill_s", backfill_s), ("overlap_s", overlap_s)):
            if not value > 0:
                raise ValueError(f"alert series job: {name} must be positive, not {value!r}")
        self._db = db
        self._write = write
        self._registry = registry
        self.interval_s = interval_s
        self.targets = check_targets(targets)
        self._backfill = timedelta(seconds=backfill_s)
        self._overlap = timedelta(seconds=overlap_s)
        self._since: datetime | None = None
        self._failing = False
        self.runs = 0
        self.open_points = 0
        self.resolved_points = 0

    def _ward_of_site(self, site: str) -> str | None:
        return self._registry.ward_of_site(site) if self._registry is not None and site else None

    def _wards(self) -> set[str]:
        if self._registry is None:
            return set()
        return {s.ward for s in self._registry.sites.values() if s.ward}

    async def run_once(self, now: datetime | None = None) -> RunResult:
        """One run; raises :class:`StorageError` (InfluxDB) or SQLAlchemyError (database). The window of
        resolved alerts moves on only when the write succeeded."""
        now = _utc(now or datetime.now(UTC))
        since = self._since if self._since is not None else now - self._backfill
        opened, resolved = await self._db.read(lambda session: _fetch(session, since))
        lines = open_lines(count_open(opened, self._wards(), self._ward_of_site), _ms(now))
        n_open = len(lines)
        for alert in resolved:
            try:
                lines.append(resolved_line(alert, self.targets, self._ward_of_site))
            except LineProtocolError as exc:
                log.warning("alert %d cannot be written to InfluxDB: %s", alert.id, exc)
        await self._write(("\n".join(lines) + "\n").encode())
        self._since = now - self._overlap
        self.runs += 1
        self.open_points += n_open
        self.resolved_points += len(lines) - n_open
        return RunResult(n_open, len(lines) - n_open)

    async def run(self) -> None:
        """Run until cancelled; a failing run is logged when it starts failing and when it works again."""
        while True:
            try:
                result = await self.run_once()
            except (StorageError, SQLAlchemyError) as exc:
                if not self._failing:
                    log.warning("alert figures for InfluxDB failed, retrying every %g s: %s", self.interval_s, exc)
                self._failing = True
            except Exception:  # a bug must not end the job for the hub's lifetime, nor surface at its stop
                if not self._failing:
                    log.exception("alert figures for InfluxDB failed, retrying every %g s", self.interval_s)
                self._failing = True
            else:
                if self._failing:
                    log.info(
                        "alert figures for InfluxDB work again (%d resolved alerts written)", result.resolved_points
                    )
                self._failing = False
            await asyncio.sleep(self.interval_s)
