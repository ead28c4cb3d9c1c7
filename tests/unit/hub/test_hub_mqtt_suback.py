"""The intake against a scripted broker (a real socket, a few bytes of MQTT 5 written here): a SUBACK refusing every
filter is not taken for a subscription (the connection is made again), one granting some of them is."""

from __future__ import annotations

import asyncio

import pytest

from hub.config import MqttSettings
from hub.mqtt import IntakeQueue, MqttIntake, topic_filters

CONNECT, SUBSCRIBE, PINGREQ = 1, 8, 12
CONNACK_OK = b"\x20\x03\x00\x00\x00"  # session present 0, reason success, no properties
PINGRESP = b"\xd0\x00"


def suback(codes: bytes) -> bytes:
    """SUBACK for packet id 1, no properties, one reason code per filter (one-byte remaining length)."""
    return b"\x90" + bytes([3 + len(codes)]) + b"\x00\x01\x00" + codes


class ScriptedBroker:
    """Accepts connections, answers CONNECT and SUBSCRIBE (with ``codes``) and PINGREQ; counts CONNECTs."""

    def __init__(self, codes: bytes) -> None:
        self.codes = codes
        self.connects = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                kind = (await reader.readexactly(1))[0] >> 4
                length, shift = 0, 0
                while True:  # the remaining length, a variable byte integer
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                await reader.readexactly(length)
                if kind == CONNECT:
                    self.connects += 1
                    writer.write(CONNACK_OK)
                elif kind == SUBSCRIBE:
                    writer.write(suback(self.codes))
                elif kind == PINGREQ:
                    writer.write(PINGRESP)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def settings(port: int) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, client_id="hub-suback-test", reconnect_min_s=1)


@pytest.mark.timeout(30)
async def test_every_filter_refused_is_not_subscribed_and_the_connection_is_made_again() -> None:
    broker = ScriptedBroker(b"\x87\x87\x87\x87")
    async with broker as port, MqttIntake(settings(port), IntakeQueue(10)) as intake:
        async with asyncio.timeout(15):
            while broker.connects < 2:  # no event to wait on: the broker's counter
                assert not intake.subscribed
                await asyncio.sleep(0.05)
        assert not intake.subscribed


@pytest.mark.timeout(30)
async def test_a_partly_granted_subscription_is_kept() -> None:
    broker = ScriptedBroker(b"\x01\x87\x01\x01")
    async with broker as port, MqttIntake(settings(port), IntakeQueue(10)) as intake:
        assert await intake.wait_subscribed(10)
        await asyncio.sleep(1.5)
        assert intake.subscribed
        assert broker.connects == 1


def test_a_group_shares_everything_but_state_which_every_hub_hears() -> None:
    # admission needs every birth on every hub of the group, and retained births reach no shared subscription
    assert topic_filters("ioc") == [
        "$share/ioc/ioc/v1/+/+/data",
        "ioc/v1/+/+/state",
        "$share/ioc/ioc/v1/+/+/event",
        "$share/ioc/ioc/v1/+/+/cmd/ack",
    ]
    assert topic_filters(None) == ["ioc/v1/+/+/data", "ioc/v1/+/+/state", "ioc/v1/+/+/event", "ioc/v1/+/+/cmd/ack"]
