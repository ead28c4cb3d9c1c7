"""``ingest``: end to end through the real parts, gateway -> Mosquitto -> hub -> InfluxDB.

One :class:`~ioc.stack.LocalStack` (fresh state folder) serves every run. Each run:

1. creates a fresh database and starts the hub on it as a child process (``python -m ioc.cli hub``; its
   ``admission.kinds`` include the workload's kinds and ``bench_probe``);
2. starts the publisher process (:mod:`benchmarks.publisher`), which builds its payloads and connects as the
   gateway account ``site-a.gw-1``;
3. publishes the gateway's birth (retained) announcing the workload's devices and the probe device, and waits
   until the hub has stored it (the hub stores data only for announced devices); then one probe message
   (measurement ``bench_probe``) until the hub has stored it: the hub's subscription is live and its first
   write of data to the new database is done (not timed);
4. **timed**: from the publisher's first publish until the hub's ``GET /api/v1/ingest/stats`` reports every line
   written and every message acknowledged **and** ``SELECT count(*)`` per measurement finds exactly every point;
5. reads the hub's peak RSS (``VmHWM``) and CPU use, stops the hub (it must exit 0), drops the database.

A run fails (and the benchmark stops) on any difference in counts: a lost, extra or dead-lettered message.
Everything listens on 127.0.0.1; every wait is bounded, and each run by ``run_timeout_s`` as a whole.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.errors import BenchmarkError
from benchmarks.hubproc import HubProcess, admission_env
from benchmarks.procs import CpuMeter, peak_rss_bytes
from benchmarks.publisher import PublisherConfig, PublisherProcess, now
from benchmarks.results import BenchmarkResult, RunSample
from benchmarks.workload import KINDS, Workload
from ioc.stack import LocalStack, StackEndpoints, StackError, create_database, drop_database, influx_query
from wire.v1 import Channel, DataBatch, DeviceInfo, Reading, State, encode, topic

log = logging.getLogger(__name__)

NAME: Final = "ingest"
SITE: Final = "site-a"
GATEWAY: Final = "gw-1"
#: 2,000 messages x 50 readings = 100,000 points per run.
DEFAULT_MESSAGES: Final = 2000
QUICK_MESSAGES: Final = 300
DEFAULT_READINGS_PER_MESSAGE: Final = 50
DEFAULT_DEVICES: Final = 20
DEFAULT_MAX_INFLIGHT: Final = 1000
#: The whole of one run, from starting the hub to dropping its database.
DEFAULT_RUN_TIMEOUT_S: Final = 300.0
#: How often the hub's stats are polled while waiting (also the resolution of the measured time).
POLL_S: Final = 0.05
#: The publisher's payload building and connect.
PUBLISHER_READY_TIMEOUT_S: Final = 60.0
#: Waiting for the hub to store one probe message, and how many probes to try.
PROBE_STORED_TIMEOUT_S: Final = 5.0
PROBE_ATTEMPTS: Final = 3
#: After the hub reports everything written: how long InfluxDB's count may take to agree.
COUNT_TIMEOUT_S: Final = 10.0
PROBE_KIND: Final = "bench_probe"


@dataclass(frozen=True, slots=True)
class _Deadline:
    at: float

    def left(self, what: str) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise BenchmarkError(f"the run's time limit was reached while {what}")
        return remaining


def _wait_until(check: Callable[[], bool], timeout_s: float, deadline: _Deadline, what: str) -> bool:
    """Poll ``check`` every :data:`POLL_S` until it is true (True) or ``timeout_s`` passes (False)."""
    until = min(time.monotonic() + timeout_s, deadline.at)
    while True:
        if check():
            return True
        if time.monotonic() >= until:
            deadline.left(what)
            return False
        time.sleep(POLL_S)


def _counts(url: str, db: str, kinds: list[str]) -> dict[str, list[int]]:
    """measurement -> the ``count_<field>`` values of ``SELECT count(*)`` (empty when it has no points)."""
    out: dict[str, list[int]] = {}
    for kind in kinds:
        # The kinds come from our own table (workload.KINDS), never from input.
        rows = influx_query(url, db, f'SELECT count(*) FROM "{kind}"')  # noqa: S608
        out[kind] = [int(v) for row in rows for k, v in row.items() if k.startswith("count_")]
    return out


def _probe_payload(attempt: int) -> str:
    batch = DataBatch(
        session=f"bench-probe-{secrets.token_hex(4)}",
        seq=attempt,
        readings=[Reading(device="probe", kind=PROBE_KIND, ts=int(time.time() * 1000), metrics={"value": 1.0})],
    )
    return encode(batch).decode()


def _stored(url: str, db: str, query: str) -> bool:
    """Whether ``query`` finds a point in InfluxDB."""
    return bool(influx_query(url, db, query))


def _announce(
    hub: HubProcess, pub: PublisherProcess, workload: Workload, *, url: str, db: str, deadline: _Deadline
) -> None:
    """Publish the gateway's birth (the workload's devices and the probe device); wait until the hub stored it.

    Looked up by its session in InfluxDB: the hub's line count would not tell it from the previous run's birth,
    still retained on the broker and delivered to this run's hub when it subscribes."""
    devices = [workload.device(index) for index in range(workload.devices)]
    birth = State(
        online=True,
        session=workload.session,
        ts=int(time.time() * 1000),
        agent="bench",
        devices=[
            *(DeviceInfo(device, spec.kind, "bench", 1.0) for device, spec in devices),
            DeviceInfo("probe", PROBE_KIND, "bench", 1.0),
        ],
    )
    pub.send({"cmd": "birth", "topic": topic(SITE, GATEWAY, Channel.STATE), "payload": encode(birth).decode()})
    pub.expect("born", deadline.left("announcing the gateway"))
    # Its gateway_state point; the session is ours (bench-<hex>), never input.
    query = f'SELECT "online" FROM "gateway_state" WHERE "session" = \'{workload.session}\''  # noqa: S608
    if not _wait_until(lambda: _stored(url, db, query), PROBE_STORED_TIMEOUT_S, deadline, "announcing"):
        raise BenchmarkError(f"the hub did not store the gateway's birth:\n{hub.log_tail()}")


def _probe(hub: HubProcess, pub: PublisherProcess, url: str, db: str, deadline: _Deadline) -> None:
    """Publish probe messages until the hub has stored one (its subscription is live, the database written) and
    acknowledged everything it received."""
    query = f'SELECT "value" FROM "{PROBE_KIND}"'  # noqa: S608 - a constant

    def idle() -> bool:
        stats = hub.stats()
        return not (stats["pending_messages"] or stats["queued_messages"])

    for attempt in range(1, PROBE_ATTEMPTS + 1):
        pub.send({"cmd": "probe", "payload": _probe_payload(attempt)})
        pub.expect("probed", deadline.left("probing"))
        if _wait_until(lambda: _stored(url, db, query), PROBE_STORED_TIMEOUT_S, deadline, "probing"):
            # InfluxDB shows the point before the hub has seen its write answered and acknowledged the message.
            if not _wait_until(idle, PROBE_STORED_TIMEOUT_S, deadline, "probing"):
                raise BenchmarkError(f"the hub stored the probe but stays busy: {hub.stats()}")
            return
        log.info("the probe was not stored within %.0f s; probing again", PROBE_STORED_TIMEOUT_S)
    raise BenchmarkError(f"the hub stored none of {PROBE_ATTEMPTS} probe messages:\n{hub.log_tail()}")


def _wait_hub_done(hub: HubProcess, base: dict[str, Any], workload: Workload, deadline: _Deadline) -> None:
    """Until the hub's stats say every line is written and every message acknowledged (nothing dead-lettered)."""
    last: dict[str, Any] = base

    def done() -> bool:
        nonlocal last
        hub.check_alive()
        last = hub.stats()
        if last["dead_letters_total"] != base["dead_letters_total"]:
            raise BenchmarkError(f"the hub dead-lettered messages: {last['dead_letters']}:\n{hub.log_tail()}")
        return bool(
            last["lines_written"] >= base["lines_written"] + workload.readings
            and last["acks"] >= base["acks"] + workload.messages
            and last["pending_messages"] == 0
        )

    if not _wait_until(done, deadline.left("waiting for the hub"), deadline, "waiting for the hub"):
        raise BenchmarkError(f"the hub did not finish: {last}")


def _wait_counted(url: str, db: str, expected: dict[str, int], deadline: _Deadline) -> int:
    """Until ``SELECT count(*)`` finds exactly ``expected`` points per measurement (every field); the total."""
    kinds = sorted(expected)
    seen: dict[str, list[int]] = {}

    def counted() -> bool:
        nonlocal seen
        seen = _counts(url, db, kinds)
        if any(n > expected[k] for k in kinds for n in seen[k]):
            raise BenchmarkError(f"InfluxDB holds more points than were sent: {seen}, sent {expected}")
        return all(seen[k] and all(n == expected[k] for n in seen[k]) for k in kinds)

    if not _wait_until(counted, COUNT_TIMEOUT_S, deadline, "counting points"):
        raise BenchmarkError(f"InfluxDB counts {seen} after the hub reported all written; sent {expected}")
    return sum(seen[k][0] for k in kinds)


def _one_run(
    ep: StackEndpoints,
    stack_pids: dict[str, int],
    *,
    run: int,
    workload: Workload,
    hub_client_id: str,
    max_inflight: int,
    run_timeout_s: float,
    log_dir: Path,
    cwd: Path,
) -> RunSample:
    deadline = _Deadline(time.monotonic() + run_timeout_s)
    db = f"bench_{secrets.token_hex(4)}"
    user, password = ep.credentials(f"{SITE}.{GATEWAY}")
    config = PublisherConfig(
        host=ep.mqtt_host,
        port=ep.mqtt_port,
        username=user,
        password=password,
        client_id=ep.client_id(f"{SITE}.{GATEWAY}", f"bench-publisher-{run}-{secrets.token_hex(3)}"),
        topic=topic(SITE, GATEWAY, Channel.DATA),
        workload=workload,
        max_inflight=max_inflight,
        publish_timeout_s=run_timeout_s,
    )
    create_database(ep.influx_url, db)
    try:
        with (
            HubProcess(
                ep,
                db,
                hub_client_id,
                log_dir / f"hub-run{run}.log",
                cwd=cwd,
                extra_env=admission_env(*(spec.kind for spec in KINDS), PROBE_KIND),
            ) as hub,
            PublisherProcess(config, log_dir / f"publisher-run{run}.log", cwd=cwd) as pub,
        ):
            pub.expect("ready", min(PUBLISHER_READY_TIMEOUT_S, deadline.left("starting the publisher")))
            _announce(hub, pub, workload, url=ep.influx_url, db=db, deadline=deadline)
            _probe(hub, pub, ep.influx_url, db, deadline)
            base = hub.stats()
            if base["pending_messages"] or base["queued_messages"]:
                raise BenchmarkError(f"the hub is busy before the run: {base}")

            meter = CpuMeter({"hub": hub.pid, "publisher": pub.pid, **stack_pids})
            meter.start()
            go = now()
            pub.send({"cmd": "go"})  # -- timed from the publisher's first publish
            _wait_hub_done(hub, base, workload, deadline)
            stats_done = now()
            counted = _wait_counted(ep.influx_url, db, workload.kind_counts(), deadline)
            confirmed = now()  # -- until here
            cpu = meter.stop(confirmed - go)
            rss = peak_rss_bytes(hub.pid)

            done = pub.expect("done", deadline.left("waiting for the publisher"))
            final = hub.stats()
        if hub.returncode != 0:
            raise BenchmarkError(f"the hub exited with status {hub.returncode}:\n{hub.log_tail()}")
    finally:
        with contextlib.suppress(StackError):
            drop_database(ep.influx_url, db)

    counts = {
        "messages": workload.messages,
        "points_sent": workload.readings,
        "points_counted": counted,
        "publisher_acked": done["acked"],
        "hub_messages_received": final["messages_received"] - base["messages_received"],
        "hub_lines_written": final["lines_written"] - base["lines_written"],
        "hub_write_batches": final["write_batches"] - base["write_batches"],
    }
    if not (
        counts["publisher_acked"] == counts["hub_messages_received"] == workload.messages
        and counts["hub_lines_written"] == counted == workload.readings
    ):
        raise BenchmarkError(f"run {run}: the counts disagree: {counts}")
    seconds = confirmed - done["first_publish"]
    log.info(
        "ingest run %d: %d points in %.2f s = %.0f points/s (publishing took %.2f s), hub peak RSS %.0f MiB",
        run,
        workload.readings,
        seconds,
        workload.readings / seconds,
        done["last_publish"] - done["first_publish"],
        rss / 2**20,
    )
    metrics = {
        "points_per_s": workload.readings / seconds,
        "messages_per_s": workload.messages / seconds,
        "seconds": seconds,
        "stats_seconds": stats_done - done["first_publish"],
        "hub_peak_rss_mib": rss / 2**20,
        **{f"{name}_cpu_pct": pct for name, pct in cpu.items()},
    }
    return RunSample(metrics=metrics, counts=counts)


def run_ingest(
    *,
    runs: int,
    work_dir: Path,
    log_dir: Path,
    cwd: Path,
    messages: int = DEFAULT_MESSAGES,
    readings_per_message: int = DEFAULT_READINGS_PER_MESSAGE,
    devices: int = DEFAULT_DEVICES,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
) -> BenchmarkResult:
    """Run the ingest benchmark ``runs`` times on one local stack; a failed run stops it (``result.error``).

    ``work_dir`` holds the stack's state folder (removed afterwards), ``log_dir`` the hub's and publisher's logs.
    Start it from the main thread (the stack's children die with the thread that started them).
    """
    result = BenchmarkResult(
        NAME,
        {
            "messages": messages,
            "readings_per_message": readings_per_message,
            "points_per_run": messages * readings_per_message,
            "metrics_per_reading": 6,
            "devices": devices,
            "publisher_max_inflight": max_inflight,
            "qos": 1,
        },
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    hub_client_id = f"ioc-bench-hub-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="stack-") as state:
        stack = LocalStack(Path(state), gateways=[(SITE, GATEWAY)])
        with stack as ep:
            stack_pids = {name: pid for name, pid in stack.pids.items() if name in ("mosquitto", "influxd")}
            for run in range(1, runs + 1):
                interval_ms = 1000
                span_ms = ((messages * readings_per_message - 1) // devices) * interval_ms
                # Recent timestamps (as a live gateway sends), aligned to the second, ending a minute ago.
                base_ts_ms = (int(time.time()) * 1000 - span_ms - 60_000) // 1000 * 1000
                workload = Workload(
                    messages=messages,
                    readings_per_message=readings_per_message,
                    devices=devices,
                    base_ts_ms=base_ts_ms,
                    interval_ms=interval_ms,
                    session=f"bench-{secrets.token_hex(6)}",
                )
                try:
                    stack.check_alive()
                    sample = _one_run(
                        ep,
                        stack_pids,
                        run=run,
                        workload=workload,
                        hub_client_id=hub_client_id,
                        max_inflight=max_inflight,
                        run_timeout_s=run_timeout_s,
                        log_dir=log_dir,
                        cwd=cwd,
                    )
                except (BenchmarkError, StackError) as exc:
                    result.error = f"run {run}: {exc}"
                    log.error("ingest %s (logs in %s)", result.error, log_dir)  # noqa: TRY400 - the message is the report
                    break
                result.samples.append(sample)
    return result
