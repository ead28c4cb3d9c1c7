"""The flooding gateway of tests/integration/test_captured_gateway.py, as a process of its own.

Run as a script (``python captured_gateway_flood.py`` with a JSON :class:`FloodPlan` on stdin), it publishes as
fast as the broker acknowledges (or at the plan's link speed) under a gateway's own account, and prints a
:class:`FloodResult` as JSON when done. A separate process, so that its tight loop competes with the hub for the
CPU as another machine's would compete for the broker, and not for the test process's interpreter lock (the hub
runs in the test's process). It imports only paho, msgspec and the contract, so it starts at once.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from wire.v1 import DataBatch, DeviceInfo, Reading, State, encode

#: How long connecting and the birth's PUBACK may take.
CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 5.0
#: Unacknowledged QoS 1 publishes the flooder keeps in flight: Mosquitto's Receive Maximum to clients (its
#: ``max_inflight_messages``, 20), so the flood goes exactly as fast as the broker takes it.
FLOOD_WINDOW = 20


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class FloodPlan:
    """What the flooding process does: for ``duration_s``, batches of ``readings`` readings, alternately of its own
    announced ``devices`` (stored) and of ``foreign_device`` (another gateway's: refused), as fast as the broker
    acknowledges them or at ``bytes_per_s``."""

    host: str
    port: int
    username: str
    password: str
    client_id: str
    root: str
    duration_s: float
    readings: int
    devices: list[str]
    kind: str
    foreign_device: str
    #: The stored readings' times are ``base_ts + seq * readings + i`` ms: unique per (device, time), in the past.
    base_ts: int
    #: The link's speed in payload bytes a second; 0: as fast as the broker acknowledges.
    bytes_per_s: float = 0.0


@dataclass(frozen=True)
class FloodResult:
    session: str
    #: Batches the broker acknowledged, of each sort, and their payload bytes.
    stored_batches: int
    refused_batches: int
    payload_bytes: int
    #: Readings of the acknowledged own batches: what must be in InfluxDB.
    stored_readings: int
    elapsed_s: float


def _batch(plan: FloodPlan, session: str, seq: int, own: bool) -> bytes:
    n = len(plan.devices)
    if own:
        first = plan.base_ts + seq * plan.readings
        readings = [
            Reading(plan.devices[i % n], plan.kind, first + i, {"value": float(i)}) for i in range(plan.readings)
        ]
    else:
        ts = now_ms()
        readings = [Reading(plan.foreign_device, plan.kind, ts - i, {"value": float(i)}) for i in range(plan.readings)]
    return encode(DataBatch(session=session, seq=seq, readings=readings))


def flood(plan: FloodPlan) -> FloodResult:
    session = f"flood{secrets.token_hex(6)}"
    root = plan.root
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=plan.client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(plan.username, plan.password)
    # Not held while publishing: paho calls on_publish with its own message lock held.
    window = threading.Condition()
    counts = {"acked": 0, "failed": 0}

    def on_publish(client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with window:
            counts["acked"] += 1
            counts["failed"] += bool(reason.is_failure)
            window.notify()

    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.on_publish = on_publish
    client.connect(plan.host, plan.port, keepalive=60)
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_S):
        raise SystemExit("flood: no CONNACK")
    birth = State(
        online=True,
        session=session,
        ts=now_ms(),
        devices=[DeviceInfo(d, plan.kind, "flood", 60.0) for d in plan.devices],
    )
    client.publish(f"{root}/state", encode(birth), qos=1, retain=True).wait_for_publish(PUBLISH_TIMEOUT_S)
    sent: list[tuple[paho.MQTTMessageInfo, bool]] = []
    sent_bytes = 0
    start = time.monotonic()
    deadline = start + plan.duration_s
    while time.monotonic() < deadline:
        with window:
            while len(sent) + 1 - counts["acked"] > FLOOD_WINDOW:  # +1: the birth
                window.wait(1.0)
        if plan.bytes_per_s:
            time.sleep(max(0.0, sent_bytes / plan.bytes_per_s - (time.monotonic() - start)))  # the link's pace
        own = len(sent) % 2 == 0
        payload = _batch(plan, session, len(sent) + 1, own)
        sent.append((client.publish(f"{root}/data", payload, qos=1), own))
        sent_bytes += len(payload)
    with window:
        window.wait_for(lambda: counts["acked"] == len(sent) + 1, timeout=30)
    elapsed = time.monotonic() - start
    client.disconnect()
    client.loop_stop()
    unacked = sum(not info.is_published() for info, _ in sent)
    if counts["failed"] or unacked:
        raise SystemExit(f"flood: {counts['failed']} publishes refused, {unacked} never acknowledged")
    own_batches = sum(own for _, own in sent)
    return FloodResult(
        session=session,
        stored_batches=own_batches,
        refused_batches=len(sent) - own_batches,
        payload_bytes=sent_bytes,
        stored_readings=own_batches * plan.readings,
        elapsed_s=elapsed,
    )


def main() -> None:
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=FloodPlan)
    sys.stdout.write(json.dumps(asdict(flood(plan))) + "\n")


if __name__ == "__main__":
    main()
