"""The intake against a scripted broker (a real socket, a few bytes of MQTT 5 written here): a SUBACK refusing every
filter is not taken for a subscription (the connection is made again), one granting some of them is."""

from __future__ import annotations

import asyncio

import pytest
from scripted_broker import ScriptedBroker, suback

from hub.config import MqttSettings
from hub.mqtt.intake import IntakeQueue, MqttIntake, topic_filters


def settings(port: int) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, client_id="hub-suback-test", reconnect_min_s=1)


@pytest.mark.timeout(30)
async def test_every_filter_refused_is_not_subscribed_and_the_connection_is_made_again() -> None:
    broker = ScriptedBroker(suback_packet=suback(b"\x87" * len(topic_filters(None))))
    async with broker as port, MqttIntake(settings(port), IntakeQueue(10)) as intake:
        async with asyncio.timeout(15):
            while len(broker.connections) < 2:  # no event to wait on: the broker's record
                assert not intake.subscribed
                await asyncio.sleep(0.05)
        assert not intake.subscribed


@pytest.mark.timeout(30)
async def test_a_partly_granted_subscription_is_kept() -> None:
    broker = ScriptedBroker(suback_packet=suback(b"\x01\x87" + b"\x01" * (len(topic_filters(None)) - 2)))
    async with broker as port, MqttIntake(settings(port), IntakeQueue(10)) as intake:
        assert await intake.wait_subscribed(10)
        await asyncio.sleep(1.5)
        assert intake.subscribed
        assert len(broker.connections) == 1


def test_a_group_shares_everything_but_state_which_every_hub_hears() -> None:
    # admission needs every birth on every hub of the group, and retained births reach no shared subscription
    assert topic_filters("ioc") == [
        "$share/ioc/ioc/v1/+/+/data",
        "ioc/v1/+/+/state",
        "$share/ioc/ioc/v1/+/+/event",
        "$share/ioc/ioc/v1/+/+/cmd/ack",
        "$share/ioc/ioc/v1/+/+/snapshot",
    ]
    assert topic_filters(None) == [
        "ioc/v1/+/+/data",
        "ioc/v1/+/+/state",
        "ioc/v1/+/+/event",
        "ioc/v1/+/+/cmd/ack",
        "ioc/v1/+/+/snapshot",
    ]
