"""``edge_footprint``: the edge agent's resident memory and CPU with 50 devices polled once a second.

The agent's targets: resident memory <= 45 MB and <= 5 % of one core. Memory is reported in MiB (as ``ps`` and
``top`` count, and as the target is read here, ``RSS_TARGET_MIB``) and, as ``agent_rss_mb``, in decimal MB
(10^6 bytes), so either reading of "45 MB" can be checked. Set-up, shared by the runs:

- one :class:`~ioc.stack.LocalStack` (its Mosquitto; InfluxDB idles) with the gateway account ``site-a.gw-1``;
- one Modbus TCP simulator process (``ioc sim modbus``) serving ``devices`` units (unit ids 1..n, profile
  ``xy-md02``: temperature and humidity, one read request per poll), values moving every second;
- a subscriber (admin account, paho in a thread of this process) counting every reading the broker delivers.

Each run starts the agent as a production process would be (``python -m ioc.cli edge run CONFIG``: SQLite
outbox in the run's folder, default batching, self-metrics on), waits until every device's readings arrive,
lets it settle (``settle_s``), then **measures over ``window_s``** from ``/proc/<agent pid>``: CPU time
(``utime + stime``, all threads) as % of one core, and resident memory (``VmRSS``) sampled every second,
reported as the median and the maximum of the samples, plus ``VmHWM`` (the peak since start, start-up
included) and the median ``RssAnon`` (the process's own memory, without the pages of shared libraries and
files that ``VmRSS`` also counts). The run **fails** unless the broker delivered at least 95 % of the
readings the schedule calls for (``devices x window_s / interval_s``, counted by sampling time) and every
device at least 90 % of its own, and unless the agent then exits 0 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.errors import BenchmarkError
from benchmarks.procs import cpu_seconds
from benchmarks.results import BenchmarkResult, RunSample
from ioc.stack import LocalStack, StackEndpoints, StackError
from ioc.stack.process import ChildProcess
from wire.v1 import Channel, ContractError, DataBatch, decode, topic

log = logging.getLogger(__name__)

NAME: Final = "edge_footprint"
SITE: Final = "site-a"
GATEWAY: Final = "gw-1"
PROFILE: Final = "xy-md02"
DEFAULT_DEVICES: Final = 50
DEFAULT_INTERVAL_S: Final = 1.0
DEFAULT_WINDOW_S: Final = 60.0
QUICK_WINDOW_S: Final = 10.0
DEFAULT_SETTLE_S: Final = 10.0
QUICK_SETTLE_S: Final = 3.0
#: The agent's targets (reported beside the figures, not enforced: a benchmark measures).
RSS_TARGET_MIB: Final = 45.0
CPU_TARGET_PCT: Final = 5.0
#: Share of the scheduled readings that must arrive in the window for the run to count.
MIN_DELIVERED: Final = 0.95
#: Until every device has published (the agent's start, connects and first polls).
FIRST_DATA_TIMEOUT_S: Final = 60.0
#: Until the simulator accepts connections.
SIM_READY_TIMEOUT_S: Final = 30.0
#: After the window, how long readings sampled in it may take to arrive (the agent's batch delay is 1 s).
DELIVERY_GRACE_S: Final = 3.0
#: The agent's clean shutdown (drain, death, disconnect) before SIGKILL.
AGENT_STOP_TIMEOUT_S: Final = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (or another ``Vm*`` line) of ``pid`` from ``/proc/<pid>/status`` (proc(5)), in bytes."""
    path = Path(f"/proc/{pid}/status")
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise BenchmarkError(f"cannot read {path}: {exc}") from exc
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise BenchmarkError(f"{path}: unexpected unit in {line!r}")
            return int(value) * 1024
    raise BenchmarkError(f"{path} has no {field} line")


class ReadingCounter:
    """Counts the readings the broker delivers on the gateway's data topic, per device, by sampling time."""

    def __init__(self, ep: StackEndpoints) -> None:
        user, password = ep.credentials("admin")
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-edge-counter-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        self._client.username_pw_set(user, password)
        self._client.on_message = self._on_message
        self._ep = ep
        self._lock = threading.Lock()
        self._readings: list[tuple[int, str]] = []
        self.invalid = 0

    def __enter__(self) -> ReadingCounter:
        self._client.connect(self._ep.mqtt_host, self._ep.mqtt_port, keepalive=30)
        self._client.loop_start()
        result, _ = self._client.subscribe(topic(SITE, GATEWAY, Channel.DATA), qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise BenchmarkError(f"the counter could not subscribe: {mqtt.error_string(result)}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            batch = decode(bytes(message.payload), DataBatch)
        except ContractError:
            self.invalid += 1
            return
        with self._lock:
            self._readings.extend((r.ts, r.device) for r in batch.readings if r.kind != "agent")

    def per_device(self, since_ms: int = 0, until_ms: int = 2**63) -> Counter[str]:
        """Readings delivered so far that were sampled in ``[since_ms, until_ms)`` (wall clock), per device."""
        with self._lock:
            return Counter(device for ts, device in self._readings if since_ms <= ts < until_ms)

    def clear(self) -> None:
        with self._lock:
            self._readings.clear()


def _write_config(path: Path, ep: StackEndpoints, sim_port: int, devices: int, interval_s: float) -> None:
    user, password = ep.credentials(f"{SITE}.{GATEWAY}")
    config = {
        "site": SITE,
        "gateway": GATEWAY,
        "broker": {"host": ep.mqtt_host, "port": ep.mqtt_port, "username": user, "password": password},
        "publish": {"outbox_path": str(path.parent / "outbox.sqlite")},
        "devices": [
            {
                "id": f"weather-{n:02d}",
                "driver": "modbus_tcp",
                "profile": PROFILE,
                "interval_s": interval_s,
                "options": {"host": "127.0.0.1", "port": sim_port, "unit_id": n},
            }
            for n in range(1, devices + 1)
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)


def _wait_for_port(port: int, sim: ChildProcess) -> None:
    deadline = time.monotonic() + SIM_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not sim.running():
            raise BenchmarkError(str(sim.failure("exited before listening")))
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise BenchmarkError(f"the Modbus simulator did not listen on port {port} within {SIM_READY_TIMEOUT_S:.0f} s")


def _one_run(
    ep: StackEndpoints,
    counter: ReadingCounter,
    sim: ChildProcess,
    *,
    run: int,
    run_dir: Path,
    sim_port: int,
    devices: int,
    interval_s: float,
    window_s: float,
    settle_s: float,
    log_dir: Path,
    cwd: Path,
) -> RunSample:
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "gateway.yaml"
    _write_config(config_path, ep, sim_port, devices, interval_s)
    counter.clear()
    argv = [sys.executable, "-m", "ioc.cli", "edge", "run", str(config_path)]
    agent = ChildProcess("edge agent", argv, log_dir / f"agent-run{run}.log", cwd=cwd)
    try:
        deadline = time.monotonic() + FIRST_DATA_TIMEOUT_S
        while len(counter.per_device()) < devices:
            if not agent.running():
                raise BenchmarkError(str(agent.failure("exited")))
            if time.monotonic() > deadline:
                seen = len(counter.per_device())
                raise BenchmarkError(f"only {seen} of {devices} devices published within {FIRST_DATA_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        time.sleep(settle_s)

        # -- measured window
        sim_cpu0 = cpu_seconds(sim.pid)
        cpu0, t0, wall0 = cpu_seconds(agent.pid), time.monotonic(), time.time()
        rss: list[int] = []
        anon: list[int] = []
        while (left := t0 + window_s - time.monotonic()) > 0:
            rss.append(_rss_bytes(agent.pid))
            anon.append(_rss_bytes(agent.pid, "RssAnon"))
            time.sleep(min(1.0, left))
        cpu1, t1, wall1 = cpu_seconds(agent.pid), time.monotonic(), time.time()
        sim_cpu1 = cpu_seconds(sim.pid)
        hwm = _rss_bytes(agent.pid, "VmHWM")
        # -- end of the window; readings sampled in it may still be on their way (batch delay 1 s)
        time.sleep(DELIVERY_GRACE_S)
        delivered = counter.per_device(int(wall0 * 1000), int(wall1 * 1000))
        if not agent.running():
            raise BenchmarkError(str(agent.failure("exited during the window")))
    finally:
        agent.stop(AGENT_STOP_TIMEOUT_S)
    if agent.returncode != 0:
        raise BenchmarkError(f"the agent exited with status {agent.returncode} on SIGTERM:\n{agent.log_tail()}")

    wall = t1 - t0
    expected = devices * wall / interval_s
    total = sum(delivered.values())
    quiet = sorted(
        d for d in (f"weather-{n:02d}" for n in range(1, devices + 1)) if delivered[d] < 0.9 * wall / interval_s
    )
    if total < MIN_DELIVERED * expected or quiet:
        raise BenchmarkError(
            f"{total} readings delivered in {wall:.1f} s, the schedule calls for {expected:.0f}; "
            f"devices short of readings: {quiet[:10]}"
        )
    metrics = {
        "agent_rss_mib": statistics.median(rss) / 2**20,
        "agent_rss_mb": statistics.median(rss) / 1e6,
        "agent_rss_max_mib": max(rss) / 2**20,
        "agent_peak_rss_mib": hwm / 2**20,
        "agent_rss_anon_mib": statistics.median(anon) / 2**20,
        "agent_cpu_pct": 100.0 * (cpu1 - cpu0) / wall,
        "sim_cpu_pct": 100.0 * (sim_cpu1 - sim_cpu0) / wall,
        "readings_per_s": total / wall,
    }
    log.info(
        "edge_footprint run %d: RSS median %.1f MiB (max %.1f, peak %.1f), CPU %.2f %% of one core, %.1f readings/s",
        run,
        metrics["agent_rss_mib"],
        metrics["agent_rss_max_mib"],
        metrics["agent_peak_rss_mib"],
        metrics["agent_cpu_pct"],
        metrics["readings_per_s"],
    )
    counts = {"readings_delivered": total, "readings_scheduled": round(expected), "rss_samples": len(rss)}
    return RunSample(metrics=metrics, counts=counts)


def run_edge_footprint(
    *,
    runs: int,
    work_dir: Path,
    log_dir: Path,
    cwd: Path,
    devices: int = DEFAULT_DEVICES,
    interval_s: float = DEFAULT_INTERVAL_S,
    window_s: float = DEFAULT_WINDOW_S,
    settle_s: float = DEFAULT_SETTLE_S,
) -> BenchmarkResult:
    """Run the footprint benchmark ``runs`` times (a fresh agent each) on one stack and one simulator.

    Start it from the main thread (the stack's and the simulator's processes die with the thread that started
    them). A failed run stops it (``result.error``).
    """
    result = BenchmarkResult(
        NAME,
        {
            "devices": devices,
            "interval_s": interval_s,
            "window_s": window_s,
            "settle_s": settle_s,
            "profile": PROFILE,
            "rss_target_mib": RSS_TARGET_MIB,
            "cpu_target_pct": CPU_TARGET_PCT,
        },
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="edge-footprint-") as scratch:
        base = Path(scratch)
        sim_port = _free_port()
        sim_argv = [sys.executable, "-m", "ioc.cli", "sim", "modbus", "--port", str(sim_port), "--seed", "1"]
        sim_argv += [arg for _ in range(devices) for arg in ("--profile", PROFILE)]
        with LocalStack(base / "stack", gateways=[(SITE, GATEWAY)]) as ep:
            sim = ChildProcess("modbus simulator", sim_argv, log_dir / "modbus-sim.log", cwd=cwd)
            try:
                _wait_for_port(sim_port, sim)
                with ReadingCounter(ep) as counter:
                    for run in range(1, runs + 1):
                        try:
                            sample = _one_run(
                                ep,
                                counter,
                                sim,
                                run=run,
                                run_dir=base / f"run{run}",
                                sim_port=sim_port,
                                devices=devices,
                                interval_s=interval_s,
                                window_s=window_s,
                                settle_s=settle_s,
                                log_dir=log_dir,
                                cwd=cwd,
                            )
                        except (BenchmarkError, StackError) as exc:
                            result.error = f"run {run}: {exc}"
                            log.error("edge_footprint %s (logs in %s)", result.error, log_dir)  # noqa: TRY400
                            break
                        result.samples.append(sample)
            finally:
                sim.stop()
    return result
