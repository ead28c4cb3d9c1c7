"""``edge_replay``: how fast the edge agent replays a backlog from its disk outbox with the rate limit lifted.

The target: a 10-minute backlog at 1,000 readings/s (600,000 readings) replayed at >= 20,000 readings/s.
Set-up, shared by the runs: one :class:`~ioc.stack.LocalStack` (its Mosquitto; InfluxDB idles) with the
gateway account ``site-a.gw-1``, and a subscriber (admin account, paho in a thread) counting every reading the
broker delivers on the gateway's data topic.

Each run writes a fresh SQLite outbox of ``readings`` readings (50 devices, two float metrics each, one
sampling instant per millisecond: 10 minutes at 1,000/s) with :class:`edge.outbox_store.OutboxStore`, as an
agent killed during an outage leaves it (not timed). Then, **timed**: the agent's own uplink starts on it as
after a restart (:class:`edge.outbox_sqlite.SqliteOutbox` opened on the file: restore, then
:class:`edge.publisher.Publisher` with ``replay_rate: 0``, default batching: connect, birth, peek, publish
QoS 1, wait for the PUBACK, commit, with ``synchronous=FULL``) until the outbox is empty, so every reading was
acknowledged by the broker and deleted from disk. The run **fails** unless the subscriber then counts at
least every reading (QoS 1 may repeat one; the repeats are reported) and the outbox is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Final

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.errors import BenchmarkError
from benchmarks.results import BenchmarkResult, RunSample, format_table
from edge.config import BrokerConfig, PublishConfig
from edge.events import EventQueue
from edge.outbox_sqlite import SqliteOutbox
from edge.outbox_store import OutboxStore
from edge.publisher import Publisher
from edge.stats import EdgeStats
from ioc.stack import LocalStack, StackEndpoints, StackError
from wire.v1 import Channel, Reading, topic

log = logging.getLogger(__name__)

NAME: Final = "edge_replay"
SITE: Final = "site-a"
GATEWAY: Final = "gw-1"
DEFAULT_READINGS: Final = 600_000
QUICK_READINGS: Final = 60_000
DEVICES: Final = 50
#: 2026-01-01T00:00:00Z: the backlog's first sampling instant.
FIRST_TS_MS: Final = 1_767_225_600_000
#: Rows per transaction while filling the outbox (not timed).
FILL_CHUNK: Final = 20_000
TARGET_READINGS_PER_S: Final = 20_000
#: A run that has not drained after this long has failed.
RUN_TIMEOUT_S: Final = 600.0
#: How long the subscriber may lag behind the last PUBACK.
DELIVERY_WAIT_S: Final = 30.0


class ReadingCounter:
    """Counts the readings the broker delivers on the gateway's data topic (one ``"device":`` per reading)."""

    def __init__(self, ep: StackEndpoints) -> None:
        user, password = ep.credentials("admin")
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-replay-counter-{time.time_ns()}")
        self._client.username_pw_set(user, password)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._ep = ep
        self._lock = threading.Lock()
        self.readings = 0
        self.messages = 0

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        n = message.payload.count(b'"device":')
        with self._lock:
            self.readings += n
            self.messages += 1

    def reset(self) -> None:
        with self._lock:
            self.readings = self.messages = 0

    def __enter__(self) -> ReadingCounter:
        self._client.connect(self._ep.mqtt_host, self._ep.mqtt_port)
        self._client.loop_start()
        self._client.subscribe(topic(SITE, GATEWAY, Channel.DATA), qos=1)
        if not self._subscribed.wait(10):
            raise BenchmarkError("the counting subscriber was not subscribed within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def fill_outbox(path: Path, readings: int, seed: int) -> int:
    """Write the backlog; returns the bytes stored."""
    rng = random.Random(seed)
    encoder = msgspec.json.Encoder()
    store = OutboxStore(path, max_bytes=1 << 40, max_readings=10_000_000)
    try:
        for start in range(0, readings, FILL_CHUNK):
            payloads = [
                encoder.encode(
                    Reading(
                        device=f"weather-{i % DEVICES:02d}",
                        kind="weather",
                        ts=FIRST_TS_MS + i,
                        metrics={
                            "temperature_c": round(rng.uniform(18, 40), 1),
                            "humidity_pct": round(rng.uniform(20, 95), 1),
                        },
                    )
                )
                for i in range(start, min(start + FILL_CHUNK, readings))
            ]
            store.append(payloads)
        if store.levels.readings != readings:
            raise BenchmarkError(f"the outbox holds {store.levels.readings} readings, not {readings}")
        return store.levels.bytes
    finally:
        store.close()


async def replay(ep: StackEndpoints, path: Path, stats: EdgeStats, max_batch: int) -> float:
    """Open the outbox and replay it to the broker; return the seconds until it was empty."""
    user, password = ep.credentials(f"{SITE}.{GATEWAY}")
    publish = PublishConfig(
        max_batch=max_batch,
        replay_rate=0,
        outbox_path=path,
        outbox_max=10_000_000,
        outbox_max_bytes=1 << 40,
    )
    broker = BrokerConfig(host=ep.mqtt_host, port=ep.mqtt_port, username=user, password=password)
    outbox = SqliteOutbox(path, max_bytes=publish.outbox_max_bytes, max_readings=publish.outbox_max, stats=stats)
    events = EventQueue(stats)
    started = time.perf_counter()
    async with (
        outbox,
        Publisher(
            site=SITE,
            gateway=GATEWAY,
            broker=broker,
            publish=publish,
            devices=[],
            outbox=outbox,
            events=events,
            stats=stats,
            agent_version="bench",
        ),
    ):
        deadline = started + RUN_TIMEOUT_S
        while len(outbox):
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"{len(outbox)} readings still queued after {RUN_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.01)
        return time.perf_counter() - started  # the clean shutdown (death, DISCONNECT) is not timed


def _one_run(ep: StackEndpoints, counter: ReadingCounter, run_dir: Path, readings: int, max_batch: int) -> RunSample:
    run_dir.mkdir(parents=True)
    path = run_dir / "outbox.sqlite"
    fill_started = time.perf_counter()
    stored_bytes = fill_outbox(path, readings, seed=len(str(run_dir)))
    fill_s = time.perf_counter() - fill_started
    counter.reset()
    stats = EdgeStats()
    seconds = asyncio.run(replay(ep, path, stats, max_batch))
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while counter.readings < readings and time.monotonic() < deadline:
        time.sleep(0.05)
    if stats.readings_sent < readings or stats.readings_replayed < readings:
        raise BenchmarkError(f"the publisher sent {stats.readings_sent} of {readings} readings")
    if counter.readings < readings:
        raise BenchmarkError(f"the broker delivered {counter.readings} of {readings} readings")
    if stats.outbox_readings != 0:
        raise BenchmarkError(f"{stats.outbox_readings} readings left in the outbox")
    log.info(
        "edge_replay: %d readings in %.2f s = %.0f readings/s (%d batches; fill %.1f s)",
        readings,
        seconds,
        readings / seconds,
        stats.batches_sent,
        fill_s,
    )
    return RunSample(
        metrics={"readings_per_s": readings / seconds, "seconds": seconds},
        counts={
            "readings": readings,
            "delivered": counter.readings,
            "repeats": counter.readings - readings,
            "batches": stats.batches_sent,
            "stored_bytes": stored_bytes,
        },
    )


def run_edge_replay(
    *, runs: int, work_dir: Path, readings: int | None = None, max_batch: int | None = None, quick: bool = False
) -> BenchmarkResult:
    """Run the replay benchmark ``runs`` times on one stack (``readings``: by default 600,000, or 60,000 with
    ``quick``). Start it from the main thread (the stack's processes die with the thread that started them). A
    failed run stops it (``result.error``)."""
    if readings is None:
        readings = QUICK_READINGS if quick else DEFAULT_READINGS
    batch = max_batch if max_batch is not None else PublishConfig().max_batch
    result = BenchmarkResult(
        NAME,
        {"readings": readings, "devices": DEVICES, "max_batch": batch, "target_readings_per_s": TARGET_READINGS_PER_S},
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="edge-replay-") as scratch:
        base = Path(scratch)
        with LocalStack(base / "stack", gateways=[(SITE, GATEWAY)]) as ep, ReadingCounter(ep) as counter:
            for run in range(1, runs + 1):
                try:
                    result.samples.append(_one_run(ep, counter, base / f"run{run}", readings, batch))
                except (BenchmarkError, StackError) as exc:
                    result.error = f"run {run}: {exc}"
                    log.error("edge_replay %s", result.error)  # noqa: TRY400 - the message is the report
                    break
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_replay", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--readings", type=int, default=DEFAULT_READINGS)
    parser.add_argument("--max-batch", type=int, default=None, help="readings per data message (default: the agent's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / ".ioc" / "bench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    result = run_edge_replay(runs=args.runs, work_dir=args.out, readings=args.readings, max_batch=args.max_batch)
    sys.stdout.write(format_table([result]) + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
