"""The uplink side of commands against the real Mosquitto: the publisher subscribes to the gateway's own
``cmd`` topic on every connect, hands each payload undecoded to its handler, and publishes acks on ``cmd/ack``.

The gateway runs under its own account (whose ACL allows reading ``cmd`` and writing ``cmd/ack``); the test
plays the hub as admin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from edge_support import admin_client

from edge.config import BrokerConfig, PublishConfig
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.publisher import Publisher
from edge.stats import EdgeStats
from ioc.stack import StackEndpoints
from wire.v1 import AckStatus, Command, CommandAck, decode, encode

pytestmark = pytest.mark.integration

SITE, GATEWAY = "site-a", "gw-1"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"
TS = 1_764_331_200_000


def publisher(stack: StackEndpoints, stats: EdgeStats, handler: object) -> Publisher:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    return Publisher(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host=stack.mqtt_host, port=stack.mqtt_port, username=user, password=password),
        publish=PublishConfig(max_batch=10, max_delay_ms=50, drain_timeout_s=2),
        devices=[],
        outbox=MemoryOutbox(100, stats),
        events=EventQueue(stats),
        stats=stats,
        agent_version="test",
        on_command=handler,  # type: ignore[arg-type]
    )


async def until(predicate: Callable[[], bool], within_s: float = 15.0) -> None:
    """Poll ``predicate`` (state owned by the code under test, which has no event to wait on)."""
    for _ in range(int(within_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within_s} s")


@contextlib.asynccontextmanager
async def connected(pub: Publisher) -> AsyncIterator[Publisher]:
    async with pub:
        await until(lambda: pub.session is not None)
        yield pub


async def test_commands_reach_the_handler_undecoded_and_acks_reach_the_hub(stack: StackEndpoints) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("the handler failed")  # logged; the next command is still delivered
        await received.put(payload)

    stats = EdgeStats()
    command = Command(id="c-1", device="aq-1", action="read_now", ts=TS)
    async with admin_client(stack, "cmd") as hub, connected(publisher(stack, stats, handler)) as pub:
        await hub.subscribe(f"{ROOT}/cmd/ack", qos=1)
        # Subscribed before the birth: a command sent right after connecting is delivered.
        for payload in (b"boom", b"not json at all", encode(command)):
            await hub.publish(f"{ROOT}/cmd", payload, qos=1)
        async with asyncio.timeout(10):
            got = [await received.get() for _ in range(2)]
        assert got == [b"not json at all", encode(command)]
        assert decode(got[1], Command) == command

        ack = CommandAck(id="c-1", device="aq-1", status=AckStatus.OK, ts=TS + 5, result={"pm25": 12.5})
        assert await pub.publish_ack(ack) is True
        async with asyncio.timeout(10):
            message = await anext(aiter(hub.messages))
        assert str(message.topic) == f"{ROOT}/cmd/ack"
        assert isinstance(message.payload, bytes)
        assert decode(message.payload, CommandAck) == ack
        assert message.qos == 1
        assert (stats.commands_received, stats.acks_sent) == (3, 1)
    # After the clean shutdown there is no connection: an ack is refused, not raised, not stored.
    assert await pub.publish_ack(ack) is False
    assert stats.acks_sent == 1


async def test_an_ack_without_a_connection_is_refused(stack: StackEndpoints) -> None:
    stats = EdgeStats()
    user, _ = stack.credentials(f"{SITE}.{GATEWAY}")
    pub = Publisher(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host=stack.mqtt_host, port=stack.mqtt_port, username=user, password="wrong-password"),
        publish=PublishConfig(),
        devices=[],
        outbox=MemoryOutbox(10, stats),
        events=EventQueue(stats),
        stats=stats,
        agent_version="test",
    )
    ack = CommandAck(id="c-2", device="aq-1", status=AckStatus.ERROR, ts=TS, detail="x")
    assert await pub.publish_ack(ack) is False  # never started
    async with pub:
        await asyncio.sleep(0.5)  # the broker refuses the password: never connected
        assert pub.session is None
        assert await pub.publish_ack(ack) is False
    assert stats.acks_sent == 0


async def test_a_command_without_a_handler_is_counted_and_ignored(stack: StackEndpoints) -> None:
    stats = EdgeStats()
    async with admin_client(stack, "cmd") as hub, connected(publisher(stack, stats, None)) as pub:
        await hub.publish(f"{ROOT}/cmd", b"{}", qos=1)
        await until(lambda: stats.commands_received >= 1)
        assert pub.session is not None  # the session goes on
