"""The broker's memory for one session is bounded in bytes: the real Mosquitto with small session limits
(:class:`ioc.stack.mosquitto.SessionLimits`), the hub's persistent MQTT 5 session subscribed at QoS 1, and a
gateway publishing ``FLOOD_MESSAGES`` of ``MESSAGE_BYTES`` (16 times what the session may hold).

What Mosquitto 2.0.11 does (src/database.c: db__ready_for_flight, db__ready_for_queue, db__message_write_queued_out),
shown here exactly:

- an offline session keeps the first messages while it holds less than ``max_queued_bytes`` of payload;
- a connected session keeps them while it holds less than ``max_inflight_bytes + max_queued_bytes``, and is sent
  what it keeps as far as its Receive Maximum allows (queued messages are moved in flight by count, not bytes);
- without ``max_inflight_bytes`` a connected session with the hub's Receive Maximum has no byte bound at all:
  every message goes in flight;
- either way the gateway's PUBACK says success for every message, dropped or not, so the agent deletes them all
  from its outbox (what the broker drops is lost), and the broker logs the drop once.

Each test starts a broker of its own (~1 s), so that the broker's resident set shows that one session alone.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from hub.mqtt.codec import (
    CONNACK,
    MAX_REMAINING_LENGTH,
    PUBACK,
    SUBACK,
    ConnAck,
    Packet,
    PacketReader,
    Publish,
    decode_connack,
    decode_suback,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_publish,
    encode_subscribe,
)
from ioc.stack.mosquitto import (
    Account,
    SessionLimits,
    build_accounts,
    gateway_client_id,
    start,
    wait_ready,
    write_config,
)
from ioc.stack.process import ChildProcess
from ioc.stack.runner import HOST, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MESSAGE_BYTES = 64 * 1024
#: Small bounds, so that the flood is 16 times what the session may hold and quick to send.
QUEUED_BYTES = 4 * 1024**2
INFLIGHT_BYTES = 1024**2
#: Far above what the bytes allow, so that the byte bounds are what hold.
QUEUED_MESSAGES = 100_000
FLOOD_MESSAGES = 1024
LIMITS = SessionLimits(
    max_queued_messages=QUEUED_MESSAGES, max_queued_bytes=QUEUED_BYTES, max_inflight_bytes=INFLIGHT_BYTES
)
#: The broker's resident set may grow by what the session keeps (payloads), Mosquitto's ~0.4 KiB per message and
#: the allocator's slack; for a connected session also a second copy of each payload, in the PUBLISH packets of
#: what it sends (the control below: 124 MiB for the 64 MiB flood). Measured: 4.2 MiB offline, 6.5 connected.
SLACK_BYTES = 4 * 1024**2
GATEWAY = ("site-a", "gw-1")
DATA = "ioc/v1/site-a/gw-1/data"
DROP_NOTICE = "Outgoing messages are being dropped for client {}."
#: The hub's Receive Maximum (hub/mqtt/intake.py announces the most MQTT 5 allows). Without one in the CONNECT,
#: Mosquitto 2.0.11 keeps its own max_inflight_messages (20) for the client.
HUB_RECEIVE_MAXIMUM = 65535
IO_TIMEOUT_S = 10.0


class Client:
    """One blocking MQTT 5 connection over a plain socket (packets from :mod:`hub.mqtt.codec`), announcing the
    hub's Receive Maximum (test_broker_security.py's ``RawClient`` announces none); every read has a timeout.
    ``connack`` is the broker's answer."""

    def __init__(self, port: int, account: Account, client_id: str, *, persistent: bool) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT_S)
        self.reader = PacketReader(MAX_REMAINING_LENGTH)
        self.pending: list[Publish | Packet] = []
        self.next_id = 0
        self.sock.sendall(
            encode_connect(
                client_id,
                keepalive_s=60,
                clean_start=not persistent,
                session_expiry_s=300 if persistent else 0,
                receive_maximum=HUB_RECEIVE_MAXIMUM,
                username=account.username,
                password=account.password,
            )
        )
        self.connack: ConnAck = decode_connack(self.expect(CONNACK).body)

    def close(self) -> None:
        self.sock.close()

    def read(self, timeout_s: float) -> Publish | Packet | None:
        """The next packet within ``timeout_s``, or None."""
        deadline = time.monotonic() + timeout_s
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    def expect(self, kind: int) -> Packet:
        """The next packet of type ``kind`` (other packets are not expected here)."""
        packet = self.read(IO_TIMEOUT_S)
        assert isinstance(packet, Packet), f"expected packet type {kind}, got {packet!r}"
        assert packet.type == kind, f"expected packet type {kind}, got {packet.type}"
        return packet

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1, waiting for the PUBACK: its reason code (0 when the broker leaves it out, MQTT 5 3.4.2.1)."""
        self.next_id = self.next_id % 0xFFFF + 1
        self.sock.sendall(encode_publish(topic, payload, qos=1, packet_id=self.next_id))
        body = self.expect(PUBACK).body
        return body[2] if len(body) > 2 else 0

    def subscribe(self, topic_filter: str) -> tuple[int, ...]:
        self.next_id = self.next_id % 0xFFFF + 1
        self.sock.sendall(encode_subscribe(self.next_id, [topic_filter], 1))
        return decode_suback(self.expect(SUBACK).body).reason_codes

    def messages(self, quiet_s: float, *, ack: bool) -> list[Publish]:
        """Every PUBLISH until ``quiet_s`` passes without one; each acknowledged if ``ack``."""
        out: list[Publish] = []
        while (packet := self.read(quiet_s)) is not None:
            assert isinstance(packet, Publish), f"unexpected packet {packet!r}"
            if ack:
                self.sock.sendall(encode_puback(packet.packet_id))
            out.append(packet)
        return out


@dataclass(frozen=True)
class Broker:
    port: int
    accounts: dict[str, Account]
    proc: ChildProcess
    log: Path

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def hub(self, client_id: str) -> Client:
        """The hub's account with the hub's persistent session (clean start off, session expiry 300 s)."""
        return Client(self.port, self.accounts["hub"], client_id, persistent=True)


@contextmanager
def broker(state_dir: Path, limits: SessionLimits) -> Iterator[Broker]:
    """Mosquitto as the local stack writes its config (accounts hub, admin and site-a.gw-1), with ``limits``."""
    accounts = build_accounts([GATEWAY])
    (port,) = free_ports(1)
    conf = write_config(state_dir, HOST, port, accounts, limits=limits)
    proc = start(conf, state_dir / "mosquitto.log")
    try:
        admin = accounts["admin"]
        wait_ready(proc, HOST, port, username=admin.username, password=admin.password, timeout=30)
        yield Broker(port, accounts, proc, state_dir / "mosquitto.log")
    finally:
        proc.stop()


class PeakRss:
    """The broker's resident set sampled every 10 ms in a thread, while in the ``with`` block: its peak."""

    def __init__(self, target: Broker) -> None:
        self.target = target
        self.before = target.rss()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="broker-rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.target.rss())

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.target.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.before


def hub_session(target: Broker, client_id: str) -> Client:
    """The hub's persistent session, subscribed to every gateway's data at QoS 1."""
    hub = target.hub(client_id)
    assert (hub.connack.reason_code, hub.subscribe("ioc/v1/+/+/data")) == (0, (1,))
    return hub


def flood(target: Broker) -> list[int]:
    """``FLOOD_MESSAGES`` QoS 1 publishes as the gateway, each waiting for its PUBACK: their reason codes. Each
    payload starts with its number."""
    gateway = Client(target.port, target.accounts["site-a.gw-1"], gateway_client_id(*GATEWAY), persistent=False)
    try:
        assert gateway.connack.reason_code == 0
        filler = b"x" * (MESSAGE_BYTES - 4)
        return [gateway.publish(DATA, n.to_bytes(4, "big") + filler) for n in range(FLOOD_MESSAGES)]
    finally:
        gateway.close()


def numbers(messages: list[Publish]) -> list[int]:
    assert {len(m.payload) for m in messages} <= {MESSAGE_BYTES}
    return [int.from_bytes(m.payload[:4], "big") for m in messages]


def test_an_offline_hubs_session_keeps_at_most_max_queued_bytes_and_the_rest_is_lost(tmp_path: Path) -> None:
    hub_id = f"ioc-hub-{secrets.token_hex(4)}"
    with broker(tmp_path, LIMITS) as target:
        hub = hub_session(target, hub_id)
        hub.sock.sendall(encode_disconnect(0))  # the hub stops; its session stays (clean start off, expiry 300 s)
        hub.close()
        with PeakRss(target) as rss:
            acks = flood(target)
        back = target.hub(hub_id)
        assert (back.connack.reason_code, back.connack.session_present) == (0, True)
        kept = numbers(back.messages(1.0, ack=True))
        back.close()
        log = target.log.read_text(encoding="utf-8")

    # Every publish was acknowledged as a success: the agent deleted all of them from its outbox.
    assert acks == [0] * FLOOD_MESSAGES
    # The first 4 MiB stayed, in order; the other 60 MiB were dropped for the hub (Mosquitto queues while the
    # session holds less than max_queued_bytes, so 64 x 64 KiB exactly).
    assert kept == list(range(QUEUED_BYTES // MESSAGE_BYTES))
    assert log.count(DROP_NOTICE.format(hub_id)) == 1
    assert rss.growth <= QUEUED_BYTES + SLACK_BYTES, f"{rss.growth / 2**20:.1f} MiB for a 64 MiB flood"


def test_a_connected_hub_that_does_not_acknowledge_holds_at_most_in_flight_plus_queued_bytes(tmp_path: Path) -> None:
    """The hub's case in a flood: connected, Receive Maximum 65,535, slower than the gateway (here: never acks)."""
    hub_id = f"ioc-hub-{secrets.token_hex(4)}"
    with broker(tmp_path, LIMITS) as target:
        hub = hub_session(target, hub_id)
        with PeakRss(target) as rss:
            acks = flood(target)
        live = numbers(hub.messages(1.0, ack=False))
        hub.close()
        back = target.hub(hub_id)
        assert (back.connack.reason_code, back.connack.session_present) == (0, True)
        redelivered = back.messages(1.0, ack=True)
        back.close()
        log = target.log.read_text(encoding="utf-8")

    assert acks == [0] * FLOOD_MESSAGES
    # Kept while the session held less than max_inflight_bytes + max_queued_bytes: 80 x 64 KiB. Mosquitto 2.0.11
    # sends what it keeps as far as the Receive Maximum allows (db__message_write_queued_out moves queued messages
    # in flight by count), so the hub got most of them live; on reconnect the unacknowledged ones come again
    # (DUP set), then the rest of the queue, in order.
    held = (INFLIGHT_BYTES + QUEUED_BYTES) // MESSAGE_BYTES
    assert live == list(range(len(live)))
    assert INFLIGHT_BYTES // MESSAGE_BYTES <= len(live) <= held
    assert numbers(redelivered) == list(range(held))
    assert [m.dup for m in redelivered] == [True] * len(live) + [False] * (held - len(live))
    assert log.count(DROP_NOTICE.format(hub_id)) == 1
    assert rss.growth <= 2 * (INFLIGHT_BYTES + QUEUED_BYTES) + SLACK_BYTES, f"{rss.growth / 2**20:.1f} MiB"


def test_without_max_inflight_bytes_a_connected_hubs_session_has_no_byte_bound(tmp_path: Path) -> None:
    """Why the stack and the role set max_inflight_bytes: with Mosquitto's default (0) nothing sent to a connected
    client is counted in bytes, and the hub's Receive Maximum lets the whole flood be in flight at once (and the
    broker's resident set grows by twice the flood: each payload and its PUBLISH packet)."""
    hub_id = f"ioc-hub-{secrets.token_hex(4)}"
    unbounded_in_flight = SessionLimits(
        max_queued_messages=QUEUED_MESSAGES, max_queued_bytes=QUEUED_BYTES, max_inflight_bytes=0
    )
    with broker(tmp_path, unbounded_in_flight) as target:
        hub = hub_session(target, hub_id)
        with PeakRss(target) as rss:
            acks = flood(target)
        in_flight = numbers(hub.messages(1.0, ack=False))
        hub.close()

    assert acks == [0] * FLOOD_MESSAGES
    assert in_flight == list(range(FLOOD_MESSAGES))
    assert rss.growth >= FLOOD_MESSAGES * MESSAGE_BYTES, f"{rss.growth / 2**20:.1f} MiB"
