"""VN_AQI, the official Vietnamese air quality index, computed by the hub and stored as measurement ``vn_aqi``.

Source: Decision 1459/QĐ-TCMT of 12 November 2019 of the Vietnam Environment Administration (Tổng cục Môi
trường), "Hướng dẫn kỹ thuật tính toán và công bố chỉ số chất lượng không khí Việt Nam (VN_AQI)", which replaced
Decision 878/QĐ-TCMT (2011). Read from:

- the decision's PDF as published by the administration,
  https://vea.mae.gov.vn/Data/files/QD%201459%20TCMT%20ngay%2012_11_2019%20AQI(1).pdf (a transcription of its
  formulas and tables checked against the page images: github.com/qnguyenle075/hcmc-air-quality,
  data/processed/qd_1459_vn_aqi.md), and the text at
  https://thuvienphapluat.vn/bulletin/document.aspx?key1=U%3DRJNE9URTTk;
- the band table with RGB codes as announced by the Centre for Environmental Monitoring,
  https://cem.gov.vn/tin-tuc-moi-truong/tong-cuc-moi-truong-ban-hanh-huong-dan-ky-thuat-tinh-toan-va-cong-bo-chi-so-chat-luong-khong-khi-viet-nam

What is used, by section of the decision's guide:

- 1.4, Table 1 (:data:`BANDS`): six bands 0-50 Tốt (green 0;228;0), 51-100 Trung bình (yellow 255;255;0),
  101-150 Kém (orange 255;126;0), 151-200 Xấu (red 255;0;0), 201-300 Rất xấu (purple 143;63;151),
  301-500 Nguy hại (maroon 126;0;35).
- 2.2.1 a, Nowcast for PM2.5 and PM10 (:func:`nowcast`): the 12 latest 1-hour means c1 (current hour) .. c12;
  w* = Cmin / Cmax; w = 1/2 if w* <= 1/2, else w*; Nowcast = sum(w^(i-1) c_i) / sum(w^(i-1)); a missing c_i gets
  weight 0; no Nowcast unless at least 2 of c1, c2, c3 exist. For w = 1/2 the decision writes the unnormalised
  sum(1/2^i c_i): with all 12 hours present it differs from the normalised form by the factor 1 - 2^-12 (0.02 %),
  and only the normalised form is consistent with "a missing c_i gets weight 0", so that is what is computed.
- 2.2.1 b, Table 2 (:data:`BREAKPOINTS`, µg/m³) and formulas 1 and 2 (:func:`sub_index`): linear interpolation
  AQIx = (I[i+1] - I[i]) / (BP[i+1] - BP[i]) * (Cx - BP[i]) + I[i]; hourly O3, CO, SO2, NO2 from their 1-hour
  mean (formula 1), hourly PM from its Nowcast (formula 2). A concentration at or above the table's last
  breakpoint gives 500 (the table's top row is "≥").
- 2.2.1 c / 2.2.2 c: the index is the largest sub-index, rounded to an integer (half up).
- 2.2.2 (:func:`daily_aqi`): PM2.5 and PM10 from the 24-hour mean of the day's 1-hour means; SO2, NO2, CO from the
  day's largest 1-hour mean; O3 the larger of the sub-index of the largest 1-hour mean (O3 1h row) and of the
  largest 8-hour mean (O3 8h row), the latter left out when that 8-hour mean is above 400 µg/m³.

Where the hub departs from publication practice, said once here: the current hour and the current day are
computed "so far" (from the readings up to now) and rewritten on every run, with ``final=false`` until the hour
or the day is over, so a board shows an index from the first readings on. The day is the local day (default
Asia/Ho_Chi_Minh). The decision's worked example gives 60 for NO2 at 118.7 µg/m³ where its own formula gives
59.35; no single rounding rule matches all its examples, so half-up rounding is used (see tests/unit/hub/
test_vn_aqi.py).

Storage (measurement ``vn_aqi``; tags ``site``, ``district`` when the readings carry it, ``period`` ``hour`` or
``day``): fields ``aqi``, ``level`` (1-6), ``dominant`` (the pollutant with the largest sub-index), ``aqi_<p>``
per pollutant, ``nowcast_pm25`` / ``nowcast_pm10`` (hourly), ``hours`` (daily: 1-hour means used), ``final``.
Inputs: the fields ``pm25``, ``pm10``, ``o3``, ``no2``, ``so2``, ``co`` (µg/m³) of measurement ``air_quality``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

from hub.config import AqiSettings, InfluxSettings
from hub.errors import StorageError
from hub.storage.influx import InfluxQuery
from hub.storage.lineproto import FieldValue, line

log = logging.getLogger(__name__)

MEASUREMENT: Final = "vn_aqi"


class Pollutant(StrEnum):
    """A parameter of VN_AQI; the value is the field name in the ``air_quality`` measurement."""

    PM25 = "pm25"
    PM10 = "pm10"
    O3 = "o3"
    NO2 = "no2"
    SO2 = "so2"
    CO = "co"


#: Table 2: the index values I_i of the breakpoint rows.
INDEX_LEVELS: Final = (0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0)
#: Table 2: breakpoints BP_i in µg/m³ for each row of INDEX_LEVELS. ``O3_8H`` stops at I = 300 (the table has "-").
BREAKPOINTS: Final[Mapping[str, tuple[float, ...]]] = {
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 120, 170, 210, 400),
    "co": (0, 10_000, 30_000, 45_000, 60_000, 90_000, 120_000, 150_000),
    "so2": (0, 125, 350, 550, 800, 1600, 2100, 2630),
    "no2": (0, 100, 200, 700, 1200, 2350, 3100, 3850),
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),
    "pm25": (0, 25, 50, 80, 150, 250, 350, 500),
}


@dataclass(frozen=True, slots=True)
class Band:
    """One row of Table 1: the index range, the assessment in Vietnamese and English, the official colour."""

    level: int
    low: int
    high: int
    name_vi: str
    name_en: str
    colour_vi: str
    rgb: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02X}{:02X}{:02X}".format(*self.rgb)


BANDS: Final = (
    Band(1, 0, 50, "Tốt", "Good", "Xanh", (0, 228, 0)),
    Band(2, 51, 100, "Trung bình", "Moderate", "Vàng", (255, 255, 0)),
    Band(3, 101, 150, "Kém", "Poor", "Da cam", (255, 126, 0)),
    Band(4, 151, 200, "Xấu", "Bad", "Đỏ", (255, 0, 0)),
    Band(5, 201, 300, "Rất xấu", "Very bad", "Tím", (143, 63, 151)),
    Band(6, 301, 500, "Nguy hại", "Hazardous", "Nâu", (126, 0, 35)),
)


def band_of(aqi: int) -> Band:
    """The band of a (rounded) index value; above 500 stays in the last band."""
    if aqi < 0:
        raise ValueError(f"an AQI cannot be negative (got {aqi})")
    return next((b for b in BANDS if aqi <= b.high), BANDS[-1])


def round_half_up(value: float) -> int:
    """Round as the decision does (109.5 -> 110), immune to binary noise such as 109.49999999999999."""
    return int(Decimal(repr(round(value, 9))).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def sub_index(table: str, concentration: float) -> float:
    """Formula 1/2: the (unrounded) sub-index of ``concentration`` (µg/m³) on the breakpoint row ``table``."""
    bps = BREAKPOINTS[table]
    if concentration < 0 or not math.isfinite(concentration):
        raise ValueError(f"{table}: concentration must be a finite number >= 0 (got {concentration})")
    for i in range(len(bps) - 1):
        if concentration <= bps[i + 1]:
            low, high = bps[i], bps[i + 1]
            return (INDEX_LEVELS[i + 1] - INDEX_LEVELS[i]) / (high - low) * (concentration - low) + INDEX_LEVELS[i]
    if len(bps) < len(INDEX_LEVELS):
        raise ValueError(f"{table}: {concentration} µg/m³ is above the last breakpoint {bps[-1]}")
    return INDEX_LEVELS[-1]


def nowcast(hourly: Sequence[float | None]) -> float | None:
    """The Nowcast of 1-hour means ``hourly`` = (c1 current hour, c2, ... c12); None when it cannot be computed.

    Only the first 12 values are used; ``None`` marks a missing hour.
    """
    values = list(hourly[:12])
    if sum(v is not None for v in values[:3]) < 2:
        return None
    present = [v for v in values if v is not None]
    c_min, c_max = min(present), max(present)
    if c_max <= 0:
        return 0.0
    w = max(c_min / c_max, 0.5)
    weights = [0.0 if v is None else w**i for i, v in enumerate(values)]
    return sum(wt * (v or 0.0) for wt, v in zip(weights, values, strict=True)) / sum(weights)


@dataclass(frozen=True, slots=True)
class AqiResult:
    """An hourly or daily VN_AQI: the index, its band, the pollutant behind it, and every sub-index (rounded)."""

    aqi: int
    band: Band
    dominant: Pollutant
    sub_indices: Mapping[Pollutant, int]


def _combine(subs: Mapping[Pollutant, float]) -> AqiResult | None:
    # 2.1 b: at least one of PM10 and PM2.5 is required.
    if Pollutant.PM25 not in subs and Pollutant.PM10 not in subs:
        return None
    rounded = {p: round_half_up(v) for p, v in subs.items()}
    dominant = max(subs, key=lambda p: subs[p])
    aqi = round_half_up(max(subs.values()))
    return AqiResult(aqi, band_of(aqi), dominant, rounded)


def hourly_aqi(hours: Mapping[Pollutant, Sequence[float | None]]) -> tuple[AqiResult | None, dict[Pollutant, float]]:
    """AQI^h from each pollutant's 1-hour means, newest first (c1, c2, ...); and the Nowcasts used for PM.

    Gases use their current hour (c1) only; PM uses the Nowcast of its last 12 hours.
    """
    subs: dict[Pollutant, float] = {}
    nowcasts: dict[Pollutant, float] = {}
    for pollutant, values in hours.items():
        if not values:
            continue
        if pollutant in (Pollutant.PM25, Pollutant.PM10):
            nc = nowcast(values)
            if nc is None:
                continue
            nowcasts[pollutant] = nc
            subs[pollutant] = sub_index(pollutant.value, nc)
        elif values[0] is not None:
            subs[pollutant] = sub_index("o3_1h" if pollutant is Pollutant.O3 else pollutant.value, values[0])
    return _combine(subs), nowcasts


def _max_8h_mean(values: Sequence[float | None]) -> float | None:
    """The largest mean of 8 consecutive 1-hour means (oldest first); None if no window is complete."""
    means = [
        sum(v for v in window if v is not None) / 8
        for start in range(len(values) - 7)
        if None not in (window := values[start : start + 8])
    ]
    return max(means) if means else None


def daily_aqi(
    day: Mapping[Pollutant, Sequence[float | None]], o3_8h_windows: Sequence[float | None] = ()
) -> AqiResult | None:
    """AQI^d from each pollutant's 1-hour means of one day (any order; ``None`` = missing hour).

    ``o3_8h_windows`` are O3 1-hour means oldest first from 7 hours before the day to its end, so that every hour
    of the day ends an 8-hour window (the decision's example computes 24 8-hour means per day); empty means the
    day's own hours are used.
    """
    subs: dict[Pollutant, float] = {}
    for pollutant, raw in day.items():
        values = [v for v in raw if v is not None]
        if not values:
            continue
        if pollutant in (Pollutant.PM25, Pollutant.PM10):
            subs[pollutant] = sub_index(pollutant.value, sum(values) / len(values))
        elif pollutant is Pollutant.O3:
            o3 = sub_index("o3_1h", max(values))
            max_8h = _max_8h_mean(list(o3_8h_windows) or list(raw))
            if max_8h is not None and max_8h <= BREAKPOINTS["o3_8h"][-1]:
                o3 = max(o3, sub_index("o3_8h", max_8h))
            subs[pollutant] = o3
        else:
            subs[pollutant] = sub_index(pollutant.value, max(values))
    return _combine(subs)


# ------------------------------------------------------------------------------------------------ the job


def _hour_ms(ts: datetime) -> int:
    return int(ts.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)


_HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class SiteHours:
    """The 1-hour means of one site (and district tag, '' when the readings carry none), by hour start in ms."""

    site: str
    district: str
    hours: Mapping[int, Mapping[Pollutant, float]]

    def series(self, pollutant: Pollutant, first_ms: int, count: int, step: int = _HOUR_MS) -> list[float | None]:
        """``count`` hourly values of ``pollutant`` from ``first_ms`` on, ``step`` apart (negative: backwards)."""
        return [self.hours.get(first_ms + i * step, {}).get(pollutant) for i in range(count)]


def compute_lines(
    sites: Sequence[SiteHours],
    now: datetime,
    tz: ZoneInfo,
    *,
    hours_back: int,
    district_of: Callable[[str], str | None] | None = None,
) -> list[str]:
    """The ``vn_aqi`` lines of the last ``hours_back`` hours (the current one included) and of yesterday and today."""
    now_ms = int(now.timestamp() * 1000)
    current_hour = _hour_ms(now)
    local_midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [(local_midnight - timedelta(days=1)), local_midnight]
    lines: list[str] = []
    for site in sites:
        district = site.district or (district_of(site.site) if district_of else None) or ""
        tags = {"site": site.site, "district": district}
        for back in range(hours_back):
            hour = current_hour - back * _HOUR_MS
            hours = {p: site.series(p, hour, 12, -_HOUR_MS) for p in Pollutant}
            result, nowcasts = hourly_aqi(hours)
            if result is not None:
                fields = _fields(result, final=hour + _HOUR_MS <= now_ms)
                fields.update({f"nowcast_{p.value}": round(v, 3) for p, v in nowcasts.items()})
                lines.append(line(MEASUREMENT, {**tags, "period": "hour"}, fields, hour))
        for day in days:
            start = int(day.timestamp() * 1000)
            # 24 hourly slots; a local day is always 24 h in Vietnam (no daylight saving time).
            slots = {p: site.series(p, start, 24) for p in Pollutant}
            o3_windows = site.series(Pollutant.O3, start - 7 * _HOUR_MS, 31)
            result = daily_aqi(slots, o3_windows)
            if result is not None:
                fields = _fields(result, final=start + 24 * _HOUR_MS <= now_ms)
                pm = zip(slots[Pollutant.PM25], slots[Pollutant.PM10], strict=True)
                fields["hours"] = float(sum(a is not None or b is not None for a, b in pm))
                lines.append(line(MEASUREMENT, {**tags, "period": "day"}, fields, start))
    return lines


def _fields(result: AqiResult, *, final: bool) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {
        "aqi": float(result.aqi),
        "level": float(result.band.level),
        "dominant": result.dominant.value,
        "final": final,
    }
    fields.update({f"aqi_{p.value}": float(v) for p, v in result.sub_indices.items()})
    return fields


def _hours_of(series: Mapping[str, Any]) -> dict[int, dict[Pollutant, float]]:
    columns: list[str] = series.get("columns") or []
    hours: dict[int, dict[Pollutant, float]] = defaultdict(dict)
    for row in series.get("values") or []:
        record = dict(zip(columns, row, strict=True))
        for pollutant in Pollutant:
            value = record.get(pollutant.value)
            if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
                hours[int(record["time"])][pollutant] = float(value)
    return dict(hours)


def parse_hourly_means(body: Mapping[str, Any]) -> list[SiteHours]:
    """Turn InfluxDB's answer to :meth:`AqiJob.query` into :class:`SiteHours`.

    Statement 1: hourly means grouped by site. Statements 2 and 3 (optional): the latest PM2.5 and PM10 reading
    per site and ``district`` tag, which gives each site the district its readings carry now (the registry adds
    it; a site whose ward was set later has readings with and without it, so the means are not split by it).
    """
    results = body.get("results") or []
    for result in results:
        if "error" in result:
            raise StorageError(f"InfluxDB refused the VN_AQI query: {result['error']}")
    latest: dict[str, tuple[int, str]] = {}
    for series in (x for result in results[1:] for x in result.get("series") or []):
        tags = series.get("tags") or {}
        site, district = str(tags.get("site", "")), str(tags.get("district", ""))
        for row in series.get("values") or []:
            ts = int(row[0])
            if district and ts >= latest.get(site, (-1, ""))[0]:
                latest[site] = (ts, district)
    out: list[SiteHours] = []
    for series in (results[0].get("series") or []) if results else []:
        tags = series.get("tags") or {}
        site = str(tags.get("site", ""))
        district = str(tags.get("district", "")) or latest.get(site, (0, ""))[1]
        out.append(SiteHours(site, district, _hours_of(series)))
    return [s for s in out if s.site]


class AqiJob:
    """Every ``settings.interval_s``: read hourly means from InfluxDB, compute VN_AQI, write ``vn_aqi`` back.

    ``write`` is the hub's InfluxDB writer (line protocol body). Queries go through
    :class:`~hub.storage.influx.InfluxQuery` (InfluxQL on ``/query``): on v1 with ``db`` and basic auth, on v2/v3
    with ``db`` = the bucket (a DBRP mapping) and the token.
    """

    def __init__(
        self,
        settings: AqiSettings,
        influx: InfluxSettings,
        write: Callable[[bytes], Any],
        *,
        district_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self._write = write
        self._district_of = district_of
        self._tz = ZoneInfo(settings.timezone)
        self._influx = InfluxQuery(influx)
        self._failing = False
        self.runs = 0
        self.lines_written = 0

    async def aclose(self) -> None:
        """Close the InfluxDB query client."""
        await self._influx.aclose()

    def query(self, now: datetime) -> str:
        """The InfluxQL of one run: hourly means since yesterday's local midnight minus 7 h (O3 8-hour windows)."""
        local_midnight = now.astimezone(self._tz).replace(hour=0, minute=0, second=0, microsecond=0)
        start = min(local_midnight - timedelta(days=1, hours=7), now - timedelta(hours=12 + self.settings.hours_back))
        fields = ", ".join(f'mean("{p.value}") AS "{p.value}"' for p in Pollutant)
        measurement = self.settings.source_measurement.replace('"', '\\"')
        # Built only from our own field names, a validated setting and integers: nothing from outside.
        start_ms, end_ms = int(start.timestamp() * 1000), int(now.timestamp() * 1000)
        select = f'SELECT {fields} FROM "{measurement}"'  # noqa: S608
        where = f"WHERE time >= {start_ms}ms AND time <= {end_ms}ms"
        first = f'{select} {where} GROUP BY time(1h), "site" fill(none)'
        districts = [
            f'SELECT last("{p}") FROM "{measurement}" {where} GROUP BY "site", "district"'  # noqa: S608
            for p in (Pollutant.PM25, Pollutant.PM10)
        ]
        return "; ".join([first, *districts])

    async def run_once(self, now: datetime | None = None) -> int:
        """One computation; returns how many ``vn_aqi`` points were written. Raises :class:`StorageError`."""
        now = now or datetime.now(UTC)
        answer = await self._influx.query(self.query(now))
        sites = parse_hourly_means(answer)
        lines = compute_lines(sites, now, self._tz, hours_back=self.settings.hours_back, district_of=self._district_of)
        if lines:
            await self._write(("\n".join(lines) + "\n").encode())
        self.runs += 1
        self.lines_written += len(lines)
        return len(lines)

    async def run(self) -> None:
        """Run until cancelled; a failed run is logged when it starts failing and when it recovers."""
        while True:
            try:
                written = await self.run_once()
            except (StorageError, ValueError) as exc:
                if not self._failing:
                    log.warning("VN_AQI computation failed, retrying every %g s: %s", self.settings.interval_s, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("VN_AQI computation works again (%d points written)", written)
                self._failing = False
            await asyncio.sleep(self.settings.interval_s)
