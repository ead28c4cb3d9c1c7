"""The v2 write API (``influx.api: v2``): its settings, and the writer against a real HTTP server on loopback.

InfluxDB 2.x/3.x cannot be installed here, so the server below answers like InfluxDB 2 does per its documented
write API (https://docs.influxdata.com/influxdb/v2/write-data/troubleshoot/, "Review HTTP status codes"):
``204`` with no body, errors as JSON ``{"code": ..., "message": ...}``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hub_settings_support import hub_env_only
from influx_support import Answer, LocalInflux, local_influx

from hub.config import InfluxSettings, load_settings
from hub.errors import ConfigError, StorageRejected, StorageUnavailable
from hub.storage.influx import InfluxQuery, InfluxWriter

TOKEN = "s3cr3t-token-for-tests"
LINES = (
    b"air_quality,device=aq-01,site=site-a pm25=35.2 1764331200123\nwater_level,device=wl-01 level=1.5 1764331200124"
)


# ------------------------------------------------------------------------------------------------ settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    hub_env_only(monkeypatch)


V2_ALL = {"IOC_HUB_INFLUX__API": "v2", "IOC_HUB_INFLUX__TOKEN": TOKEN, "IOC_HUB_INFLUX__ORG": "city"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"IOC_HUB_INFLUX__API": "v2"},
            "influx.token: is required when influx.api is 'v2' (missing: influx.token, influx.org, influx.bucket)",
        ),
        (
            {**V2_ALL},
            "influx.bucket: is required when influx.api is 'v2' (missing: influx.bucket)",
        ),
        (
            {**V2_ALL, "IOC_HUB_INFLUX__BUCKET": "ioc", "IOC_HUB_INFLUX__ORG": ""},
            "influx.org: String should have at least 1 character",
        ),
        (
            {**V2_ALL, "IOC_HUB_INFLUX__BUCKET": "ioc", "IOC_HUB_INFLUX__TOKEN": "  "},
            "influx.token: is required when influx.api is 'v2' (missing: influx.token)",
        ),
        (
            {"IOC_HUB_INFLUX__API": "v3"},
            "environment variable IOC_HUB_INFLUX__API: influx.api: Input should be 'v1' or 'v2' (got 'v3')",
        ),
        (
            {
                **V2_ALL,
                "IOC_HUB_INFLUX__BUCKET": "ioc",
                "IOC_HUB_INFLUX__TOKEN": "changeme",
                "IOC_HUB_MQTT__HOST": "mq",
                "IOC_HUB_MQTT__TLS": "true",
            },
            "influx.token: is a placeholder secret",
        ),
    ],
)
def test_v2_settings_errors_name_the_field(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert expected in str(info.value)
    assert TOKEN not in str(info.value)


def test_v2_settings_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("influx:\n  api: v2\n  token: t\n  org: city\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{path}: influx.bucket: is required when influx.api is 'v2'"):
        load_settings(path)
    path.write_text("influx:\n  api: v2\n  token: t\n  org: city\n  bucket: ioc\n", encoding="utf-8")
    s = load_settings(path).influx
    assert (s.api, s.org, s.bucket) == ("v2", "city", "ioc")
    assert s.token is not None
    assert s.token.get_secret_value() == "t"


def test_v1_ignores_the_v2_settings() -> None:
    s = InfluxSettings(org="city")  # no token, no bucket: fine for v1
    assert (s.api, s.org, s.token, s.bucket) == ("v1", "city", None, None)
    assert InfluxWriter(s).target == "database 'ioc'"


# ------------------------------------------------------------------------------------------------ the server


def answer(status: int, body: bytes) -> Answer:
    """As InfluxDB 2 answers: a JSON body when there is one, ``Retry-After`` with a 503."""
    headers = {"Content-Type": "application/json; charset=utf-8"} if body else {}
    if status == 503:
        headers["Retry-After"] = "30"
    return status, headers, body


@pytest.fixture
async def influx2() -> AsyncIterator[LocalInflux]:
    """Answers 204 unless the test queued answers; a connection per request."""
    async with local_influx(keep_alive=False) as fake:
        yield fake


def v2_settings(url: str, **extra: object) -> InfluxSettings:
    return InfluxSettings.model_validate(
        {"url": url, "api": "v2", "token": TOKEN, "org": "city ops", "bucket": "ioc", **extra}
    )


# ------------------------------------------------------------------------------------------------ the writer


async def test_v2_request_path_query_token_and_gzip_body(influx2: LocalInflux) -> None:
    settings = v2_settings(influx2.url, username="ignored", password="ignored", database="ignored")
    async with InfluxWriter(settings) as writer:
        assert writer.target == "org 'city ops' bucket 'ioc'"
        await writer.write(LINES)
    (request,) = influx2.requests
    assert request.method == "POST"
    url = urlsplit(request.target)
    assert url.path == "/api/v2/write"
    assert parse_qs(url.query, strict_parsing=True) == {"org": ["city ops"], "bucket": ["ioc"], "precision": ["ms"]}
    assert request.headers["authorization"] == f"Token {TOKEN}"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"
    assert gzip.decompress(request.body) == LINES


async def test_v2_without_gzip_sends_the_lines_as_they_are(influx2: LocalInflux) -> None:
    async with InfluxWriter(v2_settings(influx2.url, gzip=False)) as writer:
        await writer.write(LINES)
    (request,) = influx2.requests
    assert request.body == LINES
    assert "content-encoding" not in request.headers


def influx_error(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            400,
            influx_error("invalid", "unable to parse 'air_quality pm25=': missing field value"),
            StorageRejected,
            "HTTP 400: unable to parse 'air_quality pm25=': missing field value",
        ),
        (413, influx_error("request too large", "unable to read data: too large"), StorageRejected, "too large"),
        (
            422,
            influx_error("unprocessable entity", "failure writing points: points beyond retention policy dropped=1"),
            StorageRejected,
            "HTTP 422: failure writing points: points beyond retention policy dropped=1",
        ),
        (
            401,
            influx_error("unauthorized", "unauthorized access"),
            StorageUnavailable,
            (
                r"refused the token \(influx.token\) for writing to org 'city ops' bucket 'ioc' "
                r"\(HTTP 401, authentication/authorization failed\): unauthorized access"
            ),
        ),
        (403, influx_error("forbidden", "insufficient permissions for write"), StorageUnavailable, "HTTP 403, auth"),
        (
            404,
            influx_error("not found", 'bucket "ioc" not found'),
            StorageUnavailable,
            "has no org 'city ops' bucket 'ioc' \\(HTTP 404\\): bucket \"ioc\" not found",
        ),
        (429, influx_error("too many requests", "rate limited"), StorageUnavailable, "HTTP 429: rate limited"),
        (500, influx_error("internal error", "engine: cache full"), StorageUnavailable, "HTTP 500: engine: cache full"),
        (503, b"", StorageUnavailable, "HTTP 503: Service Unavailable"),
    ],
)
async def test_v2_answers_are_translated(
    influx2: LocalInflux, status: int, body: bytes, error: type[Exception], text: str
) -> None:
    influx2.answers.append(answer(status, body))
    async with InfluxWriter(v2_settings(influx2.url)) as writer:
        with pytest.raises(error, match=text) as info:
            await writer.write(LINES)
    assert len(influx2.requests) == 1
    assert TOKEN not in str(info.value)
    if isinstance(info.value, StorageRejected):
        assert info.value.status == status


async def test_v2_refused_token_is_logged_once_until_it_is_accepted_again(
    influx2: LocalInflux, caplog: pytest.LogCaptureFixture
) -> None:
    unauthorized = answer(401, influx_error("unauthorized", "unauthorized access"))
    influx2.answers += [unauthorized, unauthorized, answer(204, b""), unauthorized]
    caplog.set_level(logging.WARNING, logger="hub.storage.influx")
    async with InfluxWriter(v2_settings(influx2.url)) as writer:
        for _ in range(2):
            with pytest.raises(StorageUnavailable):
                await writer.write(LINES)
        await writer.write(LINES)
        with pytest.raises(StorageUnavailable):
            await writer.write(LINES)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "hub.storage.influx"]
    assert [level for level, _ in messages] == [logging.ERROR, logging.WARNING, logging.ERROR]
    assert "refused the token" in messages[0][1]
    assert "the data is held" in messages[0][1]
    assert "accepts the credentials again" in messages[1][1]
    assert all(TOKEN not in text for _, text in messages)


async def test_v2_connection_refused_is_unavailable(influx2: LocalInflux) -> None:
    server = await asyncio.start_server(influx2.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on that port any more
    async with InfluxWriter(v2_settings(f"http://127.0.0.1:{port}")) as writer:
        with pytest.raises(StorageUnavailable, match="cannot reach InfluxDB"):
            await writer.write(LINES)


# ------------------------------------------------------------------------------------------------ queries


async def test_v2_query_goes_to_the_buckets_dbrp_mapping_with_the_token(influx2: LocalInflux) -> None:
    # InfluxDB 2.x's 1.x compatibility API: GET /query with db = a database name mapped to the bucket (DBRP).
    result = {"results": [{"statement_id": 0}]}
    influx2.answers.append(answer(200, json.dumps(result).encode()))
    influx2.answers.append(answer(401, json.dumps({"code": "unauthorized", "message": "unauthorized access"}).encode()))
    settings = v2_settings(influx2.url, username="ignored", password="ignored", database="ignored")
    async with InfluxQuery(settings) as query:
        assert await query.query("SELECT 1") == result
        with pytest.raises(
            StorageUnavailable, match=r"HTTP 401 to a query, it refused the token .*unauthorized access"
        ):
            await query.query("SELECT 1")
    request = influx2.requests[0]
    assert request.method == "GET"
    url = urlsplit(request.target)
    assert url.path == "/query"
    assert parse_qs(url.query, strict_parsing=True) == {"db": ["ioc"], "q": ["SELECT 1"], "epoch": ["ms"]}
    assert request.headers["authorization"] == f"Token {TOKEN}"
