"""The availability report as the API answers it (``GET /api/v1/reports/availability``, JSON): public models, so
the OpenAPI document describes every field. Times are seconds (milliseconds exact, as decimals)."""

from __future__ import annotations

from typing import TypedDict

from pydantic import BaseModel, Field

from hub.reports.availability import FAULT_KINDS, Episodes, FaultKind, Figures


class EpisodeFigures(BaseModel):
    """Episodes that started in the period: ``started`` = ``restored`` + ``open``."""

    started: int = Field(description="Episodes that started in the period.")
    restored: int = Field(description="Of those, how many returned to online before the period's end.")
    open: int = Field(description="Of those, how many were still not online at the period's end.")
    mean_time_to_restore_s: float | None = Field(
        description="Mean time from an episode's start to the return to online, over the restored ones (null: none)."
    )


class FaultFigures(EpisodeFigures):
    """One fault kind."""

    kind: FaultKind
    time_s: float = Field(description="Time in a state with this fault (two image problems at once count for both).")


class AvailabilityFigures(BaseModel):
    """Time per state (they add up to ``observed_s``), availability, outages and faults by kind."""

    observed_s: float = Field(description="The period's length, times the number of cameras when pooled.")
    online_s: float
    degraded_s: float
    offline_s: float
    unknown_s: float = Field(description="Time the hub could not tell (gateway down, no history yet).")
    availability: float | None = Field(
        description="online_s / (observed_s - unknown_s), 0..1; null when nothing of the period is known."
    )
    outages: EpisodeFigures = Field(description="Stretches from leaving online for any fault to the return.")
    faults: list[FaultFigures] = Field(description=f"Every fault kind, in this order: {', '.join(FAULT_KINDS)}.")


class CameraAvailability(AvailabilityFigures):
    device: str
    site: str | None
    site_name: str
    ward: str | None


class WardAvailability(AvailabilityFigures):
    ward: str | None = Field(description="null: cameras at sites without a ward.")
    cameras: int


class TotalAvailability(AvailabilityFigures):
    cameras: int


class AvailabilityReport(BaseModel):
    """Camera availability over one month of the city's time zone (docs/reports.md has the definitions)."""

    month: str = Field(examples=["2026-11"])
    timezone: str = Field(examples=["Asia/Ho_Chi_Minh"])
    start: str = Field(description="The month's first instant, local time, ISO 8601.")
    end: str = Field(description="The end of the period: the next month's first instant, or now for this month.")
    complete: bool = Field(description="False for the month under way (reported up to now).")
    ward: str | None = Field(description="The ward asked for, if any.")
    total: TotalAvailability = Field(description="Every camera of the report (the city, for an unlimited token).")
    wards: list[WardAvailability] = Field(description="Per ward, sorted by ward (null last).")
    cameras: list[CameraAvailability] = Field(description="Per camera, sorted by ward, site and id.")


def seconds(ms: int) -> float:
    return ms / 1000


def episode_figures(e: Episodes) -> EpisodeFigures:
    mean = e.mean_time_to_restore_ms
    return EpisodeFigures(
        started=e.started,
        restored=e.restored,
        open=e.open,
        mean_time_to_restore_s=None if mean is None else mean / 1000,
    )


class FiguresFields(TypedDict):
    """The fields of :class:`AvailabilityFigures`, to build its subclasses from."""

    observed_s: float
    online_s: float
    degraded_s: float
    offline_s: float
    unknown_s: float
    availability: float | None
    outages: EpisodeFigures
    faults: list[FaultFigures]


def figures_fields(f: Figures) -> FiguresFields:
    """The fields of :class:`AvailabilityFigures` for ``f``."""
    return {
        "observed_s": seconds(f.observed_ms),
        "online_s": seconds(f.state_ms["online"]),
        "degraded_s": seconds(f.state_ms["degraded"]),
        "offline_s": seconds(f.state_ms["offline"]),
        "unknown_s": seconds(f.state_ms["unknown"]),
        "availability": f.availability,
        "outages": episode_figures(f.outages),
        "faults": [
            FaultFigures(kind=k, time_s=seconds(f.fault_ms[k]), **episode_figures(f.faults[k]).model_dump())
            for k in FAULT_KINDS
        ],
    }
