"""The InfluxDB writer (v1 API) against an HTTP server on loopback: its requests, how each answer is translated,
and ``prepare`` (the server version from ``/ping``, database and retention creation, never fatal); and the
InfluxQL reads (:class:`~hub.storage.influx.InfluxQuery`): the request and how each answer is translated.

The server answers per InfluxDB 1.x's documented ``/write``, ``/ping`` (``X-Influxdb-Version``) and ``/query``
(``{"results": [{"statement_id": 0, "error": "..."}]}``) contracts; the real server is exercised in
``tests/integration/hub`` (``test_hub_selfhealth.py`` for ``prepare``). The v2 API: ``test_hub_influx_v2.py``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
from collections.abc import AsyncIterator

import pytest
from influx_support import Answer, LocalInflux, Seen, local_influx

from hub.config import InfluxSettings
from hub.errors import StorageRejected, StorageUnavailable
from hub.storage.influx import InfluxQuery, InfluxWriter

BODY = b"m,device=a x=1.0 1764331200000"


@pytest.fixture
async def influx() -> AsyncIterator[LocalInflux]:
    async with local_influx() as fake:
        yield fake


def json_answer(status: int, data: object) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


# ------------------------------------------------------------------------------------------------ writes


async def test_request_is_a_gzip_post_to_write_with_ms_precision_and_basic_auth(influx: LocalInflux) -> None:
    settings = InfluxSettings(url=influx.url + "/", database="city", username="hub", password="pw")
    async with InfluxWriter(settings) as writer:
        for _ in range(3):
            await writer.write(BODY)
    request = influx.requests[0]
    assert request.method == "POST"
    assert request.path == "/write"
    assert request.query == {"db": ["city"], "precision": ["ms"]}
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"
    assert gzip.decompress(request.body) == BODY
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"hub:pw").decode()
    assert (len(influx.requests), influx.connections) == (3, 1)  # one kept-alive connection


async def test_gzip_can_be_turned_off_and_a_path_prefix_is_kept(influx: LocalInflux) -> None:
    async with InfluxWriter(InfluxSettings(url=influx.url + "/influx", gzip=False, database="a b&c")) as writer:
        await writer.write(BODY)
    (request,) = influx.requests
    assert request.body == BODY
    assert "content-encoding" not in request.headers
    assert "authorization" not in request.headers
    assert request.path == "/influx/write"
    assert request.query == {"db": ["a b&c"], "precision": ["ms"]}


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (400, b'{"error":"partial write: field type conflict dropped=1"}', StorageRejected, "field type conflict"),
        (413, b"Request Entity Too Large", StorageRejected, "Request Entity Too Large"),
        (404, b'{"error":"database not found: \\"ioc\\""}', StorageUnavailable, "has no database 'ioc'"),
        (401, b'{"error":"authorization failed"}', StorageUnavailable, "refused the credentials"),
        (500, b'{"error":"timeout"}', StorageUnavailable, "HTTP 500: timeout"),
        (503, b"", StorageUnavailable, "HTTP 503: Service Unavailable"),
    ],
)
async def test_answers_are_translated(
    influx: LocalInflux, status: int, body: bytes, error: type[Exception], text: str
) -> None:
    influx.answer = lambda seen: (status, {}, body)
    async with InfluxWriter(InfluxSettings(url=influx.url)) as writer:
        with pytest.raises(error, match=text) as info:
            await writer.write(BODY)
    if isinstance(info.value, StorageRejected):
        assert info.value.status == status


async def test_connection_errors_timeouts_and_broken_answers_are_unavailable(influx: LocalInflux) -> None:
    listener = await asyncio.start_server(influx.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # nothing listens on that port any more
    async with InfluxWriter(InfluxSettings(url=f"http://127.0.0.1:{port}")) as writer:
        with pytest.raises(StorageUnavailable, match=f"cannot reach InfluxDB at http://127.0.0.1:{port}: "):
            await writer.write(BODY)
        assert not await writer.ping()

    influx.answer = lambda seen: None
    async with InfluxWriter(InfluxSettings(url=influx.url, timeout_s=0.3)) as writer:
        with pytest.raises(StorageUnavailable, match=rf"InfluxDB at {influx.url} did not answer within 0\.3 s"):
            await writer.write(BODY)

    influx.answer = lambda seen: (500, {"Content-Length": "x"}, b"")
    async with InfluxWriter(InfluxSettings(url=influx.url)) as writer:
        with pytest.raises(StorageUnavailable, match=r"sent an answer that is not valid HTTP: .*Content-Length"):
            await writer.write(BODY)


# ------------------------------------------------------------------------------------------------ prepare


async def test_version_is_read_and_the_database_and_retention_policy_are_created(
    influx: LocalInflux, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.path == "/ping":
            assert seen.method == "GET"
            return 204, {"X-Influxdb-Version": "1.8.10"}, b""
        assert (seen.method, seen.path) == ("POST", "/query")
        assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"hub:pw").decode()
        return json_answer(200, {"results": [{"statement_id": 0}]})

    influx.answer = answer
    caplog.set_level(logging.INFO, logger="hub.storage.influx")
    settings = InfluxSettings(url=influx.url, database='my"db', retention="90d", username="hub", password="pw")
    async with InfluxWriter(settings) as writer:
        assert await writer.prepare() == "1.8.10"
        assert await writer.ping()
    assert [r.query["q"] for r in influx.requests if r.path == "/query"] == [
        ['CREATE DATABASE "my\\"db"'],
        ['CREATE RETENTION POLICY "ioc_retention" ON "my\\"db" DURATION 90d REPLICATION 1 DEFAULT'],
    ]
    assert any("version 1.8.10" in r.getMessage() for r in caplog.records)


async def test_a_refused_create_is_logged_not_raised_and_v2_creates_nothing(
    influx: LocalInflux, caplog: pytest.LogCaptureFixture
) -> None:
    def refusing(seen: Seen) -> Answer:
        if seen.path == "/ping":
            return 204, {"X-Influxdb-Version": "1.6.7"}, b""
        return json_answer(200, {"results": [{"statement_id": 0, "error": "requires admin privilege"}]})

    influx.answer = refusing
    async with InfluxWriter(InfluxSettings(url=influx.url)) as writer:
        assert await writer.prepare() == "1.6.7"
    assert any("requires admin privilege" in r.getMessage() for r in caplog.records)

    influx.requests.clear()
    influx.answer = lambda seen: (204, {"X-Influxdb-Version": "v2.7.1"}, b"")
    settings = InfluxSettings(url=influx.url, api="v2", token="t0ken", org="city", bucket="ioc")
    async with InfluxWriter(settings) as writer:
        assert await writer.prepare() == "v2.7.1"
    assert [r.path for r in influx.requests] == ["/ping"], "the v2 API must not run InfluxQL"


async def test_an_unreachable_influxdb_is_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with InfluxWriter(InfluxSettings(url=f"http://127.0.0.1:{port}")) as writer:
        assert await writer.prepare() is None
        assert await writer.server_version() is None
    assert any("does not answer /ping" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ queries


async def test_a_query_is_a_get_on_the_database_with_ms_epochs_and_basic_auth(influx: LocalInflux) -> None:
    answer = {"results": [{"statement_id": 0, "error": "field not found"}]}
    influx.answer = lambda seen: json_answer(200, answer)
    settings = InfluxSettings(url=influx.url, database="city", username="hub", password="pw")
    async with InfluxQuery(settings) as query:
        assert await query.query('SELECT "x" FROM "m"') == answer, "a refused statement is the caller's to judge"
        assert await query.query("SHOW MEASUREMENTS") == answer
    first, second = influx.requests
    assert (first.method, first.path, first.body) == ("GET", "/query", b"")
    assert first.query == {"db": ["city"], "q": ['SELECT "x" FROM "m"'], "epoch": ["ms"]}
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"hub:pw").decode()
    assert second.query["q"] == ["SHOW MEASUREMENTS"]
    assert influx.connections == 1, "the connection is kept alive"


async def test_a_query_answer_larger_than_the_writers_limit_is_read(influx: LocalInflux) -> None:
    values = [[i, 1.5] for i in range(200_000)]  # ~2.6 MB of JSON, over the 1 MiB the writer accepts
    influx.answer = lambda seen: json_answer(200, {"results": [{"series": [{"values": values}]}]})
    async with InfluxQuery(InfluxSettings(url=influx.url)) as query:
        answer = await query.query("SELECT *")
    assert answer["results"][0]["series"][0]["values"] == values
    async with InfluxQuery(InfluxSettings(url=influx.url), max_answer_bytes=1000) as query:
        with pytest.raises(StorageUnavailable, match=r"not valid HTTP: .*at most 1000 accepted"):
            await query.query("SELECT *")


@pytest.mark.parametrize(
    ("status", "body", "text"),
    [
        (
            401,
            b'{"error":"authorization failed"}',
            r"HTTP 401 to a query, it refused the credentials .*: authorization",
        ),
        (404, b'{"error":"database not found: ioc"}', "HTTP 404 to a query: database not found"),
        (500, b"oops", "HTTP 500 to a query: oops"),
        (200, b"<html>", "a body that is not JSON"),
        (200, b"[1]", "JSON that is not an object"),
    ],
)
async def test_query_answers_are_translated(influx: LocalInflux, status: int, body: bytes, text: str) -> None:
    influx.answer = lambda seen: (status, {}, body)
    async with InfluxQuery(InfluxSettings(url=influx.url)) as query:
        with pytest.raises(StorageUnavailable, match=text):
            await query.query("SELECT *")


async def test_a_query_without_an_answer_is_unavailable(influx: LocalInflux) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # nothing listens on that port any more
    async with InfluxQuery(InfluxSettings(url=f"http://127.0.0.1:{port}")) as query:
        with pytest.raises(StorageUnavailable, match=f"cannot query InfluxDB at http://127.0.0.1:{port}: "):
            await query.query("SELECT *")

    influx.answer = lambda seen: None
    async with InfluxQuery(InfluxSettings(url=influx.url, timeout_s=0.3)) as query:
        with pytest.raises(StorageUnavailable, match=r"cannot query InfluxDB at .*: no answer within 0\.3 s"):
            await query.query("SELECT *")
