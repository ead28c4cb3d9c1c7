"""Helpers of tests/integration/test_captured_gateway.py: a captured gateway, reads of InfluxDB, and the flood.

:class:`CapturedGateway` is a paho MQTT 5 client under the gateway's own broker account (what a person who opened
the street cabinet has), reading its own ``cmd`` topic as the agent does. It publishes what the test hands it,
including JSON no encoder of ours would write (:meth:`CapturedGateway.raw`).

Run as a script (``python captured_gateway_support.py`` with a JSON :class:`FloodPlan` on stdin), this module is
the flooding gateway: a separate process, so that its tight publishing loop competes with the hub for the CPU as
another machine's would compete for the broker, and not for the test process's interpreter lock (the hub runs in
the test's process). It prints a :class:`FloodResult` as JSON when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.mqttcodec import (
    CONNACK,
    MAX_PACKET_BYTES,
    MAX_REMAINING_LENGTH,
    Packet,
    PacketReader,
    decode_connack,
    encode_connect,
    encode_publish,
)
from ioc.stack import StackEndpoints, influx_query
from wire.v1 import Command, DataBatch, DeviceInfo, Event, EventType, MetricValue, Reading, State, decode, encode

#: How long one publish may wait for the broker's PUBACK.
PUBLISH_TIMEOUT_S = 5.0
#: How long connecting and subscribing may take.
CONNECT_TIMEOUT_S = 10.0
#: Unacknowledged QoS 1 publishes the flooder keeps in flight: Mosquitto's Receive Maximum to clients (its
#: ``max_inflight_messages``, 20), so the flood goes exactly as fast as the broker takes it.
FLOOD_WINDOW = 20


def now_ms() -> int:
    return int(time.time() * 1000)


class CapturedGateway:
    """A gateway's broker account in hostile hands: MQTT 5, QoS 1, its own ``cmd`` topic read into
    :attr:`commands`."""

    def __init__(self, stack: StackEndpoints, site: str, gateway: str) -> None:
        self.site, self.gateway = site, gateway
        self.root = f"ioc/v1/{site}/{gateway}"
        self.session = f"s{secrets.token_hex(6)}"
        self.seq = 0
        self.commands: list[Command] = []
        account = f"{site}.{gateway}"
        user, password = stack.credentials(account)
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=stack.client_id(account, f"captured-{secrets.token_hex(4)}"),
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(user, password)
        will = State(online=False, session=self.session, reason="connection lost")
        client.will_set(f"{self.root}/state", encode(will), qos=1, retain=True)
        connected, subscribed = threading.Event(), threading.Event()
        client.on_connect = lambda *args: connected.set()
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = self._on_message
        client.connect(stack.mqtt_host, stack.mqtt_port, keepalive=60)
        client.loop_start()
        self.client = client
        assert connected.wait(CONNECT_TIMEOUT_S), f"{account}: no CONNACK within {CONNECT_TIMEOUT_S} s"
        client.subscribe(f"{self.root}/cmd", qos=1)
        assert subscribed.wait(CONNECT_TIMEOUT_S), f"{account}: no SUBACK within {CONNECT_TIMEOUT_S} s"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.commands.append(decode(bytes(message.payload), Command))

    def publish(self, channel: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1, returning once the broker acknowledged it."""
        info = self.client.publish(f"{self.root}/{channel}", payload, qos=1, retain=retain)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        assert info.is_published(), f"{self.root}/{channel}: not acknowledged within {PUBLISH_TIMEOUT_S} s"

    def birth(self, devices: list[tuple[str, str]], *, ts: int | None = None) -> None:
        state = State(
            online=True,
            session=self.session,
            ts=now_ms() if ts is None else ts,
            devices=[DeviceInfo(device, kind, "test-profile", 1.0) for device, kind in devices],
        )
        self.publish("state", encode(state), retain=True)

    def data(self, *readings: Reading) -> None:
        self.seq += 1
        self.publish("data", encode(DataBatch(session=self.session, seq=self.seq, readings=list(readings))))

    def raw(self, readings: list[dict[str, Any]]) -> bytes:
        """A data batch of ``readings`` as plain JSON (anything the test writes, valid or not); returns it."""
        self.seq += 1
        payload = json.dumps({"session": self.session, "seq": self.seq, "readings": readings}).encode()
        self.publish("data", payload)
        return payload

    def event(self, device: str, kind: EventType, *, ts: int | None = None) -> None:
        event = Event(self.session, device, kind, now_ms() if ts is None else ts, reason="forged")
        self.publish("event", encode(event))

    def close(self) -> None:
        """Go away without a DISCONNECT (the test's autouse fixture clears the retained will)."""
        with contextlib.suppress(Exception):
            self.client.loop_stop()
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def reading(device: str, kind: str, metrics: dict[str, MetricValue], ts: int | None = None) -> Reading:
    return Reading(device, kind, now_ms() if ts is None else ts, metrics)


async def query(stack: StackEndpoints, database: str, q: str) -> list[dict[str, Any]]:
    """The rows of ``q`` (timestamps in ms), off the event loop the hub runs in."""
    return await asyncio.to_thread(influx_query, stack.influx_url, database, q)


async def measurements(stack: StackEndpoints, database: str) -> set[str]:
    return {row["name"] for row in await query(stack, database, "SHOW MEASUREMENTS")}


def rss_bytes() -> int:
    """This process's resident set (the hub runs in it), from /proc/self/status (proc(5), VmRSS in kB)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def send_oversized_publish(stack: StackEndpoints, account: str, topic: str) -> tuple[int, list[Packet]]:
    """Connect as ``account`` on a raw socket, send one QoS 1 PUBLISH a byte above the broker's limit
    (``hub.mqttcodec.MAX_PACKET_BYTES``) and return (the CONNACK's reason code, what came back before the broker
    closed the connection). Fails if the connection is still open after 10 s."""
    user, password = stack.credentials(account)
    reader = PacketReader(MAX_REMAINING_LENGTH)
    with socket.create_connection((stack.mqtt_host, stack.mqtt_port), timeout=CONNECT_TIMEOUT_S) as sock:
        client_id = stack.client_id(account, f"oversize-{secrets.token_hex(4)}")
        sock.sendall(encode_connect(client_id, keepalive_s=60, clean_start=True, username=user, password=password))
        got: list[Any] = []
        while not got:
            data = sock.recv(65536)
            assert data, "the broker closed the connection before its CONNACK"
            got += reader.feed(data)
        connack = got.pop(0)
        assert isinstance(connack, Packet)
        assert connack.type == CONNACK
        reason = decode_connack(connack.body).reason_code
        size = MAX_PACKET_BYTES + 1 - len(encode_publish(topic, b"", qos=1, packet_id=1)) - 2
        packet = encode_publish(topic, b"x" * size, qos=1, packet_id=1)
        while len(packet) != MAX_PACKET_BYTES + 1:  # the Remaining Length's own size moves with the payload's
            size += MAX_PACKET_BYTES + 1 - len(packet)
            packet = encode_publish(topic, b"x" * size, qos=1, packet_id=1)
        # The broker decides on the fixed header, so it may hang up while the body is still being sent.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(packet)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return reason, got
            except TimeoutError:
                break
            if not data:
                return reason, got
            got += reader.feed(data)
    raise AssertionError(f"the broker kept the connection open after an oversized PUBLISH (got {got})")


# ------------------------------------------------------------------------------------------------ the flood


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
        devices=[DeviceInfo(d, plan.kind, "flood", 1.0) for d in plan.devices],
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
