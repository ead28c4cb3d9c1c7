"""VN_AQI (Decision 1459/QĐ-TCMT, 2019) against the decision's own worked examples (section 2.3) and cases
computed by hand from its formulas and Table 2. Each case says how the expected value was obtained."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from influx_support import LocalInflux, local_influx
from pydantic import SecretStr

from hub.config import AqiSettings, InfluxSettings
from hub.errors import StorageError
from hub.operations.aqi import (
    BANDS,
    INDEX_LEVELS,
    AqiJob,
    Pollutant,
    SiteHours,
    band_of,
    compute_lines,
    daily_aqi,
    hourly_aqi,
    nowcast,
    parse_hourly_means,
    round_half_up,
    sub_index,
)

P = Pollutant

# ----------------------------------------------------------------------------------------------- sub-indices

SUB_INDEX_CASES = [
    # (table, concentration µg/m³, expected unrounded sub-index, how)
    ("pm25", 0.0, 0.0, "bottom of the table"),
    ("pm25", 25.0, 50.0, "breakpoint BP2 = 25 -> I2 = 50"),
    ("pm25", 20.3, 40.6, "decision 2.3 b: 50/25 * 20.3 = 40.6 (rounded 41)"),
    ("pm25", 55.7, 109.5, "decision 2.3 c: (150-100)/(80-50) * (55.7-50) + 100 = 109.5 (rounded 110)"),
    ("pm25", 65.0, 125.0, "by hand: 50/30 * 15 + 100 = 125"),
    ("pm25", 200.0, 250.0, "by hand: segment 150..250 -> 200..300: 100/100 * 50 + 200 = 250"),
    ("pm25", 500.0, 500.0, "top breakpoint"),
    ("pm25", 900.0, 500.0, "above the table's '>= 500' row: 500"),
    ("pm10", 200.0, 125.0, "by hand: segment 150..250 -> 100..150: 50/100 * 50 + 100 = 125"),
    ("pm10", 385.0, 250.0, "by hand: segment 350..420 -> 200..300: 100/70 * 35 + 200 = 250"),
    ("no2", 118.7, 59.35, "decision 2.3 b: 50/100 * 18.7 + 50 = 59.35 (the decision prints 60, see below)"),
    ("no2", 130.8, 65.4, "decision 2.3 c: 50/100 * 30.8 + 50 = 65.4 (rounded 65)"),
    ("o3_1h", 136.1, 42.53125, "decision 2.3 b: 50/160 * 136.1 = 42.53 (rounded 43)"),
    ("o3_1h", 114.6, 35.8125, "decision 2.3 c: 50/160 * 114.6 = 35.81 (rounded 36)"),
    ("o3_8h", 89.3, 44.65, "decision 2.3 c: 50/100 * 89.3 = 44.65 (rounded 45)"),
    ("so2", 1000.0, 225.0, "by hand: segment 800..1600 -> 200..300: 100/800 * 200 + 200 = 225"),
    ("co", 10_000.0, 50.0, "breakpoint BP2 of CO"),
    ("co", 40_000.0, 133.33333333333334, "by hand: segment 30000..45000 -> 100..150: 50/15000 * 10000 + 100"),
]


@pytest.mark.parametrize(("table", "conc", "expected", "how"), SUB_INDEX_CASES, ids=[c[3] for c in SUB_INDEX_CASES])
def test_sub_index(table: str, conc: float, expected: float, how: str) -> None:
    assert sub_index(table, conc) == pytest.approx(expected), how


@pytest.mark.parametrize(
    ("table", "conc"), [("pm25", -1.0), ("pm10", float("nan")), ("o3_8h", 401.0), ("no2", float("inf"))]
)
def test_sub_index_refuses_what_the_table_cannot_rate(table: str, conc: float) -> None:
    with pytest.raises(ValueError, match=table):
        sub_index(table, conc)


ROUNDING_CASES = [(109.5, 110), (42.53125, 43), (35.8125, 36), (44.65, 45), (65.4, 65), (59.35, 59), (0.5, 1)]


@pytest.mark.parametrize(("value", "expected"), ROUNDING_CASES)
def test_round_half_up(value: float, expected: int) -> None:
    assert round_half_up(value) == expected


def test_round_half_up_ignores_binary_noise() -> None:
    # 50/30 * 5.7 + 100 in binary floating point is 109.49999999999999 or 109.50000000000001 depending on the order.
    assert round_half_up(109.49999999999999) == 110


# ------------------------------------------------------------------------------------------------- Nowcast

#: Decision 2.3 a: PM2.5 1-hour means 09:00 .. 20:00, listed here newest first (c1 = 20:00).
DECISION_PM25 = [20.6, 19.6, 22.4, 20.3, 16.5, 19.0, 16.5, 19.5, 23.5, 20.5, 24.7, 26.9]

NOWCAST_CASES = [
    # (hourly newest first, expected, how)
    (DECISION_PM25, 20.3, "decision 2.3 a: w* = 16.5/26.9 = 0.61 > 1/2, Nowcast = 20.3"),
    ([30.0] * 12, 30.0, "steady air: every weight multiplies the same value"),
    (
        [40.0] + [10.0] * 11,
        25.0037,
        (
            "by hand: w* = 10/40 <= 1/2 so w = 1/2; S = sum 0.5^(i-1), i=1..12 = 1.99951; "
            "(40 + 10 * (S - 1)) / S = 49.99512 / 1.99951 = 25.0037"
        ),
    ),
    ([None, 10.0, 20.0], 16.6667, "c1 missing (weight 0): w = 10/20 = 0.5: (0.5*10 + 0.25*20) / 0.75 = 13.33 .."),
    ([10.0, None, None, 50.0], None, "only 1 of c1..c3: no Nowcast"),
    ([None, None, 10.0], None, "only 1 of c1..c3: no Nowcast"),
    ([0.0, 0.0, 0.0], 0.0, "all zero: Cmax = 0, Nowcast 0"),
]


@pytest.mark.parametrize(("hourly", "expected", "how"), NOWCAST_CASES, ids=[c[2][:40] for c in NOWCAST_CASES])
def test_nowcast(hourly: list[float | None], expected: float | None, how: str) -> None:
    got = nowcast(hourly)
    if expected is None:
        assert got is None, how
    elif how.startswith("c1 missing"):
        # weights: c1 -> 0, c2 -> w^1 = 0.5, c3 -> w^2 = 0.25: (0.5*10 + 0.25*20) / (0.5 + 0.25) = 13.333
        assert got == pytest.approx(13.3333, abs=1e-3), how
    else:
        assert got is not None
        assert round(got, 1 if expected == 20.3 else 4) == pytest.approx(expected), how


def test_nowcast_with_w_half_matches_the_decisions_unnormalised_sum() -> None:
    # The decision writes Nowcast = sum (1/2)^i c_i when w = 1/2; with all 12 hours the normalised form used here
    # differs by the factor 1 - 2^-12.
    hourly = [80.0, 10.0, 12.0, 15.0, 9.0, 11.0, 14.0, 8.0, 10.0, 13.0, 12.0, 9.0]
    literal = sum(0.5 ** (i + 1) * c for i, c in enumerate(hourly))
    got = nowcast(hourly)
    assert got is not None
    assert abs(got - literal) / literal < 3e-4


def test_nowcast_uses_only_twelve_hours() -> None:
    assert nowcast([10.0] * 12 + [1000.0]) == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------ hourly and daily


def test_hourly_aqi_decision_example() -> None:
    # Decision 2.3 b: O3 136.1, NO2 118.7, PM2.5 Nowcast 20.3 -> sub-indices 43, 59.35, 41. The decision prints 60
    # for NO2 and AQI^h = 60; its own formula gives 59.35, and no rounding rule matches all its examples (ceil would
    # make its daily NO2 65.4 -> 66, but it prints 65). Half-up rounding gives 59.
    result, nowcasts = hourly_aqi({P.O3: [136.1], P.NO2: [118.7], P.PM25: [20.3, 20.3, 20.3]})
    assert result is not None
    assert dict(result.sub_indices) == {P.O3: 43, P.NO2: 59, P.PM25: 41}
    assert result.aqi == 59
    assert result.dominant is P.NO2
    assert result.band.level == 2
    assert nowcasts == {P.PM25: pytest.approx(20.3)}


def test_hourly_aqi_uses_the_nowcast_for_pm() -> None:
    result, nowcasts = hourly_aqi({P.PM25: DECISION_PM25})
    assert result is not None
    # Nowcast 20.266 -> 50/25 * 20.266 = 40.53 -> 41
    assert result.aqi == 41
    assert nowcasts[P.PM25] == pytest.approx(20.266, abs=1e-3)


def test_hourly_aqi_needs_pm() -> None:
    # 2.1 b: at least one of PM10 and PM2.5 must be in the index.
    result, _ = hourly_aqi({P.NO2: [300.0], P.PM25: [None, None, 30.0]})
    assert result is None


def test_daily_aqi_decision_example() -> None:
    # Decision 2.3 c: O3 max 8 h 89.3 (45), O3 max 1 h 114.6 (36), NO2 max 1 h 130.8 (65), PM2.5 24 h 55.7 (110).
    o3_day = [114.6, 50.0]  # the day's largest 1-hour mean is 114.6
    # 8-hour windows whose largest mean is 89.3: eight hours of 89.3 then low values
    o3_windows = [89.3] * 8 + [10.0] * 23
    result = daily_aqi({P.O3: o3_day, P.NO2: [130.8, 20.0], P.PM25: [55.7] * 24}, o3_windows)
    assert result is not None
    assert dict(result.sub_indices) == {P.O3: 45, P.NO2: 65, P.PM25: 110}
    assert result.aqi == 110
    assert result.band.name_vi == "Kém"
    assert result.dominant is P.PM25


#: Decision 2.2.2 a: O3 1-hour means from 18:00 the day before to 00:00 (31 values, oldest first).
DECISION_O3 = [
    15.7, 14.2, 17.7, 18.9, 19.3, 15.7, 19.7, 22.6, 27.1, 29.0, 31.9, 25.3, 34.7, 35.2, 41.6, 45.7,
    49.2, 55.8, 69.6, 78.3, 91.5, 97.7, 81.2, 71.8, 43.5, 34.3, 21.5, 20.5, 19.4, 20.4, 21.3,
]  # fmt: skip


def test_daily_o3_uses_the_largest_eight_hour_mean_of_the_decisions_table() -> None:
    # The decision's table: the first 8-hour mean (ending 1:00) is 17.975 ~ 18.0, the largest (ending 17:00) 74.4.
    # Sub-indices: 8 h: 50/100 * 74.4 = 37.2; 1 h max 97.7: 50/160 * 97.7 = 30.5 -> O3 = 37.
    day = DECISION_O3[7:]  # 1:00 .. 0:00, the 24 hours of the day
    result = daily_aqi({P.O3: day, P.PM25: [10.0]}, DECISION_O3)
    assert result is not None
    assert result.sub_indices[P.O3] == 37
    assert result.sub_indices[P.PM25] == 20  # 50/25 * 10


def test_daily_o3_ignores_an_eight_hour_mean_above_400() -> None:
    # 8 h mean 450 > 400: only the 1-hour maximum counts: 450 on O3 1h: 400..800 -> 200..300:
    # 100/400 * 50 + 200 = 212.5 -> 213
    result = daily_aqi({P.O3: [450.0] * 24, P.PM10: [20.0] * 24})
    assert result is not None
    assert result.sub_indices[P.O3] == 213


def test_daily_pm_is_the_mean_of_the_days_hours() -> None:
    # PM10 mean of 100 and 200 = 150 -> I = 100; missing hours (None) are left out of the mean.
    result = daily_aqi({P.PM10: [100.0, None, 200.0]})
    assert result is not None
    assert result.aqi == 100


# ---------------------------------------------------------------------------------------------------- bands

BAND_CASES = [
    (0, 1, "Tốt", (0, 228, 0)),
    (50, 1, "Tốt", (0, 228, 0)),
    (51, 2, "Trung bình", (255, 255, 0)),
    (100, 2, "Trung bình", (255, 255, 0)),
    (101, 3, "Kém", (255, 126, 0)),
    (151, 4, "Xấu", (255, 0, 0)),
    (201, 5, "Rất xấu", (143, 63, 151)),
    (300, 5, "Rất xấu", (143, 63, 151)),
    (301, 6, "Nguy hại", (126, 0, 35)),
    (500, 6, "Nguy hại", (126, 0, 35)),
]


@pytest.mark.parametrize(("aqi", "level", "name", "rgb"), BAND_CASES)
def test_bands_of_table_1(aqi: int, level: int, name: str, rgb: tuple[int, int, int]) -> None:
    band = band_of(aqi)
    assert (band.level, band.name_vi, band.rgb) == (level, name, rgb)


def test_band_table_is_contiguous_and_hex_colours() -> None:
    assert [b.low for b in BANDS[1:]] == [b.high + 1 for b in BANDS[:-1]]
    assert BANDS[0].hex == "#00E400"
    assert BANDS[-1].hex == "#7E0023"
    assert INDEX_LEVELS[-1] == BANDS[-1].high


# ---------------------------------------------------------------------------------------- lines for storage

HOUR = 3_600_000


def test_compute_lines_writes_hour_and_day_points_with_final_flags() -> None:
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    now = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)  # 17:30 in Ho Chi Minh City
    current = int(datetime(2026, 11, 28, 10, tzinfo=UTC).timestamp() * 1000)
    hours = {current - i * HOUR: {P.PM25: 35.0} for i in range(5)}
    site = SiteHours("ben-thanh", "", hours)
    lines = compute_lines([site], now, tz, hours_back=2, district_of={"ben-thanh": "quan-1"}.get)
    hourly = [ln for ln in lines if "period=hour" in ln]
    daily = [ln for ln in lines if "period=day" in ln]
    assert len(hourly) == 2
    # steady 35 -> Nowcast 35 -> 50/25 * 10 + 50 = 70
    assert hourly[0].startswith("vn_aqi,district=quan-1,period=hour,site=ben-thanh aqi=70.0,level=2.0,")
    assert "final=false" in hourly[0]
    assert hourly[0].endswith(f" {current}")
    assert "final=true" in hourly[1]
    # yesterday has no readings: only today's day point, at local midnight (17:00 UTC the day before)
    assert len(daily) == 1
    midnight = int(datetime(2026, 11, 27, 17, tzinfo=UTC).timestamp() * 1000)
    assert daily[0].endswith(f" {midnight}")
    assert "hours=5.0" in daily[0]
    assert "aqi=70.0" in daily[0]
    assert "final=false" in daily[0]


def test_parse_hourly_means_reads_influxdb_series_and_refusals() -> None:
    body = {
        "results": [
            {
                "series": [
                    {
                        "name": "air_quality",
                        "tags": {"site": "a", "district": ""},
                        "columns": ["time", "pm25", "pm10", "o3", "no2", "so2", "co"],
                        "values": [
                            [1000, 12.5, None, None, None, None, None],
                            [2000, -3.0, 40.0, None, None, None, None],
                        ],
                    }
                ]
            }
        ]
    }
    (site,) = parse_hourly_means(body)
    assert site.site == "a"
    assert site.hours == {1000: {P.PM25: 12.5}, 2000: {P.PM10: 40.0}}  # a negative reading is not a concentration
    with pytest.raises(StorageError, match="database not found"):
        parse_hourly_means({"results": [{"error": "database not found: x"}]})


def test_a_site_takes_the_district_its_latest_readings_carry() -> None:
    # Readings before the registry knew the ward have no district tag; the means are per site, the district is
    # the one of the newest reading that has one.
    means = {"series": [{"tags": {"site": "a"}, "columns": ["time", "pm25"], "values": [[0, 20.0]]}]}
    latest_pm25 = {
        "series": [
            {"tags": {"site": "a", "district": ""}, "columns": ["time", "last"], "values": [[500, 1.0]]},
            {"tags": {"site": "a", "district": "quan-1"}, "columns": ["time", "last"], "values": [[400, 1.0]]},
        ]
    }
    latest_pm10 = {
        "series": [{"tags": {"site": "a", "district": "quan-3"}, "columns": ["time", "last"], "values": [[300, 2.0]]}]
    }
    (site,) = parse_hourly_means({"results": [means, latest_pm25, latest_pm10]})
    assert site.district == "quan-1"
    assert site.hours == {0: {P.PM25: 20.0}}


def query_server(status: int, answer: dict[str, Any]) -> AbstractAsyncContextManager[LocalInflux]:
    """A stand-in for InfluxDB's ``/query`` on loopback answering every request with ``status`` and ``answer`` as
    JSON, a connection per request."""
    body = json.dumps(answer).encode()
    return local_influx(lambda _: (status, {"Content-Type": "application/json"}, body), keep_alive=False)


async def test_contract_the_job_queries_influxdb_2_through_its_v1_compatible_api() -> None:
    # InfluxDB 2.x cannot run here: the request is checked against the documented /query contract (InfluxQL on a
    # DBRP-mapped bucket, "Authorization: Token ..."), answered like InfluxDB does; the lines go to the writer.
    series = {"tags": {"site": "s"}, "columns": ["time", "pm25"], "values": [[HOUR * 10, 30.0], [HOUR * 11, 30.0]]}
    written: list[bytes] = []

    async def write(body: bytes) -> None:
        written.append(body)

    async with query_server(200, {"results": [{"statement_id": 0, "series": [series]}]}) as influx2:
        influx = InfluxSettings(url=influx2.url, api="v2", token=SecretStr("t0k"), org="city", bucket="ioc")
        job = AqiJob(AqiSettings(hours_back=1), influx, write)
        try:
            n = await job.run_once(datetime.fromtimestamp(HOUR * 11 / 1000 + 60, UTC))
        finally:
            await job.aclose()
    (request,) = influx2.requests
    assert (request.method, request.version) == ("GET", "HTTP/1.1")
    url = urlsplit(request.target)
    params = parse_qs(url.query, strict_parsing=True)
    assert url.path == "/query"
    assert params["db"] == ["ioc"]
    assert params["epoch"] == ["ms"]
    assert request.headers["authorization"] == "Token t0k"
    (q,) = params["q"]
    assert q.startswith('SELECT mean("pm25") AS "pm25"')
    assert n == 2  # the current hour and today
    assert written[0].decode().startswith("vn_aqi,period=hour,site=s aqi=")


async def test_the_job_reports_an_influxdb_error_answer() -> None:
    async def write(body: bytes) -> None:
        raise AssertionError("nothing to write")

    async with query_server(401, {"error": "authorization failed"}) as influx:
        job = AqiJob(AqiSettings(), InfluxSettings(url=influx.url), write)
        try:
            with pytest.raises(StorageError, match="HTTP 401"):
                await job.run_once()
        finally:
            await job.aclose()
