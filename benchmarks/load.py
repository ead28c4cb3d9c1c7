"""``load``: simulated gateways publish the wire contract at a set rate for a set time; how much the hub stores.

One :class:`~ioc.stack.LocalStack` (gateway accounts ``bench/gw-0..N-1`` and ``bench/probe``) serves every run.
Each run: a fresh database, the real hub as a child process (``python -m ioc.cli hub``; its ``admission.kinds``
include the measurements ``bench_load`` and ``bench_probe``), the load generator as another
(:mod:`benchmarks.loadgen`), whose gateways' births the hub has stored before the clock starts. Measured:

- ``readings_per_s``, ``messages_per_s``: readings (messages) counted in InfluxDB divided by the time from the
  first publish until the hub reported every line written and every message acknowledged;
- ``p50_ms``, ``p99_ms``: publish -> queryable latency of probe messages (one every 250 ms on their own gateway,
  among the load): the time a ``SELECT`` polled every 50 ms first returned the probe, minus its publish time;
- ``sent`` (readings published and PUBACKed by the broker), ``lost`` = ``sent`` minus ``SELECT count(value)``,
  and ``lost_by_seq``: the gaps in the gateways' ``seq`` the hub counted during the run.

The publisher's rate is a target: ``publish_rate`` says what it reached (on a shared 2-core machine, the
generator, the broker, InfluxDB and the hub compete for the same cores).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

from benchmarks.errors import BenchmarkError
from benchmarks.hubproc import HubProcess, admission_env
from benchmarks.loadgen import LOAD_MEASUREMENT, PROBE_MEASUREMENT, GatewayAccount, LoadConfig, LoadProcess, monotonic
from benchmarks.procs import CpuMeter, peak_rss_bytes
from benchmarks.results import BenchmarkResult, RunSample
from ioc.stack import LocalStack, StackEndpoints, StackError, create_database, drop_database, influx_query

log = logging.getLogger(__name__)

SITE: Final = "bench"
PROBE_GATEWAY: Final = "probe"
DEFAULT_GATEWAYS: Final = 8
POLL_S: Final = 0.05
#: After the generator is done: how long the hub may take to store the backlog.
DRAIN_TIMEOUT_S: Final = 120.0
#: ...and how long it may sit idle with lines missing before they count as lost.
IDLE_GIVE_UP_S: Final = 5.0
#: The gateways' births (published when the generator connects): how long the hubs may take to store them.
BIRTHS_TIMEOUT_S: Final = 30.0


def gateway_names(count: int) -> list[tuple[str, str]]:
    return [(SITE, f"gw-{i}") for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, min(998, round(q * 1000) - 1))]


class _ProbeWatcher:
    """Polls InfluxDB for probe points and records when each first became queryable (wall clock, ms)."""

    def __init__(self, url: str, db: str) -> None:
        self._url = url
        self._db = db
        self.latencies_ms: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-watcher", daemon=True)
        self.errors = 0

    def __enter__(self) -> _ProbeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        query = f'SELECT "n" FROM "{PROBE_MEASUREMENT}"'  # noqa: S608 - a constant
        while not self._stop.wait(POLL_S):
            try:
                rows = influx_query(self._url, self._db, query, timeout=5.0)
            except StackError:
                self.errors += 1
                continue
            seen_ms = time.time() * 1000
            for row in rows:
                n = int(row["n"])
                if n not in self.latencies_ms:
                    published_ms = _epoch_ms(row["time"])
                    self.latencies_ms[n] = seen_ms - published_ms


def _epoch_ms(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    # RFC 3339 from InfluxDB 1.x, e.g. 2026-11-28T15:00:00.123Z
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromisoformat(str(value)).timestamp() * 1000


def _count(url: str, db: str) -> int:
    q = f'SELECT count("value") FROM "{LOAD_MEASUREMENT}"'  # noqa: S608 - a constant
    rows = influx_query(url, db, q, timeout=60.0)
    return int(rows[0]["count"]) if rows else 0


def _one_run(
    ep: StackEndpoints,
    stack_pids: dict[str, int],
    *,
    run: int,
    gateways: int,
    rate: float,
    readings_per_message: int,
    duration_s: float,
    hub_client_id: str,
    log_dir: Path,
    cwd: Path,
    hubs: int = 1,
) -> RunSample:
    db = f"bench_{secrets.token_hex(4)}"
    accounts = []
    for site, gateway in gateway_names(gateways):
        user, password = ep.credentials(f"{site}.{gateway}")
        accounts.append(GatewayAccount(site, gateway, user, password))
    probe_user, probe_password = ep.credentials(f"{SITE}.{PROBE_GATEWAY}")
    config = LoadConfig(
        host=ep.mqtt_host,
        port=ep.mqtt_port,
        gateways=accounts,
        rate=rate,
        readings_per_message=readings_per_message,
        duration_s=duration_s,
        probe=GatewayAccount(SITE, PROBE_GATEWAY, probe_user, probe_password),
    )
    create_database(ep.influx_url, db)
    try:
        with contextlib.ExitStack() as running:
            # Several hubs share the load through an MQTT 5 shared subscription, as deployed hubs scale out.
            # The first runs the operations side on every gateway's messages (mqtt.observe: all), the others store.
            def shared(i: int) -> dict[str, str]:
                kinds = admission_env(LOAD_MEASUREMENT, PROBE_MEASUREMENT)
                if hubs == 1:
                    return kinds
                group = {"IOC_HUB_MQTT__SHARED_GROUP": "bench", "IOC_HUB_MQTT__OBSERVE": "all" if i == 0 else "none"}
                return {**kinds, **group}

            # The generator first: its births are retained when the hubs subscribe, so every hub of a group has
            # every gateway's (a birth published afterwards reaches one hub of the group only, and a storage-only
            # hub refuses the data of gateways whose birth it did not get).
            load = running.enter_context(LoadProcess(config, log_dir / f"loadgen-run{run}.log", cwd=cwd))
            procs = [
                running.enter_context(
                    HubProcess(
                        ep, db, f"{hub_client_id}-{i}", log_dir / f"hub{i}-run{run}.log", cwd=cwd, extra_env=shared(i)
                    )
                )
                for i in range(hubs)
            ]
            probes = running.enter_context(_ProbeWatcher(ep.influx_url, db))
            base = _wait_births_stored(procs, ep.influx_url, db, load.sessions)
            meter = CpuMeter({**{f"hub{i}": p.pid for i, p in enumerate(procs)}, "publisher": load.pid, **stack_pids})
            meter.start()
            go = monotonic()
            load.go()
            result = load.wait_done(duration_s + 180)
            # Until the hub has written everything (the probes too) and acknowledged every message.
            expected_lines = result.readings + result.probes
            last = _wait_stored(procs, base, expected_lines)
            stored = monotonic()
            cpu = meter.stop(stored - go)
            cpu["hub"] = sum(cpu.pop(f"hub{i}") for i in range(hubs))
            rss = max(peak_rss_bytes(p.pid) for p in procs)
            time.sleep(0.5)  # the last probe polls
        counted = _count(ep.influx_url, db)
        for p in procs:
            if p.returncode != 0:
                raise BenchmarkError(f"a hub exited with status {p.returncode}:\n{p.log_tail()}")
    finally:
        with contextlib.suppress(StackError):
            drop_database(ep.influx_url, db)

    seconds = stored - result.first_publish
    stored_messages = counted // max(readings_per_message, 1)
    # With several hubs each sees only part of every gateway's sequence: gaps say nothing then (-1).
    gaps = -1 if hubs > 1 else _gaps(last) - _gaps(base)
    latencies = sorted(probes.latencies_ms.values())
    lost = result.readings - counted
    publish_s = max(result.last_publish - result.first_publish, 1e-9)
    log.info(
        "load run %d: %d readings in %d messages, %.1f s to store = %.0f readings/s; lost %d; p50 %.0f ms p99 %.0f ms",
        run,
        result.readings,
        result.published,
        seconds,
        counted / seconds,
        lost,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )
    metrics = {
        "readings_per_s": counted / seconds,
        "messages_per_s": result.published * counted / max(result.readings, 1) / seconds,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "publish_rate": result.published / publish_s,
        "seconds": seconds,
        "hub_peak_rss_mib": rss / 2**20,
        **{f"{name}_cpu_pct": pct for name, pct in cpu.items()},
        # CPU the hub spent per stored message: its capacity whatever share of the cores it got here.
        "hub_cpu_us_per_message": cpu["hub"] / 100 * (stored - go) / max(stored_messages, 1) * 1e6,
    }
    counts = {
        "sent": result.readings,
        "messages_sent": result.published,
        "broker_acked": result.acked,
        "counted": counted,
        "lost": lost,
        "lost_by_seq": gaps,
        "probes_sent": result.probes,
        "probes_seen": len(latencies),
        "dead_letters": last["dead_letters_total"] - base["dead_letters_total"],
    }
    return RunSample(metrics=metrics, counts=counts)


def _wait_births_stored(procs: list[HubProcess], url: str, db: str, sessions: list[str]) -> dict[str, Any]:
    """Until InfluxDB holds the gateway_state point of every birth (by session) and the hubs hold nothing; their
    stats then. By session: a line count would not tell them from the previous run's births, still retained on
    the broker and delivered to this run's hubs when they subscribe."""
    deadline = monotonic() + BIRTHS_TIMEOUT_S
    missing = set(sessions)
    while True:
        if missing:
            rows = influx_query(url, db, 'SELECT "session" FROM "gateway_state"', timeout=10.0)
            missing -= {row["session"] for row in rows}
        stats = _stats(procs)
        if not missing and stats["pending_messages"] == 0 and stats["queued_messages"] == 0:
            return stats
        if monotonic() > deadline:
            raise BenchmarkError(
                f"the hubs did not store {len(missing)} of the gateways' births within {BIRTHS_TIMEOUT_S} s"
            )
        time.sleep(POLL_S)


def _wait_stored(procs: list[HubProcess], base: dict[str, Any], expected_lines: int) -> dict[str, Any]:
    """Poll the hubs until they wrote ``expected_lines`` more lines and hold nothing; their last stats."""
    deadline = monotonic() + DRAIN_TIMEOUT_S
    progress_at, written = monotonic(), -1
    while True:
        last = _stats(procs)
        idle = last["pending_messages"] == 0 and last["queued_messages"] == 0
        if last["lines_written"] - base["lines_written"] >= expected_lines and idle:
            return last
        if last["lines_written"] != written:
            progress_at, written = monotonic(), last["lines_written"]
        elif idle and monotonic() - progress_at > IDLE_GIVE_UP_S:
            return last  # nothing more is coming (the broker dropped messages): counted as lost
        if monotonic() > deadline:
            return last  # counted as lost
        time.sleep(POLL_S)


def _gaps(stats: dict[str, Any]) -> int:
    return sum(n for g, n in stats.get("seq_gaps_by_gateway", {}).items() if g.startswith(f"{SITE}/gw-"))


def _stats(procs: list[HubProcess]) -> dict[str, Any]:
    """The hubs' stats added up (the counters the benchmark reads)."""
    total: dict[str, Any] = {"seq_gaps_by_gateway": {}}
    for proc in procs:
        proc.check_alive()
        stats = proc.stats()
        for key in ("lines_written", "pending_messages", "queued_messages", "dead_letters_total"):
            total[key] = total.get(key, 0) + stats[key]
        for gateway, n in stats.get("seq_gaps_by_gateway", {}).items():
            total["seq_gaps_by_gateway"][gateway] = total["seq_gaps_by_gateway"].get(gateway, 0) + n
    return total


def _failure(counts: dict[str, int]) -> str:
    """Why a finished run fails the benchmark ("" when it does not)."""
    why = []
    if counts["lost"]:
        why.append(f"lost {counts['lost']} of {counts['sent']} readings")
    if counts["dead_letters"]:
        why.append(f"{counts['dead_letters']} messages dead-lettered (the hub's log says why)")
    if counts["probes_sent"] and not counts["probes_seen"]:
        why.append(f"none of {counts['probes_sent']} probes was seen in InfluxDB")
    return ", ".join(why)


def run_load_benchmark(
    *,
    name: str,
    runs: int,
    rate: float,
    readings_per_message: int,
    duration_s: float,
    work_dir: Path,
    log_dir: Path,
    cwd: Path,
    gateways: int = DEFAULT_GATEWAYS,
    hubs: int = 1,
) -> BenchmarkResult:
    """Run the load scenario ``runs`` times on one local stack. Any run that lost data fails the benchmark
    (all runs still go into the medians); a run that could not finish stops it."""
    result = BenchmarkResult(
        name,
        {
            "rate_msgs_per_s": rate,
            "readings_per_message": readings_per_message,
            "duration_s": duration_s,
            "gateways": gateways,
            "metrics_per_reading": 2,
            "qos": 1,
            "hubs": hubs,
        },
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    hub_client_id = f"ioc-bench-hub-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="stack-") as state:
        stack = LocalStack(Path(state), gateways=[*gateway_names(gateways), (SITE, PROBE_GATEWAY)])
        with stack as ep:
            stack_pids = {n: pid for n, pid in stack.pids.items() if n in ("mosquitto", "influxd")}
            for run in range(1, runs + 1):
                try:
                    stack.check_alive()
                    sample = _one_run(
                        ep,
                        stack_pids,
                        run=run,
                        gateways=gateways,
                        rate=rate,
                        readings_per_message=readings_per_message,
                        duration_s=duration_s,
                        hub_client_id=hub_client_id,
                        log_dir=log_dir,
                        cwd=cwd,
                        hubs=hubs,
                    )
                except (BenchmarkError, StackError) as exc:
                    result.error = f"run {run}: {exc}"
                    log.error("%s %s (logs in %s)", name, result.error, log_dir)  # noqa: TRY400 - the report
                    break
                result.samples.append(sample)
            # Every run counts toward the medians; any loss fails the benchmark (zero loss is the target), and so
            # does a dead letter (the generator sends none) or a run whose probes never showed (no latency figure).
            failed = [(i, _failure(s.counts)) for i, s in enumerate(result.samples, 1)]
            if any(why for _, why in failed) and not result.error:
                result.error = "; ".join(f"run {i}: {why}" for i, why in failed if why)
    return result
