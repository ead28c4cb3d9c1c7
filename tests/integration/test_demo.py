"""`ioc demo` (what `make demo` runs) puts readings of all three device kinds into InfluxDB within seconds.

The demo runs as a child process exactly as a person starts it; the test reads the endpoints it writes to
``demo.json`` and queries the InfluxDB it started: every Modbus sensor, NTCIP sign and camera of the simulated
city must have landed, each in its kind's measurement, tagged with its site.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ioc.demo import DEFAULT_SITES
from ioc.stack import influx_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s:\n{log.read_text()}"
        time.sleep(0.2)
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def start_demo(state: Path, log: Path) -> subprocess.Popen[bytes]:
    """``ioc demo`` as a person starts it, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ioc.cli", "demo", "--duration", "120", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.timeout(240)
def test_demo_puts_readings_of_sensors_signs_and_cameras_into_influxdb(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "demo.log"
    proc = start_demo(state, log)
    pids: list[int] = []
    try:
        doc = wait_for(state / "demo.json", proc, log, timeout=90)
        url, db = doc["influxdb"]["url"], doc["influxdb"]["database"]
        assert len(doc["sites"]) == DEFAULT_SITES
        expected: dict[str, set[tuple[str, str]]] = {}  # kind -> {(site, device)}
        for site in doc["sites"]:
            for device, kind in site["devices"].items():
                expected.setdefault(kind, set()).add((site["site"], device))
        assert {"sign", "camera"} <= set(expected), "the city has signs and cameras"
        assert {"air_quality", "weather", "water_level", "power_meter"} <= set(expected)
        seen: dict[str, set[tuple[str, str]]] = {}
        started = time.monotonic()
        while time.monotonic() - started < 75 and seen != expected:
            time.sleep(1)
            for kind in expected:
                rows = influx_query(url, db, f'SELECT count(*) FROM "{kind}" GROUP BY "device", "site"')
                seen[kind] = {(r["site"], r["device"]) for r in rows}
        took = time.monotonic() - started
        missing = {k: sorted(v - seen.get(k, set())) for k, v in expected.items() if v - seen.get(k, set())}
        assert not missing, f"after {took:.0f} s still missing {missing}:\n{log.read_text()}"

        # Values are the simulators' plausible ones, stamped recently by the edge (ms precision).
        rows = influx_query(url, db, 'SELECT * FROM "air_quality" ORDER BY time DESC LIMIT 1')
        assert rows, "no air-quality reading"
        newest = rows[0]
        assert abs(newest["time"] - time.time() * 1000) < 30_000
        assert 0 <= newest["pm25"] < 1000
        assert 0 <= newest["pm10"] < 2000
        # A sign reports its message as text and its status bits as numbers.
        signs = influx_query(url, db, 'SELECT last("message_text"), last("brightness_level") FROM "sign"')
        assert signs[0]["last"] == "DRIVE SAFELY"
        assert 1 <= signs[0]["last_1"] <= 16
        # A camera answers ONVIF with the simulator's credentials; its stream is up when VLC is here.
        cams = influx_query(url, db, 'SELECT last("onvif_state_name"), last("rtsp_state_name") FROM "camera"')
        assert cams[0]["last"] == "up_with_auth"
        assert cams[0]["last_1"] == ("up" if doc["rtsp"]["available"] else "unavailable"), doc["rtsp"]

        # The hub reports what it stored; the gateways announced themselves (birth -> gateway_state online).
        stats = httpx.get(f"{doc['hub_url']}/api/v1/ingest/stats", timeout=5).json()
        assert stats["dead_letters_total"] == 0, stats
        assert stats["lines_written"] >= sum(len(v) for v in expected.values()), stats
        expected_sites = {s["site"] for s in doc["sites"]}
        states = influx_query(url, db, 'SELECT last("online") FROM "gateway_state" GROUP BY "site"')
        assert {r["site"] for r in states} == expected_sites
        assert all(r["last"] is True for r in states)

        # The hub knows the city's sites with their ward and coordinates (the inventory the demo wrote), and a
        # token limited to one ward sees that ward's site only.
        admin = {"Authorization": f"Bearer {doc['hub_token']}"}
        sites = httpx.get(f"{doc['hub_url']}/api/v1/sites", headers=admin, timeout=5).json()["items"]
        by_id = {s["id"]: s for s in sites}
        assert set(by_id) == expected_sites
        first = doc["sites"][0]
        assert by_id[first["site"]]["ward"] == first["district"] == "phuong-ben-thanh"
        assert by_id[first["site"]]["name"] == "Chợ Bến Thành (Phường Bến Thành)"
        assert (by_id[first["site"]]["lat"], by_id[first["site"]]["lon"]) == (first["lat"], first["lon"])
        assert all(s["ward"] and s["lat"] and s["lon"] and s["devices"] > 0 for s in sites), sites
        created = httpx.post(
            f"{doc['hub_url']}/api/v1/tokens",
            json={"role": "viewer", "wards": [first["district"]], "name": "ward test"},
            headers=admin,
            timeout=5,
        )
        assert created.status_code == 201, created.text
        ward_only = {"Authorization": f"Bearer {created.json()['token']}"}
        visible = httpx.get(f"{doc['hub_url']}/api/v1/sites", headers=ward_only, timeout=5).json()["items"]
        assert [s["id"] for s in visible] == [first["site"]]

        pids = [int(p) for p in (state / "pids").read_text().split()]
        assert len(pids) == 2 + 1 + 1 + DEFAULT_SITES, "stack (2), hub, the city's simulators, one agent per site"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0, log.read_text()
    assert "Demo stopped." in log.read_text()
    for pid in pids:
        assert not alive(pid), f"child {pid} still running after the demo stopped"


@pytest.mark.timeout(180)
def test_a_stopped_edge_agent_is_a_gateway_failure_and_the_demo_goes_on(tmp_path: Path) -> None:
    """An agent stopped cleanly (SIGTERM, as ``systemctl stop``) stays down, as under ``Restart=on-failure``: its
    gateway goes offline and the gateway-offline alert fires. (A killed one is restarted: test_demo_restarts.)"""
    state, log = tmp_path / "state", tmp_path / "demo.log"
    proc = start_demo(state, log)
    try:
        doc = wait_for(state / "demo.json", proc, log, timeout=90)
        url, db = doc["influxdb"]["url"], doc["influxdb"]["database"]
        victim, others = doc["sites"][-1]["site"], {s["site"] for s in doc["sites"][:-1]}

        def online() -> dict[str, bool]:
            rows = influx_query(url, db, 'SELECT last("online") FROM "gateway_state" GROUP BY "site"')
            return {r["site"]: r["last"] for r in rows}

        deadline = time.monotonic() + 45
        while online() != dict.fromkeys({victim, *others}, True):
            assert time.monotonic() < deadline, f"not all gateways online: {online()}\n{log.read_text()}"
            time.sleep(1)
        victim_pid = doc["processes"][f"edge-{victim}"]
        os.kill(victim_pid, signal.SIGTERM)
        # The agent publishes its offline state on the way out; the hub stores the site as offline. The others
        # stay online.
        deadline = time.monotonic() + 45
        while online().get(victim) is not False:
            assert time.monotonic() < deadline, f"{victim} still online after its agent was killed: {online()}"
            time.sleep(1)
        assert all(online()[site] for site in others)
        # The other sites keep reporting after the failure.
        killed_at_ms = time.time() * 1000
        deadline = time.monotonic() + 30
        while True:
            rows = influx_query(url, db, 'SELECT last("pm25") FROM "air_quality" GROUP BY "site"')
            fresh = {r["site"] for r in rows if r["time"] > killed_at_ms}
            if others <= fresh:
                break
            assert time.monotonic() < deadline, f"after the failure only {fresh} reported"
            time.sleep(1)
        # The demo's hub runs the example alert rules: gateway-offline fires for the dead gateway (for_s 30 s).
        headers = {"Authorization": f"Bearer {doc['hub_token']}"}
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.get(f"{doc['hub_url']}/api/v1/alerts", params={"rule": "gateway-offline"}, headers=headers)
            assert answer.status_code == 200, answer.text
            fired = [a for a in answer.json()["items"] if a["state"] == "firing"]
            if fired:
                break
            assert time.monotonic() < deadline, f"no gateway-offline alert: {answer.json()}"
            time.sleep(1)
        assert [(a["site"], a["severity"]) for a in fired] == [(victim, "critical")]
        assert proc.poll() is None, f"the demo stopped when a gateway failed:\n{log.read_text()}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 0, text
    assert (
        f"edge-{victim} (pid {victim_pid}) stopped: exit status 0; not restarted (ioc-edge.service: Restart=on-failure)"
    ) in text


@pytest.mark.timeout(120)
def test_a_killed_demo_leaves_no_process_behind(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "demo.log"
    proc = start_demo(state, log)
    try:
        wait_for(state / "demo.json", proc, log, timeout=90)
        pids = [int(p) for p in (state / "pids").read_text().split()]
        assert all(alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in pids if alive(pid)] == [], "children outlived a SIGKILLed demo"
