"""Health state machine and monitor, driven with a fake clock: births, wills, readings, events, inactivity,
flap damping, late wills, gateway offline -> devices unknown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hub.health.machine import FlapPolicy, Health, HealthMachine
from hub.health.monitor import HealthMonitor, HealthPolicy, Transition
from hub.health.store import TransitionSink, recent_transitions, transition_line
from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, Reading, State

TS = 1_764_331_200_000
SITE, GW = "site-a", "gw-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def birth(session: str = "sess-0001", interval: float = 2.0, keepalive_s: int | None = None) -> State:
    return State(
        online=True,
        session=session,
        ts=TS,
        keepalive_s=keepalive_s,
        devices=[DeviceInfo("aq-01", "air_quality", "p", interval), DeviceInfo("wl-01", "water_level", "p", interval)],
    )


def data(*devices: str, replay: bool = False, session: str = "sess-0001") -> DataBatch:
    return DataBatch(
        session=session,
        seq=1,
        replay=replay,
        readings=[Reading(d, "air_quality", TS, {"x": 1.0}) for d in devices],
    )


def make(
    policy: HealthPolicy | None = None, registry: Registry | None = None
) -> tuple[HealthMonitor, Clock, list[Transition]]:
    clock = Clock()
    monitor = HealthMonitor(registry, policy or HealthPolicy(flap=FlapPolicy(60, 4, 30)), clock=clock)
    seen: list[Transition] = []
    monitor.subscribe(seen.append)
    return monitor, clock, seen


def states(seen: list[Transition], key: str) -> list[str]:
    return [t.new for t in seen if t.key == key]


def test_birth_readings_inactivity_and_recovery() -> None:
    monitor, clock, seen = make()
    monitor.observe(SITE, GW, birth())
    assert states(seen, f"{SITE}/{GW}") == ["online"]
    monitor.observe(SITE, GW, data("aq-01", "wl-01"))
    assert states(seen, "aq-01") == ["online"]
    clock.now += 5.9  # 3 x 2 s is the default timeout
    monitor.tick()
    assert states(seen, "aq-01") == ["online"]
    clock.now += 0.2
    monitor.tick()
    assert states(seen, "aq-01") == ["online", "offline"]
    assert seen[-1].reason.startswith("no reading for 6.1 s (timeout 6 s)")
    monitor.observe(SITE, GW, data("aq-01"))
    assert states(seen, "aq-01") == ["online", "offline", "online"]


def test_inventory_overrides_the_inactivity_timeout() -> None:
    registry = Registry()
    registry.apply_inventory(parse_mapping({"devices": [{"id": "aq-01", "inactivity_s": 20}]}, "x"))
    monitor, clock, seen = make(registry=registry)
    monitor.observe(SITE, GW, birth())
    monitor.observe(SITE, GW, data("aq-01"))
    clock.now += 10
    monitor.tick()
    assert states(seen, "aq-01") == ["online"]
    clock.now += 10.5
    monitor.tick()
    assert states(seen, "aq-01") == ["online", "offline"]


def test_gateway_death_marks_devices_unknown_with_the_reason_and_a_late_will_is_ignored() -> None:
    monitor, clock, seen = make()
    monitor.observe(SITE, GW, birth("sess-0001"))
    monitor.observe(SITE, GW, data("aq-01", "wl-01"))
    monitor.observe(SITE, GW, State(online=False, session="sess-0001", reason="connection lost"))
    assert states(seen, f"{SITE}/{GW}") == ["online", "offline"]
    assert states(seen, "aq-01") == ["online", "unknown"]
    assert seen[-1].reason == f"gateway {SITE}/{GW} offline: gateway death: connection lost"
    # No inactivity verdict while the gateway is down: the hub cannot know.
    clock.now += 100
    monitor.tick()
    assert states(seen, "aq-01") == ["online", "unknown"]
    monitor.observe(SITE, GW, birth("sess-0002"))
    monitor.observe(SITE, GW, State(online=False, session="sess-0001", reason="late will"))
    assert states(seen, f"{SITE}/{GW}") == ["online", "offline", "online"]


def test_driver_events_and_replayed_readings() -> None:
    monitor, _clock, seen = make()
    monitor.observe(SITE, GW, birth())
    monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_DOWN, TS, reason="timeout after 3 s"))
    monitor.observe(SITE, GW, data("aq-01", replay=True))  # old readings prove nothing about now
    monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_DEGRADED, TS))
    monitor.observe(SITE, GW, data("aq-01"))  # degraded stays degraded while readings come
    monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_UP, TS))
    assert states(seen, "aq-01") == ["offline", "degraded", "online"]
    assert seen[1].reason == "device_down: timeout after 3 s"


def test_flapping_is_damped_then_settles() -> None:
    monitor, clock, seen = make(HealthPolicy(flap=FlapPolicy(flap_window_s=60, flap_changes=4, flap_quiet_s=30)))
    for i in range(20):
        session = f"sess-{i:04d}"
        monitor.observe(SITE, GW, birth(session))
        clock.now += 1
        monitor.observe(SITE, GW, State(online=False, session=session, reason="connection lost"))
        clock.now += 1
        monitor.tick()
    gateway = states(seen, f"{SITE}/{GW}")
    # The first online (from unknown: not counted), 3 counted changes, then "degraded (flapping)", and nothing
    # more however long it flaps.
    assert gateway == ["online", "offline", "online", "offline", "degraded"]
    assert any("flapping: 4 changes" in t.reason for t in seen)
    monitor.observe(SITE, GW, birth("sess-9999"))
    clock.now += 29
    monitor.tick()
    assert states(seen, f"{SITE}/{GW}")[-1] == "degraded"
    clock.now += 2
    monitor.tick()
    assert states(seen, f"{SITE}/{GW}")[-1] == "online"
    assert seen[-1].reason.startswith("stable for 31 s")


def test_changes_caused_by_the_gateway_are_not_flapping() -> None:
    """A device that goes unknown with each gateway outage is not itself flapping."""
    machine = HealthMachine(FlapPolicy(flap_window_s=60, flap_changes=2, flap_quiet_s=5))
    for i in range(10):
        machine.propose(Health.ONLINE, "reading", i * 2.0)
        machine.propose(Health.UNKNOWN, "gateway offline", i * 2.0 + 1)
    assert not machine.flapping


def test_machine_flap_window_forgets_old_changes() -> None:
    machine = HealthMachine(FlapPolicy(flap_window_s=10, flap_changes=3, flap_quiet_s=5))
    for i, raw in enumerate([Health.ONLINE, Health.OFFLINE, Health.ONLINE, Health.OFFLINE]):
        assert machine.propose(raw, "x", i * 20.0) is not None  # 20 s apart: never flapping
    assert not machine.flapping


@pytest.mark.parametrize(
    ("transition", "expected"),
    [
        (
            Transition("device", "aq-01", "s", "g", "aq-01", "air_quality", "online", "offline", 'no "x"', TS),
            (
                'device_health,device=aq-01,gateway=g,kind=air_quality,site=s state="offline",code=0.0,'
                f'reason="no \\"x\\"" {TS}'
            ),
        ),
        (
            Transition("gateway", "s/g", "s", "g", "", "", "unknown", "online", "birth", TS),
            f'gateway_health,gateway=g,site=s state="online",code=3.0,reason="birth" {TS}',
        ),
    ],
)
def test_transition_lines(transition: Transition, expected: str) -> None:
    assert transition_line(transition) == expected


async def test_sink_persists_transitions(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.create_schema()
    try:
        sink = TransitionSink(db, None)
        monitor, _clock, _seen = make()
        monitor.subscribe(sink.add)
        monitor.observe(SITE, GW, birth())
        monitor.observe(SITE, GW, data("aq-01"))
        monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_DOWN, TS, reason="r"))
        await sink.flush()
        rows = await db.read(lambda s: recent_transitions(s, "aq-01", 10))
        assert [(r["old"], r["new"]) for r in rows] == [("online", "offline"), ("unknown", "online")]
    finally:
        db.close()


async def test_sink_caught_up_covers_pending_and_in_flight_transitions(tmp_path: Path) -> None:
    """What the live events announced is readable at once, whether still pending or on its way to the database."""
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.create_schema()
    try:
        sink = TransitionSink(db, None, flush_s=3600)
        monitor, _clock, _seen = make()
        monitor.subscribe(sink.add)
        monitor.observe(SITE, GW, birth())
        monitor.observe(SITE, GW, data("aq-01"))
        await sink.caught_up()  # pending: stored now
        rows = await db.read(lambda s: recent_transitions(s, "aq-01", 10))
        assert [r["new"] for r in rows] == ["online"]
        monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_DOWN, TS, reason="r"))
        in_flight = asyncio.create_task(sink.flush())  # the sink's own flush took the rows and is writing
        await asyncio.sleep(0)
        await sink.caught_up()
        rows = await db.read(lambda s: recent_transitions(s, "aq-01", 10))
        assert [r["new"] for r in rows] == ["offline", "online"]
        await in_flight
    finally:
        db.close()


def test_a_device_left_out_of_a_new_birth_becomes_unknown_and_is_not_timed_out() -> None:
    monitor, clock, seen = make()
    monitor.observe(SITE, GW, birth("sess-0001"))
    monitor.observe(SITE, GW, data("aq-01", "wl-01"))
    only_aq = State(online=True, session="sess-0002", ts=TS, devices=[DeviceInfo("aq-01", "air_quality", "p", 2.0)])
    monitor.observe(SITE, GW, only_aq)
    assert states(seen, "wl-01") == ["online", "unknown"]
    assert seen[-1].reason == f"no longer announced by gateway {SITE}/{GW}"
    clock.now += 100
    monitor.tick()
    assert states(seen, "wl-01") == ["online", "unknown"]
    assert states(seen, "aq-01") == ["online", "offline"]


GATEWAY_KEY = f"{SITE}/{GW}"


def silent_gateway(keepalive_s: int = 4) -> tuple[HealthMonitor, Clock, list[Transition]]:
    """A gateway whose birth promised ``keepalive_s`` (devices with long poll intervals, so that only the
    gateway's silence matters), heard last at ``clock.now``."""
    monitor, clock, seen = make()
    monitor.observe(SITE, GW, birth("sess-0001", interval=600.0, keepalive_s=keepalive_s))
    monitor.observe(SITE, GW, data("aq-01", "wl-01"))
    return monitor, clock, seen


def test_a_gateway_silent_for_one_and_a_half_keepalives_is_offline_and_its_devices_unknown() -> None:
    monitor, clock, seen = silent_gateway(keepalive_s=4)
    for _ in range(3):  # kept as promised: each message restarts the clock
        clock.now += 5.9
        monitor.tick()
        monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_UP, TS))
    assert states(seen, GATEWAY_KEY) == ["online"]
    clock.now += 5.99
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online"]
    clock.now += 0.01
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online", "offline"]
    offline = next(t for t in seen if t.key == GATEWAY_KEY and t.new == "offline")
    assert offline.reason == (
        "silent for 6.0 s: nothing within 1.5 x the keep-alive of 4 s its birth promised (session sess-0001)"
    )
    for device in ("aq-01", "wl-01"):
        last = [t for t in seen if t.key == device][-1]
        assert (last.new, last.reason) == ("unknown", f"gateway {GATEWAY_KEY} offline: {offline.reason}")
    assert monitor.gateway(SITE, GW) == {
        "state": "offline",
        "reason": offline.reason,
        "flapping": False,
        "problems": [],
    }


def test_the_will_after_the_silence_changes_nothing_and_a_new_birth_brings_it_back() -> None:
    monitor, clock, seen = silent_gateway()
    clock.now += 6.5
    monitor.tick()
    before = list(seen)
    monitor.observe(SITE, GW, State(online=False, session="sess-0001", reason="connection lost"))
    assert seen == before  # the broker's will only confirms what the hub already said
    monitor.observe(SITE, GW, data("aq-01", session="sess-0001"))  # after the will: late, proves nothing
    assert seen == before
    monitor.observe(SITE, GW, birth("sess-0002", interval=600.0, keepalive_s=4))
    monitor.observe(SITE, GW, data("aq-01", session="sess-0002"))
    assert states(seen, GATEWAY_KEY) == ["online", "offline", "online"]
    assert states(seen, "aq-01") == ["online", "unknown", "online"]


def test_the_same_session_speaking_after_its_silence_brings_it_back() -> None:
    monitor, clock, seen = silent_gateway()
    clock.now += 7.0
    monitor.tick()
    monitor.observe(SITE, GW, data("aq-01", session="sess-0000"))  # another session: not the one that went quiet
    assert states(seen, GATEWAY_KEY) == ["online", "offline"]
    clock.now += 1.0
    monitor.observe(SITE, GW, data("aq-01"))
    assert states(seen, GATEWAY_KEY) == ["online", "offline", "online"]
    back = [t for t in seen if t.key == GATEWAY_KEY][-1]
    assert back.reason == "heard again after 8.0 s of silence (session sess-0001)"
    assert states(seen, "aq-01") == ["online", "unknown", "online"]
    assert states(seen, "wl-01") == ["online", "unknown"]  # no reading of its own yet
    # The clock runs again from that message; a will of the session now is a real death.
    clock.now += 5.0
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online", "offline", "online"]
    monitor.observe(SITE, GW, State(online=False, session="sess-0001", reason="connection lost"))
    assert states(seen, GATEWAY_KEY) == ["online", "offline", "online", "offline"]
    assert [t for t in seen if t.key == GATEWAY_KEY][-1].reason == "gateway death: connection lost"


def test_an_event_of_the_session_also_brings_it_back_through_the_flap_damping() -> None:
    monitor, clock, seen = make(HealthPolicy(flap=FlapPolicy(flap_window_s=60, flap_changes=3, flap_quiet_s=30)))
    monitor.observe(SITE, GW, birth("sess-0001", interval=600.0, keepalive_s=2))
    for _ in range(4):  # silent 3 s, then one event: a link that keeps stalling
        clock.now += 3.0
        monitor.tick()
        monitor.observe(SITE, GW, Event("sess-0001", "aq-01", EventType.DEVICE_UP, TS))
    # Two counted changes, the third makes it flapping: no transition per stall afterwards.
    assert states(seen, GATEWAY_KEY) == ["online", "offline", "online", "degraded"]
    assert [t for t in seen if t.key == GATEWAY_KEY][-1].reason.startswith("flapping: 3 changes within 60 s")
    for _ in range(40):  # then keeps its promise: settles online after the quiet period
        clock.now += 1.0
        monitor.observe(SITE, GW, data("aq-01"))
        monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online", "offline", "online", "degraded", "online"]
    assert [t for t in seen if t.key == GATEWAY_KEY][-1].reason.startswith("stable for 30 s: heard again after")


def test_a_birth_without_keepalive_keeps_waiting_for_the_will() -> None:
    monitor, clock, seen = make()
    monitor.observe(SITE, GW, birth("sess-0001", interval=600.0))
    clock.now += 3600
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online"]
    # A later birth without the promise drops the earlier session's promise too.
    monitor.observe(SITE, GW, birth("sess-0002", interval=600.0, keepalive_s=4))
    monitor.observe(SITE, GW, birth("sess-0003", interval=600.0))
    clock.now += 3600
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online"]


def test_no_silence_verdict_while_the_hub_itself_cannot_hear() -> None:
    """The hub's own MQTT link down, or back-pressure: the gateways' silence proves nothing; once the hub hears
    again, each gateway gets a full 1.5 x keep-alive."""
    monitor, clock, seen = silent_gateway(keepalive_s=4)
    hearing = [True]
    monitor.watch_intake(lambda: hearing[0])
    clock.now += 2.0
    hearing[0] = False
    for _ in range(100):  # 50 s blind
        clock.now += 0.5
        monitor.tick()
    hearing[0] = True
    clock.now += 5.9
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online"]
    clock.now += 0.2  # 6.1 s since the hub last could not hear
    monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online", "offline"]
    assert [t for t in seen if t.key == GATEWAY_KEY][-1].reason.startswith("silent for 58.1 s")


def test_a_failing_intake_check_counts_as_not_hearing() -> None:
    monitor, clock, seen = silent_gateway(keepalive_s=4)

    def broken() -> bool:
        raise RuntimeError("no pipeline")

    monitor.watch_intake(broken)
    for _ in range(40):
        clock.now += 0.5
        monitor.tick()
    assert states(seen, GATEWAY_KEY) == ["online"]


async def test_the_clock_wakes_at_the_silence_deadline_not_a_tick_later() -> None:
    """With a tick far longer than the keep-alive, ``run`` still gives the verdict at 1.5 x keep-alive: it
    sleeps until the earliest moment a promised gateway may turn silent."""
    loop = asyncio.get_running_loop()
    monitor = HealthMonitor(None, HealthPolicy(tick_s=30.0, flap=FlapPolicy(60, 4, 30)), clock=loop.time)
    offline = asyncio.Event()
    monitor.subscribe(lambda t: offline.set() if (t.key, t.new) == (GATEWAY_KEY, "offline") else None)
    monitor.observe(SITE, GW, birth("sess-0001", interval=600.0, keepalive_s=1))
    heard = loop.time()
    monitor.observe(SITE, GW, data("aq-01", "wl-01"))
    monitor.tick()  # the first tick learns the deadline (run's first sleep is a whole tick otherwise)
    clock = asyncio.create_task(monitor.run())
    try:
        # Half the tick: a verdict that waited for the next tick fails here.
        await asyncio.wait_for(offline.wait(), timeout=15)
        took = loop.time() - heard
    finally:
        clock.cancel()
    assert took >= 1.5, f"offline {took:.2f} s after the last message, before 1.5 x keep-alive"


async def test_sink_flush_returns_only_when_a_write_in_flight_has_landed() -> None:
    """``flush`` means: every line added before it is in InfluxDB. A write already on its way (the sink's own
    clock took those lines) must land before flush returns, and the lines keep their order."""
    written: list[list[str]] = []
    calls = 0
    release = asyncio.Event()

    class SlowWriter:
        async def write(self, body: bytes) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                await release.wait()  # the first write hangs until released
            written.append(body.decode().splitlines())

    sink = TransitionSink(None, SlowWriter(), flush_s=3600)
    monitor, _clock, _seen = make()
    monitor.subscribe(sink.add)
    monitor.observe(SITE, GW, birth())  # gateway online, two devices unknown -> nothing for devices yet
    first = asyncio.create_task(sink.flush())  # takes the gateway's line and hangs in the writer
    await asyncio.sleep(0)
    monitor.observe(SITE, GW, data("aq-01"))
    second = asyncio.create_task(sink.flush())
    await asyncio.sleep(0.05)
    assert not second.done(), "flush returned while an earlier write was still in flight"
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [[line.split(",")[0] for line in batch] for batch in written] == [["gateway_health"], ["device_health"]]
