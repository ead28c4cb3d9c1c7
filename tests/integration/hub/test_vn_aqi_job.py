"""The VN_AQI job against the real InfluxDB: readings in ``air_quality`` become ``vn_aqi`` points."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.config import AqiSettings, InfluxSettings
from hub.errors import StorageUnavailable
from hub.operations.aqi import AqiJob
from hub.storage.influx import InfluxWriter
from ioc.stack import StackEndpoints, influx_query, influx_write

pytestmark = pytest.mark.integration

HOUR = 3_600_000


async def test_job_reads_hourly_means_and_writes_vn_aqi(stack: StackEndpoints, influx_db: str) -> None:
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    hour = now_ms - now_ms % HOUR
    # Site a: PM2.5 35 every 10 minutes for the last 4 hours (steady: Nowcast 35 -> AQI 70); district tag present.
    # Site b: PM10 200 in the current hour only, no district. A Nowcast needs 2 of the last 3 hours, so b gets no
    # hourly index, but a daily one (PM10 mean 200: 150..250 -> 100..150: 50/100 * 50 + 100 = 125).
    lines = [
        f"air_quality,device=aq-1,district=quan-1,gateway=gw-1,kind=air_quality,site=a pm25=35.0,pm1=10.0 {t}"
        for t in range(hour - 3 * HOUR, now_ms, 600_000)
    ]
    lines.append(f"air_quality,device=aq-2,gateway=gw-1,kind=air_quality,site=b pm10=200.0 {hour}")
    # Site c: its ward became known during the last hour: older readings have no district tag, newer ones do.
    lines += [
        f"air_quality,device=aq-3,gateway=gw-1,kind=air_quality,site=c{',district=quan-5' if t >= hour else ''} "
        f"pm25=35.0 {t}"
        for t in range(hour - 2 * HOUR, now_ms, 600_000)
    ]
    influx_write(stack.influx_url, influx_db, "\n".join(lines))

    influx = InfluxSettings(url=stack.influx_url, database=influx_db, gzip=True)
    async with InfluxWriter(influx) as writer:
        job = AqiJob(AqiSettings(hours_back=2), influx, writer.write)
        try:
            written = await job.run_once(now)
            assert await job.run_once(now) == written, "a second run rewrites the same points"
        finally:
            await job.aclose()

    rows = influx_query(stack.influx_url, influx_db, 'SELECT * FROM "vn_aqi" GROUP BY "site", "period"')
    by_key = {(r["site"], r["period"], r["time"]): r for r in rows}
    assert len(by_key) == len(rows) == written
    hourly_a = [r for r in rows if r["site"] == "a" and r["period"] == "hour"]
    assert {r["time"] for r in hourly_a} == {hour, hour - HOUR}
    assert all(r["aqi"] == 70 and r["level"] == 2 and r["dominant"] == "pm25" for r in hourly_a)
    assert all(r["district"] == "quan-1" for r in rows if r["site"] == "a")
    assert [r["aqi"] for r in rows if r["site"] == "b" and r["period"] == "day"] == [125]
    assert not [r for r in rows if r["site"] == "b" and r["period"] == "hour"]
    hourly_c = [r for r in rows if r["site"] == "c" and r["period"] == "hour"]
    assert sorted(r["time"] for r in hourly_c) == [hour - HOUR, hour], "one point per hour, not one per tag set"
    assert {r["district"] for r in rows if r["site"] == "c"} == {"quan-5"}
    assert all(r["aqi"] == 70 for r in hourly_c)
    current = next(r for r in hourly_a if r["time"] == hour)
    assert current["final"] is False
    assert current["nowcast_pm25"] == pytest.approx(35.0)


async def test_job_reports_an_unreachable_influxdb() -> None:
    influx = InfluxSettings(url="http://127.0.0.1:9", database="x", timeout_s=1)

    async def never(body: bytes) -> None:
        raise AssertionError("nothing to write")

    job = AqiJob(AqiSettings(), influx, never)
    try:
        with pytest.raises(StorageUnavailable, match="cannot query InfluxDB"):
            await job.run_once()
    finally:
        await job.aclose()
