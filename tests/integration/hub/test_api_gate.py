"""The API's gate on a running hub (real broker, InfluxDB, SQLite registry), over real sockets: the token is
checked and the body size judged before a single body byte is read (the test never sends the body: a server that
waited for it would time out); chunked bodies are counted as they stream in; every answer, errors included,
carries the security headers; the HTML docs are off and the OpenAPI document stays."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from ops_support import auth, ops_settings, running_hub, tokens

from hub.config import HttpSettings
from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: How long a test waits for an answer that must come without the body (the server would wait for ever).
ANSWER_TIMEOUT_S = 5.0


async def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` as they are; read one answer.

    Returns (status, headers lower-cased, body). The answer is read without sending anything more."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            status_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, payload


def assert_security_headers(headers: httpx.Headers | dict[str, str]) -> None:
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in headers  # plain HTTP: RFC 6797 §7.2


@pytest.mark.timeout(60)
async def test_token_and_body_limit_are_checked_before_the_body_is_read(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path)
    settings = settings.model_copy(update={"http": HttpSettings(port=0, max_body_bytes=4096)})
    async with running_hub(settings) as hub:
        tok = await tokens(hub)
        url = hub.api_url
        # No token, a body announced and never sent: 401 at once.
        status, headers, body = await raw_request(
            url, "POST /api/v1/tokens HTTP/1.1\nHost: hub\nContent-Type: application/json\nContent-Length: 1000"
        )
        assert (status, json.loads(body)) == (401, {"detail": "missing bearer token (Authorization: Bearer <token>)"})
        assert headers["www-authenticate"] == "Bearer"
        assert_security_headers(headers)
        status, _, body = await raw_request(
            url,
            "POST /api/v1/alerts/1/resolve HTTP/1.1\nHost: hub\nAuthorization: Bearer ioc_000000000000_"
            + "x" * 43
            + "\nContent-Length: 1000",
        )
        assert (status, json.loads(body)) == (401, {"detail": "unknown, revoked or expired token"})
        # A valid token and a Content-Length above the limit: 413 naming the limit, the body never sent.
        status, headers, body = await raw_request(
            url,
            f"POST /api/v1/tokens HTTP/1.1\nHost: hub\nAuthorization: Bearer {tok['admin']}\n"
            "Content-Type: application/json\nContent-Length: 1000000000",
        )
        assert status == 413
        assert json.loads(body) == {
            "detail": "the request body is larger than the limit of POST /api/v1/tokens: 4096 bytes",
            "limit_bytes": 4096,
        }
        assert_security_headers(headers)
        # The KPI upload has its own larger limit: 1 MB announced passes the gate (and is then read: 5000 bytes
        # sent of a CSV body, answered by the route).
        csv = b"kpi,value\n" + b"dvc_on_time_rate,97.5\n" * 237
        status, _, body = await raw_request(
            url,
            f"POST /api/v1/kpis HTTP/1.1\nHost: hub\nAuthorization: Bearer {tok['technician']}\n"
            f"Content-Type: text/csv\nContent-Length: {len(csv)}",
            csv,
        )
        assert len(csv) > 4096
        assert status == 200, body
        status, _, body = await raw_request(
            url,
            f"POST /api/v1/kpis HTTP/1.1\nHost: hub\nAuthorization: Bearer {tok['technician']}\n"
            "Content-Type: text/csv\nContent-Length: 3000000",
        )
        assert status == 413
        assert json.loads(body)["limit_bytes"] == 2 * 1024 * 1024
        # Chunked (no Content-Length): counted as it streams; refused once past the limit, the end never sent.
        chunk = b"x" * 3000
        chunks = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(2))
        status, headers, body = await raw_request(
            url,
            f"POST /api/v1/tokens HTTP/1.1\nHost: hub\nAuthorization: Bearer {tok['admin']}\n"
            "Content-Type: application/json\nTransfer-Encoding: chunked",
            chunks,
        )
        assert status == 413
        assert json.loads(body)["limit_bytes"] == 4096
        assert_security_headers(headers)
        # A route that reads the raw body itself (the KPI upload, 2 MiB): a chunked body past its limit.
        chunk = b"dvc_on_time_rate,97.5\n" * 4000
        chunks = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(25))
        assert len(chunks) > 2 * 1024 * 1024
        status, _, body = await raw_request(
            url,
            f"POST /api/v1/kpis HTTP/1.1\nHost: hub\nAuthorization: Bearer {tok['technician']}\n"
            "Content-Type: text/csv\nTransfer-Encoding: chunked",
            chunks,
        )
        assert (status, json.loads(body)["limit_bytes"]) == (413, 2 * 1024 * 1024)
        # The inventory import (its own limit, 20 MiB) with a Content-Length above it.
        status, _, body = await raw_request(
            url,
            f"POST /api/v1/inventory HTTP/1.1\nHost: hub\nAuthorization: Bearer {tok['technician']}\n"
            f"Content-Type: text/csv\nContent-Length: {20 * 1024 * 1024 + 1}",
        )
        assert status == 413
        # Below the limit, the route works as before.
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            r = await http.post("/api/v1/tokens", json={"role": "viewer"}, headers=auth(tok["admin"]))
            assert r.status_code == 201
            # A role too low still answers 403 (the gate checks the token, the route the role).
            r = await http.post("/api/v1/tokens", json={"role": "viewer"}, headers=auth(tok["viewer"]))
            assert r.status_code == 403
            # Open /api/ routes stay open.
            assert (await http.get("/api/v1/health")).status_code == 200
            assert (await http.get("/api/v1/ingest/stats")).status_code == 200


@pytest.mark.timeout(60)
async def test_security_headers_on_every_answer_and_no_html_docs(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with running_hub(ops_settings(stack, influx_db, tmp_path)) as hub:
        tok = await tokens(hub)
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            answers = {
                "page": await http.get("/"),
                "script": await http.get("/ui/app.js"),
                "api": await http.get("/api/v1/sites", headers=auth(tok["viewer"])),
                "unauthenticated": await http.get("/api/v1/sites"),
                "forbidden": await http.get("/api/v1/tokens", headers=auth(tok["viewer"])),
                "invalid": await http.get("/api/v1/devices?limit=0", headers=auth(tok["viewer"])),
                "not found": await http.get("/nowhere"),
                "api not found": await http.get("/api/v1/nowhere", headers=auth(tok["viewer"])),
                "metrics": await http.get("/metrics"),
                "openapi": await http.get("/api/v1/openapi.json"),
            }
            expected = {
                "page": 200,
                "script": 200,
                "api": 200,
                "unauthenticated": 401,
                "forbidden": 403,
                "invalid": 422,
                "not found": 404,
                "api not found": 404,
                "metrics": 200,
                "openapi": 200,
            }
            assert {k: r.status_code for k, r in answers.items()} == expected
            for name, r in answers.items():
                try:
                    assert_security_headers(r.headers)
                except (AssertionError, KeyError) as exc:
                    raise AssertionError(f"{name}: {exc!r} in {dict(r.headers)}") from exc
            # The HTML docs load scripts from a CDN: off, wherever FastAPI would put them.
            for path in ("/api/v1/docs", "/docs", "/redoc", "/api/v1/redoc", "/docs/oauth2-redirect"):
                r = await http.get(path, headers=auth(tok["viewer"]))
                assert r.status_code == 404, path
                assert "cdn" not in r.text.lower()
            assert answers["openapi"].json()["info"]["title"] == "IOC hub"
