"""The pipeline's rules: ack only after storage and in arrival order, retry holding acks, narrow a 400 down to
the message that causes it, bound what is pending, dead-letter bad input.

The real :class:`hub.storage.influx.InfluxWriter` talks to a small in-process stand-in for InfluxDB's ``/write`` (an
HTTP server on loopback) so that failures can be scripted; the same rules run against the real InfluxDB and Mosquitto
in ``tests/integration/hub``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from influx_support import Answer, Seen, local_influx

import hub.ingest.pipeline
from hub.config import InfluxSettings
from hub.ingest import InboundMessage, Pipeline, RetryPolicy
from hub.stats import IngestStats
from hub.storage.deadletter import Quarantine
from hub.storage.influx import InfluxWriter
from hub.storage.spill import Spill
from wire.v1 import CommandAck, DataBatch, Event, State

TS = 1_764_331_200_000
SESSION = "sess-0001"
DATA = "ioc/v1/site-a/gw-1/data"
STATE = "ioc/v1/site-a/gw-1/state"


@dataclass
class FakeInflux:
    """Stores what ``/write`` accepts; scripted failures: ``unavailable`` 503s first, lines with reject_me -> 400."""

    unavailable: int = 0
    lines: list[str] = field(default_factory=list)
    requests: int = 0
    gate: asyncio.Event | None = None

    async def answer(self, request: Seen) -> Answer:
        """One ``POST``: its status and JSON body."""
        self.requests += 1
        if self.gate is not None:
            await self.gate.wait()
        assert request.path == "/write"
        assert request.query == {"db": ["ioc"], "precision": ["ms"]}
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.unavailable > 0:
            self.unavailable -= 1
            return 503, {}, b'{"error":"engine busy"}'
        lines = body.decode().split("\n")
        bad = [line for line in lines if "reject_me" in line]
        good = [line for line in lines if "reject_me" not in line]
        self.lines.extend(good)  # InfluxDB 1.x writes the good lines of a partial write
        if bad:
            error = f"partial write: field type conflict: {bad[0][:20]} dropped={len(bad)}"
            return 400, {}, json.dumps({"error": error}).encode()
        return 204, {}, b""


@asynccontextmanager
async def served(influx: FakeInflux) -> AsyncIterator[InfluxSettings]:
    """``influx`` behind an HTTP/1.1 server on loopback (keep-alive); yields the settings to reach it."""
    async with local_influx(influx.answer) as server:
        yield InfluxSettings(url=server.url)


@dataclass
class RecordingAcker:
    acked: list[int] = field(default_factory=list)

    def ack(self, message: InboundMessage) -> bool:
        self.acked.append(message.mid)
        return True


def data(seq: int, metrics: str = '{"pm25": 1}', ts: int = TS) -> bytes:
    reading = f'{{"device": "aq-01", "kind": "air_quality", "ts": {ts + seq}, "metrics": {metrics}}}'
    return f'{{"session": "{SESSION}", "seq": {seq}, "readings": [{reading}]}}'.encode()


def msg(mid: int, payload: bytes, topic: str = DATA, *, retain: bool = False) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, mid=mid, qos=1, retain=retain, received=TS / 1000 + 1)


@dataclass
class Harness:
    pipeline: Pipeline
    queue: asyncio.Queue[InboundMessage]
    acker: RecordingAcker
    influx: FakeInflux
    task: asyncio.Task[None]

    async def put(self, *messages: InboundMessage) -> None:
        for m in messages:
            await self.queue.put(m)

    async def until(self, condition: Callable[[], bool], within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while not condition():  # noqa: ASYNC110 - polling the pipeline's counters from outside
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.pipeline.close()
        await asyncio.wait_for(self.task, 5)

    @property
    def stats(self) -> IngestStats:
        return self.pipeline.stats


Make = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    created: list[Harness] = []
    stack = AsyncExitStack()

    async def factory(
        influx: FakeInflux | None = None,
        queue_size: int = 100,
        max_lines: int = 5000,
        max_delay_ms: int = 20,
        max_in_flight: int = 2,
        max_pending_messages: int = 20_000,
        max_pending_bytes: int = 256 * 1024 * 1024,
        spill: Spill | None = None,
        dead_letters: Quarantine | None = None,
        max_metrics_per_device: int | None = None,
        spill_after_s: float = 5.0,
    ) -> Harness:
        influx = influx or FakeInflux()
        settings = await stack.enter_async_context(served(influx))
        writer = await stack.enter_async_context(InfluxWriter(settings))
        queue: asyncio.Queue[InboundMessage] = asyncio.Queue(maxsize=queue_size)
        acker = RecordingAcker()
        pipeline = Pipeline(
            queue,
            acker,
            writer,
            max_lines=max_lines,
            max_delay_ms=max_delay_ms,
            max_in_flight=max_in_flight,
            max_pending_messages=max_pending_messages,
            max_pending_bytes=max_pending_bytes,
            retry=RetryPolicy(0.01, 0.02),
            spill=spill,
            dead_letters=dead_letters,
            max_metrics_per_device=max_metrics_per_device,
            spill_after_s=spill_after_s,
        )
        harness = Harness(pipeline, queue, acker, influx, asyncio.create_task(pipeline.run()))
        created.append(harness)
        return harness

    yield factory
    for h in created:
        if not h.task.done():
            h.task.cancel()
            await asyncio.gather(h.task, return_exceptions=True)
    await stack.aclose()


async def test_messages_are_acked_after_storage_in_arrival_order_bad_ones_included(make: Make) -> None:
    h = await make()
    await h.put(msg(1, data(1)), msg(2, b"{not json"), msg(3, data(2)), msg(4, b"{}", "ioc/v1/Bad/gw/data"))
    await h.until(lambda: len(h.acker.acked) == 4)
    assert h.acker.acked == [1, 2, 3, 4]
    assert h.influx.lines == [
        f"air_quality,device=aq-01,gateway=gw-1,kind=air_quality,site=site-a pm25=1.0 {TS + 1}",
        f"air_quality,device=aq-01,gateway=gw-1,kind=air_quality,site=site-a pm25=1.0 {TS + 2}",
    ]
    assert h.stats.dead_letters == {"malformed": 1, "bad_topic": 1}
    assert h.stats.messages_by_channel == {"data": 3}
    assert h.stats.messages_received == 4
    assert (h.stats.lines_written, h.stats.acks, h.stats.readings) == (2, 4, 2)
    await h.stop()


async def test_a_bad_message_waits_for_the_stored_message_before_it() -> None:
    influx = FakeInflux(gate=asyncio.Event())
    acker = RecordingAcker()
    queue: asyncio.Queue[InboundMessage] = asyncio.Queue()
    async with served(influx) as settings, InfluxWriter(settings) as writer:
        pipeline = Pipeline(queue, acker, writer, max_delay_ms=5)
        task = asyncio.create_task(pipeline.run())
        await queue.put(msg(1, data(1)))
        await asyncio.sleep(0.05)  # the write of message 1 is now waiting at the gate
        await queue.put(msg(2, b"garbage"))
        await asyncio.sleep(0.05)
        assert acker.acked == []  # 2 is done, but 1 (received first) is not stored yet
        assert pipeline.stats.dead_letters == {"malformed": 1}
        assert influx.gate is not None
        influx.gate.set()
        pipeline.close()
        await asyncio.wait_for(task, 5)
    assert acker.acked == [1, 2]


async def test_unavailable_influx_is_retried_and_acks_are_held(make: Make) -> None:
    influx = FakeInflux(unavailable=3, gate=None)
    h = await make(influx)
    await h.put(msg(1, data(1)))
    await h.until(lambda: h.acker.acked == [1])
    assert h.stats.write_retries == 3
    assert h.stats.write_errors == 3
    assert h.stats.write_batches == 1
    assert len(influx.lines) == 1
    await h.stop()


async def test_acks_are_not_sent_while_influx_is_down(make: Make) -> None:
    influx = FakeInflux(unavailable=10_000)
    h = await make(influx)
    await h.put(msg(1, data(1)), msg(2, data(2)))
    await h.until(lambda: h.stats.write_retries >= 3)
    assert h.acker.acked == []
    assert not h.pipeline.storage_ok
    assert h.pipeline.gauges()["pending_messages"] == 2
    h.task.cancel()
    await asyncio.gather(h.task, return_exceptions=True)
    assert h.acker.acked == []


async def test_a_refused_message_is_found_by_bisection_and_dead_lettered_the_others_stored(make: Make) -> None:
    h = await make(max_delay_ms=200)
    payloads = [data(i) for i in range(1, 8)]
    payloads[4] = data(5, '{"reject_me": 1}')
    await h.put(*(msg(i + 1, p) for i, p in enumerate(payloads)))
    await h.until(lambda: len(h.acker.acked) == 7)
    assert h.acker.acked == [1, 2, 3, 4, 5, 6, 7]
    assert h.stats.dead_letters == {"rejected": 1}
    letters = h.pipeline.dead_letters.latest(10)
    assert [(d.topic, d.kind.value) for d in letters] == [(DATA, "rejected")]
    assert "field type conflict" in letters[0].error
    assert json.loads(letters[0].payload)["seq"] == 5
    stored = {int(line.rsplit(" ", 1)[1]) - TS for line in h.influx.lines}
    assert stored == {1, 2, 3, 4, 6, 7}
    assert h.stats.write_batches >= 2
    await h.stop()


async def test_batches_are_cut_at_max_lines(make: Make) -> None:
    h = await make(max_lines=2, max_delay_ms=10_000)
    await h.put(*(msg(i, data(i)) for i in range(1, 6)))
    # Two full batches go out at once; the fifth line waits for the 10 s delay, so only 4 are acked.
    await h.until(lambda: len(h.acker.acked) == 4)
    await asyncio.sleep(0.05)
    assert h.acker.acked == [1, 2, 3, 4]
    assert h.stats.write_batches == 2
    await h.stop()  # the stop flushes the open batch
    assert h.acker.acked == [1, 2, 3, 4, 5]
    assert h.stats.write_batches == 3


async def test_intake_is_paused_at_max_pending_messages(make: Make) -> None:
    influx = FakeInflux(gate=asyncio.Event())
    h = await make(influx, max_pending_messages=3, max_in_flight=1, max_delay_ms=1)
    await h.put(*(msg(i, data(i)) for i in range(1, 11)))
    await asyncio.sleep(0.2)
    assert h.pipeline.gauges()["pending_messages"] == 3
    assert h.queue.qsize() == 7  # left on the queue: the MQTT thread would now block on it
    assert influx.gate is not None
    influx.gate.set()
    await h.until(lambda: len(h.acker.acked) == 10)
    assert h.acker.acked == list(range(1, 11))
    await h.stop()


async def test_intake_is_paused_at_max_pending_bytes(make: Make) -> None:
    influx = FakeInflux(gate=asyncio.Event())
    size = len(data(1))
    # three messages' payloads reach the byte cap (the third crosses it), far below the message cap
    h = await make(influx, max_pending_bytes=2 * size + 1, max_in_flight=1, max_delay_ms=1)
    await h.put(*(msg(i, data(i)) for i in range(1, 11)))
    await asyncio.sleep(0.2)
    gauges = h.pipeline.gauges()
    assert gauges["pending_messages"] == 3
    assert gauges["pending_bytes"] == sum(len(data(i)) for i in (1, 2, 3))
    assert h.queue.qsize() == 7
    assert influx.gate is not None
    influx.gate.set()
    await h.until(lambda: len(h.acker.acked) == 10)
    assert h.acker.acked == list(range(1, 11))
    assert h.pipeline.gauges()["pending_bytes"] == 0
    await h.stop()


async def test_state_messages_stale_wills_and_retained_replays(make: Make) -> None:
    h = await make()
    birth_old = json.dumps({"online": True, "session": "session-old", "ts": TS}).encode()
    birth_new = json.dumps({"online": True, "session": "session-new", "ts": TS + 100}).encode()
    will_old = json.dumps({"online": False, "session": "session-old", "reason": "connection lost"}).encode()
    will_new = json.dumps({"online": False, "session": "session-new"}).encode()
    await h.put(
        msg(1, birth_old, STATE),
        msg(2, birth_new, STATE),
        msg(3, will_old, STATE),  # late will of the old session: ignored, no point
        msg(4, will_new, STATE, retain=True),  # a retained will replayed on subscribe: state only, no point
        msg(5, birth_new, STATE, retain=True),  # a retained birth has its own ts: written again, idempotent
    )
    await h.until(lambda: len(h.acker.acked) == 5)
    assert h.stats.stale_states_ignored == 1
    assert h.influx.lines == [
        f'gateway_state,gateway=gw-1,site=site-a online=true,session="session-old" {TS}',
        f'gateway_state,gateway=gw-1,site=site-a online=true,session="session-new" {TS + 100}',
        f'gateway_state,gateway=gw-1,site=site-a online=true,session="session-new" {TS + 100}',
    ]
    assert h.pipeline.states.snapshot()["site-a/gw-1"]["session"] == "session-new"
    await h.stop()


async def test_events_command_acks_and_contract_violations(make: Make) -> None:
    h = await make()
    event = json.dumps(
        {"session": SESSION, "device": "aq-01", "type": "device_down", "ts": TS, "reason": "timeout"}
    ).encode()
    cmd_ack = json.dumps({"id": "c-1", "device": "vms-03", "status": "ok", "ts": TS}).encode()
    no_readings = json.dumps({"session": SESSION, "seq": 1, "readings": []}).encode()
    await h.put(
        msg(1, event, "ioc/v1/site-a/gw-1/event"),
        msg(2, cmd_ack, "ioc/v1/site-a/gw-1/cmd/ack"),
        msg(3, no_readings),
        msg(4, data(2, '{"pm25": null}')),
    )
    await h.until(lambda: len(h.acker.acked) == 4)
    assert h.influx.lines == [
        f'device_event,device=aq-01,gateway=gw-1,site=site-a,type=device_down reason="timeout" {TS}'
    ]
    assert h.stats.messages_by_channel == {"event": 1, "cmd/ack": 1, "data": 2}
    assert h.stats.dead_letters == {"contract": 2}
    errors = [d.error for d in h.pipeline.dead_letters.latest(10)]
    assert "DataBatch" in errors[0]
    assert "Expected `array` of length >= 1" in errors[1]
    await h.stop()


async def test_sequence_gaps_are_counted(make: Make) -> None:
    h = await make()
    await h.put(msg(1, data(1)), msg(2, data(2)), msg(3, data(5)), msg(4, data(5)))
    await h.until(lambda: len(h.acker.acked) == 4)
    snapshot = h.pipeline.snapshot()
    assert (snapshot.seq_gaps, snapshot.seq_repeats) == (2, 1)
    assert snapshot.seq_gaps_by_gateway == {"site-a/gw-1": 2}
    await h.stop()


async def test_an_internal_error_dead_letters_the_message_and_the_pipeline_goes_on(
    make: Make,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> str:
        raise KeyError("boom")

    monkeypatch.setattr(hub.ingest.pipeline, "device_event_line", broken)
    h = await make()
    event = json.dumps({"session": SESSION, "device": "aq-01", "type": "device_up", "ts": TS}).encode()
    await h.put(msg(1, event, "ioc/v1/site-a/gw-1/event"), msg(2, data(1)))
    await h.until(lambda: len(h.acker.acked) == 2)
    assert h.stats.dead_letters == {"internal": 1}
    assert len(h.influx.lines) == 1
    await h.stop()


async def test_replayed_batches_do_not_count_for_latency(make: Make) -> None:
    h = await make()
    replay = json.loads(data(1))
    replay["replay"] = True
    await h.put(msg(1, json.dumps(replay).encode()), msg(2, data(2)))
    await h.until(lambda: len(h.acker.acked) == 2)
    assert h.stats.ingest_latency.count == 1
    assert h.stats.ingest_latency.last_ms > 0
    await h.stop()


# ---------------------------------------------------------------------------------------------- hooks


EVENT = "ioc/v1/site-a/gw-1/event"
CMD_ACK = "ioc/v1/site-a/gw-1/cmd/ack"


async def test_observers_see_every_decoded_message_and_a_failing_one_breaks_nothing(make: Make) -> None:
    h = await make()
    seen: list[tuple[str, str, str]] = []

    def good(site: str, gateway: str, payload: object) -> None:
        # A data payload is an instance of a DataBatch subclass (hub.ingest.decode): observers use isinstance.
        kind = next(t for t in (State, DataBatch, Event, CommandAck) if isinstance(payload, t))
        seen.append((site, gateway, kind.__name__))

    def bad(site: str, gateway: str, payload: object) -> None:
        raise KeyError("registry bug")

    h.pipeline.add_observer(bad)
    h.pipeline.add_observer(good)
    state = f'{{"online": true, "session": "{SESSION}", "ts": {TS}}}'.encode()
    event = f'{{"session": "{SESSION}", "device": "aq-01", "type": "device_down", "ts": {TS}}}'.encode()
    ack = f'{{"id": "c-1", "device": "aq-01", "status": "ok", "ts": {TS}}}'.encode()
    await h.put(msg(1, state, STATE), msg(2, data(1)), msg(3, event, EVENT), msg(4, ack, CMD_ACK), msg(5, b"{x"))
    await h.until(lambda: len(h.acker.acked) == 5)
    assert seen == [
        ("site-a", "gw-1", State.__name__),
        ("site-a", "gw-1", DataBatch.__name__),
        ("site-a", "gw-1", Event.__name__),
        ("site-a", "gw-1", CommandAck.__name__),
    ]
    assert h.stats.observer_errors == 4
    assert len(h.influx.lines) == 3  # state, data, event all stored despite the failing observer
    h.pipeline.remove_observer(bad)
    await h.put(msg(6, data(2)))
    await h.until(lambda: len(h.acker.acked) == 6)
    assert h.stats.observer_errors == 4


async def test_enrichment_adds_allow_listed_tags_in_key_order_and_is_replaced_whole(make: Make) -> None:
    h = await make()
    h.pipeline.set_enrichment({"aq-01": {"district": "Old Town", "zone": "z1"}})
    event = f'{{"session": "{SESSION}", "device": "aq-01", "type": "device_down", "ts": {TS}}}'.encode()
    await h.put(msg(1, data(1)), msg(2, event, EVENT))
    await h.until(lambda: len(h.acker.acked) == 2)
    tags = "device=aq-01,district=Old\\ Town,gateway=gw-1"
    assert h.influx.lines == [
        f"air_quality,{tags},kind=air_quality,site=site-a,zone=z1 pm25=1.0 {TS + 1}",
        f'device_event,{tags},site=site-a,type=device_down,zone=z1 reason="" {TS}',
    ]
    h.pipeline.set_enrichment({})
    await h.put(msg(3, data(2)))
    await h.until(lambda: len(h.acker.acked) == 3)
    assert h.influx.lines[-1] == f"air_quality,device=aq-01,gateway=gw-1,kind=air_quality,site=site-a pm25=1.0 {TS + 2}"


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        ({"aq-01": {"owner": "x"}}, "device 'aq-01': tag 'owner' is not allowed"),
        ({"aq-01": {"site": "x"}}, "device 'aq-01': tag 'site' is not allowed"),
        ({"aq-02": {"district": "a\nb"}}, "device 'aq-02': tag 'district'"),
        ({"aq-02": {"district": 3}}, "device 'aq-02': tag 'district' must be a string"),
    ],
)
async def test_a_bad_enrichment_is_refused_naming_device_and_tag_and_the_old_one_stays(
    make: Make, mapping: dict[str, dict[str, str]], error: str
) -> None:
    h = await make()
    h.pipeline.set_enrichment({"aq-01": {"district": "north"}})
    with pytest.raises((ValueError, TypeError), match=error):
        h.pipeline.set_enrichment(mapping)
    await h.put(msg(1, data(1)))
    await h.until(lambda: len(h.acker.acked) == 1)
    assert ",district=north," in h.influx.lines[0]


# ---------------------------------------------------------------------------------------------- spill


def storage_ok(h: Harness) -> bool:
    return h.pipeline.storage_ok


async def test_with_influxdb_down_batches_are_spilled_acked_and_written_back_in_order_later(
    make: Make, tmp_path: Path
) -> None:
    influx = FakeInflux(unavailable=10**9)
    spill = Spill(tmp_path / "spill", max_bytes=1_000_000)
    # One write in flight, so the batches reach the spill in arrival order (with more, in the order they fail).
    h = await make(influx, spill=spill, max_lines=2, max_in_flight=1)
    await h.put(*(msg(i, data(i)) for i in range(1, 7)))
    await h.until(lambda: len(h.acker.acked) == 6)  # acked once on disk, with InfluxDB still down
    assert h.acker.acked == [1, 2, 3, 4, 5, 6]
    assert h.influx.lines == []
    assert h.stats.lines_spilled == 6
    assert h.pipeline.gauges()["spill_lines"] == 6
    assert not storage_ok(h)
    influx.unavailable = 0
    await h.until(lambda: h.stats.lines_written_back == 6)
    assert [int(line.rsplit(" ", 1)[1]) - TS for line in h.influx.lines] == [1, 2, 3, 4, 5, 6]
    assert storage_ok(h)
    assert h.stats.lines_written_back == 6
    await h.put(msg(7, data(7)))  # live writes go straight to InfluxDB again
    await h.until(lambda: len(h.acker.acked) == 7)
    assert h.stats.lines_spilled == 6
    await h.stop()
    spill.close()


async def test_a_full_spill_falls_back_to_holding_acks_until_influxdb_is_back(make: Make, tmp_path: Path) -> None:
    influx = FakeInflux(unavailable=10**9)
    spill = Spill(tmp_path / "spill", max_bytes=1024, segment_bytes=1024)
    h = await make(influx, spill=spill, max_lines=1)
    big = '{"text": "' + secrets.token_hex(500) + '"}'  # hardly compressible: one batch takes most of the spill
    await h.put(msg(1, data(1, big)), msg(2, data(2, big)))
    await h.until(lambda: h.stats.spill_full >= 1)
    assert len(h.acker.acked) <= 1  # the second is held: the spill is full and InfluxDB down
    influx.unavailable = 0
    await h.until(lambda: len(h.acker.acked) == 2 and h.stats.lines_written_back == h.stats.lines_spilled)
    assert sorted(int(line.rsplit(" ", 1)[1]) - TS for line in h.influx.lines) == [1, 2]
    await h.stop()
    spill.close()


async def test_a_refused_line_in_the_spill_is_quarantined_and_the_rest_written_back(make: Make, tmp_path: Path) -> None:
    influx = FakeInflux(unavailable=10**9)
    spill = Spill(tmp_path / "spill", max_bytes=1_000_000)
    h = await make(influx, spill=spill, max_lines=3)
    await h.put(msg(1, data(1)), msg(2, data(2, '{"reject_me": 1}')), msg(3, data(3)))
    await h.until(lambda: len(h.acker.acked) == 3)
    influx.unavailable = 0
    await h.until(lambda: h.stats.batches_written_back == 1)
    assert sorted({int(line.rsplit(" ", 1)[1]) - TS for line in h.influx.lines}) == [1, 3]
    assert h.stats.dead_letters == {"rejected": 1}
    (letter,) = h.pipeline.dead_letters.latest(1)
    assert letter.topic.startswith("(spill segment")
    assert "reject_me" in letter.payload
    await h.stop()
    spill.close()


# ---------------------------------------------------------------------------------------------- quarantine


async def test_a_persistent_quarantine_acks_after_saving_and_survives_a_restart(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "dead.sqlite"
    quarantine = Quarantine(keep=3, payload_bytes=100, path=path)
    h = await make(dead_letters=quarantine)
    await h.put(msg(1, b"{not json"), msg(2, data(1)), *(msg(i, b"[]") for i in range(3, 7)))
    await h.until(lambda: len(h.acker.acked) == 6)
    assert h.acker.acked == [1, 2, 3, 4, 5, 6]
    assert quarantine.saved == 5
    await h.stop()
    quarantine.close()
    again = Quarantine(keep=3, payload_bytes=100, path=path)
    kept = again.latest(10)
    assert [d.payload for d in kept] == ["[]", "[]", "[]"]  # the newest 3 are kept
    assert {d.kind.value for d in kept} == {"contract"}
    assert all(d.topic == DATA and d.error for d in kept)
    again.close()


async def test_metric_names_beyond_the_cap_are_quarantined_and_the_rest_stored(make: Make) -> None:
    h = await make(max_metrics_per_device=2)
    await h.put(
        msg(1, data(1, '{"a": 1, "b": 2}')),
        msg(2, data(2, '{"a": 1, "c": 3, "d": 4}')),
        msg(3, data(3, '{"e": 5}')),
        msg(4, data(4, '{"b": 6}')),
    )
    await h.until(lambda: len(h.acker.acked) == 4)
    fields = [line.split(" ")[1] for line in h.influx.lines]
    assert fields == ["a=1.0,b=2.0", "a=1.0", "b=6.0"]
    assert h.stats.dead_letters == {"cardinality": 2}
    errors = [d.error for d in h.pipeline.dead_letters.latest(10)]
    assert errors == [
        "device 'aq-01' already has 2 metric names (cardinality.max_metrics_per_device), refused: e",
        "device 'aq-01' already has 2 metric names (cardinality.max_metrics_per_device), refused: c, d",
    ]


async def test_with_influxdb_slow_new_batches_are_spilled_instead_of_waiting_for_a_write_slot(
    make: Make, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    influx = FakeInflux(gate=gate)  # every write hangs until the gate opens
    spill = Spill(tmp_path / "spill", max_bytes=1_000_000)
    h = await make(influx, spill=spill, max_lines=1, max_in_flight=1, spill_after_s=0.05)
    await h.put(msg(1, data(1)))
    await h.until(lambda: influx.requests == 1)
    await asyncio.sleep(0.1)  # the first write has now been running longer than spill_after_s
    await h.put(msg(2, data(2)), msg(3, data(3)))
    await h.until(lambda: h.stats.lines_spilled == 2)
    assert h.acker.acked == []  # in arrival order: 2 and 3 wait for 1, which InfluxDB still holds
    gate.set()
    await h.until(lambda: len(h.acker.acked) == 3 and h.stats.lines_written_back == 2)
    assert h.acker.acked == [1, 2, 3]
    assert sorted({int(line.rsplit(" ", 1)[1]) - TS for line in h.influx.lines}) == [1, 2, 3]
    await h.stop()
    spill.close()
