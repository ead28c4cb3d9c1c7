"""``POST /api/v1/kpis``: city indicators that do not come from devices, stored in InfluxDB as measurement ``kpi``.

Examples: the on-time rate of public administrative services, citizen feedback counts, incidents resolved in
time. A department posts them as JSON or CSV; the leadership board shows the latest value against its target.

Body, by ``Content-Type``:

- ``application/json``: a list of rows, or ``{"kpis": [rows]}``; a row is
  ``{"kpi": "dvc_on_time_rate", "value": 97.5, "ts": "2026-11-28T00:00:00+07:00", "ward": "quan-1",
  "unit": "%", "target": 95}``;
- ``text/csv``: a header line naming the columns (``kpi,value`` required; ``ts``, ``ward``, ``unit``, ``target``
  optional; no others), then one row per line.

``kpi`` and ``ward`` are ids (lower-case letters, digits, ``_``, ``-``; ``kpi`` starts with a letter); ``value``
and ``target`` finite numbers; ``ts`` an ISO 8601 date-time with its offset, a date (``2026-11-28``, midnight
UTC) or epoch milliseconds, default now; ``unit`` up to 32 characters. Every row is checked before anything is
stored: one bad row refuses the whole request with 422 and a ``detail`` list naming each bad row (1-based, in
body order) and field. At most :data:`MAX_ROWS` rows and :data:`MAX_BODY_BYTES` bytes.

Storage: ``kpi,kpi=<id>[,ward=<id>] value=<float>[,target=<float>][,unit="<text>"] <ts ms>``. A row posted again
with the same kpi, ward and ts overwrites the earlier value (InfluxDB's point identity), so a corrected figure
replaces a wrong one. The writer is the hub's own (``app.state.kpi_sink``); while InfluxDB is unreachable the
request fails with 503 and nothing is stored, so the sender retries. It needs a bearer token with the
technician role or higher (401 without one, 403 with a lower role); a token limited to wards posts only rows of
those wards (403 naming the other rows; rows without a ward are city-wide and need an unlimited token).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from hub.auth import Principal
from hub.errors import StorageError, StorageRejected
from hub.routes.deps import require
from hub.routes.models import KpiProblem, KpisStored
from hub.storage.lineproto import FieldValue, LineProtocolError, line

MEASUREMENT: Final = "kpi"
MAX_ROWS: Final = 10_000
MAX_BODY_BYTES: Final = 2 * 1024 * 1024
COLUMNS: Final = ("kpi", "value", "ts", "ward", "unit", "target")
KPI_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
WARD_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: Timestamps outside this range are refused (a typo in a year, seconds instead of milliseconds).
_DIGITS: Final = re.compile(r"^[0-9]{1,20}$")
MIN_TS_MS: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_TS_MS: Final = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


class KpiSink(Protocol):
    """Where the lines go: the hub's InfluxDB writer."""

    async def write(self, body: bytes) -> None: ...


class RowError(ValueError):
    """One field of one row is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _number(field: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise RowError(field, "must be a number, not true/false")
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise RowError(field, f"must be a number (got {raw!r})") from None
    elif isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:
            raise RowError(field, f"is too large for a number (got {raw!r:.40})") from None
    else:
        raise RowError(field, f"must be a number (got {type(raw).__name__})")
    if not math.isfinite(value):
        raise RowError(field, f"must be a finite number (got {raw!r})")
    return value


def _timestamp(raw: Any, now_ms: int) -> int:
    if raw is None or raw == "":
        return now_ms
    if isinstance(raw, bool):
        raise RowError("ts", "must be a date-time, a date or epoch milliseconds, not true/false")
    if isinstance(raw, int | float) or (isinstance(raw, str) and _DIGITS.match(raw.strip())):
        try:
            ts = int(float(raw))
        except (OverflowError, ValueError):
            raise RowError("ts", f"must be epoch milliseconds between 2000 and 2100 (got {raw!r:.40})") from None
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            if len(text) == 10:
                parsed = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            else:
                parsed = datetime.fromisoformat(text)
        except ValueError:
            raise RowError("ts", f"must be ISO 8601 (2026-11-28T08:00:00+07:00 or 2026-11-28) (got {raw!r})") from None
        if parsed.tzinfo is None:
            raise RowError("ts", f"needs a UTC offset, e.g. 2026-11-28T08:00:00+07:00 (got {raw!r})")
        ts = int(parsed.timestamp() * 1000)
    else:
        raise RowError("ts", f"must be a date-time, a date or epoch milliseconds (got {type(raw).__name__})")
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        raise RowError("ts", f"must be between 2000 and 2100 in epoch milliseconds (got {raw!r})")
    return ts


def _id(field: str, raw: Any, pattern: re.Pattern[str], required: bool) -> str:
    if raw is None or raw == "":
        if required:
            raise RowError(field, "is required")
        return ""
    if not isinstance(raw, str) or not pattern.fullmatch(raw):
        raise RowError(field, f"must be an id of lower-case letters, digits, '_' or '-' (got {raw!r})")
    return raw


def row_line(row: Any, now_ms: int) -> str:
    """The line of one row; raise :class:`RowError` naming the field at fault."""
    if not isinstance(row, dict):
        raise RowError("row", "must be an object with kpi and value")
    if "__extra__" in row:
        raise RowError("row", f"has more values than the header has columns: {row['__extra__']!r}")
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise RowError(unknown[0], f"unknown field (known: {', '.join(COLUMNS)})")
    kpi = _id("kpi", row.get("kpi"), KPI_RE, required=True)
    ward = _id("ward", row.get("ward"), WARD_RE, required=False)
    if row.get("value") is None or row.get("value") == "":
        raise RowError("value", "is required")
    fields: dict[str, FieldValue] = {"value": _number("value", row["value"])}
    if row.get("target") not in (None, ""):
        fields["target"] = _number("target", row["target"])
    unit = row.get("unit")
    if unit not in (None, ""):
        if not isinstance(unit, str) or len(unit) > 32 or "\n" in unit:
            raise RowError("unit", f"must be text of at most 32 characters on one line (got {unit!r})")
        fields["unit"] = unit
    ts = _timestamp(row.get("ts"), now_ms)
    try:
        return line(MEASUREMENT, {"kpi": kpi, "ward": ward}, fields, ts)
    except LineProtocolError as exc:  # pragma: no cover - every field was checked above
        raise RowError("value", str(exc)) from exc


def parse_json(body: bytes) -> list[Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RowError("body", f"not valid JSON: {exc}") from None
    if isinstance(data, dict) and set(data) == {"kpis"}:
        data = data["kpis"]
    if not isinstance(data, list):
        raise RowError("body", 'must be a list of rows or {"kpis": [rows]}')
    return data


def parse_csv(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RowError("body", f"CSV must be UTF-8: {exc}") from None
    reader = csv.DictReader(io.StringIO(text), strict=True)
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        raise RowError("body", "CSV needs a header line naming the columns (kpi,value[,ts,ward,unit,target])")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise RowError("body", f"unknown CSV column {unknown[0]!r} (known: {', '.join(COLUMNS)})")
    missing = [h for h in ("kpi", "value") if h not in header]
    if missing:
        raise RowError("body", f"CSV column {missing[0]!r} is missing from the header")
    reader.fieldnames = header
    rows: list[Any] = []
    try:
        for record in reader:
            if None in record:
                rows.append({"__extra__": record[None]})
                continue
            rows.append({k: (v.strip() if isinstance(v, str) else v) for k, v in record.items()})
    except csv.Error as exc:
        raise RowError("body", f"CSV line {reader.line_num}: {exc}") from None
    return rows


class Problem(Exception):
    """A request refused as a whole: HTTP status and the ``detail`` to answer with."""

    def __init__(self, status: int, detail: list[dict[str, Any]] | str) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def _rows(body: bytes, content_type: str) -> list[Any]:
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, f"body larger than {MAX_BODY_BYTES} bytes; post at most {MAX_ROWS} rows at a time")
    ctype = content_type.split(";", maxsplit=1)[0].strip().lower()
    parsers = {"application/json": parse_json, "text/csv": parse_csv, "application/csv": parse_csv}
    if ctype not in parsers:
        raise Problem(415, f"Content-Type must be application/json or text/csv (got {ctype or 'none'!r})")
    try:
        rows = parsers[ctype](body)
    except RowError as exc:
        raise Problem(422, [{"row": None, "field": exc.field, "message": exc.message}]) from None
    if not rows:
        raise Problem(422, [{"row": None, "field": "body", "message": "no rows"}])
    if len(rows) > MAX_ROWS:
        raise Problem(413, f"{len(rows)} rows; at most {MAX_ROWS} per request")
    return rows


def lines_of(body: bytes, content_type: str, now_ms: int, wards: frozenset[str] | None = None) -> list[str]:
    """Every row's line, or :class:`Problem`: 422 naming every bad row and field, 413, 415; and 403 naming the rows
    outside ``wards`` when the caller's token is limited to those wards (rows without a ward are city-wide)."""
    lines: list[str] = []
    errors: list[dict[str, Any]] = []
    outside: list[dict[str, Any]] = []
    for i, row in enumerate(_rows(body, content_type), start=1):
        try:
            lines.append(row_line(row, now_ms))
        except RowError as exc:
            errors.append({"row": i, "field": exc.field, "message": exc.message})
            continue
        if wards is not None and row.get("ward") not in wards:
            allowed = ", ".join(sorted(wards)) or "none"
            outside.append({"row": i, "field": "ward", "message": f"this token may post for the wards {allowed} only"})
    if errors:
        raise Problem(422, errors[:100])
    if outside:
        raise Problem(403, outside[:100])
    return lines


def _sink(request: Request) -> KpiSink:
    sink: KpiSink | None = getattr(request.app.state, "kpi_sink", None)
    if sink is None:
        raise Problem(503, "KPI storage is not available in this process")
    return sink


async def _store(request: Request, now_ms: int, wards: frozenset[str] | None) -> KpisStored | JSONResponse:
    try:
        lines = lines_of(await request.body(), request.headers.get("content-type", ""), now_ms, wards)
        sink = _sink(request)
        try:
            await sink.write(("\n".join(lines) + "\n").encode())
        except StorageRejected as exc:
            raise Problem(
                422, [{"row": None, "field": "body", "message": f"InfluxDB refused the rows: {exc}"}]
            ) from exc
        except StorageError as exc:
            raise Problem(503, f"InfluxDB is not available, nothing was stored; retry later ({exc})") from exc
    except Problem as problem:
        return JSONResponse({"detail": problem.detail}, status_code=problem.status)
    return KpisStored(stored=len(lines))


_BODY_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["kpi", "value"],
                        "properties": {
                            "kpi": {"type": "string", "pattern": KPI_RE.pattern},
                            "value": {"type": "number"},
                            "ts": {"type": "string"},
                            "ward": {"type": "string", "pattern": WARD_RE.pattern},
                            "unit": {"type": "string", "maxLength": 32},
                            "target": {"type": "number"},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}

#: Posting figures needs the technician role (or admin): hub/auth.py, hub/routes/deps.py.
KPI_WRITER: Final = require("technician")
router = APIRouter(prefix="/api/v1", tags=["kpis"])


@router.post(
    "/kpis",
    openapi_extra=_BODY_DOC,
    response_model=KpisStored,
    responses={
        200: {"description": "stored: how many rows"},
        401: {"description": "no or unknown bearer token"},
        403: {"model": KpiProblem, "description": "the token's role is below technician, or rows outside its wards"},
        413: {"model": KpiProblem, "description": "too large"},
        415: {"model": KpiProblem, "description": "unsupported content type"},
        422: {"model": KpiProblem, "description": "bad rows, each named by row and field"},
        503: {"model": KpiProblem, "description": "storage unavailable; nothing stored"},
    },
)
async def post_kpis(
    request: Request, principal: Annotated[Principal | None, Depends(KPI_WRITER)]
) -> KpisStored | JSONResponse:
    """Store city indicators (JSON or CSV); all rows or none."""
    wards = principal.wards if principal is not None else None
    return await _store(request, int(datetime.now(UTC).timestamp() * 1000), wards)


__all__ = ["KPI_WRITER", "MEASUREMENT", "KpiSink", "Problem", "RowError", "lines_of", "router", "row_line"]
