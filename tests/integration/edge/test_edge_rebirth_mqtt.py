"""``rebirth`` over the real Mosquitto with the real agent: asked by the hub (played here as admin), the agent
publishes a fresh retained birth of the same session, then acks ``ok``; its data keeps flowing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from edge_support import MessageLog, recording, retained_state

from devices.driver import now_ms
from edge.agent import run_agent
from edge.config import load_config
from ioc.stack import StackEndpoints
from wire.v1 import REBIRTH, AckStatus, Channel, Command, CommandAck, State, encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-b", "gw-2"
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"


@pytest.mark.timeout(90)
async def test_the_agent_answers_rebirth_with_a_fresh_birth_then_an_ok_ack(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    config = {
        "site": SITE,
        "gateway": GATEWAY,
        "broker": {"host": stack.mqtt_host, "port": stack.mqtt_port, "username": user, "password": password},
        "publish": {"max_batch": 50, "max_delay_ms": 100, "outbox_path": ":memory:", "drain_timeout_s": 3},
        "self_metrics": {"interval_s": 1},
        "devices": [{"id": "host-1", "driver": "host", "profile": "gateway-host", "interval_s": 1}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    async with recording(stack, "rebirth-hub", [f"{ROOT}/#"], MessageLog) as log:
        client = log.client
        stop = asyncio.Event()
        agent = asyncio.create_task(run_agent(load_config(path), stop, config_path=path))
        try:

            def births() -> list[State]:
                # Live ones only: a retained birth of an earlier test on this account may come first.
                live = [m for m in log.messages if m.channel == Channel.STATE.value and not m.retained]
                return [m.payload for m in live if m.payload.online]

            def acks() -> list[CommandAck]:
                return [m.payload for m in log.messages if m.channel == Channel.CMD_ACK.value]

            [first] = await log.until(births)
            await log.until(lambda: [m for m in log.messages if m.channel == Channel.DATA.value])
            command = Command(id=f"c-{time.monotonic_ns()}", device=GATEWAY, action=REBIRTH, ts=now_ms())
            await client.publish(f"{ROOT}/cmd", encode(command), qos=1)
            [ack] = await log.until(acks)

            assert (ack.id, ack.device, ack.status) == (command.id, GATEWAY, AckStatus.OK)
            assert ack.detail == f"birth 2 of session {first.session} published (1 devices)"
            [_, again] = births()
            # The birth came before the ack, in the same session, with the devices served now.
            order = [m.payload for m in log.messages if m.payload in (again, ack)]
            assert order == [again, ack]
            assert again.session == first.session
            assert [d.id for d in again.devices] == ["host-1"]
            assert again.ts is not None
            assert first.ts is not None
            assert again.ts >= first.ts
            assert (await retained_state(stack, ROOT)) == again
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await agent
