"""Helpers of tests/integration/test_captured_gateway.py: a captured gateway, reads of InfluxDB and of memory.

:class:`CapturedGateway` is a paho MQTT 5 client under the gateway's own broker account (what a person who opened
the street cabinet has), reading its own ``cmd`` topic as the agent does. It publishes what the test hands it,
including JSON no encoder of ours would write (:meth:`CapturedGateway.raw_data`).

The flooding gateway is captured_gateway_flood.py, a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from ops_support import Gateway, now_ms
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.mqtt.codec import (
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
from wire.v1 import Command, DataBatch, Event, EventType, MetricValue, Reading, State, decode, encode

#: How long connecting and subscribing may take.
CONNECT_TIMEOUT_S = 10.0


class CapturedGateway(Gateway):
    """A gateway's broker account in hostile hands (the operations tests' :class:`Gateway`, which it extends):
    connected and subscribed to its own ``cmd`` topic before it returns, the commands kept in :attr:`commands`."""

    def __init__(self, stack: StackEndpoints, site: str, gateway: str) -> None:
        self.site, self.gateway, self.keepalive_s = site, gateway, 60
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
        client.connect(stack.mqtt_host, stack.mqtt_port, keepalive=self.keepalive_s)
        client.loop_start()
        self.client = client
        assert connected.wait(CONNECT_TIMEOUT_S), f"{account}: no CONNACK within {CONNECT_TIMEOUT_S} s"
        client.subscribe(f"{self.root}/cmd", qos=1)
        assert subscribed.wait(CONNECT_TIMEOUT_S), f"{account}: no SUBACK within {CONNECT_TIMEOUT_S} s"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.commands.append(decode(bytes(message.payload), Command))

    def announce(self, devices: list[tuple[str, str]]) -> None:
        """A retained birth of ``devices`` as (id, kind), each polled every minute (so that no device of a test goes
        offline for silence: the hub waits 3 intervals)."""
        self.birth([(device, kind, 60.0) for device, kind in devices])

    def readings(self, *readings: Reading) -> None:
        """A data batch of ``readings`` as they are (their own times)."""
        self.seq += 1
        self.raw("data", encode(DataBatch(session=self.session, seq=self.seq, readings=list(readings))))

    def raw_data(self, readings: list[dict[str, Any]]) -> bytes:
        """A data batch of ``readings`` as plain JSON (anything the test writes, valid or not); returns it."""
        self.seq += 1
        payload = json.dumps({"session": self.session, "seq": self.seq, "readings": readings}).encode()
        self.raw("data", payload)
        return payload

    def event_at(self, device: str, kind: EventType, ts: int) -> None:
        self.raw("event", encode(Event(self.session, device, kind, ts, reason="forged")))


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
    """Open a second connection with the rights of the gateway account ``account`` on a raw socket, send one QoS 1
    PUBLISH a byte above the broker's limit (``hub.mqtt.codec.MAX_PACKET_BYTES``) and return (the CONNACK's reason
    code, what came back before the broker closed the connection). Fails if the connection is still open after 10 s.

    The connection is the stack's second account of that gateway (``StackEndpoints.second_account``: the same ACL,
    its own client id): the gateway's own account is bound to one client id, and connecting with it again would
    take over the connection it already has open (the flood's), not add one."""
    second = stack.second_account(account)
    user, password = stack.credentials(second)
    reader = PacketReader(MAX_REMAINING_LENGTH)
    with socket.create_connection((stack.mqtt_host, stack.mqtt_port), timeout=CONNECT_TIMEOUT_S) as sock:
        client_id = stack.client_id(second, f"oversize-{secrets.token_hex(4)}")
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
