"""The InfluxDB writer's request and how each answer is translated (the real server: tests/integration/hub)."""

from __future__ import annotations

import base64
import gzip

import httpx
import pytest

from hub.config import InfluxSettings
from hub.errors import StorageRejected, StorageUnavailable
from hub.influx import InfluxWriter

BODY = b"m,device=a x=1.0 1764331200000"


async def test_request_is_a_gzip_post_to_write_with_ms_precision_and_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    settings = InfluxSettings(url="http://db.test:8086/", database="city", username="hub", password="pw")
    async with InfluxWriter(settings, transport=httpx.MockTransport(handler)) as writer:
        await writer.write(BODY)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://db.test:8086/write?db=city&precision=ms"
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.content) == BODY
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"hub:pw").decode()


async def test_gzip_can_be_turned_off() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with InfluxWriter(InfluxSettings(gzip=False), transport=httpx.MockTransport(handler)) as writer:
        await writer.write(BODY)
    assert seen[0].content == BODY
    assert "content-encoding" not in seen[0].headers


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
async def test_answers_are_translated(status: int, body: bytes, error: type[Exception], text: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    async with InfluxWriter(InfluxSettings(), transport=transport) as writer:
        with pytest.raises(error, match=text) as info:
            await writer.write(BODY)
    if isinstance(info.value, StorageRejected):
        assert info.value.status == status


async def test_connection_errors_and_timeouts_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with InfluxWriter(InfluxSettings(), transport=httpx.MockTransport(refuse)) as writer:
        with pytest.raises(StorageUnavailable, match="cannot reach InfluxDB"):
            await writer.write(BODY)
        assert not await writer.ping()
    async with InfluxWriter(InfluxSettings(timeout_s=3), transport=httpx.MockTransport(slow)) as writer:
        with pytest.raises(StorageUnavailable, match=r"did not answer within 3\.0 s"):
            await writer.write(BODY)
