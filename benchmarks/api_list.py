"""``api_list``: latency of the operations API's list calls with 5,000 devices registered (target: p99 < 200 ms).

Set-up, shared by the runs (not timed): a :class:`~ioc.stack.LocalStack` with ten gateway accounts, the real hub
as a child process (:class:`benchmarks.hubproc.HubProcess`) with an SQLite registry, an admin token and a token
limited to one ward created in its database, 10 sites in 10 wards and 5,000 devices imported through
``POST /api/v1/inventory``, one gateway per site announcing its 500 devices in its birth (retained, through the
broker), and one data batch per gateway with a reading of every other device, so half the devices are online
and half unknown. The set-up waits until the API reports exactly 2,500 devices online.

Each run, **timed**: ``requests`` sequential calls (one keep-alive HTTP connection, in this process; the hub is
another process) to each list call below, each answer checked (status 200 and the expected ``total``); the run's
figures are the p50 and p99 of every call over its requests, and the p99 over all of them. A wrong answer fails
the run, so an error page cannot pass for a fast list. ``/healthz`` (no work at all) is measured the same way
as the floor of the machine at that moment (other processes share its cores).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.errors import BenchmarkError
from benchmarks.hubproc import HubProcess
from benchmarks.results import BenchmarkResult, RunSample, format_table
from hub.auth import create_token
from ioc.stack import LocalStack, StackEndpoints, StackError
from wire.v1 import DataBatch, DeviceInfo, Reading, State, encode

log = logging.getLogger(__name__)

NAME: Final = "api_list"
DEVICES: Final = 5000
#: One gateway per site, one site per ward.
SITES: Final = 10
WARDS: Final = SITES
GATEWAYS: Final = tuple((f"site-{i:02d}", "gw-1") for i in range(SITES))
DEFAULT_REQUESTS: Final = 300
QUICK_REQUESTS: Final = 50
TARGET_P99_MS: Final = 200.0
READY_TIMEOUT_S: Final = 60.0
HTTP_TIMEOUT_S: Final = 10.0
IMPORT_TIMEOUT_S: Final = 120.0


def _inventory() -> dict[str, Any]:
    sites = [
        {"id": f"site-{i:02d}", "name": f"Site {i}", "ward": f"ward-{i % WARDS}", "lat": 10.7, "lon": 106.6}
        for i in range(SITES)
    ]
    devices = [
        {
            "id": f"dev-{i:05d}",
            "kind": ("air_quality", "camera", "sign", "water_level")[i % 4],
            "site": f"site-{i % SITES:02d}",
            "gateway": "gw-1",
            "tags": {"owner": "bench"},
        }
        for i in range(DEVICES)
    ]
    return {"sites": sites, "devices": devices}


def _gateway_devices(index: int) -> list[str]:
    """Gateway ``index`` serves every device ``i`` with ``i % SITES == index``."""
    return [f"dev-{i:05d}" for i in range(index, DEVICES, len(GATEWAYS))]


def _publish_gateways(endpoints: StackEndpoints) -> None:
    """Births (retained) and one data batch per gateway, each under the gateway's own account."""
    for index, (site, gateway) in enumerate(GATEWAYS):
        user, password = endpoints.credentials(f"{site}.{gateway}")
        client_id = endpoints.client_id(f"{site}.{gateway}", f"bench-{gateway}-{secrets.token_hex(3)}")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(user, password)
        client.connect(endpoints.mqtt_host, endpoints.mqtt_port, keepalive=60)
        client.loop_start()
        try:
            devices = _gateway_devices(index)
            now = int(time.time() * 1000)
            session = f"bench{secrets.token_hex(6)}"
            kinds = ("air_quality", "camera", "sign", "water_level")
            birth = State(
                online=True,
                session=session,
                ts=now,
                devices=[DeviceInfo(d, kinds[int(d[4:]) % 4], "bench", 3600.0) for d in devices],
            )
            readings = [Reading(d, kinds[int(d[4:]) % 4], now, {"x": 1.0}) for d in devices[::2]]
            for topic, payload, retain in (
                (f"ioc/v1/{site}/{gateway}/state", encode(birth), True),
                (f"ioc/v1/{site}/{gateway}/data", encode(DataBatch(session=session, seq=1, readings=readings)), False),
            ):
                info = client.publish(topic, payload, qos=1, retain=retain)
                info.wait_for_publish(10)
                if not info.is_published():
                    raise BenchmarkError(f"could not publish on {topic}")
        finally:
            client.disconnect()
            client.loop_stop()


def _calls(ward_token: str) -> dict[str, tuple[str, dict[str, str] | None, Callable[[dict[str, Any]], bool]]]:
    """name -> (path, extra headers, check of the answer)."""
    per_ward = DEVICES // WARDS
    return {
        "devices_page": ("/api/v1/devices?limit=100", None, lambda b: b["total"] == DEVICES and len(b["items"]) == 100),
        "devices_last_page": (
            f"/api/v1/devices?limit=100&offset={DEVICES - 100}",
            None,
            lambda b: len(b["items"]) == 100,
        ),
        "devices_online": ("/api/v1/devices?state=online&limit=100", None, lambda b: b["total"] == DEVICES // 2),
        "devices_site": ("/api/v1/devices?site=site-07", None, lambda b: b["total"] == DEVICES // SITES),
        "devices_kind_page_10": (
            "/api/v1/devices?kind=camera&limit=100&offset=1000",
            None,
            lambda b: b["total"] == DEVICES // 4 and len(b["items"]) == 100,
        ),
        "devices_1000": ("/api/v1/devices?limit=1000", None, lambda b: len(b["items"]) == 1000),
        "devices_ward_token": (
            "/api/v1/devices?limit=100",
            {"Authorization": f"Bearer {ward_token}"},
            lambda b: b["total"] == per_ward,
        ),
        "sites": ("/api/v1/sites", None, lambda b: b["total"] == SITES),
        # Not a list: one device with its recent transitions (it waits for the transition sink to catch up).
        "device_detail": ("/api/v1/devices/dev-04321", None, lambda b: b["id"] == "dev-04321"),
        "alerts_open": ("/api/v1/alerts?state=open", None, lambda b: "items" in b),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _measure(http: httpx.Client, calls: dict[str, Any], requests: int) -> dict[str, float]:
    """One timed pass over every call; :class:`BenchmarkError` on a wrong answer."""
    metrics: dict[str, float] = {}
    everything: list[float] = []
    for name, (path, headers, check) in calls.items():
        latencies: list[float] = []
        for _ in range(requests):
            t0 = time.perf_counter()
            answer = http.get(path, headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            if answer.status_code != 200 or not check(answer.json()):
                raise BenchmarkError(f"{path}: unexpected answer {answer.status_code} {answer.text[:300]}")
        metrics[f"{name}_p50_ms"] = statistics.median(latencies)
        metrics[f"{name}_p99_ms"] = _percentile(latencies, 0.99)
        if name != "device_detail":
            everything.extend(latencies)
    metrics["all_lists_p99_ms"] = _percentile(everything, 0.99)
    # The floor on this machine at this moment: the same connection, a route that does nothing.
    floor: list[float] = []
    for _ in range(requests):
        t0 = time.perf_counter()
        http.get("/healthz").raise_for_status()
        floor.append((time.perf_counter() - t0) * 1000)
    metrics["healthz_p50_ms"] = statistics.median(floor)
    metrics["healthz_p99_ms"] = _percentile(floor, 0.99)
    return metrics


def _populate(http: httpx.Client, hub: HubProcess, endpoints: StackEndpoints) -> float:
    """Import the inventory (returns how long it took), publish the births and readings, wait for the states."""
    started = time.monotonic()
    response = http.post("/api/v1/inventory", json=_inventory(), timeout=IMPORT_TIMEOUT_S)
    if response.status_code != 200:
        raise BenchmarkError(f"inventory import: HTTP {response.status_code}: {response.text[:500]}")
    import_s = time.monotonic() - started
    _publish_gateways(endpoints)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while http.get("/api/v1/devices?state=online&limit=1").json()["total"] != DEVICES // 2:
        hub.check_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"devices not online within {READY_TIMEOUT_S:.0f} s:\n{hub.log_tail()}")
        time.sleep(0.2)
    return import_s


def run_api_list(*, runs: int, quick: bool = False, work_dir: Path | None = None, cwd: Path) -> BenchmarkResult:
    """Set up once, then ``runs`` timed passes; raise :class:`BenchmarkError` on a wrong answer."""
    requests = QUICK_REQUESTS if quick else DEFAULT_REQUESTS
    result = BenchmarkResult(NAME, {"devices": DEVICES, "sites": SITES, "wards": WARDS, "requests_per_call": requests})
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="bench-api-", dir=work_dir))
    db_url = f"sqlite:///{base / 'hub.db'}"
    admin = create_token(db_url, "admin", name="bench")
    ward_token = create_token(db_url, "viewer", wards=["ward-3"], name="bench-ward")
    stack = LocalStack(base / "stack", gateways=list(GATEWAYS))
    try:
        endpoints = stack.__enter__()
    except StackError as exc:
        raise BenchmarkError(f"the local stack did not start: {exc}") from exc
    try:
        env = {"IOC_HUB_REGISTRY__URL": db_url, "IOC_HUB_AQI__ENABLED": "false"}
        with (
            HubProcess(endpoints, endpoints.influx_db, "bench-api", base / "hub.log", cwd=cwd, extra_env=env) as hub,
            httpx.Client(
                base_url=hub.url, timeout=HTTP_TIMEOUT_S, headers={"Authorization": f"Bearer {admin}"}
            ) as http,
        ):
            import_s = _populate(http, hub, endpoints)
            calls = _calls(ward_token)
            for path, headers, _ in calls.values():  # warm up; not measured
                http.get(path, headers=headers)
            for run in range(1, runs + 1):
                metrics = _measure(http, calls, requests)
                metrics["inventory_import_s"] = import_s
                result.samples.append(
                    RunSample(metrics=metrics, counts={"requests": requests * len(calls), "devices": DEVICES})
                )
                log.info("api_list run %d/%d: p99 over every list call %.1f ms", run, runs, metrics["all_lists_p99_ms"])
    finally:
        stack.__exit__(None, None, None)
    worst = max(s.metrics["all_lists_p99_ms"] for s in result.samples)
    if worst >= TARGET_P99_MS:
        log.warning("api_list: p99 %.1f ms is above the %.0f ms target", worst, TARGET_P99_MS)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_list", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REQUESTS} requests per call, not {DEFAULT_REQUESTS}"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run_api_list(runs=args.runs, quick=args.quick, cwd=Path(__file__).resolve().parents[1])
    sys.stdout.write(format_table([result]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
