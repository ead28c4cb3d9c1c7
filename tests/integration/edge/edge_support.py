"""What the edge integration tests share: an admin client of the test broker, a recorder of the gateway's
messages decoded with the contract (the hub's side of the wire, without a hub; the camera tests' too), and for the
replay tests an outbox left by an earlier run, a publisher against the test broker and a recorder of its data
batches."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import msgspec

from edge.config import BrokerConfig, PublishConfig
from edge.events import EventQueue
from edge.outbox_sqlite import SqliteOutbox
from edge.outbox_store import OutboxStore
from edge.publisher import Publisher
from edge.stats import EdgeStats
from ioc.stack import StackEndpoints
from wire.v1 import ContractError, DataBatch, Reading, State, decode, decode_for, parse_topic

T = TypeVar("T")
Log = TypeVar("Log", bound="MessageLog")

WAIT_S = 20.0


def admin_client(stack: StackEndpoints, name: str) -> aiomqtt.Client:
    """An MQTT 5 client of the broker's admin account (reads and writes every topic), named for the broker's log."""
    user, password = stack.credentials("admin")
    return aiomqtt.Client(
        stack.mqtt_host,
        stack.mqtt_port,
        username=user,
        password=password,
        identifier=f"test-edge-{name}-{time.monotonic_ns()}",
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=10,
    )


@dataclass(frozen=True)
class Received:
    """One message: its channel (``invalid`` when the contract refused it, with the error as payload)."""

    channel: str
    payload: Any
    retained: bool
    at: float


class MessageLog:
    """Keeps every message ``client`` receives, decoded with the contract; :meth:`until` waits on it."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[Received] = []
        self._changed = asyncio.Event()

    async def collect(self) -> None:
        async for message in self.client.messages:
            channel = parse_topic(str(message.topic)).channel
            assert isinstance(message.payload, bytes)
            try:
                payload: Any = decode_for(channel, message.payload)
            except ContractError as exc:
                name, payload = "invalid", f"{message.topic}: {exc}"
            else:
                name = channel.value
            self.messages.append(Received(name, payload, bool(message.retain), time.monotonic()))
            self._changed.set()

    async def until(self, predicate: Callable[[], Any], within_s: float = WAIT_S) -> Any:
        """Until ``predicate()`` is truthy; returns its value."""
        async with asyncio.timeout(within_s):
            while not (result := predicate()):
                self._changed.clear()
                await self._changed.wait()
            return result


@contextlib.asynccontextmanager
async def recording(
    stack: StackEndpoints, name: str, topics: Iterable[str], log: Callable[[aiomqtt.Client], Log]
) -> AsyncIterator[Log]:
    """An admin client named ``name`` subscribed to ``topics`` (QoS 1), whose messages ``log(client)`` (a
    :class:`MessageLog`) collects until the block ends; yields the log."""
    async with admin_client(stack, name) as client:
        found = log(client)
        for topic in topics:
            await client.subscribe(topic, qos=1)
        collector = asyncio.create_task(found.collect())
        try:
            yield found
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector


async def retained_state(stack: StackEndpoints, root: str) -> State:
    """What a newcomer sees on ``{root}/state``: the retained message."""
    async with admin_client(stack, "retained") as client:
        await client.subscribe(f"{root}/state", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                return decode(message.payload, State)
    raise AssertionError("no retained state")


def left_by_an_earlier_run(path: Path, readings: Iterable[Reading]) -> None:
    """The outbox at ``path`` holding ``readings``, as an agent that stopped before sending them leaves it."""
    store = OutboxStore(path, max_bytes=1 << 30, max_readings=10**6)
    encode = msgspec.json.Encoder().encode
    store.append([encode(r) for r in readings])
    store.close()


def gateway_publisher(
    stack: StackEndpoints,
    site: str,
    gateway: str,
    outbox: SqliteOutbox,
    stats: EdgeStats,
    publish: PublishConfig,
    **broker: Any,
) -> Publisher:
    """The agent's publisher alone (no devices) under the gateway's own account, sending what ``outbox`` holds."""
    user, password = stack.credentials(f"{site}.{gateway}")
    return Publisher(
        site=site,
        gateway=gateway,
        broker=BrokerConfig(host=stack.mqtt_host, port=stack.mqtt_port, username=user, password=password, **broker),
        publish=publish,
        devices=[],
        outbox=outbox,
        events=EventQueue(stats),
        stats=stats,
        agent_version="test",
    )


@contextlib.asynccontextmanager
async def recording_data(
    stack: StackEndpoints, name: str, root: str, keep: Callable[[bytes, DataBatch], T]
) -> AsyncIterator[list[T]]:
    """Every data batch on ``{root}/data`` as the admin sees it, kept as ``keep(payload, batch)`` in the list
    yielded, until the block ends."""
    received: list[T] = []
    async with admin_client(stack, name) as admin:
        await admin.subscribe(f"{root}/data", qos=1)

        async def record() -> None:
            async for message in admin.messages:
                assert isinstance(message.payload, bytes)
                received.append(keep(message.payload, decode(message.payload, DataBatch)))

        recorder = asyncio.create_task(record())
        try:
            yield received
        finally:
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
