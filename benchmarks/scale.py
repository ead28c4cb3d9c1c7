"""``scale``: a city of many gateways on one box: one Mosquitto, one hub, ``gateways`` x ``devices`` devices.

``python -m benchmarks.scale [--gateways 5000] [--devices 4] [--period 10] ...``. Set-up: the open-files limit
raised to what the connections need (the generator, a child of this process, inherits it; the stack raises its
broker's soft limit to the hard one itself, ``ioc.stack.mosquitto.start``, so the hard one raised here as root
counts for it too);
one :class:`~ioc.stack.LocalStack` with a broker account per gateway (``site-NNNN/gw-NNNN``: one gateway a site,
as a city's cabinets); the real hub (:class:`benchmarks.hubproc.HubProcess`) with an SQLite registry, the
example alert rules (``hub/alerts/example-rules.yaml``, without webhooks) and an admin token; the load generator
(:mod:`benchmarks.loadgen`, one raw-socket MQTT 5 connection per gateway) behaving as agents do: each birth
announces the gateway's devices polled every ``period`` seconds and promises data every keep-alive (30 s, the
agent's default), each gateway then sends one message of a reading per device every ``period``, and a dropped
connection is connected again at once, with a new session and birth.

Measured, in phases:

1. **Connect**: every gateway connects at once and publishes its birth; ``connect_s`` is the time until the
   last CONNACK, ``settled_s`` the time from then until the hub's API shows every gateway (``GET
   /api/v1/gateways``) online and every device (``GET /api/v1/devices?state=online``) online (goal: 60 s).
2. **Steady**: ``steady_s`` of load.
3. **Birth storm**: the broker is restarted (``LocalStack.stop_service`` / ``start_service``: SIGTERM, which saves
   its persistence, and a start on the same port and data, as ``systemctl restart mosquitto``); every gateway
   reconnects at once and publishes a new birth. ``storm_settled_s``: from the broker's restart until InfluxDB
   holds a birth of a new session of every gateway (``gateway_state``) and the API shows them all online again
   with every device online (goal: 60 s). Then ``watch_s`` (90 s: longer than the offline rules' ``for_s``) of
   load, after which ``GET /api/v1/alerts`` must hold no ``gateway-offline`` or ``device-offline`` alert opened
   since the restart (a false alert: no gateway was down, the broker was restarted). Offline states the API
   showed meanwhile (gateways, devices) are counted too (``max_gateways_offline``, ``max_devices_offline``).

Throughout (but for a ``quiet`` phase of 30 s after the steady one), one thread calls the API's list calls in
turn on one keep-alive connection, a round of five every half second (``/api/v1/gateways``, all of them;
``/api/v1/devices?limit=100``; ``?state=online&limit=100``; ``/api/v1/sites``; ``/api/v1/alerts``): p50 and p99
per phase (goal: p99 < 200 ms). The hub's CPU (% of one core, per phase: ``quiet`` is the city's own cost,
without API calls) and peak RSS, Mosquitto's and the generator's, and the load average are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import psutil

from benchmarks.errors import BenchmarkError
from benchmarks.hubproc import HubProcess, admission_env
from benchmarks.loadgen import LOAD_MEASUREMENT, GatewayAccount, LoadConfig, LoadProcess, monotonic
from benchmarks.procs import cpu_seconds, peak_rss_bytes
from benchmarks.results import BenchmarkResult, RunSample, format_table, machine, write_report
from hub.auth import create_token
from ioc.demo import write_demo_rules
from ioc.stack import LocalStack, StackEndpoints, StackError, influx_query

log = logging.getLogger(__name__)

NAME: Final = "scale"
ROOT: Final = Path(__file__).resolve().parents[1]
OUT_DIR: Final = ROOT / ".ioc" / "bench"
DEFAULT_GATEWAYS: Final = 5000
DEFAULT_DEVICES: Final = 4
#: Each gateway sends one message (a reading of each device) this often; also the devices' announced interval.
DEFAULT_PERIOD_S: Final = 10.0
#: The agent's default keep-alive (edge/config.py, ``broker.keepalive_s``), promised in the births.
KEEPALIVE_S: Final = 30
DEFAULT_STEADY_S: Final = 60.0
DEFAULT_WATCH_S: Final = 90.0
#: Steady load without API calls.
QUIET_S: Final = 30.0
#: The issue's goals.
SETTLE_GOAL_S: Final = 60.0
API_P99_GOAL_MS: Final = 200.0
#: How long each phase may take before the run gives up on it.
SETTLE_TIMEOUT_S: Final = 300.0
CONNECT_TIMEOUT_S: Final = 120.0
POLL_S: Final = 1.0
HTTP_TIMEOUT_S: Final = 30.0
#: Descriptors per process beyond the connections (logs, persistence, listeners, the hub's own).
FD_MARGIN: Final = 1024
#: The hub's counters the report keeps.
HUB_STATS: Final = ("messages_received", "readings", "lines_written", "seq_gaps", "dead_letters_total")
#: Between two rounds of the API calls: a few operators' screens refreshing, not a flood.
ROUND_PAUSE_S: Final = 0.5
OFFLINE_RULES: Final = frozenset({"gateway-offline", "device-offline"})
#: The API calls timed in turn, (name, path).
API_CALLS: Final = (
    ("gateways", "/api/v1/gateways"),
    ("devices_page", "/api/v1/devices?limit=100"),
    ("devices_online", "/api/v1/devices?state=online&limit=100"),
    ("sites", "/api/v1/sites"),
    ("alerts", "/api/v1/alerts"),
)


def gateway_names(count: int) -> list[tuple[str, str]]:
    """One gateway a site: ``site-0001/gw-0001``... (device ids ``gw-0001-d0``... are unique across the city)."""
    return [(f"site-{i:04d}", f"gw-{i:04d}") for i in range(1, count + 1)]


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise this process's ``RLIMIT_NOFILE`` soft limit (and, as root, the hard one) to at least ``needed``, for
    the children started after it (the generator holds a descriptor per connection; the broker too, whose soft
    limit the stack raises to this hard one); the limits before. :class:`BenchmarkError` when the hard limit is
    lower and cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft, hard
    new_hard = hard
    if hard != resource.RLIM_INFINITY and hard < needed:
        new_hard = needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    except (ValueError, OSError) as exc:
        raise BenchmarkError(
            f"{needed} open files are needed, the limit is {soft} (hard {hard}) and cannot be raised: {exc}"
        ) from exc
    log.info("open files limit raised from %d (hard %d) to %d (hard %d)", soft, hard, needed, new_hard)
    return soft, hard


@dataclass
class ApiTimer:
    """One thread timing the API's list calls in turn, for as long as it runs; latencies by phase."""

    url: str
    token: str
    phase: str = "connect"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    by_call: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Set: no calls (the ``quiet`` phase measures the hub without API load).
    paused: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ApiTimer:
        self._thread = threading.Thread(target=self._run, name="api-timer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HTTP_TIMEOUT_S + 5)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT_S, headers=headers) as http:
            while not self._stop.is_set():
                if self.paused.is_set():
                    self._stop.wait(0.1)
                    continue
                for name, path in API_CALLS:
                    t0 = time.perf_counter()
                    try:
                        answer = http.get(path)
                        ms = (time.perf_counter() - t0) * 1000
                        if answer.status_code != 200 or "items" not in answer.json():
                            self.errors.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                            continue
                    except (httpx.HTTPError, ValueError) as exc:
                        self.errors.append(f"{path}: {exc}")
                        continue
                    self.latencies.setdefault(self.phase, []).append(ms)
                    self.by_call.setdefault(f"{self.phase}/{name}", []).append(ms)
                self._stop.wait(ROUND_PAUSE_S)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class _Api:
    """The hub's API as the benchmark reads it."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S, headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> dict[str, Any]:
        answer = self.http.get(path)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    def health(self) -> dict[str, int]:
        """Gateways by state, and devices online / offline / in all."""
        gateways = self.get("/api/v1/gateways")["items"]
        states: dict[str, int] = {}
        for g in gateways:
            states[g["state"]] = states.get(g["state"], 0) + 1
        return {
            "gateways": len(gateways),
            "gateways_online": states.get("online", 0),
            "gateways_offline": states.get("offline", 0),
            "devices": self.get("/api/v1/devices?limit=1")["total"],
            "devices_online": self.get("/api/v1/devices?state=online&limit=1")["total"],
            "devices_offline": self.get("/api/v1/devices?state=offline&limit=1")["total"],
        }


@dataclass
class Phase:
    """CPU of the hub, the broker and the generator over one phase."""

    name: str
    seconds: float = 0.0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    api_p50_ms: float = 0.0
    api_p99_ms: float = 0.0
    api_calls: int = 0
    loadavg: list[float] = field(default_factory=list)


@contextlib.contextmanager
def _phase(name: str, pids: dict[str, int], phases: list[Phase], timer: ApiTimer) -> Iterator[Phase]:
    timer.phase = name
    phase = Phase(name)
    start = monotonic()
    cpu0 = {(n, p): cpu_seconds(p) for n, p in pids.items()}
    yield phase
    phase.seconds = monotonic() - start
    for n, p in pids.items():
        # A process started within the phase (the generator, the restarted broker) counts from 0.
        with contextlib.suppress(BenchmarkError):
            phase.cpu_pct[n] = 100 * (cpu_seconds(p) - cpu0.get((n, p), 0.0)) / max(phase.seconds, 1e-9)
    phase.loadavg = [round(x, 2) for x in psutil.getloadavg()]
    phases.append(phase)


def _wait_all_online(api: _Api, hub: HubProcess, gateways: int, devices: int, seen: dict[str, int]) -> dict[str, int]:
    """Until the API shows every gateway and every device online; the worst offline counts seen go to ``seen``."""
    deadline = monotonic() + SETTLE_TIMEOUT_S
    while True:
        hub.check_alive()
        h = api.health()
        seen["max_gateways_offline"] = max(seen.get("max_gateways_offline", 0), h["gateways_offline"])
        seen["max_devices_offline"] = max(seen.get("max_devices_offline", 0), h["devices_offline"])
        if h["gateways_online"] == gateways and h["devices_online"] == gateways * devices:
            return h
        if monotonic() > deadline:
            raise BenchmarkError(f"not settled within {SETTLE_TIMEOUT_S:.0f} s: {h}")
        time.sleep(POLL_S)


def _wait_gateways_online(api: _Api, hub: HubProcess, gateways: int) -> float:
    """Until the API lists every gateway online (their births registered); the time then."""
    deadline = monotonic() + SETTLE_TIMEOUT_S
    while True:
        hub.check_alive()
        items = api.get("/api/v1/gateways")["items"]
        if sum(1 for g in items if g["state"] == "online") >= gateways:
            return monotonic()
        if monotonic() > deadline:
            raise BenchmarkError(f"{len(items)} of {gateways} gateways listed within {SETTLE_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S / 4)


def _wait_new_births(ep: StackEndpoints, old_sessions: set[str], gateways: int, since_ms: int) -> int:
    """Until InfluxDB holds a birth of a new session from every gateway, stamped from ``since_ms``; how many."""
    deadline = monotonic() + SETTLE_TIMEOUT_S
    while True:
        rows = influx_query(
            ep.influx_url,
            ep.influx_db,
            f'SELECT "session", "online" FROM "gateway_state" WHERE time >= {since_ms}ms GROUP BY "site"',  # noqa: S608
            timeout=60.0,
        )
        new = {(r["site"], r["session"]) for r in rows if r.get("online") and r["session"] not in old_sessions}
        sites = {site for site, _ in new}
        if len(sites) >= gateways:
            return len(new)
        if monotonic() > deadline:
            raise BenchmarkError(f"{len(sites)} of {gateways} gateways' new births stored in {SETTLE_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def _offline_alerts(api: _Api, since: dt.datetime) -> list[dict[str, Any]]:
    items = api.get("/api/v1/alerts?limit=1000")["items"]
    return [a for a in items if a["rule"] in OFFLINE_RULES and dt.datetime.fromisoformat(a["opened_at"]) >= since]


def _steady(pids: dict[str, int], phases: list[Phase], timer: ApiTimer, steady_s: float) -> None:
    """``steady_s`` of load with the API called, then :data:`QUIET_S` without: what the city alone costs the hub."""
    with _phase("steady", pids, phases, timer):
        time.sleep(steady_s)
    timer.paused.set()
    try:
        with _phase("quiet", pids, phases, timer):
            time.sleep(QUIET_S)
    finally:
        timer.paused.clear()


def _storm(  # noqa: PLR0917 - one phase with everything it reads and fills in
    ep: StackEndpoints,
    stack: LocalStack,
    api: _Api,
    hub: HubProcess,
    load: LoadProcess,
    pids: dict[str, int],
    phases: list[Phase],
    timer: ApiTimer,
    figures: dict[str, float],
    seen: dict[str, int],
    report: dict[str, Any],
    devices: int,
    watch_s: float,
) -> None:
    """The broker restarted under the hub and every gateway; the settling, then ``watch_s`` for false alerts."""
    gateways = len(load.sessions)
    old_sessions = set(load.sessions)
    restart_wall = dt.datetime.now(dt.UTC)
    with _phase("storm", pids, phases, timer):
        restarted = monotonic()
        stack.stop_service("mosquitto")
        stack.start_service("mosquitto")
        pids["mosquitto"] = stack.pids["mosquitto"]
        figures["broker_restart_s"] = monotonic() - restarted
        births = _wait_new_births(ep, old_sessions, gateways, int(restart_wall.timestamp() * 1000) - 1000)
        figures["storm_births_stored_s"] = monotonic() - restarted
        h = _wait_all_online(api, hub, gateways, devices, seen)
        figures["storm_settled_s"] = monotonic() - restarted
        log.info(
            "broker restarted in %.1f s; %d new births stored %.1f s and all online %.1f s after the restart: %s",
            figures["broker_restart_s"],
            births,
            figures["storm_births_stored_s"],
            figures["storm_settled_s"],
            h,
        )
    with _phase("watch", pids, phases, timer):
        deadline = monotonic() + watch_s
        while monotonic() < deadline:
            h = api.health()
            seen["max_gateways_offline"] = max(seen.get("max_gateways_offline", 0), h["gateways_offline"])
            seen["max_devices_offline"] = max(seen.get("max_devices_offline", 0), h["devices_offline"])
            time.sleep(POLL_S)
    alerts = _offline_alerts(api, restart_wall)
    report["offline_alerts"] = alerts[:50]
    figures["offline_alerts"] = len(alerts)


def run_scale(
    *,
    gateways: int = DEFAULT_GATEWAYS,
    devices: int = DEFAULT_DEVICES,
    period_s: float = DEFAULT_PERIOD_S,
    steady_s: float = DEFAULT_STEADY_S,
    watch_s: float = DEFAULT_WATCH_S,
    storm: bool = True,
    work_dir: Path = OUT_DIR,
    log_dir: Path,
    cwd: Path = ROOT,
) -> tuple[BenchmarkResult, dict[str, Any]]:
    """One run of the phases; the result and a report of every figure."""
    params = {
        "gateways": gateways,
        "devices_per_gateway": devices,
        "period_s": period_s,
        "keepalive_s": KEEPALIVE_S,
        "steady_s": steady_s,
        "watch_s": watch_s,
        "storm": storm,
    }
    result = BenchmarkResult(NAME, params)
    report: dict[str, Any] = {"params": params, "machine_at_start": machine()}
    limits = raise_open_files(gateways + FD_MARGIN)
    report["open_files_limit_before"] = list(limits)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    names = gateway_names(gateways)
    t0 = monotonic()
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="scale-") as state:
        stack = LocalStack(Path(state) / "stack", gateways=names, ready_timeout=120.0)
        try:
            ep = stack.__enter__()
        except StackError as exc:
            raise BenchmarkError(f"the local stack did not start: {exc}") from exc
        report["stack_start_s"] = monotonic() - t0
        try:
            _run_phases(
                ep, stack, names, report, result, devices, period_s, steady_s, watch_s, storm, Path(state), log_dir, cwd
            )
        finally:
            stack.__exit__(None, None, None)
    report["machine_at_end"] = machine()
    return result, report


def _run_phases(  # noqa: PLR0917 - the phases in their order, in one place
    ep: StackEndpoints,
    stack: LocalStack,
    names: list[tuple[str, str]],
    report: dict[str, Any],
    result: BenchmarkResult,
    devices: int,
    period_s: float,
    steady_s: float,
    watch_s: float,
    storm: bool,
    state: Path,
    log_dir: Path,
    cwd: Path,
) -> None:
    gateways = len(names)
    accounts = [GatewayAccount(site, gw, *ep.credentials(f"{site}.{gw}")) for site, gw in names]
    db_url = f"sqlite:///{state / 'hub.db'}"
    token = create_token(db_url, "admin", name="scale")
    env = {
        **admission_env(LOAD_MEASUREMENT),
        "IOC_HUB_REGISTRY__URL": db_url,
        "IOC_HUB_ALERTS__RULES_FILE": str(write_demo_rules(state / "rules.yaml")),
        "IOC_HUB_AQI__ENABLED": "false",
    }
    # Long enough for every phase; the generator stops publishing by itself at the end of it.
    publish_s = SETTLE_TIMEOUT_S + steady_s + QUIET_S + (SETTLE_TIMEOUT_S + watch_s if storm else 0) + 60
    config = LoadConfig(
        host=ep.mqtt_host,
        port=ep.mqtt_port,
        gateways=accounts,
        rate=gateways / period_s,
        readings_per_message=devices,
        devices=devices,
        duration_s=publish_s,
        max_outstanding=max(20_000, gateways * 2),
        keepalive_s=KEEPALIVE_S,
        birth_keepalive=True,
        device_interval_s=period_s,
        reconnect=True,
        connect_timeout_s=CONNECT_TIMEOUT_S,
    )
    phases: list[Phase] = []
    seen: dict[str, int] = {}
    figures: dict[str, float] = {}
    with contextlib.ExitStack() as running:
        hub = running.enter_context(
            HubProcess(ep, ep.influx_db, "ioc-scale-hub", log_dir / "hub.log", cwd=cwd, extra_env=env)
        )
        api = _Api(hub.url, token)
        running.callback(api.close)
        pids = {"hub": hub.pid, "mosquitto": stack.pids["mosquitto"]}
        timer = running.enter_context(ApiTimer(hub.url, token))
        with _phase("connect", pids, phases, timer):
            started = monotonic()
            load = running.enter_context(
                LoadProcess(config, log_dir / "loadgen.log", cwd=cwd, ready_timeout_s=CONNECT_TIMEOUT_S * 2)
            )
            pids["loadgen"] = load.pid
            last_connack = float(load.ready_info.get("last_connack", monotonic()))
            figures["connect_s"] = last_connack - started
            log.info("%d gateways connected and their births acknowledged in %.1f s", gateways, figures["connect_s"])
            load.go()
            figures["births_registered_s"] = _wait_gateways_online(api, hub, gateways) - last_connack
            log.info("every birth registered %.1f s after the last connect", figures["births_registered_s"])
            h = _wait_all_online(api, hub, gateways, devices, seen)
            figures["settled_s"] = monotonic() - last_connack
            log.info("all online %.1f s after the last connect: %s", figures["settled_s"], h)
        hub_rss_after_connect = peak_rss_bytes(hub.pid)
        _steady(pids, phases, timer, steady_s)
        if storm:
            _storm(ep, stack, api, hub, load, pids, phases, timer, figures, seen, report, devices, watch_s)
        stats = hub.stats()
        hub_rss = peak_rss_bytes(hub.pid)
        broker = psutil.Process(stack.pids["mosquitto"])
        mosquitto_rss, mosquitto_fds = broker.memory_info().rss, broker.num_fds()
        load_rss = psutil.Process(load.pid).memory_info().rss
        load.stop()
        lr = load.wait_done(180)
    metrics = _record(report, phases, timer, figures)
    metrics.update(
        hub_peak_rss_mib=hub_rss / 2**20,
        hub_rss_after_connect_mib=hub_rss_after_connect / 2**20,
        mosquitto_rss_mib=mosquitto_rss / 2**20,
        mosquitto_fds=mosquitto_fds,
        loadgen_rss_mib=load_rss / 2**20,
    )
    report["hub_stats"] = {k: stats.get(k) for k in HUB_STATS}
    report["loadgen"] = {k: getattr(lr, k) for k in ("published", "acked", "abandoned", "skipped")} | {
        "reconnects": len(lr.reconnects)
    }
    report["seen"] = seen
    report["metrics"] = metrics
    result.samples.append(RunSample(metrics, {**seen, "api_errors": len(timer.errors), "gateways": gateways}))
    result.error = _verdict(figures, metrics, timer.errors)


def _record(
    report: dict[str, Any], phases: list[Phase], timer: ApiTimer, figures: dict[str, float]
) -> dict[str, float]:
    """The API's latencies per phase and per call into ``report``; the run's metrics so far."""
    for phase in phases:
        calls = timer.latencies.get(phase.name, [])
        phase.api_p50_ms = statistics.median(calls) if calls else 0.0
        phase.api_p99_ms = percentile(calls, 0.99)
        phase.api_calls = len(calls)
    report["phases"] = [asdict(p) for p in phases]
    report["api_by_call"] = {
        k: {"p50_ms": statistics.median(v), "p99_ms": percentile(v, 0.99), "n": len(v)}
        for k, v in timer.by_call.items()
    }
    report["api_errors"] = timer.errors[:20]
    all_calls = [ms for v in timer.latencies.values() for ms in v]
    return {
        **figures,
        "api_p99_ms": percentile(all_calls, 0.99),
        **{f"{p.name}_hub_cpu_pct": p.cpu_pct.get("hub", 0.0) for p in phases},
        **{f"{p.name}_api_p99_ms": p.api_p99_ms for p in phases},
    }


def _verdict(figures: dict[str, float], metrics: dict[str, float], api_errors: list[str]) -> str:
    """Why the run misses the issue's goals ("" when it meets them)."""
    why = []
    if figures.get("settled_s", 0) > SETTLE_GOAL_S:
        why.append(f"settled {figures['settled_s']:.0f} s after the last connect (goal {SETTLE_GOAL_S:.0f} s)")
    if figures.get("storm_settled_s", 0) > SETTLE_GOAL_S:
        why.append(f"settled {figures['storm_settled_s']:.0f} s after the broker's restart")
    if figures.get("offline_alerts"):
        why.append(f"{figures['offline_alerts']:.0f} offline alerts after the broker's restart")
    if metrics["api_p99_ms"] >= API_P99_GOAL_MS:
        why.append(f"API p99 {metrics['api_p99_ms']:.0f} ms (goal {API_P99_GOAL_MS:.0f} ms)")
    if api_errors:
        why.append(f"{len(api_errors)} API calls failed: {api_errors[0]}")
    return "; ".join(why)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=DEFAULT_GATEWAYS, help=f"default {DEFAULT_GATEWAYS}")
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES, help=f"per gateway (default {DEFAULT_DEVICES})")
    parser.add_argument("--period", type=float, default=DEFAULT_PERIOD_S, help="seconds between a gateway's messages")
    parser.add_argument("--steady", type=float, default=DEFAULT_STEADY_S, help="seconds of steady load")
    parser.add_argument("--watch", type=float, default=DEFAULT_WATCH_S, help="seconds watched after the storm")
    parser.add_argument("--no-storm", action="store_true", help="no broker restart")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where reports go (default {OUT_DIR})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out.resolve()
    try:
        result, report = run_scale(
            gateways=args.gateways,
            devices=args.devices,
            period_s=args.period,
            steady_s=args.steady,
            watch_s=args.watch,
            storm=not args.no_storm,
            work_dir=out,
            log_dir=out / f"logs-scale-{stamp}",
        )
    except BenchmarkError as exc:
        result, report = BenchmarkResult(NAME, {"gateways": args.gateways}, error=str(exc)), {"error": str(exc)}
    path = write_report(
        [result],
        out,
        command=" ".join(["python", "-m", "benchmarks.scale", *(argv or sys.argv[1:])]),
        started=started,
        settings={"report": report},
    )
    sys.stdout.write(
        "\n" + format_table([result]) + f"\n\n{json.dumps(report.get('phases', []), indent=1)}\n\nresults: {path}\n"
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
