"""The operations API on a running hub against the real broker, InfluxDB and an SQLite registry: tokens and
roles (401/403/422 naming the field), ward-limited tokens, inventory import and conflicts, device listing with
filters and pagination, alert ack/resolve with the right and wrong roles, two concurrent breaches -> one alert,
re-fire after a manual resolve, tokens through the API and the CLI's ``ioc hub token``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Gateway, auth, ops_settings, running_hub, tokens, wait_until

from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[3]

INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1", "lat": 10.7725, "lon": 106.698},
        {"id": "site-b", "name": "Tân Định", "ward": "quan-3"},
    ],
    "devices": [
        {"id": "cam-01", "kind": "camera", "site": "site-a", "gateway": "gw-1", "tags": {"owner": "doe"}},
        {"id": "aq-01", "kind": "water_level", "site": "site-a", "gateway": "gw-1"},
        {"id": "aq-02", "kind": "air_quality", "site": "site-b", "gateway": "gw-2"},
    ],
}
RULES: dict[str, Any] = {
    "rules": [
        {"id": "fps-low", "type": "threshold", "kinds": ["camera"], "metric": "fps", "below": 10, "clear": 12,
         "severity": "major"},
        {"id": "pm25-high", "type": "threshold", "kinds": ["air_quality"], "metric": "pm25", "above": 150,
         "clear": 120, "for_s": 0, "severity": "critical"},
    ]
}  # fmt: skip


@pytest.mark.timeout(60)
async def test_auth_roles_and_validation(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, rules=RULES, inventory=INVENTORY)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
        tok = await tokens(hub)
        r = await http.get("/api/v1/devices")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        r = await http.get("/api/v1/devices", headers=auth("ioc_000000000000_" + "x" * 43))
        assert r.status_code == 401
        r = await http.get("/api/v1/devices", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        r = await http.post("/api/v1/tokens", json={"role": "viewer"}, headers=auth(tok["operator"]))
        assert r.status_code == 403
        assert "'admin'" in r.json()["detail"]
        r = await http.post(
            "/api/v1/devices/cam-01/commands", json={"action": "restart"}, headers=auth(tok["operator"])
        )
        assert r.status_code == 403
        # 422 names the field.
        r = await http.get("/api/v1/devices?limit=0", headers=auth(tok["viewer"]))
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["query", "limit"]
        r = await http.get("/api/v1/devices?state=sleepy", headers=auth(tok["viewer"]))
        assert r.json()["detail"][0]["loc"] == ["query", "state"]
        r = await http.post(
            "/api/v1/devices/cam-01/commands", json={"action": "Restart!"}, headers=auth(tok["technician"])
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "action"]
        r = await http.post(
            "/api/v1/devices/cam-01/commands", json={"action": "x", "colour": 1}, headers=auth(tok["technician"])
        )
        assert r.json()["detail"][0]["loc"] == ["body", "colour"]
        # Open routes.
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/api/v1/openapi.json")).status_code == 200
        # Tokens through the API: created by admin, works at once, revoked.
        r = await http.post("/api/v1/tokens", json={"role": "viewer", "name": "wall"}, headers=auth(tok["admin"]))
        assert r.status_code == 201
        new = r.json()
        assert (await http.get("/api/v1/sites", headers=auth(new["token"]))).status_code == 200
        listed = (await http.get("/api/v1/tokens", headers=auth(tok["admin"]))).json()["items"]
        assert all("token" not in t and "secret_sha256" not in t for t in listed)
        assert (await http.delete(f"/api/v1/tokens/{new['id']}", headers=auth(tok["admin"]))).status_code == 200
        hub.operations.tokens._cache.clear()
        assert (await http.get("/api/v1/sites", headers=auth(new["token"]))).status_code == 401


@pytest.mark.timeout(60)
async def test_dead_letters_need_an_unrestricted_technician_and_counters_stay_open(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with running_hub(ops_settings(stack, influx_db, tmp_path)) as hub:
        gw = Gateway(stack, "site-a", "gw-1")
        try:
            gw.raw("data", b"{not json")
        finally:
            gw.close()
        await wait_until(lambda: hub.pipeline.stats.dead_letters.get("malformed") == 1)
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            tok = await tokens(hub)
            r = await http.get("/api/v1/dead-letters")
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
            for role in ("viewer", "operator"):
                r = await http.get("/api/v1/dead-letters", headers=auth(tok[role]))
                assert r.status_code == 403, role
                assert "'technician'" in r.json()["detail"]
            r = await http.get("/api/v1/dead-letters", headers=auth(tok["technician-quan-1"]))
            assert r.status_code == 403
            assert "not limited to wards" in r.json()["detail"]
            for role in ("technician", "admin"):
                r = await http.get("/api/v1/dead-letters", headers=auth(tok[role]))
                assert r.status_code == 200, role
                letters = r.json()
                assert letters["total"] == 1
                assert letters["items"][0]["topic"] == "ioc/v1/site-a/gw-1/data"
            # Counters only: open by default (Prometheus scrapes, benchmarks), as is the liveness check.
            for path in ("/metrics", "/api/v1/ingest/stats", "/api/v1/health"):
                assert (await http.get(path)).status_code == 200, path
            schema = (await http.get("/api/v1/openapi.json")).json()
            assert schema["paths"]["/api/v1/dead-letters"]["get"]["security"] == [{"HTTPBearer": []}]
            assert "security" not in schema["paths"]["/metrics"]["get"]


@pytest.mark.timeout(60)
async def test_counters_need_a_viewer_token_when_the_hub_says_so(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, metrics_need_token=True)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
        tok = await tokens(hub)
        for path in ("/metrics", "/api/v1/ingest/stats"):
            r = await http.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
            r = await http.get(path, headers=auth("ioc_000000000000_" + "x" * 43))
            assert r.status_code == 401, path
            for role in ("viewer", "viewer-quan-1", "admin"):  # hub-wide counters, no ward's data
                r = await http.get(path, headers=auth(tok[role]))
                assert r.status_code == 200, (path, role)
        assert "ioc_hub_messages_received_total" in (await http.get("/metrics", headers=auth(tok["viewer"]))).text
        assert (await http.get("/api/v1/health")).status_code == 200  # liveness stays open


@pytest.mark.timeout(60)
async def test_registry_inventory_wards_and_listing(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, rules=RULES, inventory=INVENTORY)
    gw = Gateway(stack, "site-a", "gw-1")
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            tok = await tokens(hub)
            # The birth says aq-01 is an air_quality sensor; the inventory says water_level: a conflict.
            gw.birth([("cam-01", "camera", 1.0), ("aq-01", "air_quality", 1.0), ("th-01", "weather", 1.0)])
            gw.data(("cam-01", "camera", {"fps": 25.0}), ("aq-01", "air_quality", {"pm25": 20.0}))
            v = auth(tok["viewer"])
            await wait_until(lambda: hub.operations.health.device_state("aq-01").value == "online")
            conflicts = (await http.get("/api/v1/registry/conflicts", headers=v)).json()["items"]
            assert [(c["device"], c["field"], c["announced"], c["inventory"]) for c in conflicts] == [
                ("aq-01", "kind", "air_quality", "water_level")
            ]
            devices = (await http.get("/api/v1/devices", headers=v)).json()
            assert devices["total"] == 4
            by_id = {d["id"]: d for d in devices["items"]}
            assert by_id["cam-01"]["state"] == "online"
            assert by_id["cam-01"]["ward"] == "quan-1"
            assert by_id["cam-01"]["tags"] == {"owner": "doe"}
            assert by_id["th-01"]["state"] == "unknown"  # announced, no reading yet
            assert by_id["aq-02"]["site"] == "site-b"
            page = (await http.get("/api/v1/devices?limit=2&offset=2", headers=v)).json()
            assert [d["id"] for d in page["items"]] == ["cam-01", "th-01"]
            assert page["total"] == 4
            online = (await http.get("/api/v1/devices?state=online&site=site-a", headers=v)).json()
            assert {d["id"] for d in online["items"]} == {"aq-01", "cam-01"}
            cams = (await http.get("/api/v1/devices?kind=camera", headers=v)).json()
            assert [d["id"] for d in cams["items"]] == ["cam-01"]
            detail = (await http.get("/api/v1/devices/aq-01", headers=v)).json()
            assert detail["conflict_details"][0]["field"] == "kind"
            await wait_until(lambda: hub.operations.sink.stored >= 1)
            detail = (await http.get("/api/v1/devices/aq-01", headers=v)).json()
            assert [(t["old"], t["new"]) for t in detail["transitions"]] == [("unknown", "online")]
            sites = (await http.get("/api/v1/sites", headers=v)).json()["items"]
            assert {s["id"]: s["states"] for s in sites}["site-a"] == {"online": 2, "unknown": 1}
            # A token limited to ward quan-1 sees site-a only; site-b's device is "not found".
            w = auth(tok["viewer-quan-1"])
            assert [s["id"] for s in (await http.get("/api/v1/sites", headers=w)).json()["items"]] == ["site-a"]
            assert "aq-02" not in {d["id"] for d in (await http.get("/api/v1/devices", headers=w)).json()["items"]}
            assert (await http.get("/api/v1/devices/aq-02", headers=w)).status_code == 404
            assert (await http.get("/api/v1/devices?ward=quan-3", headers=w)).json()["total"] == 0
            # Inventory import: technician only, never a ward-limited token; bad input names entry and field.
            csv = "id,kind,site,ward,site_name\naq-01,air_quality,site-a,quan-1,Chợ Bến Thành\n"
            r = await http.post(
                "/api/v1/inventory", content=csv, headers={**auth(tok["operator"]), "content-type": "text/csv"}
            )
            assert r.status_code == 403
            r = await http.post(
                "/api/v1/inventory", content=csv, headers={**auth(tok["technician"]), "content-type": "text/csv"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["conflicts"] == []  # the correction clears the conflict
            bad = "devices:\n  - {id: aq-09, kind: Air}\n"
            r = await http.post(
                "/api/v1/inventory",
                content=bad,
                headers={**auth(tok["technician"]), "content-type": "application/yaml"},
            )
            assert r.status_code == 422
            assert "body: devices[0] (aq-09): kind:" in r.json()["detail"]
            assert (await http.get("/api/v1/devices/aq-09", headers=v)).status_code == 404  # nothing applied
            r = await http.post(
                "/api/v1/inventory", content="x", headers={**auth(tok["technician"]), "content-type": "text/plain"}
            )
            assert r.status_code == 415
            # The district reaches the pipeline's enrichment (written as a tag on the device's lines).
            assert hub.pipeline._enrichment["cam-01"] == (("district", ",district=quan-1"),)
    finally:
        gw.close()


@pytest.mark.timeout(60)
async def test_alert_lifecycle_roles_concurrency_and_refire(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, rules=RULES, inventory=INVENTORY)
    gw_a = Gateway(stack, "site-a", "gw-1")
    gw_b = Gateway(stack, "site-b", "gw-2")
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            tok = await tokens(hub)
            gw_a.birth([("cam-01", "camera", 1.0)])
            gw_b.birth([("aq-02", "air_quality", 1.0)])
            # Two breaches milliseconds apart, published from two threads at once: one alert.
            await asyncio.gather(
                asyncio.to_thread(gw_a.data, ("cam-01", "camera", {"fps": 3.0})),
                asyncio.to_thread(gw_a.data, ("cam-01", "camera", {"fps": 2.0})),
                asyncio.to_thread(gw_b.data, ("aq-02", "air_quality", {"pm25": 180.0})),
            )
            v = auth(tok["viewer"])

            async def open_alerts() -> list[dict[str, Any]]:
                items: list[dict[str, Any]] = (await http.get("/api/v1/alerts?state=open", headers=v)).json()["items"]
                return items

            alerts = await wait_until(lambda: _two(open_alerts()))
            cam = next(a for a in alerts if a["subject"] == "cam-01")
            assert (cam["rule"], cam["severity"], cam["state"], cam["ward"]) == ("fps-low", "major", "firing", "quan-1")
            aq = next(a for a in alerts if a["subject"] == "aq-02")
            # Roles: a viewer may not acknowledge; an operator of another ward does not even see it.
            assert (await http.post(f"/api/v1/alerts/{cam['id']}/ack", headers=v)).status_code == 403
            r = await http.post(f"/api/v1/alerts/{cam['id']}/ack", headers=auth(tok["operator-quan-3"]))
            assert r.status_code == 404
            r = await http.post(f"/api/v1/alerts/{aq['id']}/ack", headers=auth(tok["operator-quan-3"]))
            assert r.status_code == 200
            assert r.json()["acked_by"] == f"w3 ({tok['operator-quan-3'].split('_')[1]})"
            r = await http.post(f"/api/v1/alerts/{cam['id']}/ack", headers=auth(tok["operator"]))
            assert r.status_code == 200
            assert r.json()["state"] == "acknowledged"
            assert r.json()["acked_at"] is not None
            assert (await http.post("/api/v1/alerts/999999/ack", headers=auth(tok["operator"]))).status_code == 404
            r = await http.post(
                f"/api/v1/alerts/{cam['id']}/resolve", json={"note": "lens cleaned"}, headers=auth(tok["operator"])
            )
            assert r.status_code == 200
            resolved = r.json()
            assert (resolved["state"], resolved["resolved_by"], resolved["resolution"]) == (
                "resolved",
                f"test-operator ({tok['operator'].split('_')[1]})",
                "resolved by hand: lens cleaned",
            )
            r = await http.post(f"/api/v1/alerts/{cam['id']}/resolve", headers=auth(tok["operator"]))
            assert r.status_code == 409
            # The fps is still low: the rule fires again (a new alert), it is not silenced for ever.
            gw_a.data(("cam-01", "camera", {"fps": 4.0}))
            again = await wait_until(lambda: _subject(open_alerts(), "cam-01"))
            assert again["id"] != cam["id"]
            # It clears by itself above the clear level, not in the band between 10 and 12.
            gw_a.data(("cam-01", "camera", {"fps": 11.0}))
            await asyncio.sleep(0.5)
            assert await _subject(open_alerts(), "cam-01")
            gw_a.data(("cam-01", "camera", {"fps": 25.0}))
            await wait_until(lambda: _none_for(open_alerts(), "cam-01"))
            history = (await http.get("/api/v1/alerts?device=cam-01&state=resolved", headers=v)).json()
            assert history["total"] == 2
            assert {a["resolved_by"] for a in history["items"]} == {"system", resolved["resolved_by"]}
            # Ward-limited viewers see only their ward's alerts.
            w1 = (await http.get("/api/v1/alerts", headers=auth(tok["viewer-quan-1"]))).json()["items"]
            assert {a["subject"] for a in w1} == {"cam-01"}
    finally:
        gw_a.close()
        gw_b.close()


async def _two(alerts: Any) -> list[dict[str, Any]] | None:
    items = await alerts
    return items if len(items) >= 2 else None


async def _subject(alerts: Any, subject: str) -> dict[str, Any] | None:
    return next((a for a in await alerts if a["subject"] == subject), None)


async def _none_for(alerts: Any, subject: str) -> bool:
    return all(a["subject"] != subject for a in await alerts)


@pytest.mark.timeout(60)
def test_ioc_hub_token_cli(tmp_path: Path) -> None:
    env = {**os.environ, "IOC_HUB_REGISTRY__URL": f"sqlite:///{tmp_path / 'hub.db'}"}
    run = [sys.executable, "-m", "ioc.cli", "hub", "token"]
    done = subprocess.run(
        [*run, "create", "--role", "operator", "--wards", "quan-1", "--name", "alice"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("ioc_")
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, env=env, cwd=REPO, check=True, timeout=30)
    assert '"wards": ["quan-1"]' in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout + (tmp_path / "hub.db").read_bytes().decode("latin-1")
    bad = subprocess.run(
        [*run, "create", "--role", "operator", "--wards", "Quận 1"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--wards: 'Quận 1' is not a valid ward id" in bad.stderr
    # The database named in a config file given before the subcommand (argparse must not lose it).
    config = tmp_path / "hub.yaml"
    config.write_text(f"registry:\n  url: sqlite:///{tmp_path / 'other.db'}\n", encoding="utf-8")
    plain = {k: v for k, v in env.items() if k != "IOC_HUB_REGISTRY__URL"}
    by_config = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "hub", "--config", str(config), "token", "create", "--role", "viewer"],
        capture_output=True, text=True, env=plain, cwd=REPO, check=False, timeout=30,
    )  # fmt: skip
    assert by_config.returncode == 0, by_config.stderr
    assert (tmp_path / "other.db").exists()
    no_db = subprocess.run(
        [*run, "list"],
        capture_output=True, text=True, env={k: v for k, v in env.items() if k != "IOC_HUB_REGISTRY__URL"},
        cwd=REPO, check=False, timeout=30,
    )  # fmt: skip
    assert no_db.returncode == 2
    assert "registry.url is not set" in no_db.stderr


async def _read_events(response: httpx.Response, into: list[tuple[str, dict[str, Any]]]) -> None:
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            into.append((kind, json.loads(line[6:])))


@pytest.mark.timeout(60)
async def test_event_stream_is_live_and_limited_to_the_tokens_wards(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, rules=RULES, inventory=INVENTORY)
    gw_a = Gateway(stack, "site-a", "gw-1")
    gw_b = Gateway(stack, "site-b", "gw-2")
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http:
            tok = await tokens(hub)
            assert (await http.get("/api/v1/events")).status_code == 401
            seen: dict[str, list[tuple[str, dict[str, Any]]]] = {"admin": [], "viewer-quan-1": []}
            async with (
                http.stream("GET", "/api/v1/events", headers=auth(tok["admin"])) as admin_stream,
                http.stream("GET", "/api/v1/events", headers=auth(tok["viewer-quan-1"])) as ward_stream,
            ):
                assert admin_stream.headers["content-type"].startswith("text/event-stream")
                readers = [
                    asyncio.create_task(_read_events(admin_stream, seen["admin"])),
                    asyncio.create_task(_read_events(ward_stream, seen["viewer-quan-1"])),
                ]
                await wait_until(lambda: hub.operations.events.clients == 2)
                gw_a.birth([("cam-01", "camera", 30.0)])
                gw_b.birth([("aq-02", "air_quality", 30.0)])
                gw_a.data(("cam-01", "camera", {"fps": 3.0}))
                gw_b.data(("aq-02", "air_quality", {"pm25": 200.0}))
                await wait_until(lambda: {"cam-01", "aq-02"} <= _subjects(seen["admin"]))
                await asyncio.sleep(0.5)
                for task in readers:
                    task.cancel()
            assert {"cam-01"} == _subjects(seen["viewer-quan-1"])
            kinds = {kind for kind, _ in seen["viewer-quan-1"]}
            assert {"device", "gateway", "alert"} <= kinds
            assert {d["site"] for k, d in seen["viewer-quan-1"] if k in ("device", "gateway")} == {"site-a"}
            assert {d["site"] for k, d in seen["admin"] if k == "gateway"} == {"site-a", "site-b"}
    finally:
        gw_a.close()
        gw_b.close()


def _subjects(events: list[tuple[str, dict[str, Any]]]) -> set[str]:
    out: set[str] = set()
    for kind, data in events:
        if kind == "device":
            out.add(data["device"])
        elif kind == "alert":
            out.add(data["alert"]["subject"])
    return out
