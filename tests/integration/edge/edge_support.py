"""What the edge integration tests share: an admin client of the test broker, and a recorder of the gateway's
messages decoded with the contract (the hub's side of the wire, without a hub)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from ioc.stack import StackEndpoints
from wire.v1 import ContractError, State, decode, decode_for, parse_topic

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
