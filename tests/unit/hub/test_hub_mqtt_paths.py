"""The hub's MQTT client against a scripted broker (tests/unit/hub/scripted_broker.py: a real socket, the broker's
side a few bytes written by hand): acks of a message delivered on an older connection are not sent, a PUBREL is
answered with PUBCOMP, the publisher's PUBACK reason codes count (a refusal is an error naming the broker's
reason), at most the broker's Receive Maximum publishes are in flight, the publisher's TLS, and the reconnect
backoff's jitter (MQTT 5.0, sections 3.3 to 3.7, 4.4, 4.9)."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from scripted_broker import (
    CONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    ScriptedBroker,
    connack,
    puback,
    publish_id,
)
from test_hub_httpclient import self_signed

from hub.config import MqttSettings
from hub.ingest import InboundMessage
from hub.mqtt.codec import encode_publish
from hub.mqtt.connection import reconnect_delay
from hub.mqtt.intake import IntakeQueue, MqttIntake
from hub.mqtt.publisher import MqttPublisher, PublishError, PublishRefused
from hub.operations.commands import CommandPublisher

TOPIC = "ioc/v1/site-a/gw-1/data"
CMD = "ioc/v1/site-a/gw-1/cmd"


def settings(port: int, client_id: str = "hub-paths-test") -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, client_id=client_id, reconnect_min_s=1, reconnect_max_s=4)


@asynccontextmanager
async def connected_publisher(broker: ScriptedBroker) -> AsyncIterator[MqttPublisher]:
    async with broker as port, MqttPublisher(settings(port), client_id="hub-paths-test-pub", account="command") as pub:
        assert await pub.wait_connected(10)
        yield pub


# ------------------------------------------------------------------------------------------------ intake: acks


@pytest.mark.timeout(30)
async def test_an_ack_of_a_message_delivered_on_an_older_connection_is_not_sent() -> None:
    broker = ScriptedBroker(after_suback=encode_publish(TOPIC, b"first", qos=1, packet_id=7))
    queue = IntakeQueue(10)
    async with broker as port, MqttIntake(settings(port), queue) as intake:
        old = await asyncio.wait_for(queue.get(), 10)
        assert (old.payload, old.mid, old.connection) == (b"first", 7, 1)
        broker.after_suback = encode_publish(TOPIC, b"resent", qos=1, packet_id=8)
        broker.drop()
        # Between connections: nowhere to send it.
        await broker.wait(lambda: not intake.connected)
        assert intake.ack(old) is False
        # On the next connection: the broker resends the message (MQTT 5 section 4.4); only that copy is acked.
        new = await asyncio.wait_for(queue.get(), 10)
        assert (new.payload, new.mid, new.connection) == (b"resent", 8, 2)
        assert intake.ack(old) is False
        assert intake.ack(new) is True
        await broker.wait(lambda: bool(broker.sent(PUBACK)))
        assert broker.sent(PUBACK, 0) == []
        assert broker.sent(PUBACK, 1) == [b"\x00\x08"]
        assert (intake.counters["acks_of_old_connection"], intake.counters["acks_sent"]) == (2, 1)


@pytest.mark.timeout(30)
async def test_a_qos0_message_needs_no_ack_and_none_is_sent() -> None:
    broker = ScriptedBroker(after_suback=encode_publish(TOPIC, b"q0", qos=0))
    queue = IntakeQueue(10)
    async with broker as port, MqttIntake(settings(port), queue) as intake:
        message = await asyncio.wait_for(queue.get(), 10)
        assert intake.ack(message) is True
        assert intake.ack(InboundMessage(TOPIC, b"x", 0, 0, connection=99)) is True
        await asyncio.sleep(0.1)
        assert broker.sent(PUBACK) == []
        assert (intake.counters["acks_sent"], intake.counters["acks_of_old_connection"]) == (0, 0)


# ------------------------------------------------------------------------------------------------ PUBREL


@pytest.mark.timeout(30)
async def test_a_pubrel_to_the_intake_is_answered_with_pubcomp() -> None:
    pubrel = b"\x62\x02\x12\x34"  # PUBREL (flags 0010, section 3.6.1) of packet id 0x1234, reason omitted
    broker = ScriptedBroker(after_suback=pubrel)
    async with broker as port, MqttIntake(settings(port), IntakeQueue(10)) as intake:
        await broker.wait(lambda: bool(broker.sent(PUBCOMP)))
        assert [(k, f, b) for k, f, b in broker.connections[0] if k == PUBCOMP] == [(PUBCOMP, 0, b"\x12\x34")]
        assert intake.connected  # the session goes on


@pytest.mark.timeout(30)
async def test_a_pubrel_to_the_publisher_is_answered_with_pubcomp() -> None:
    broker = ScriptedBroker()
    async with connected_publisher(broker):
        broker.send(b"\x62\x02\x00\x05")
        await broker.wait(lambda: bool(broker.sent(PUBCOMP)))
        assert broker.sent(PUBCOMP) == [b"\x00\x05"]


# ------------------------------------------------------------------------------------------------ publisher


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda pid: puback(pid, None), id="reason-left-out"),
        pytest.param(lambda pid: puback(pid, 0x00), id="success"),
        pytest.param(lambda pid: puback(pid, 0x10), id="no-matching-subscribers"),
    ],
)
async def test_a_publish_acknowledged_with_a_success_reason_returns(answer: Callable[[int], bytes]) -> None:
    broker = ScriptedBroker(answer=answer)
    async with connected_publisher(broker) as pub:
        await pub.publish(CMD, b"command", timeout_s=5)
        [body] = broker.sent(PUBLISH)
        flags = next(f for k, f, _ in broker.connections[0] if k == PUBLISH)
        assert flags == 0x02  # QoS 1, no retain, no dup
        assert body == b"\x00" + bytes((len(CMD),)) + CMD.encode() + b"\x00\x01" + b"\x00" + b"command"
        [connect] = broker.sent(CONNECT)
        assert connect[7] & 0x02  # clean start (section 3.1.2.4)
        assert b"hub-paths-test-pub" in connect


@pytest.mark.timeout(30)
async def test_the_publisher_speaks_tls_like_the_intake_and_checks_the_brokers_certificate(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    broker = ScriptedBroker(tls=server)
    async with broker as port:
        trusting = settings(port).model_copy(update={"tls": True, "ca_file": cert_file})
        async with MqttPublisher(trusting, client_id="hub-paths-test-tls", account="command") as pub:
            assert await pub.wait_connected(10)
            await pub.publish(CMD, b"over TLS", timeout_s=5)
        assert len(broker.sent(PUBLISH)) == 1
        # The system's CAs do not know this certificate: no connection, so nothing is published.
        untrusting = settings(port).model_copy(update={"tls": True})
        async with MqttPublisher(untrusting, client_id="hub-paths-test-tls", account="command") as pub:
            assert not await pub.wait_connected(1)
            with pytest.raises(PublishError, match="the hub is not connected to the broker"):
                await pub.publish(CMD, b"refused", timeout_s=5)
        assert len(broker.connections) == 1  # the TLS handshake failed: no MQTT connection was served


@pytest.mark.timeout(30)
async def test_a_publish_the_broker_refuses_raises_its_reason() -> None:
    broker = ScriptedBroker(answer=lambda pid: puback(pid, 0x87, "ACL denied"))
    async with connected_publisher(broker) as pub:
        with pytest.raises(PublishRefused) as refused:
            await pub.publish(CMD, b"command", timeout_s=5)
        assert refused.value.reason_code == 0x87
        assert str(refused.value) == f"the broker refused the publish on {CMD}: not authorized (0x87) (ACL denied)"
        assert pub.connected  # a refused publish is no reason to drop the connection


@pytest.mark.timeout(30)
async def test_the_command_publisher_reports_a_refusal_as_its_reason_and_success_as_nothing() -> None:
    answers = iter([puback(1, 0x87), puback(2, None)])
    broker = ScriptedBroker(answer=lambda pid: next(answers))
    async with broker as port, CommandPublisher(settings(port)) as commands:
        assert await commands.wait_connected(10)
        assert (
            await commands.publish(CMD, b"refused") == f"the broker refused the publish on {CMD}: not authorized (0x87)"
        )
        assert await commands.publish(CMD, b"taken") == ""
        assert b"hub-paths-test-cmd" in broker.sent(CONNECT)[0]


@pytest.mark.timeout(30)
async def test_a_publish_without_puback_times_out() -> None:
    broker = ScriptedBroker(answer=lambda pid: None)
    async with connected_publisher(broker) as pub:
        with pytest.raises(PublishError, match=f"the broker did not acknowledge the publish on {CMD} within 0.3 s"):
            await pub.publish(CMD, b"command", timeout_s=0.3)


@pytest.mark.timeout(30)
async def test_a_publish_whose_connection_is_lost_before_its_puback_fails_and_is_not_sent_again() -> None:
    broker = ScriptedBroker(answer=lambda pid: None)
    async with connected_publisher(broker) as pub:
        publishing = asyncio.create_task(pub.publish(CMD, b"command", timeout_s=10))
        await broker.wait(lambda: bool(broker.sent(PUBLISH)))
        broker.drop()
        with pytest.raises(PublishError, match="the connection to the broker was lost before it acknowledged"):
            await publishing
        await broker.wait(lambda: len(broker.connections) == 2 and pub.connected)
        await asyncio.sleep(0.2)
        assert broker.sent(PUBLISH) == []


@pytest.mark.timeout(30)
async def test_a_publish_without_a_connection_fails_at_once() -> None:
    # A closed port: nothing listens there.
    async with ScriptedBroker() as port:
        pass
    async with MqttPublisher(settings(port), client_id="hub-paths-test-pub", account="command") as pub:
        with pytest.raises(PublishError, match="the hub is not connected to the broker"):
            await pub.publish(CMD, b"command", timeout_s=5)


@pytest.mark.timeout(30)
async def test_no_more_publishes_are_in_flight_than_the_brokers_receive_maximum() -> None:
    held: list[int] = []
    receive_maximum_2 = b"\x21\x00\x02"  # Receive Maximum 2 (section 3.2.2.3.3)

    def hold(packet_id: int) -> None:
        held.append(packet_id)  # answered by the test

    broker = ScriptedBroker(connack_packet=connack(receive_maximum_2), answer=hold)
    async with connected_publisher(broker) as pub:
        tasks = [asyncio.create_task(pub.publish(CMD, bytes((n,)), timeout_s=10)) for n in range(3)]
        await broker.wait(lambda: len(held) == 2)
        await asyncio.sleep(0.2)
        assert len(broker.sent(PUBLISH)) == 2  # the third waits for a PUBACK
        broker.send(puback(held[0], None))
        await broker.wait(lambda: len(held) == 3)
        assert [publish_id(b) for b in broker.sent(PUBLISH)] == [1, 2, 3]
        for packet_id in held[1:]:
            broker.send(puback(packet_id, None))
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


# ------------------------------------------------------------------------------------------------ backoff


def test_the_reconnect_delay_is_capped_exponential_with_equal_jitter() -> None:
    rng = random.Random(16)
    again = random.Random(16)
    delays = [reconnect_delay(n, 1, 8, rng) for n in range(1, 8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert delays == [c / 2 + again.uniform(0, c / 2) for c in ceilings]  # the same seed, the same waits
    # Hubs that lost the broker together wait different times.
    assert reconnect_delay(3, 1, 8, random.Random(1)) != reconnect_delay(3, 1, 8, random.Random(2))
    assert reconnect_delay(10_000, 1, 30, random.Random(3)) <= 30  # the exponent is capped too


class LowestRandom(random.Random):
    """Always the lowest value of a range, recording each range asked for."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return a


@pytest.mark.timeout(30)
async def test_the_intake_waits_the_jittered_delays_between_attempts() -> None:
    async with ScriptedBroker() as port:
        pass  # closed again: every attempt fails at once
    rng = LowestRandom()
    async with MqttIntake(settings(port), IntakeQueue(10), rng=rng):
        async with asyncio.timeout(10):
            while len(rng.ranges) < 3:  # noqa: ASYNC110 - polling the recorder from outside
                await asyncio.sleep(0.05)
    # Nominal delays 1, 2, 4 s (reconnect_min_s 1, reconnect_max_s 4); half of each is random.
    assert rng.ranges[:3] == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]
