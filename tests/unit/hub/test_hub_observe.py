"""The observer feed (``mqtt.observe: all``): every decodable message to every observer, nothing raised."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from hub.ingest import InboundMessage
from hub.ingest.observe import ObserverFeed
from hub.mqtt.intake import IntakeQueue
from wire.v1 import DataBatch, Payload, State

TS = 1_764_331_200_000
SESSION = "sess-0001"


def msg(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, mid=0, qos=0)


DATA = msg(
    "ioc/v1/site-a/gw-1/data",
    b'{"session":"sess-0001","seq":1,"readings":[{"device":"aq-1","kind":"air_quality","ts":%d,"metrics":{"pm25":3}}]}'
    % TS,
)
BIRTH = msg("ioc/v1/site-b/gw-2/state", b'{"online":true,"session":"sess-0002","ts":%d}' % TS)


async def test_decoded_messages_reach_every_observer_and_bad_ones_are_counted_not_raised() -> None:
    queue = IntakeQueue(100)
    seen: list[tuple[str, str, bool]] = []
    feed = ObserverFeed(queue, [lambda site, gw, p: seen.append((site, gw, isinstance(p, DataBatch)))])
    later: list[Payload] = []
    feed.add_observer(lambda _site, _gw, p: later.append(p))
    task = asyncio.create_task(feed.run())
    try:
        queue.put_many(
            [
                DATA,
                msg("ioc/v1/site-a/gw-1/data", b"{not json"),
                msg("ioc/v1/Not A Topic/data", b"{}"),
                msg("ioc/v1/site-a/gw-1/data", b'{"session":"x","seq":0,"readings":[]}'),  # contract violation
                BIRTH,
            ]
        )
        async with asyncio.timeout(5):
            while feed.counters["received"] < 5:  # noqa: ASYNC110 - polling the feed from outside
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen == [("site-a", "gw-1", True), ("site-b", "gw-2", False)]
    assert isinstance(later[0], DataBatch)
    assert later[0].readings[0].metrics == {"pm25": 3}
    assert isinstance(later[1], State)
    assert later[1].session == "sess-0002"
    assert len(later) == 2
    assert feed.counters == {"received": 5, "observed": 2, "undecodable": 3, "refused": 0, "observer_errors": 0}


def test_a_failing_observer_is_counted_logged_once_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken(_site: str, _gw: str, _p: Payload) -> None:
        raise ValueError("boom")

    feed = ObserverFeed(IntakeQueue(10), [broken, lambda site, _gw, _p: calls.append(site)])
    for _ in range(3):
        feed.handle(DATA)
    assert calls == ["site-a"] * 3
    assert feed.counters["observer_errors"] == 3
    assert sum("failed on a message of site-a/gw-1" in r.getMessage() for r in caplog.records) == 1
