"""The live event fan-out builds nothing while no stream is open, and the same frames as before when one is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from hub.auth import Principal
from hub.health.monitor import Transition
from hub.routes.eventhub import EventHub

VIEWER = Principal("0", "t", "viewer", None)
TRANSITION = Transition("device", "aq-01", "site-a", "gw-1", "aq-01", "air_quality", "unknown", "online", "r", 7)


class _Open:
    """A request that stays connected."""

    async def is_disconnected(self) -> bool:
        return False


async def _active(_: Principal) -> bool:
    return True


def test_nothing_serialized_without_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> str:
        raise AssertionError("serialized with nobody listening")

    monkeypatch.setattr(json, "dumps", refuse)  # the module eventhub serializes with
    hub = EventHub(lambda site: "w1")
    hub.transition(TRANSITION)
    hub.alert("opened", {"ward": "w1", "id": 1})
    hub.publish("seen", "w1", {"devices": ["aq-01"]})
    assert hub.clients == 0


def test_a_stream_gets_every_frame_as_before() -> None:
    async def scenario() -> list[str]:
        hub = EventHub(lambda site: "w1")
        frames = hub.stream(VIEWER, _Open(), _active)  # type: ignore[arg-type]
        assert isinstance(frames, AsyncGenerator)
        assert await anext(frames) == ": connected\n\n"
        assert hub.clients == 1
        hub.transition(TRANSITION)
        hub.alert("opened", {"ward": "w1", "id": 1})
        got = [await anext(frames), await anext(frames)]
        await frames.aclose()
        assert hub.clients == 0
        hub.transition(TRANSITION)  # after the stream closed: nobody listens again
        return got

    got = asyncio.run(scenario())
    data = {
        "key": "aq-01",
        "site": "site-a",
        "gateway": "gw-1",
        "device": "aq-01",
        "old": "unknown",
        "state": "online",
        "reason": "r",
        "ts_ms": 7,
    }
    assert got == [
        f"event: device\ndata: {json.dumps(data, separators=(',', ':'))}\n\n",
        'event: alert\ndata: {"event":"opened","alert":{"ward":"w1","id":1}}\n\n',
    ]
