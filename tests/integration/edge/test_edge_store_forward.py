"""Store-and-forward end to end: agent -> real Mosquitto -> hub -> real InfluxDB, with outages staged on a
stack of the test's own (``LocalStack``), so the session stack is never stopped.

The agent runs as ``ioc edge run`` (``edge_counter_agent.py``: the CLI plus a counting test driver), so it
can be killed with ``kill -9``; every reading carries ``seq`` (0, 1, 2... per device and process) and ``run``
(which process). The hub runs as ``ioc hub`` with a persistent broker session. The checks:

- InfluxDB holds, per device, exactly ``seq`` 0..n-1 in time order (nothing lost, nothing changed, in order),
  and as many points as the agent says it queued (its final stats line), with none dropped;
- an admin subscriber (a persistent session too) sees each device's backlog in order and its live readings in
  order, and live batches between the replayed ones (live readings keep flowing during a replay);
- the outbox cap: the oldest readings are dropped first and the count of drops is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.agent import run_agent
from edge.config import BrokerConfig, DeviceConfig, EdgeConfig, PublishConfig
from edge.stats import EdgeStats
from ioc.stack import LocalStack, StackEndpoints, ensure_packages, influx_query
from wire.v1 import DataBatch, Reading, decode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-a", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"
REPO = Path(__file__).parents[3]
AGENT = Path(__file__).with_name("edge_counter_agent.py")
KIND = "weather"  # the kind of profile xy-md02, which the counter devices name
STATS_RE = re.compile(r" stats: (\w+=.*?) outbox=")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    ensure_packages()
    stack = LocalStack(tmp_path / "stack", gateways=[(SITE, GATEWAY)])
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def endpoints(stack: LocalStack) -> StackEndpoints:
    assert stack.endpoints is not None
    return stack.endpoints


@contextlib.contextmanager
def hub_process(ep: StackEndpoints, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ioc hub`` with a persistent session (a fixed client id), writing into the stack's database."""
    user, password = ep.credentials("hub")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_")},
        "IOC_HUB_MQTT__HOST": ep.mqtt_host,
        "IOC_HUB_MQTT__PORT": str(ep.mqtt_port),
        "IOC_HUB_MQTT__USERNAME": user,
        "IOC_HUB_MQTT__PASSWORD": password,
        "IOC_HUB_MQTT__CLIENT_ID": "hub-store-forward",
        "IOC_HUB_INFLUX__URL": ep.influx_url,
        "IOC_HUB_INFLUX__DATABASE": ep.influx_db,
        "IOC_HUB_HTTP__PORT": str(port),
    }
    log_path = tmp_path / "hub.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ioc.cli", "hub"], cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the hub did not come up:\n" + log_path.read_text()
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


@dataclass
class Recorder:
    """An admin subscriber to the gateway's data with a persistent session: it sees what the hub sees."""

    batches: list[DataBatch] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        batch = decode(bytes(message.payload), DataBatch)
        with self.lock:
            self.batches.append(batch)

    def snapshot(self) -> list[DataBatch]:
        with self.lock:
            return list(self.batches)


@contextlib.contextmanager
def recording(ep: StackEndpoints) -> Iterator[Recorder]:
    recorder = Recorder()
    user, password = ep.credentials("admin")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="store-forward-recorder", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(user, password)
    client.reconnect_delay_set(1, 1)
    client.on_message = recorder.on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect(ep.mqtt_host, ep.mqtt_port, clean_start=False, properties=props)
    client.loop_start()
    client.subscribe(f"{ROOT}/data", qos=1)
    assert subscribed.wait(10)
    try:
        yield recorder
    finally:
        client.disconnect()
        client.loop_stop()


def write_config(
    tmp_path: Path, ep: StackEndpoints, *, devices: int, interval_s: float, replay_rate: float, max_batch: int
) -> Path:
    user, _ = ep.credentials(f"{SITE}.{GATEWAY}")
    config: dict[str, Any] = {
        "site": SITE,
        "gateway": GATEWAY,
        "broker": {
            "host": ep.mqtt_host,
            "port": ep.mqtt_port,
            "username": user,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "connect_timeout_s": 2,
            "publish_timeout_s": 5,
        },
        "publish": {
            "max_batch": max_batch,
            "max_delay_ms": 200,
            "replay_rate": replay_rate,
            "drain_timeout_s": 30,
            "outbox_path": "state/outbox.sqlite",
        },
        "devices": [
            {"id": f"c-{i}", "driver": "counter", "profile": "xy-md02", "interval_s": interval_s}
            for i in range(devices)
        ],
    }
    if "self_metrics" in EdgeConfig.model_fields:
        config["self_metrics"] = {"enabled": False}  # only the counters' readings go through the outbox
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Agent:
    """One ``ioc edge run`` process of the counting agent; its log is kept in a file."""

    def __init__(self, ep: StackEndpoints, config: Path, run: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_")}
        env["IOC_EDGE_BROKER__PASSWORD"] = ep.credentials(f"{SITE}.{GATEWAY}")[1]
        env["IOC_TEST_RUN"] = str(run)
        env["PYTHONPATH"] = str(REPO)
        self.log_path = config.parent / f"agent-{run}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(AGENT), str(config)], cwd=REPO, env=env, stdout=log, stderr=log
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, pattern: str, within_s: float) -> re.Match[str]:
        deadline = time.monotonic() + within_s
        while True:
            assert self.proc.poll() is None, self.log()
            if match := re.search(pattern, self.log()):
                return match
            assert time.monotonic() < deadline, f"{pattern!r} not logged within {within_s} s:\n{self.log()[-3000:]}"
            await asyncio.sleep(0.2)

    def stop(self) -> dict[str, int]:
        """SIGTERM (a clean shutdown sends what is queued); return the final stats line's counters."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.log()[-3000:]
        lines = STATS_RE.findall(self.log())
        assert lines, self.log()[-3000:]
        return {k: int(v) for k, v in (item.split("=") for item in lines[-1].split())}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL


def stored(ep: StackEndpoints, devices: int, run: int) -> dict[str, list[tuple[int, int]]]:
    """device -> [(time ms, seq)] in InfluxDB for one agent run, in time order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for i in range(devices):
        rows = influx_query(
            ep.influx_url, ep.influx_db, f"SELECT seq FROM {KIND} WHERE device = 'c-{i}' AND run = {run}"
        )
        out[f"c-{i}"] = [(int(r["time"]), int(r["seq"])) for r in rows]
    return out


def stored_count(ep: StackEndpoints) -> int:
    rows = influx_query(ep.influx_url, ep.influx_db, f"SELECT COUNT(seq) FROM {KIND}")
    return int(rows[0]["count"]) if rows else 0


async def wait_stored(ep: StackEndpoints, count: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (have := stored_count(ep)) < count:
        assert time.monotonic() < deadline, f"InfluxDB has {have} of {count} readings after {within_s} s"
        await asyncio.sleep(0.5)


async def until(predicate: Callable[[], bool], within_s: float) -> None:
    """Poll state of another thread or process (there is no event to wait on)."""
    for _ in range(int(within_s / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {within_s} s")


def outbox_rows(path: Path) -> list[Reading]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT data FROM readings ORDER BY position").fetchall()
    return [msgspec.json.decode(bytes(r[0]), type=Reading) for r in rows]


def assert_contiguous(series: dict[str, list[tuple[int, int]]]) -> None:
    """Per device: seq 0..n-1 in time order (nothing lost, nothing reordered, nothing duplicated)."""
    for device, points in series.items():
        seqs = [seq for _, seq in points]
        assert seqs == list(range(len(seqs))), f"{device}: not seq 0..{len(seqs) - 1} in time order: {seqs[:50]}"


def lanes_in_order(batches: list[DataBatch]) -> tuple[int, int]:
    """Check that each device's replayed readings, and its live ones, arrived in order (a repeat of a reading
    already seen, which QoS 1 allows, is skipped). Returns (replayed, live) reading counts."""
    seen: set[tuple[str, int, float | int | bool | str]] = set()
    last: dict[tuple[bool, str, int], int] = {}
    counts = {True: 0, False: 0}
    for batch in batches:
        for r in batch.readings:
            key = (r.device, r.ts, r.metrics["seq"])
            if key in seen:
                continue
            seen.add(key)
            seq = int(r.metrics["seq"])
            lane = (batch.replay, r.device, int(r.metrics["run"]))  # each agent process counts from 0
            assert seq > last.get(lane, -1), f"{r.device}: seq {seq} after {last[lane]} (replay={batch.replay})"
            last[lane] = seq
            counts[batch.replay] += 1
    return counts[True], counts[False]


@pytest.mark.timeout(420)
async def test_broker_down_for_two_minutes_under_load_loses_nothing(own_stack: LocalStack, tmp_path: Path) -> None:
    ep = endpoints(own_stack)
    devices, interval_s = 20, 0.2  # 100 readings/s
    config = write_config(tmp_path, ep, devices=devices, interval_s=interval_s, replay_rate=400, max_batch=100)
    with hub_process(ep, tmp_path), recording(ep) as recorder:
        agent = Agent(ep, config, run=1)
        try:
            await agent.wait_log(r"published birth", within_s=30)
            await asyncio.sleep(5)
            assert stored_count(ep) > 0, "live readings do not reach InfluxDB"

            own_stack.stop_service("mosquitto")
            outage_started = time.time() * 1000
            await asyncio.sleep(120)
            outage_ended = time.time() * 1000
            own_stack.start_service("mosquitto")

            backlog = int((await agent.wait_log(r"replaying (\d+) readings", within_s=30))[1])
            # 100 readings/s for 120 s; a poll that comes too late is skipped, not caught up, so a machine busy
            # with other work samples fewer. What counts is checked below: every reading sampled is stored.
            assert backlog >= 100 * 60, f"only {backlog} readings held over a 2-minute outage at 100/s"
            await agent.wait_log(r"replay done", within_s=backlog / 400 + 60)
            await asyncio.sleep(3)
        finally:
            counters = agent.stop() if agent.proc.poll() is None else {}
        assert counters["readings_dropped"] == 0
        await wait_stored(ep, counters["readings_queued"], within_s=60)

        series = stored(ep, devices, run=1)
        assert_contiguous(series)
        assert sum(len(points) for points in series.values()) == counters["readings_queued"] == stored_count(ep)

        batches = recorder.snapshot()
        replayed, _ = lanes_in_order(batches)
        assert replayed >= backlog - 100 * 10  # a few may have gone out live before the session was counted
        # Everything sampled while the broker was down came as a replay.
        in_outage = {
            (r.device, r.ts) for b in batches for r in b.readings if outage_started + 5000 < r.ts < outage_ended - 1000
        }
        replayed_keys = {(r.device, r.ts) for b in batches if b.replay for r in b.readings}
        assert len(in_outage) > 100 * 60
        assert in_outage <= replayed_keys
        # Live readings kept flowing during the replay: live batches arrived between the replayed ones.
        flags = [b.replay for b in batches]
        first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
        assert flags[first:last].count(False) >= 10


@pytest.mark.timeout(300)
async def test_agent_killed_during_a_replay_loses_nothing(own_stack: LocalStack, tmp_path: Path) -> None:
    ep = endpoints(own_stack)
    devices, interval_s = 10, 0.2  # 50 readings/s
    config = write_config(tmp_path, ep, devices=devices, interval_s=interval_s, replay_rate=100, max_batch=50)
    outbox = tmp_path / "state" / "outbox.sqlite"
    with hub_process(ep, tmp_path), recording(ep) as recorder:
        first = Agent(ep, config, run=1)
        try:
            await first.wait_log(r"published birth", within_s=30)
            await asyncio.sleep(2)
            own_stack.stop_service("mosquitto")
            await asyncio.sleep(20)
            own_stack.start_service("mosquitto")
            backlog = int((await first.wait_log(r"replaying (\d+) readings", within_s=30))[1])
            assert backlog >= 50 * 15
            await until(lambda: sum(len(b.readings) for b in recorder.snapshot() if b.replay) >= 200, 60)
        finally:
            first.kill()  # in the middle of the replay (about 10 s of it at 100/s)
        left = outbox_rows(outbox)  # what survived the kill, the agent being dead
        assert len(left) > 200, "the replay was over before the kill"

        second = Agent(ep, config, run=2)
        try:
            restored = int((await second.wait_log(r"replaying (\d+) readings", within_s=30))[1])
            assert restored >= len(left)
            await second.wait_log(r"replay done", within_s=restored / 100 + 60)
            await asyncio.sleep(2)
        finally:
            counters = second.stop() if second.proc.poll() is None else {}
        assert counters["readings_dropped"] == 0

        first_run = stored(ep, devices, run=1)
        await wait_stored(ep, sum(len(v) for v in first_run.values()) + counters["readings_queued"], within_s=60)
        first_run = stored(ep, devices, run=1)
        assert_contiguous(first_run)
        have = {(device, seq) for device, points in first_run.items() for _, seq in points}
        kept = {(r.device, int(r.metrics["seq"])) for r in left if r.metrics["run"] == 1}
        assert kept <= have, f"{len(kept - have)} readings that were in the outbox at the kill never arrived"
        second_run = stored(ep, devices, run=2)
        assert_contiguous(second_run)
        assert sum(len(v) for v in second_run.values()) == counters["readings_queued"]
        lanes_in_order(recorder.snapshot())


@pytest.mark.timeout(120)
async def test_a_full_outbox_drops_the_oldest_first_and_counts_each_drop(tmp_path: Path) -> None:
    """No broker at all: the outbox fills up to its byte bound; the drops are exact and in the agent's stats."""
    sys.path.insert(0, str(AGENT.parent))
    import edge_counter_agent  # noqa: PLC0415 - the test driver, registered in this process

    edge_counter_agent.register()
    devices = 10
    path = tmp_path / "outbox.sqlite"
    extra: dict[str, Any] = {"self_metrics": {"enabled": False}} if "self_metrics" in EdgeConfig.model_fields else {}
    config = EdgeConfig(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host="127.0.0.1", port=free_port(), reconnect_min_s=0.5, reconnect_max_s=1),
        publish=PublishConfig(outbox_path=path, outbox_max_bytes=64 * 1024, max_batch=100),
        devices=[
            DeviceConfig(id=f"c-{i}", driver="counter", profile="xy-md02", interval_s=0.1) for i in range(devices)
        ],
        **extra,
    )
    stats = EdgeStats()
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop, stats=stats))
    try:
        await until(lambda: stats.readings_dropped >= 500, 60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    kept = outbox_rows(path)
    assert stats.readings_sent == 0
    assert len(kept) == stats.readings_queued - stats.readings_dropped == stats.outbox_readings
    assert stats.outbox_bytes <= 64 * 1024
    by_device: dict[str, list[int]] = defaultdict(list)
    for r in kept:
        by_device[r.device].append(int(r.metrics["seq"]))
    # Each device kept its newest readings, a contiguous run up to its last; the dropped are the rest.
    firsts = []
    for device, seqs in by_device.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), device
        firsts.append(seqs[0])
    assert len(by_device) == devices
    assert sum(firsts) == stats.readings_dropped  # seq 0..first-1 of every device: exactly the drops
    # Oldest first across devices: every device lost about the same span of time (polled at the same rate).
    assert max(firsts) - min(firsts) <= 3
