"""This month's camera availability per ward, written to InfluxDB for the leadership board.

Why a job and not a query on ``device_health``: the share must be pooled over a ward's cameras, each held in its
last state between transitions (``fill(previous)`` per camera). InfluxDB 1.x applies the outermost query's
``GROUP BY`` to every subquery, so a query that pools over cameras (no ``GROUP BY "device"`` at the top) fills one
camera's empty steps with another camera's state: on the local stack's InfluxDB 1.6.7, three cameras whose 33 known
5-minute steps held 22 online gave 75 % instead of 66.7 %, and counting four cameras' 52 steps gave 70 (measured
while this was written; docs/reports.md). The report's own figures
(hub/reports/report.py, the same code as ``GET /api/v1/reports/availability``) have no such problem, so the hub
writes them, every ``reports.series_interval_s`` (default 300 s):

- ``camera_availability``, tags ``scope`` (``ward`` or ``city``), ``ward`` (absent for the city, and for cameras at
  sites without a ward), ``month`` (``YYYY-MM``, the city's time zone); fields ``availability`` (0..1, absent when
  nothing of the month is known), ``online_s``, ``known_s`` (observed minus unknown), ``unknown_s``, ``cameras``,
  ``outages``, ``outages_open`` and ``mttr_s`` (absent without a restored outage): the month so far, at the time
  of the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError

from hub.errors import StorageError
from hub.registry.db import Database
from hub.registry.registry import Registry
from hub.reports.models import AvailabilityFigures, AvailabilityReport
from hub.reports.report import build_report, cameras_of
from hub.storage.lineproto import FieldValue, line

log = logging.getLogger(__name__)

MEASUREMENT: Final = "camera_availability"


def _fields(f: AvailabilityFigures, cameras: int) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {
        "online_s": f.online_s,
        "known_s": f.observed_s - f.unknown_s,
        "unknown_s": f.unknown_s,
        "cameras": cameras,
        "outages": f.outages.started,
        "outages_open": f.outages.open,
    }
    if f.availability is not None:
        fields["availability"] = f.availability
    if f.outages.mean_time_to_restore_s is not None:
        fields["mttr_s"] = f.outages.mean_time_to_restore_s
    return fields


def report_lines(report: AvailabilityReport, ts_ms: int) -> list[str]:
    """One line per ward and one for the city."""
    lines = []
    for ward in report.wards:
        tags = {"scope": "ward", "month": report.month} | ({"ward": ward.ward} if ward.ward is not None else {})
        lines.append(line(MEASUREMENT, tags, _fields(ward, ward.cameras), ts_ms))
    city = {"scope": "city", "month": report.month}
    lines.append(line(MEASUREMENT, city, _fields(report.total, report.total.cameras), ts_ms))
    return lines


class AvailabilitySeriesJob:
    """Every ``interval_s``: this month's report of every camera of ``registry``, written through ``write`` (the
    hub's InfluxDB writer: a line protocol body, raising :class:`StorageError`)."""

    def __init__(
        self,
        db: Database,
        write: Callable[[bytes], Awaitable[object]],
        registry: Registry,
        *,
        tz: ZoneInfo,
        interval_s: float = 300.0,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"camera availability job: interval_s must be positive, not {interval_s!r}")
        self._db = db
        self._write = write
        self._registry = registry
        self._tz = tz
        self.interval_s = interval_s
        self._failing = False
        self.runs = 0

    async def run_once(self, now: datetime | None = None) -> int:
        """One run; the number of points written (none while the registry knows no camera: a city without
        cameras has no availability to show). Raises :class:`StorageError` or SQLAlchemyError."""
        now = now or datetime.now(UTC)
        local = now.astimezone(self._tz)
        cameras = cameras_of(self._registry, lambda _ward: True)
        if not cameras:
            self.runs += 1
            return 0
        report = await self._db.read(
            lambda s: build_report(s, cameras=cameras, year=local.year, month=local.month, tz=self._tz, now=now)
        )
        lines = report_lines(report, int(now.timestamp() * 1000))
        await self._write(("\n".join(lines) + "\n").encode())
        self.runs += 1
        return len(lines)

    async def run(self) -> None:
        """Run until cancelled; a failing run is logged when it starts failing and when it works again."""
        while True:
            try:
                await self.run_once()
            except (StorageError, SQLAlchemyError) as exc:
                if not self._failing:
                    log.warning(
                        "camera availability for InfluxDB failed, retrying every %g s: %s", self.interval_s, exc
                    )
                self._failing = True
            except Exception:  # a bug must not end the job for the hub's lifetime, nor surface at its stop
                if not self._failing:
                    log.exception("camera availability for InfluxDB failed, retrying every %g s", self.interval_s)
                self._failing = True
            else:
                if self._failing:
                    log.info("camera availability for InfluxDB works again")
                self._failing = False
            await asyncio.sleep(self.interval_s)
