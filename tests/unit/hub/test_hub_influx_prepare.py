"""``InfluxWriter.prepare``: the server version from ``/ping``, database and retention creation, never fatal.

Contract tests against InfluxDB 1.x's documented ``/ping`` (``X-Influxdb-Version``) and ``/query`` answers
(``{"results": [{"statement_id": 0, "error": "..."}]}``); the real server is exercised in
``tests/integration/hub/test_hub_selfhealth.py``.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from hub.config import InfluxSettings
from hub.influx import InfluxWriter


async def prepare(handler: httpx.MockTransport, **settings: object) -> str | None:
    writer = InfluxWriter(InfluxSettings(url="http://influx.test", **settings), transport=handler)
    async with writer:
        return await writer.prepare()


async def test_version_is_read_and_the_database_and_retention_policy_are_created(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ping":
            return httpx.Response(204, headers={"X-Influxdb-Version": "1.8.10"})
        assert request.url.path == "/query"
        assert request.method == "POST"
        queries.append(request.url.params["q"])
        return httpx.Response(200, json={"results": [{"statement_id": 0}]})

    caplog.set_level(logging.INFO, logger="hub.influx")
    version = await prepare(httpx.MockTransport(handler), database='my"db', retention="90d")
    assert version == "1.8.10"
    assert queries == [
        'CREATE DATABASE "my\\"db"',
        'CREATE RETENTION POLICY "ioc_retention" ON "my\\"db" DURATION 90d REPLICATION 1 DEFAULT',
    ]
    assert any("version 1.8.10" in r.getMessage() for r in caplog.records)


async def test_a_refused_create_is_logged_not_raised_and_v2_creates_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def refusing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ping":
            return httpx.Response(204, headers={"X-Influxdb-Version": "1.6.7"})
        return httpx.Response(200, json={"results": [{"statement_id": 0, "error": "requires admin privilege"}]})

    version = await prepare(httpx.MockTransport(refusing))
    assert version == "1.6.7"
    assert any("requires admin privilege" in r.getMessage() for r in caplog.records)

    def v2(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/ping", "the v2 API must not run InfluxQL"
        return httpx.Response(204, headers={"X-Influxdb-Version": "v2.7.1"})

    version = await prepare(httpx.MockTransport(v2), api="v2", token="t0ken", org="city", bucket="ioc")
    assert version == "v2.7.1"


async def test_an_unreachable_influxdb_is_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    version = await prepare(httpx.MockTransport(down))
    assert version is None
    assert any("does not answer /ping" in r.getMessage() for r in caplog.records)
