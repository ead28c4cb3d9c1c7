"""``GET /api/v1/reports/availability``: camera availability over a month of the city's time zone, as JSON, CSV,
a printable HTML page or its PDF (docs/reports.md has the definitions of every figure).

Access is the device routes': a viewer token or higher, and a ward-limited token sees only the cameras of its
wards (the total is then theirs). The health history is read in a reader thread of the hub database and the CSV
and HTML are made in a worker thread; the PDF is printed by headless Chromium, a child process with a timeout, at
most :data:`MAX_PRINTS` at a time. So the event loop that ingests MQTT only waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from hub.reports.availability import parse_month
from hub.reports.labels import Lang
from hub.reports.models import AvailabilityReport
from hub.reports.pdf import PdfFailed, PdfUnavailable, print_pdf
from hub.reports.render import CSP, to_csv, to_html
from hub.reports.report import MonthNotBegun, build_report, cameras_of
from hub.routes.deps import Ops, Viewer
from wire.v1 import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["reports"])

#: Chromium prints at most this many reports at once (each is a browser: ~150 MiB while it runs).
MAX_PRINTS: Final = 2
_PRINT_SLOTS: Final = "report_print_slots"
Format = Literal["json", "csv", "html", "pdf"]

_OTHER_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON (below), or CSV, HTML or PDF as `format` asks.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    422: {"description": "A bad month (not YYYY-MM, or not begun yet), an unknown ward, or a bad format or lang."},
    503: {"description": "PDF only: Chromium is not installed, or it failed."},
    504: {"description": "PDF only: Chromium took longer than `reports.pdf_timeout_s`."},
}


def _invalid(field: str, value: str, message: str) -> HTTPException:
    """A 422 shaped as FastAPI's own validation errors, naming the query parameter."""
    detail = [{"type": "value_error", "loc": ["query", field], "msg": message, "input": value}]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


@router.get("/reports/availability", response_model=AvailabilityReport, responses=_OTHER_FORMATS)
async def availability_report(  # noqa: PLR0917 - FastAPI query parameters
    request: Request,
    principal: Viewer,
    ops: Ops,
    month: Annotated[str, Query(max_length=16, description="The month, YYYY-MM.", examples=["2026-11"])],
    ward: Annotated[str | None, Query(pattern=ID_PATTERN, description="Only this ward's cameras.")] = None,
    format: Format = "json",
    lang: Annotated[Lang, Query(description="The language of the HTML and PDF.")] = "vi",
) -> AvailabilityReport | Response:
    """Per camera, per ward and in total: the share of time online with a good image (time unknown left out),
    time per state, outages and faults by kind (offline, each image problem, other degradation) with their mean
    time to restore. The month under way is reported up to now."""
    try:
        year, month_number = parse_month(month)
    except ValueError as exc:
        raise _invalid("month", month, str(exc)) from exc
    registry = ops.registry
    cameras = cameras_of(registry, principal.sees, ward)
    if ward is not None and not any(s.ward == ward and principal.sees(s.ward) for s in registry.sites.values()):
        # The same answer for a ward that does not exist and one outside the token's wards (no existence leak).
        raise _invalid("ward", ward, f"ward {ward!r} has no site in the registry that this token may see")
    tz = ZoneInfo(ops.settings.reports.timezone)
    now = datetime.now(UTC)
    await ops.sink.caught_up()  # transitions of the last half second count too
    try:
        report = await ops.db.read(
            lambda s: build_report(s, cameras=cameras, year=year, month=month_number, tz=tz, now=now, ward=ward)
        )
    except MonthNotBegun as exc:
        raise _invalid("month", month, str(exc)) from exc
    if format == "json":
        return report
    name = f"camera-availability-{report.month}" + (f"-{ward}" if ward is not None else "")
    if format == "csv":
        body = await asyncio.to_thread(to_csv, report)
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    html = await asyncio.to_thread(to_html, report, lang, now.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z"))
    if format == "html":
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP})
    settings = ops.settings.reports
    try:
        async with _print_slots(request):
            pdf = await print_pdf(html, chromium=settings.chromium, timeout_s=settings.pdf_timeout_s)
    except PdfUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    except PdfFailed as exc:
        code = status.HTTP_504_GATEWAY_TIMEOUT if exc.timed_out else status.HTTP_503_SERVICE_UNAVAILABLE
        raise HTTPException(code, str(exc)) from exc
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}-{lang}.pdf"'},
    )


def _print_slots(request: Request) -> asyncio.Semaphore:
    """The app's print slots (made on first use, in the loop that serves it)."""
    slots: asyncio.Semaphore | None = getattr(request.app.state, _PRINT_SLOTS, None)
    if slots is None:
        slots = asyncio.Semaphore(MAX_PRINTS)
        setattr(request.app.state, _PRINT_SLOTS, slots)
    return slots
