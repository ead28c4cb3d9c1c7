"""The availability report of a month: the cameras' health history read in two queries per batch of cameras, their
figures (hub/reports/availability.py), pooled per ward and in total.

:func:`build_report` is blocking (SQLAlchemy): the API runs it in a reader thread of the hub database
(``Database.read``), never on the event loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.health.store import HealthTransitionRow as T
from hub.registry.registry import Registry
from hub.reports.availability import Figures, Step, camera_figures, month_bounds, pooled
from hub.reports.models import (
    AvailabilityReport,
    CameraAvailability,
    TotalAvailability,
    WardAvailability,
    figures_fields,
)

#: Cameras per query (bound parameters: SQLite allows 32,766, PostgreSQL 65,535; far below either).
KEYS_PER_QUERY: Final = 500


@dataclass(frozen=True, slots=True)
class Camera:
    """A camera as the registry knows it now (its ward is its site's ward today)."""

    device: str
    site: str | None
    site_name: str
    ward: str | None


CAMERA_KIND: Final = "camera"


def cameras_of(registry: Registry, sees: Callable[[str | None], bool], ward: str | None = None) -> list[Camera]:
    """The registry's cameras whose ward ``sees`` allows (and that are in ``ward``, when given)."""
    out = []
    for device in registry.devices.values():
        device_ward = registry.ward_of(device)
        if device.kind != CAMERA_KIND or not sees(device_ward) or (ward is not None and device_ward != ward):
            continue
        site = registry.sites.get(device.site) if device.site is not None else None
        out.append(Camera(device.id, device.site, site.name if site is not None else "", device_ward))
    return out


class MonthNotBegun(ValueError):
    """The month asked for starts after now."""


def history(
    session: Session, devices: Sequence[str], start_ms: int, end_ms: int
) -> dict[str, tuple[Step | None, list[Step]]]:
    """Per device: its last transition before ``start_ms`` and its transitions in [start_ms, end_ms), oldest first.

    Two queries per :data:`KEYS_PER_QUERY` devices, whatever the number of transitions: the latest time before the
    start per device (the ``(key, ts_ms)`` index answers it), joined back to its rows; then the month's rows."""
    out: dict[str, tuple[Step | None, list[Step]]] = {}
    for i in range(0, len(devices), KEYS_PER_QUERY):
        keys = list(devices[i : i + KEYS_PER_QUERY])
        device_rows = (T.entity == "device", T.key.in_(keys))
        latest = (
            select(T.key, func.max(T.ts_ms).label("ts_ms"))
            .where(*device_rows, T.ts_ms < start_ms)
            .group_by(T.key)
            .subquery()
        )
        before: dict[str, tuple[int, Step]] = {}
        rows = session.execute(
            select(T.key, T.id, T.ts_ms, T.new, T.reason)
            .join(latest, (T.key == latest.c.key) & (T.ts_ms == latest.c.ts_ms))
            .where(*device_rows)
        )
        for key, row_id, ts_ms, new, reason in rows:
            # Two transitions in the same millisecond: the later row is the state that held.
            if key not in before or row_id > before[key][0]:
                before[key] = (row_id, Step(ts_ms, new, reason))
        steps: dict[str, list[Step]] = {}
        month_rows = session.execute(
            select(T.key, T.ts_ms, T.new, T.reason)
            .where(*device_rows, T.ts_ms >= start_ms, T.ts_ms < end_ms)
            .order_by(T.key, T.ts_ms, T.id)
        )
        for key, ts_ms, new, reason in month_rows:
            steps.setdefault(key, []).append(Step(ts_ms, new, reason))
        for key in keys:
            found = before.get(key)
            out[key] = (found[1] if found is not None else None, steps.get(key, []))
    return out


def build_report(
    session: Session,
    *,
    cameras: Sequence[Camera],
    year: int,
    month: int,
    tz: ZoneInfo,
    now: datetime,
    ward: str | None = None,
) -> AvailabilityReport:
    """The report of ``cameras`` for the month; the month under way is reported up to ``now``.
    :class:`MonthNotBegun` for a month that starts after ``now``."""
    start, month_end = month_bounds(year, month, tz)
    label = f"{year:04d}-{month:02d}"
    if start > now:
        raise MonthNotBegun(f"month {label} has not begun in {tz.key} (it starts {start.isoformat()})")
    end = min(month_end, now.astimezone(tz))
    start_ms, end_ms = _ms(start), _ms(end)
    ordered = sorted(cameras, key=lambda c: (c.ward is None, c.ward or "", c.site or "", c.device))
    found = history(session, [c.device for c in ordered], start_ms, end_ms)
    per_camera: list[tuple[Camera, Figures]] = [
        (c, camera_figures(*found[c.device], start_ms, end_ms)) for c in ordered
    ]
    by_ward: dict[str | None, list[Figures]] = {}
    for camera, figures in per_camera:
        by_ward.setdefault(camera.ward, []).append(figures)
    total = pooled(f for _, f in per_camera)
    return AvailabilityReport(
        month=label,
        timezone=tz.key,
        start=start.isoformat(),
        end=end.isoformat(),
        complete=end == month_end,
        ward=ward,
        total=TotalAvailability(cameras=total.cameras, **figures_fields(total)),
        wards=[WardAvailability(ward=w, cameras=len(fs), **figures_fields(pooled(fs))) for w, fs in by_ward.items()],
        cameras=[
            CameraAvailability(
                device=c.device,
                site=c.site,
                site_name=c.site_name,
                ward=c.ward,
                **figures_fields(f),
            )
            for c, f in per_camera
        ],
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000
