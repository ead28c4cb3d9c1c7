"""Tokens on a running hub (real broker, InfluxDB, SQLite registry): an event stream ends within seconds of its
token's revocation (through the API, or straight in the database as another hub process would) or expiry; a
token created with ``expires_in_s`` shows its expiry and is refused after it; an admin limited to wards lists,
creates and revokes only tokens within its wards."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from ops_support import auth, ops_settings, running_hub, tokens

from hub.auth import create_token_in, revoke_in
from hub.registry.db import utcnow
from hub.routes.eventhub import TOKEN_CHECK_S
from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration

#: "Within a few seconds": the stream's check period, plus slack for a loaded machine.
CLOSE_WITHIN_S = TOKEN_CHECK_S + 3.0


async def stream_until_closed(http: httpx.AsyncClient, token: str, action: object = None) -> tuple[str, float]:
    """Open the event stream; once connected, call ``action`` (an awaitable factory); return (the text received,
    the seconds from the action to the end of the stream)."""
    text = ""
    async with http.stream("GET", "/api/v1/events", headers=auth(token), timeout=30) as r:
        assert r.status_code == 200
        started = 0.0
        async for chunk in r.aiter_text():
            text += chunk
            if started == 0.0 and ": connected" in text:
                started = time.monotonic()
                if callable(action):
                    await action()
        return text, time.monotonic() - started


@pytest.mark.timeout(90)
async def test_revocation_and_expiry_end_open_event_streams(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with running_hub(ops_settings(stack, influx_db, tmp_path)) as hub:
        tok = await tokens(hub)
        db = hub.operations.db
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            # Revoked through the API.
            created = (await http.post("/api/v1/tokens", json={"role": "viewer"}, headers=auth(tok["admin"]))).json()

            async def revoke_through_api() -> None:
                r = await http.delete(f"/api/v1/tokens/{created['id']}", headers=auth(tok["admin"]))
                assert r.status_code == 200

            text, took = await stream_until_closed(http, created["token"], revoke_through_api)
            assert text.endswith('event: closed\ndata: {"reason":"token revoked or expired"}\n\n')
            assert took < CLOSE_WITHIN_S
            # Revoked in the database by another hub process: this hub's token caches do not know.
            other, row = await db.write(lambda s: create_token_in(s, "viewer", name="other"))

            async def revoke_elsewhere() -> None:
                await db.write(lambda s: revoke_in(s, row["id"]))

            text, took = await stream_until_closed(http, other, revoke_elsewhere)
            assert text.endswith('event: closed\ndata: {"reason":"token revoked or expired"}\n\n')
            assert took < CLOSE_WITHIN_S
            # Expired while streaming.
            short, row = await db.write(lambda s: create_token_in(s, "viewer", name="short", expires_in_s=2))
            text, _ = await stream_until_closed(http, short)
            closed_at = utcnow()
            expires = datetime.fromisoformat(row["expires"])
            assert "event: closed" in text
            assert expires <= closed_at < expires + timedelta(seconds=CLOSE_WITHIN_S)
            r = await http.get("/api/v1/sites", headers=auth(short))
            assert r.status_code == 401
            assert r.json() == {"detail": "unknown, revoked or expired token"}


@pytest.mark.timeout(60)
async def test_token_expiry_through_the_api(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    async with running_hub(ops_settings(stack, influx_db, tmp_path)) as hub:
        tok = await tokens(hub)
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            before = utcnow()
            r = await http.post(
                "/api/v1/tokens",
                json={"role": "viewer", "name": "day", "expires_in_s": 86_400},
                headers=auth(tok["admin"]),
            )
            assert r.status_code == 201
            expires = datetime.fromisoformat(r.json()["expires"])
            assert before + timedelta(days=1) <= expires <= utcnow() + timedelta(days=1)
            listed = (await http.get("/api/v1/tokens", headers=auth(tok["admin"]))).json()["items"]
            assert {t["name"]: t["expires"] for t in listed}["day"] == r.json()["expires"]
            assert {t["name"]: t["expires"] for t in listed}["test-viewer"] is None
            for bad in (0, 59, 10 * 366 * 86_400 + 1, "soon"):
                r = await http.post(
                    "/api/v1/tokens", json={"role": "viewer", "expires_in_s": bad}, headers=auth(tok["admin"])
                )
                assert r.status_code == 422, bad
                assert r.json()["detail"][0]["loc"] == ["body", "expires_in_s"]


@pytest.mark.timeout(60)
async def test_a_ward_limited_admin_manages_only_its_wards_tokens(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with running_hub(ops_settings(stack, influx_db, tmp_path)) as hub:
        tok = await tokens(hub)
        db = hub.operations.db
        admin_w1, _ = await db.write(lambda s: create_token_in(s, "admin", wards=["quan-1"], name="admin-w1"))
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            listed = (await http.get("/api/v1/tokens", headers=auth(admin_w1))).json()
            # Of the fixture's tokens, those limited to quan-1 only; itself included.
            assert sorted(t["name"] for t in listed["items"]) == ["admin-w1", "t1", "w1"]
            assert listed["total"] == 3
            everyone = (await http.get("/api/v1/tokens", headers=auth(tok["admin"]))).json()["items"]
            assert len(everyone) == 8
            by_name = {t["name"]: t["id"] for t in everyone}
            # Revoking a token of another ward, or an unlimited one: 404, and it keeps working.
            for name in ("w3", "test-viewer", "test-admin"):
                r = await http.delete(f"/api/v1/tokens/{by_name[name]}", headers=auth(admin_w1))
                assert r.status_code == 404, name
            assert (await http.get("/api/v1/sites", headers=auth(tok["operator-quan-3"]))).status_code == 200
            assert (await http.get("/api/v1/sites", headers=auth(tok["viewer"]))).status_code == 200
            # Creating outside its wards: 403; within: 201, and then listed.
            r = await http.post("/api/v1/tokens", json={"role": "viewer"}, headers=auth(admin_w1))
            assert r.status_code == 403
            assert "(every ward)" in r.json()["detail"]
            r = await http.post(
                "/api/v1/tokens", json={"role": "viewer", "wards": ["quan-1", "quan-3"]}, headers=auth(admin_w1)
            )
            assert r.status_code == 403
            assert "quan-3" in r.json()["detail"]
            r = await http.post(
                "/api/v1/tokens", json={"role": "viewer", "name": "new-w1", "wards": ["quan-1"]}, headers=auth(admin_w1)
            )
            assert r.status_code == 201
            # Revoking within its wards works.
            r = await http.delete(f"/api/v1/tokens/{by_name['w1']}", headers=auth(admin_w1))
            assert r.status_code == 200
            assert r.json()["revoked"] is not None
            listed = (await http.get("/api/v1/tokens", headers=auth(admin_w1))).json()["items"]
            assert sorted(t["name"] for t in listed) == ["admin-w1", "new-w1", "t1", "w1"]
