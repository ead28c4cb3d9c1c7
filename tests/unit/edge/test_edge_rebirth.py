"""The ``rebirth`` command (Sparkplug B's "Node Control/Rebirth") in the dispatcher: addressed to the gateway id
it publishes a fresh birth and acks ``ok`` with what was published; otherwise a precise ``error`` or
``unsupported`` ack. The births are recorded where the publisher would send them (the MQTT path with the real
agent: tests/integration/edge/test_edge_rebirth_mqtt.py)."""

from __future__ import annotations

import asyncio

import pytest

from edge.commands import CommandDispatcher
from edge.errors import UplinkError
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.scheduler import Scheduler
from edge.session import Session
from edge.stats import EdgeStats
from wire.v1 import REBIRTH, AckStatus, Command, CommandAck, DeviceInfo, MetricValue, State, encode

GATEWAY = "gw-1"


class Births:
    """Where the publisher's births would go: the session makes them, ``connected`` says whether it can."""

    def __init__(self) -> None:
        self.session = Session()
        self.sent: list[State] = []
        self.connected = True

    async def rebirth(self) -> str:
        if not self.connected:
            raise UplinkError("not connected to the broker; the next connect publishes a birth")
        self.sent.append(self.session.birth("test", [DeviceInfo("aq-01", "air_quality", "p", 5.0)]))
        return f"birth {self.session.births} of session {self.session.id} published (1 devices)"


class Acks:
    """Where the publisher would send the acks."""

    def __init__(self) -> None:
        self.sent: dict[str, CommandAck] = {}
        self._arrived = asyncio.Event()

    async def send(self, ack: CommandAck) -> bool:
        self.sent[ack.id] = ack
        self._arrived.set()
        return True


async def ask(dispatcher: CommandDispatcher, acks: Acks, command: Command) -> CommandAck:
    await dispatcher.handle(encode(command))
    async with asyncio.timeout(5):
        while command.id not in acks.sent:
            acks._arrived.clear()
            await acks._arrived.wait()
    return acks.sent[command.id]


def command(device: str = GATEWAY, **params: MetricValue) -> Command:
    return Command(id=f"c-{len(params)}-{device}", device=device, action=REBIRTH, ts=1_764_331_200_000, params=params)


@pytest.fixture
def scheduler() -> Scheduler:
    stats = EdgeStats()
    return Scheduler([], MemoryOutbox(1000, stats), EventQueue(stats), stats)


async def test_rebirth_publishes_a_fresh_birth_of_the_session_and_acks_what_it_published(scheduler: Scheduler) -> None:
    births = Births()
    births.session.birth("test", [])  # the connect's birth
    acks = Acks()
    async with CommandDispatcher(GATEWAY, scheduler, acks.send, rebirth=births.rebirth) as dispatcher:
        ack = await ask(dispatcher, acks, command())
        assert (ack.status, ack.device) == (AckStatus.OK, GATEWAY)
        assert ack.detail == f"birth 2 of session {births.session.id} published (1 devices)"
        assert [(b.online, b.session) for b in births.sent] == [(True, births.session.id)]

        for bad, status, detail in [
            (command("aq-01"), AckStatus.ERROR, "'rebirth' is addressed to the gateway id 'gw-1', not to a device"),
            (command(now="yes"), AckStatus.ERROR, "rebirth takes no params (got now)"),
        ]:
            ack = await ask(dispatcher, acks, bad)
            assert (ack.status, ack.detail) == (status, detail)
        assert len(births.sent) == 1

        births.connected = False
        ack = await ask(dispatcher, acks, Command(id="c-offline", device=GATEWAY, action=REBIRTH, ts=1_764_331_200_000))
        assert (ack.status, ack.detail) == (
            AckStatus.ERROR,
            "not connected to the broker; the next connect publishes a birth",
        )


async def test_an_agent_without_a_birth_publisher_answers_unsupported(scheduler: Scheduler) -> None:
    acks = Acks()
    async with CommandDispatcher(GATEWAY, scheduler, acks.send) as dispatcher:
        ack = await ask(dispatcher, acks, command())
        assert (ack.status, ack.detail) == (AckStatus.UNSUPPORTED, "this agent cannot publish a birth on request")
