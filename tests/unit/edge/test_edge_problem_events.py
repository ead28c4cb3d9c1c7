"""A device's problems as health events: ``device_degraded`` when the set of raised problems becomes non-empty or
changes, ``device_up`` when it is empty again, ``device_down`` first; and the wording of the reason, a contract
with the hub's readers (docs/protocol.md, "event").

The poller is driven poll by poll (``poll_now``) with a device living in memory (a real driver, not a mock), so
each case is a table: what the device says at each poll, and the exact events that follow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.driver import ProblemReporting, Reading, now_ms
from devices.errors import DeviceUnavailable
from edge.events import MAX_REASON, EventQueue, problems_reason
from edge.outbox import MemoryOutbox
from edge.plan import DevicePlan
from edge.poller import DevicePoller, Health, PollFailed
from edge.stats import EdgeStats
from wire.v1 import TEXT_PATTERN, EventType

BLACK = {"image_black": "100% of the picture black (limit 98%)"}
BLACK_MOVED = BLACK | {"view_changed": "SSIM 0.373 with the day reference view (limit 0.55)"}
BLACK_REASON = "image_black: 100% of the picture black (limit 98%)"
BLACK_MOVED_REASON = f"{BLACK_REASON}; view_changed: SSIM 0.373 with the day reference view (limit 0.55)"


class ProbeWithProblems:
    """A health probe naming its device's problems (as the camera driver does), set by the test before each poll:
    ``fail`` makes the poll itself fail, ``down`` is the probe's verdict, ``problems`` what is raised."""

    def __init__(self) -> None:
        self.fail = False
        self.down: str | None = None
        self.problems_now: dict[str, str] = {}
        self.broken = False

    async def open(self) -> None:
        pass

    async def poll(self) -> list[Reading]:
        if self.fail:
            raise DeviceUnavailable("no answer")
        return [Reading(ts_ms=now_ms(), metrics={"up": True})]

    async def close(self) -> None:
        pass

    def describe_plan(self) -> list[str]:
        return ["in memory"]

    def down_reason(self) -> str | None:
        return self.down

    def problems(self) -> Mapping[str, str]:
        if self.broken:
            raise RuntimeError("a driver bug")
        return dict(self.problems_now)


#: One poll: ("ok", problems) | ("fail", None) | ("down", None) | ("broken", None): problems() raises.
Step = tuple[str, Mapping[str, str] | None]
Expected = list[tuple[EventType, str]]

UP: Final = (EventType.DEVICE_UP, "")
DOWN_FAILED: Final = (EventType.DEVICE_DOWN, "no answer")
DOWN_PROBE: Final = (EventType.DEVICE_DOWN, "ONVIF unreachable")

CASES: dict[str, tuple[list[Step], Expected]] = {
    "well all along: one up": ([("ok", {}), ("ok", {}), ("ok", {})], [UP]),
    "raised, held, cleared": (
        [("ok", {}), ("ok", BLACK), ("ok", BLACK), ("ok", {}), ("ok", {})],
        [UP, (EventType.DEVICE_DEGRADED, BLACK_REASON), UP],
    ),
    "problems from the first poll: degraded, no up first": (
        [("ok", BLACK), ("ok", BLACK)],
        [(EventType.DEVICE_DEGRADED, BLACK_REASON)],
    ),
    "a second problem raised, then the first cleared: degraded each time": (
        [("ok", BLACK), ("ok", BLACK_MOVED), ("ok", {"view_changed": BLACK_MOVED["view_changed"]}), ("ok", {})],
        [
            (EventType.DEVICE_DEGRADED, BLACK_REASON),
            (EventType.DEVICE_DEGRADED, BLACK_MOVED_REASON),
            (EventType.DEVICE_DEGRADED, "view_changed: SSIM 0.373 with the day reference view (limit 0.55)"),
            UP,
        ],
    ),
    "a detail that changes alone is no news": (
        [("ok", BLACK), ("ok", {"image_black": "99.1% of the picture black (limit 98%)"})],
        [(EventType.DEVICE_DEGRADED, BLACK_REASON)],
    ),
    "a failed poll goes down over the problems; back with them raised: degraded": (
        [("ok", BLACK), ("fail", None), ("fail", None), ("ok", BLACK), ("ok", {})],
        [(EventType.DEVICE_DEGRADED, BLACK_REASON), DOWN_FAILED, (EventType.DEVICE_DEGRADED, BLACK_REASON), UP],
    ),
    "the probe's down verdict over the problems; back without them: up": (
        [("ok", BLACK), ("down", None), ("ok", {})],
        [(EventType.DEVICE_DEGRADED, BLACK_REASON), DOWN_PROBE, UP],
    ),
    "problems() failing keeps the problems as last reported": (
        [("ok", BLACK), ("broken", None), ("ok", BLACK), ("ok", {})],
        [(EventType.DEVICE_DEGRADED, BLACK_REASON), UP],
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_problems_become_events(case: str) -> None:
    steps, expected = CASES[case]
    device = ProbeWithProblems()
    stats = EdgeStats()
    events = EventQueue(stats)
    poller = DevicePoller(
        DevicePlan("cam-1", "probe", "in-memory", "camera", 60.0, 1.0, device), MemoryOutbox(1000, stats), events, stats
    )
    for what, problems in steps:
        device.fail = what == "fail"
        device.down = "ONVIF unreachable" if what == "down" else None
        device.broken = what == "broken"
        if problems is not None:
            device.problems_now = dict(problems)
        if what == "fail":
            with pytest.raises(PollFailed):
                await poller.poll_now()
        else:
            await poller.poll_now()
    assert [(e.type, e.reason) for e in events.items()] == expected
    assert poller.health is (Health.DOWN if steps[-1][0] in ("fail", "down") else Health.UP)


def test_a_driver_without_problems_is_up_as_before() -> None:
    """The plain driver interface has no ``problems``: the poller asks nothing (covered by the scheduler's tests);
    here only that such a driver is not taken for a problem-reporting one."""

    class Plain:
        async def poll(self) -> list[Reading]:
            return []

    assert not isinstance(Plain(), ProblemReporting)
    assert isinstance(ProbeWithProblems(), ProblemReporting)


TEXT_PATTERN_RE: Final = re.compile(TEXT_PATTERN)

REASONS: list[tuple[Mapping[str, str], str]] = [
    ({}, ""),
    (BLACK, BLACK_REASON),
    # Sorted by name, whatever the driver's order.
    (
        {"view_changed": "SSIM 0.3 (limit 0.55)", "image_covered": "no detail", "image_black": "100% black"},
        "image_black: 100% black; image_covered: no detail; view_changed: SSIM 0.3 (limit 0.55)",
    ),
    # A separator inside a detail would split it: made a comma. A line break is made a space.
    ({"image_frozen": "frozen; for 3 s\nreally"}, "image_frozen: frozen, for 3 s really"),
    # No detail: "raised", so every part is "<name>: <detail>".
    ({"image_blurred": "", "image_black": "  "}, "image_black: raised; image_blurred: raised"),
    # A long detail is cut to 96 characters, so every name fits.
    ({"image_black": "x" * 300, "view_changed": "y"}, f"image_black: {'x' * 93}...; view_changed: y"),
]


@pytest.mark.parametrize(("problems", "reason"), REASONS)
def test_the_reason_of_degraded(problems: Mapping[str, str], reason: str) -> None:
    assert problems_reason(problems) == reason


def test_the_reason_is_bounded_as_the_contract_says() -> None:
    many = {f"problem_{i:02d}": "d" * 200 for i in range(20)}
    reason = problems_reason(many)
    assert len(reason) == MAX_REASON
    assert reason.endswith("...")
    assert reason.startswith("problem_00: " + "d" * 93 + "...; problem_01: ")


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
_DETAILS = st.text(max_size=120)


@given(st.dictionaries(_NAMES, _DETAILS, min_size=1, max_size=5))
def test_the_reason_parses_back_to_the_problems(problems: dict[str, str]) -> None:
    """What the hub's availability report does: split on "; ", then at the first ": ". Five problems of short
    names always fit whole in 512 characters."""
    reason = problems_reason(problems)
    assert TEXT_PATTERN_RE.fullmatch(reason)
    parsed = dict(part.split(": ", 1) for part in reason.split("; "))
    assert list(parsed) == sorted(problems)
    for name, detail in parsed.items():
        assert detail == problems_reason({name: problems[name]}).split(": ", 1)[1]
        assert ";" not in detail
        assert 1 <= len(detail) <= 96
