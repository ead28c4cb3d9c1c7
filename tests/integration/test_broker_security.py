"""The broker against a captured gateway, on the real Mosquitto of the local stack: packets above the contract's
limit refused, client ids bound to gateway accounts, and each of the hub's three accounts limited to its ACL.

A small blocking MQTT 5 client over a plain socket (packets from :mod:`hub.mqtt.codec`) shows exact reason codes:
CONNACK 0x87 "not authorized", PUBACK 0x87 for a publish outside the ACL, SUBACK 0x87 for a refused filter
(MQTT 5 sections 3.2.2.2, 3.4.2.1, 3.9.3). It runs on the test session's stack (tests/conftest.py), whose gateway
accounts are bound to their agents' client ids as the demo, ``ioc stack up`` and the Ansible role bind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from hub.config import MqttSettings
from hub.mqtt.codec import (
    CONNACK,
    DISCONNECT,
    MAX_PACKET_BYTES,
    MAX_REMAINING_LENGTH,
    PUBACK,
    SUBACK,
    Packet,
    PacketReader,
    Publish,
    decode_connack,
    decode_suback,
    encode_connect,
    encode_publish,
    encode_subscribe,
)
from hub.mqtt.intake import IntakeQueue, MqttIntake
from hub.operations.commands import CommandPublisher
from ioc.stack import StackEndpoints

NOT_AUTHORIZED = 0x87
GW1, GW2 = "site-a.gw-1", "site-b.gw-2"
DATA1, CMD1 = "ioc/v1/site-a/gw-1/data", "ioc/v1/site-a/gw-1/cmd"


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    """One MQTT 5 connection; ``connack`` is the broker's answer (reason code 0: connected)."""

    def __init__(self, stack: StackEndpoints, account: str, client_id: str, *, clean_start: bool = True) -> None:
        self.sock = socket.create_connection((stack.mqtt_host, stack.mqtt_port), timeout=10)
        self.reader = PacketReader(MAX_REMAINING_LENGTH)
        self.pending: list[Publish | Packet] = []
        self.stashed: list[Publish] = []
        self.next_id = 1
        user, password = stack.credentials(account)
        self.sock.sendall(
            encode_connect(
                client_id,
                keepalive_s=60,
                clean_start=clean_start,
                session_expiry_s=0 if clean_start else 300,
                username=user,
                password=password,
            )
        )
        self.connack = decode_connack(self.expect(CONNACK).body)

    def close(self) -> None:
        self.sock.close()

    def read(self, timeout_s: float) -> Publish | Packet | None:
        """The next packet within ``timeout_s`` (None if none came); :class:`Closed` if the broker hung up."""
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
            except ConnectionResetError as exc:
                raise Closed from exc
            if not data:
                raise Closed
            self.pending += self.reader.feed(data)
        return self.pending.pop(0)

    def expect(self, kind: int, timeout_s: float = 10) -> Packet:
        deadline = time.monotonic() + timeout_s
        while (packet := self.read(max(0.0, deadline - time.monotonic()))) is not None:
            if isinstance(packet, Packet) and packet.type == kind:
                return packet
            if isinstance(packet, Publish):
                self.stashed.append(packet)  # for messages()
        raise AssertionError(f"no packet of type {kind} within {timeout_s} s")

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1; the PUBACK's reason code (0 when the broker leaves it out, section 3.4.2.1)."""
        self.next_id += 1
        self.sock.sendall(encode_publish(topic, payload, qos=1, packet_id=self.next_id))
        body = self.expect(PUBACK).body
        return body[2] if len(body) > 2 else 0

    def subscribe(self, *filters: str) -> tuple[int, ...]:
        self.next_id += 1
        self.sock.sendall(encode_subscribe(self.next_id, list(filters), 1))
        return decode_suback(self.expect(SUBACK).body).reason_codes

    def until_closed(self, timeout_s: float) -> list[Publish | Packet]:
        """The packets that arrive before the broker closes the connection (which must happen in time)."""
        out: list[Publish | Packet] = []
        deadline = time.monotonic() + timeout_s
        try:
            while (packet := self.read(max(0.0, deadline - time.monotonic()))) is not None:
                out.append(packet)
        except Closed:
            return out
        raise AssertionError(f"the connection is still open after {timeout_s} s (got {out})")

    def messages(self, timeout_s: float) -> list[Publish]:
        """Every PUBLISH that arrived while waiting for an acknowledgement, and those within ``timeout_s``."""
        out, self.stashed = self.stashed, []
        deadline = time.monotonic() + timeout_s
        while (packet := self.read(max(0.0, deadline - time.monotonic()))) is not None:
            if isinstance(packet, Publish):
                out.append(packet)
        return out


@pytest.fixture
def clients(stack: StackEndpoints) -> Iterator[list[RawClient]]:
    """Clients a test opens (``clients.append``) are closed after it."""
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        client.close()


def connect(
    stack: StackEndpoints, opened: list[RawClient], account: str, client_id: str | None = None, **kw: bool
) -> RawClient:
    client = RawClient(stack, account, client_id or stack.client_id(account, f"t-{secrets.token_hex(4)}"), **kw)
    opened.append(client)
    return client


def publish_of_size(topic: str, total: int, packet_id: int = 1) -> bytes:
    """A QoS 1 PUBLISH of exactly ``total`` bytes."""
    size = total - len(encode_publish(topic, b"", qos=1, packet_id=packet_id))
    packet = encode_publish(topic, b"x" * size, qos=1, packet_id=packet_id)
    while len(packet) > total:
        size -= len(packet) - total
        packet = encode_publish(topic, b"x" * size, qos=1, packet_id=packet_id)
    assert len(packet) == total
    return packet


# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.timeout(120)
def test_a_publish_above_the_contracts_packet_limit_closes_the_connection_and_reaches_nobody(
    stack: StackEndpoints, clients: list[RawClient]
) -> None:
    watcher = connect(stack, clients, "admin")
    assert watcher.subscribe(DATA1) == (1,)
    gateway = connect(stack, clients, GW1)
    assert gateway.connack.reason_code == 0
    # At the limit: accepted and delivered.
    gateway.sock.sendall(publish_of_size(DATA1, MAX_PACKET_BYTES, packet_id=7))
    assert gateway.expect(PUBACK).body[:2] == b"\x00\x07"
    (delivered,) = watcher.messages(5)
    assert len(delivered.payload) > MAX_PACKET_BYTES - 64
    # One byte more: the broker closes the connection (mosquitto.conf(5), max_packet_size) with a DISCONNECT
    # "packet too large" (MQTT 5 section 3.14.2.1), and nobody gets the message.
    # The broker decides on the fixed header, so it may hang up while the body is still being sent.
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        gateway.sock.sendall(publish_of_size(DATA1, MAX_PACKET_BYTES + 1, packet_id=8))
    assert gateway.until_closed(10) in ([], [Packet(DISCONNECT, 0, b"\x95")])  # a reset may overtake it
    assert watcher.messages(2) == []


# ------------------------------------------------------------------------------------------------ client ids


def test_a_gateway_account_connects_only_with_its_own_client_id(
    stack: StackEndpoints, clients: list[RawClient]
) -> None:
    assert connect(stack, clients, GW1, "any-other-id").connack.reason_code == NOT_AUTHORIZED
    assert connect(stack, clients, GW1).connack.reason_code == 0


def test_a_gateways_second_account_has_its_acl_and_a_client_id_of_its_own(
    stack: StackEndpoints, clients: list[RawClient]
) -> None:
    """The test session's second account on gw-2's topics (tests/conftest.py): no more than gw-2 may do, and no
    way to take gw-2's connection."""
    second = stack.second_account(GW2)
    assert connect(stack, clients, second, stack.client_id(GW2, "")).connack.reason_code == NOT_AUTHORIZED
    gateway, other = connect(stack, clients, GW2), connect(stack, clients, second)
    assert (gateway.connack.reason_code, other.connack.reason_code) == (0, 0)
    assert other.publish("ioc/v1/site-b/gw-2/data", b"{}") in (0, 0x10)
    assert other.publish(DATA1, b"{}") == NOT_AUTHORIZED
    assert other.subscribe("ioc/v1/site-b/gw-2/cmd", CMD1) == (1, NOT_AUTHORIZED)
    assert gateway.publish("ioc/v1/site-b/gw-2/data", b"{}") in (0, 0x10)  # both connections stand


@pytest.mark.timeout(60)
def test_a_gateway_cannot_knock_another_gateway_offline(stack: StackEndpoints, clients: list[RawClient]) -> None:
    victim = connect(stack, clients, GW1)
    assert victim.connack.reason_code == 0
    watcher = connect(stack, clients, "admin")
    assert watcher.subscribe("ioc/v1/site-a/gw-1/#") == (1,)
    for clean_start in (True, False):
        attacker = connect(stack, clients, GW2, stack.client_id(GW1, ""), clean_start=clean_start)
        assert attacker.connack.reason_code == NOT_AUTHORIZED
    # The victim's connection is still the one the broker serves: its publish is acknowledged and delivered.
    assert victim.publish(DATA1, b"still here") in (0, 0x10)
    assert [m.payload for m in watcher.messages(2)] == [b"still here"]


@pytest.fixture
def hub_id(stack: StackEndpoints) -> Iterator[str]:
    """A client id for a hub's persistent session, ended after the test with a clean start: the session stack is
    shared, and the session, subscribed to every gateway's data for 300 s, would otherwise keep queueing later
    tests' messages (a captured-gateway flood's: hundreds of MiB of the broker's memory)."""
    client_id = f"hub-sec-{secrets.token_hex(4)}"
    yield client_id
    ending = RawClient(stack, "hub", client_id, clean_start=True)
    assert ending.connack.reason_code == 0
    ending.close()


@pytest.mark.timeout(120)
async def test_a_gateway_cannot_knock_the_hub_offline_or_take_its_persistent_session(
    stack: StackEndpoints, clients: list[RawClient], hub_id: str
) -> None:
    user, password = stack.credentials("hub")
    settings = MqttSettings(
        host=stack.mqtt_host,
        port=stack.mqtt_port,
        username=user,
        password=password,
        client_id=hub_id,
        session_expiry_s=300,
    )
    queue = IntakeQueue(1000)
    async with MqttIntake(settings, queue) as intake:
        assert await intake.wait_subscribed(15)
        for clean_start in (True, False):
            attacker = await asyncio.to_thread(connect, stack, clients, GW2, hub_id, clean_start=clean_start)
            assert attacker.connack.reason_code == NOT_AUTHORIZED
        await asyncio.sleep(1)
        assert intake.connected
        assert intake.counters["disconnects"] == 0
    # The hub is away; its session keeps what arrives. A gateway's clean start with the hub's id would discard it.
    attacker = await asyncio.to_thread(connect, stack, clients, GW2, hub_id, clean_start=True)
    assert attacker.connack.reason_code == NOT_AUTHORIZED
    marker = f"while-away-{secrets.token_hex(4)}".encode()
    gateway = await asyncio.to_thread(connect, stack, clients, GW1)
    assert await asyncio.to_thread(gateway.publish, DATA1, marker) == 0
    async with MqttIntake(settings, queue) as intake:
        async with asyncio.timeout(15):
            while True:
                message = await queue.get()
                if message.payload == marker:
                    break
        assert message.topic == DATA1


# ------------------------------------------------------------------------------------------------ hub ACLs

READ_FILTERS = ("ioc/v1/+/+/data", "ioc/v1/+/+/state", "ioc/v1/+/+/event", "ioc/v1/+/+/cmd/ack")


@pytest.mark.parametrize("account", ["hub", "hub-observe"])
def test_the_hubs_intake_and_observer_accounts_read_and_write_nothing(
    account: str, stack: StackEndpoints, clients: list[RawClient]
) -> None:
    gateway = connect(stack, clients, GW1)
    assert gateway.subscribe(CMD1) == (1,)
    hub = connect(stack, clients, account)
    assert hub.subscribe(*READ_FILTERS) == (1, 1, 1, 1)
    assert hub.subscribe(*(f"$share/hubs/{f}" for f in READ_FILTERS)) == (1, 1, 1, 1)
    assert hub.subscribe("ioc/v1/+/+/cmd", "ioc/#", "#") == (NOT_AUTHORIZED,) * 3
    assert hub.publish(CMD1, b'{"forged": true}') == NOT_AUTHORIZED
    assert hub.publish(DATA1, b"{}") == NOT_AUTHORIZED
    assert gateway.messages(2) == []
    assert gateway.publish(DATA1, b"reading") in (0, 0x10)
    assert [m.payload for m in hub.messages(2)] == [b"reading", b"reading"]  # plain and shared subscription


def test_the_hubs_command_account_writes_cmd_and_reads_cmd_ack_only(
    stack: StackEndpoints, clients: list[RawClient]
) -> None:
    gateway = connect(stack, clients, GW1)
    assert gateway.subscribe(CMD1) == (1,)
    commands = connect(stack, clients, "hub-cmd")
    assert commands.subscribe("ioc/v1/+/+/cmd/ack") == (1,)
    assert commands.subscribe(*READ_FILTERS[:3], "ioc/v1/+/+/cmd", "#") == (NOT_AUTHORIZED,) * 5
    assert commands.publish(CMD1, b"command") == 0
    assert [m.payload for m in gateway.messages(2)] == [b"command"]
    for channel in ("data", "state", "event", "cmd/ack"):
        assert commands.publish(f"ioc/v1/site-a/gw-1/{channel}", b"{}") == NOT_AUTHORIZED, channel
    assert gateway.publish("ioc/v1/site-a/gw-1/cmd/ack", b"ack") in (0, 0x10)
    assert [m.payload for m in commands.messages(2)] == [b"ack"]


def test_a_gateway_writes_only_its_own_five_channels(stack: StackEndpoints, clients: list[RawClient]) -> None:
    gateway = connect(stack, clients, GW1)
    for channel in ("data", "state", "event", "cmd/ack", "snapshot"):
        assert gateway.publish(f"ioc/v1/site-a/gw-1/{channel}", b"{}") in (0, 0x10), channel
    others = ("ioc/v1/site-b/gw-2/data", "ioc/v1/site-b/gw-2/snapshot", "ioc/v1/site-a/gw-2/snapshot")
    for topic in (CMD1, *others, "ioc/v1/site-a/gw-1/other", "elsewhere"):
        assert gateway.publish(topic, b"{}") == NOT_AUTHORIZED, topic
    assert gateway.subscribe(CMD1, "ioc/v1/site-b/gw-2/cmd", "ioc/v1/+/+/data") == (1, NOT_AUTHORIZED, NOT_AUTHORIZED)


# ------------------------------------------------------------------------------------------------ the hub's side


def hub_settings(stack: StackEndpoints, **accounts: str) -> MqttSettings:
    """The hub's broker settings with a wrong intake password: only a connection on its own account gets in."""
    return MqttSettings(
        host=stack.mqtt_host,
        port=stack.mqtt_port,
        username="hub",
        password="wrong",
        client_id=f"hub-accounts-{secrets.token_hex(4)}",
        reconnect_max_s=1,
        **accounts,
    )


@pytest.mark.timeout(60)
async def test_the_hubs_observer_and_command_connections_log_in_with_their_own_accounts(
    stack: StackEndpoints, clients: list[RawClient]
) -> None:
    observe_user, observe_password = stack.credentials("hub-observe")
    cmd_user, cmd_password = stack.credentials("hub-cmd")
    settings = hub_settings(
        stack,
        observer_username=observe_user,
        observer_password=observe_password,
        command_username=cmd_user,
        command_password=cmd_password,
    )
    gateway = await asyncio.to_thread(connect, stack, clients, GW1)
    assert await asyncio.to_thread(gateway.subscribe, CMD1) == (1,)
    queue = IntakeQueue(100)
    async with MqttIntake(settings, queue, observer=True) as observer, CommandPublisher(settings) as commands:
        assert await observer.wait_subscribed(15)
        assert await commands.wait_connected(15)
        assert await commands.publish(CMD1, b"from the command account") == ""
        assert await asyncio.to_thread(gateway.publish, DATA1, b"observed") == 0
        message = await asyncio.wait_for(queue.get(), 10)
        assert (message.topic, message.payload) == (DATA1, b"observed")
    assert [m.payload for m in await asyncio.to_thread(gateway.messages, 2)] == [b"from the command account"]
    # The intake itself, on the wrong password, never gets in.
    async with MqttIntake(settings, IntakeQueue(10)) as intake:
        assert not await intake.wait_subscribed(3)
