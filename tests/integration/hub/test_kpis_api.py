"""``POST /api/v1/kpis``: the router on a FastAPI app whose KPI sink is the hub's real InfluxDB writer, against
the real InfluxDB (good JSON and CSV are stored; bad rows are named and nothing is stored), with the role check
stubbed; and on a running hub with real tokens (401, 403, 200 for the technician role)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from ops_support import auth, ops_settings, running_hub, tokens

from hub.auth import create_token_in
from hub.config import InfluxSettings
from hub.routes.kpis import KPI_WRITER, router
from hub.storage.influx import InfluxWriter
from ioc.stack import StackEndpoints, influx_query

pytestmark = pytest.mark.integration

#: Yesterday 08:00 in Vietnam and today's UTC date, relative to when the test runs: a KPI store may keep a
#: retention window, and a fixed date would pass only until it falls out of it.
_VN = timezone(timedelta(hours=7))
TS = (datetime.now(_VN) - timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0).isoformat()
TS_MS = int(datetime.fromisoformat(TS).timestamp() * 1000)
DAY = datetime.now(UTC).date()


@pytest.fixture
async def client(stack: StackEndpoints, influx_db: str) -> AsyncIterator[httpx.AsyncClient]:
    app = kpi_app()
    async with InfluxWriter(InfluxSettings(url=stack.influx_url, database=influx_db)) as writer:
        app.state.kpi_sink = writer
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
            yield c


def kpi_app() -> FastAPI:
    """The router alone; the role check (tested on the running hub below) always lets the caller in."""
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[KPI_WRITER] = lambda: None
    return app


def stored(stack: StackEndpoints, db: str) -> list[dict[str, object]]:
    return influx_query(stack.influx_url, db, 'SELECT * FROM "kpi" GROUP BY "kpi", "ward"')


async def test_good_json_is_stored(client: httpx.AsyncClient, stack: StackEndpoints, influx_db: str) -> None:
    rows = [
        {"kpi": "dvc_on_time_rate", "value": 97.5, "ts": TS, "ward": "quan-1", "unit": "%", "target": 95},
        {"kpi": "citizen_feedback", "value": 42, "ts": TS_MS},
    ]
    response = await client.post("/api/v1/kpis", json={"kpis": rows})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2}
    got = {r["kpi"]: r for r in stored(stack, influx_db)}
    assert got["dvc_on_time_rate"]["value"] == 97.5
    assert got["dvc_on_time_rate"]["target"] == 95
    assert got["dvc_on_time_rate"]["unit"] == "%"
    assert got["dvc_on_time_rate"]["ward"] == "quan-1"
    assert got["dvc_on_time_rate"]["time"] == TS_MS
    assert got["citizen_feedback"]["value"] == 42
    assert got["citizen_feedback"]["ward"] == ""


async def test_good_csv_is_stored_and_a_repost_overwrites(
    client: httpx.AsyncClient, stack: StackEndpoints, influx_db: str
) -> None:
    csv = (
        "kpi,value,ts,ward,unit\n"
        f"incidents_on_time,88.0,{TS},quan-3,%\n"
        f"incidents_on_time,91,{DAY.isoformat()},quan-3,%\n"
    )
    response = await client.post("/api/v1/kpis", content=csv, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2}
    # the corrected figure for the same kpi, ward and time replaces the first one
    fix = f"kpi,value,ts,ward\nincidents_on_time,89.5,{TS},quan-3\n"
    response = await client.post("/api/v1/kpis", content=fix, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    values = sorted((r["time"], r["value"]) for r in stored(stack, influx_db))
    midnight = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() * 1000)
    assert values == sorted([(TS_MS, 89.5), (midnight, 91)])


BAD_JSON = [
    ({"kpi": "ok_one", "value": 1}, None, None),
    ({"kpi": "Bad Name", "value": 1}, 2, "kpi"),
    ({"kpi": "x", "value": "high"}, 3, "value"),
    ({"kpi": "x", "value": True}, 4, "value"),
    ({"kpi": "x"}, 5, "value"),
    ({"kpi": "x", "value": 1, "ts": "2026-11-28T08:00:00"}, 6, "ts"),
    ({"kpi": "x", "value": 1, "ts": 1_700_000_000}, 7, "ts"),
    ({"kpi": "x", "value": 1, "colour": "red"}, 8, "colour"),
    ({"kpi": "x", "value": 1, "unit": "u" * 33}, 9, "unit"),
    ({"kpi": "x", "value": 1, "ward": "Quận 1"}, 10, "ward"),
    ("just text", 11, "row"),
]


async def test_bad_json_rows_are_named_and_nothing_is_stored(
    client: httpx.AsyncClient, stack: StackEndpoints, influx_db: str
) -> None:
    response = await client.post("/api/v1/kpis", json=[row for row, _, _ in BAD_JSON])
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["row"], d["field"]) for d in detail] == [(r, f) for _, r, f in BAD_JSON if r is not None]
    assert all(d["message"] for d in detail)
    assert "seconds" not in detail[0]["message"]
    assert stored(stack, influx_db) == []


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        (b"kpi,value\nx,1\ny,2,3\n", "text/csv", 422, "more values"),
        (b"kpi,amount\nx,1\n", "text/csv", 422, "amount"),
        (b"value\n1\n", "text/csv", 422, "'kpi' is missing"),
        (b"kpi,value\n", "text/csv", 422, "no rows"),
        (b"\xff\xfe", "text/csv", 422, "UTF-8"),
        (b"{not json", "application/json", 422, "not valid JSON"),
        (b'{"rows": []}', "application/json", 422, "list of rows"),
        (b"kpi=x", "application/x-www-form-urlencoded", 415, "Content-Type"),
        (b"kpi,value\n" + b"x,1\n" * 600_000, "text/csv", 413, "larger than"),
        (b"kpi,value\n" + b"x,1\n" * 10_001, "text/csv", 413, "at most 10000"),
    ],
)
async def test_bad_bodies_are_refused_with_the_reason(
    client: httpx.AsyncClient, body: bytes, ctype: str, status: int, needle: str
) -> None:
    response = await client.post("/api/v1/kpis", content=body, headers={"Content-Type": ctype})
    assert response.status_code == status, response.text
    assert needle in response.text


async def test_csv_errors_name_the_data_row(client: httpx.AsyncClient) -> None:
    csv = "kpi,value\ngood,1\ngood,2\nbad,abc\n"
    response = await client.post("/api/v1/kpis", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 422
    assert response.json()["detail"] == [{"row": 3, "field": "value", "message": "must be a number (got 'abc')"}]


async def test_unreachable_influxdb_answers_503_and_stores_nothing() -> None:
    app = kpi_app()
    async with InfluxWriter(InfluxSettings(url="http://127.0.0.1:9", database="x", timeout_s=1)) as writer:
        app.state.kpi_sink = writer
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as c:
            response = await c.post("/api/v1/kpis", json=[{"kpi": "x", "value": 1}])
    assert response.status_code == 503
    assert "nothing was stored" in response.text


async def test_without_a_sink_the_route_answers_503() -> None:
    app = kpi_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as c:
        response = await c.post("/api/v1/kpis", json=[{"kpi": "x", "value": 1}])
    assert response.status_code == 503


@pytest.mark.timeout(60)
async def test_on_the_running_hub_only_technicians_and_admins_post(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path)
    rows = [{"kpi": "dvc_on_time_rate", "value": 96.0, "ts": TS, "ward": "quan-1"}]
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
        tok = await tokens(hub)
        assert (await http.post("/api/v1/kpis", json=rows)).status_code == 401
        for role in ("viewer", "operator"):
            r = await http.post("/api/v1/kpis", json=rows, headers=auth(tok[role]))
            assert r.status_code == 403, (role, r.text)
        assert stored(stack, influx_db) == []
        r = await http.post("/api/v1/kpis", json=rows, headers=auth(tok["technician"]))
        assert r.status_code == 200, r.text
        r = await http.post("/api/v1/kpis", json=[{**rows[0], "value": 97.0}], headers=auth(tok["admin"]))
        assert r.status_code == 200, r.text
        # a token limited to a ward posts for that ward only; the other rows are named
        limited, _ = await hub.operations.db.write(
            lambda s: create_token_in(s, "technician", wards=["quan-1"], name="tech-q1")
        )
        rows2 = [
            {**rows[0], "value": 50.0},
            {"kpi": "feedback", "value": 3, "ward": "quan-3"},
            {"kpi": "x", "value": 1},
        ]
        r = await http.post("/api/v1/kpis", json=rows2, headers=auth(limited))
        assert r.status_code == 403, r.text
        assert [(d["row"], d["field"]) for d in r.json()["detail"]] == [(2, "ward"), (3, "ward")]
        r = await http.post("/api/v1/kpis", json=[{**rows[0], "value": 96.5}], headers=auth(limited))
        assert r.status_code == 200, r.text
        r = await http.post("/api/v1/kpis", json=[{"kpi": "x", "value": "n/a"}], headers=auth(tok["technician"]))
        assert r.status_code == 422
        assert r.json()["detail"] == [{"row": 1, "field": "value", "message": "must be a number (got 'n/a')"}]
    assert [(r["kpi"], r["value"], r["time"]) for r in stored(stack, influx_db)] == [("dvc_on_time_rate", 96.5, TS_MS)]
