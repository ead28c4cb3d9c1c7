"""Gateway state map (late wills) and sequence gap counting."""

from __future__ import annotations

import pytest

from hub.ingest.tracking import GatewayStates, SeqTracker
from wire import v1

TS = 1_764_331_200_000
OLD, NEW = "session-old-1", "session-new-2"


def birth(session: str, ts: int = TS) -> v1.State:
    devices = [v1.DeviceInfo(id="aq-01", kind="air_quality", profile="pm", interval_s=5)]
    return v1.State(online=True, session=session, ts=ts, agent="0.1.0", devices=devices)


def death(session: str, reason: str = "connection lost") -> v1.State:
    return v1.State(online=False, session=session, reason=reason)


def test_a_late_will_of_an_older_session_is_ignored() -> None:
    states = GatewayStates()
    assert states.apply("site-a", "gw-1", birth(OLD), TS)
    assert states.apply("site-a", "gw-1", birth(NEW, TS + 10_000), TS + 10_000)
    # The broker delivers the old connection's Last Will after the new birth.
    assert not states.apply("site-a", "gw-1", death(OLD), TS + 11_000)
    current = states.get("site-a", "gw-1")
    assert current is not None
    assert (current.online, current.session, current.ts_ms) == (True, NEW, TS + 10_000)
    assert states.online_count == 1


def test_a_death_of_the_current_session_marks_it_offline_at_arrival_time_keeping_devices() -> None:
    states = GatewayStates()
    states.apply("site-a", "gw-1", birth(NEW), TS)
    assert states.apply("site-a", "gw-1", death(NEW, "shutdown"), TS + 500)
    current = states.get("site-a", "gw-1")
    assert current is not None
    assert (current.online, current.session, current.ts_ms, current.reason) == (False, NEW, TS + 500, "shutdown")
    assert [d.id for d in current.devices] == ["aq-01"]
    assert states.online_count == 0


def test_a_death_for_an_unknown_gateway_is_recorded() -> None:
    # The hub (re)started and the first thing it hears is a retained will: that is the truth it has.
    states = GatewayStates()
    assert states.apply("site-b", "gw-2", death(OLD), TS)
    assert states.snapshot() == {
        "site-b/gw-2": {
            "online": False,
            "session": OLD,
            "ts_ms": TS,
            "agent": "",
            "devices": 0,
            "reason": "connection lost",
        }
    }


def test_gateways_are_independent() -> None:
    states = GatewayStates()
    states.apply("site-a", "gw-1", birth(NEW), TS)
    assert states.apply("site-b", "gw-1", death(OLD), TS)  # same gateway id, other site
    assert len(states) == 2


@pytest.mark.parametrize(
    ("messages", "gaps", "repeats"),
    [
        pytest.param([("s1", 1), ("s1", 2), ("s1", 3)], 0, 0, id="in-order"),
        pytest.param([("s1", 1), ("s1", 4)], 2, 0, id="jump-counts-missing"),
        pytest.param([("s1", 1), ("s1", 3), ("s1", 6)], 3, 0, id="gaps-add-up"),
        pytest.param([("s1", 5), ("s1", 6)], 0, 0, id="first-seen-mid-session-is-no-gap"),
        pytest.param([("s1", 1), ("s1", 2), ("s2", 9), ("s2", 10)], 0, 0, id="new-session-resets"),
        pytest.param([("s1", 1), ("s1", 2), ("s1", 2), ("s1", 3)], 0, 1, id="redelivery-is-a-repeat"),
        pytest.param([("s1", 1), ("s1", 5), ("s1", 3), ("s1", 6)], 3, 1, id="late-one-does-not-move-back"),
        pytest.param([("s1", 3), ("s2", 1), ("s1", 5)], 0, 0, id="old-session-again-resets"),
    ],
)
def test_sequence_gaps(messages: list[tuple[str, int]], gaps: int, repeats: int) -> None:
    tracker = SeqTracker()
    for session, seq in messages:
        tracker.observe("site-a", "gw-1", session, seq)
    assert tracker.total_gaps == gaps
    assert tracker.gaps == ({"site-a/gw-1": gaps} if gaps else {})
    assert tracker.repeats == repeats


def test_sequence_gaps_are_per_gateway() -> None:
    tracker = SeqTracker()
    assert tracker.observe("site-a", "gw-1", "s1", 1) == 0
    assert tracker.observe("site-b", "gw-2", "s9", 1) == 0
    assert tracker.observe("site-a", "gw-1", "s1", 3) == 1
    assert tracker.observe("site-b", "gw-2", "s9", 2) == 0
    assert tracker.observe("site-b", "gw-2", "s9", 12) == 9
    assert tracker.gaps == {"site-a/gw-1": 1, "site-b/gw-2": 9}
