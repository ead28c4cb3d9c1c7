"""The availability figures of one camera (hub/reports/availability.py), case by case, computed by hand: reasons
to fault kinds, months in the city's time zone, time per state and per fault, episodes and their time to
restore, open episodes, what carries in from before the month."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from hub.reports.availability import (
    FAULT_KINDS,
    Figures,
    Step,
    camera_figures,
    faults_of,
    month_bounds,
    parse_month,
    pooled,
)

H = 3_600_000  # an hour in ms


@pytest.mark.parametrize(
    ("state", "reason", "kinds"),
    [
        ("online", "device_up", ()),
        ("unknown", "gateway site-a/gw-1 offline: connection lost", ()),
        ("offline", "device_down: no answer", ("offline",)),
        ("degraded", "device_degraded: image_black: 99.1% of pixels darker than 24", ("image_black",)),
        (
            "degraded",
            "device_degraded: image_black: 99.1% of pixels darker than 24; view_changed: moved 40%",
            ("image_black", "view_changed"),
        ),
        (
            "degraded",
            "device_degraded: image_blurred: sharpness 3; image_covered: detail 1%; image_frozen: same frame 60 s",
            ("image_frozen", "image_blurred", "image_covered"),
        ),
        # A detail that mentions another problem's name is not that problem.
        ("degraded", "device_degraded: image_frozen: not image_black: dark", ("image_frozen",)),
        ("degraded", "stable for 130 s: device_degraded: view_changed: moved 40%", ("view_changed",)),
        (
            "degraded",
            "flapping: 6 changes within 300 s (last: degraded, device_degraded: image_black: x)",
            ("degraded",),
        ),
        ("degraded", "device_degraded: lens heater failed", ("degraded",)),
        ("degraded", "device_degraded", ("degraded",)),
    ],
)
def test_reasons_give_fault_kinds(state: str, reason: str, kinds: tuple[str, ...]) -> None:
    assert faults_of(state, reason) == kinds


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-01", "2026-01-01", "1969-12", " 2026-01", ""])
def test_a_bad_month_is_refused_saying_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="is not a month as YYYY-MM"):
        parse_month(text)


def test_months_are_the_city_time_zone_s() -> None:
    hcm = ZoneInfo("Asia/Ho_Chi_Minh")
    start, end = month_bounds(*parse_month("2024-02"), hcm)
    assert start.isoformat() == "2024-02-01T00:00:00+07:00"
    assert end.isoformat() == "2024-03-01T00:00:00+07:00"
    assert (end - start).days == 29  # a leap year's February
    start, end = month_bounds(2026, 12, hcm)
    assert (start.isoformat(), end.isoformat()) == ("2026-12-01T00:00:00+07:00", "2027-01-01T00:00:00+07:00")
    # A zone with summer time: March has an hour less (the timestamps, not the wall clock, are what counts).
    start, end = month_bounds(2026, 3, ZoneInfo("Europe/Berlin"))
    assert end.timestamp() - start.timestamp() == 31 * 86_400 - 3600


def _times(f: Figures) -> dict[str, int]:
    return {str(k): v for k, v in f.state_ms.items() if v}


def test_one_camera_every_state_and_episodes_by_hand() -> None:
    # A 100-hour period; online before it.
    before = Step(-5 * H, "online", "device_up")
    steps = [
        Step(10 * H, "degraded", "device_degraded: image_black: dark"),
        Step(12 * H, "degraded", "device_degraded: image_black: dark; view_changed: moved 40%"),
        Step(13 * H, "offline", "device_down: no answer"),
        Step(14 * H, "online", "device_up"),  # restores black (4 h), view (2 h), offline (1 h); outage 4 h
        Step(20 * H, "unknown", "gateway offline"),
        Step(30 * H, "online", "gateway back"),
        Step(40 * H, "offline", "device_down"),
        Step(41 * H, "unknown", "gateway offline"),
        Step(43 * H, "offline", "device_down"),  # the same offline episode: no return to online between
        Step(45 * H, "online", "device_up"),  # offline restored after 5 h
        Step(90 * H, "degraded", "flapping: 6 changes"),  # open at the end
    ]
    f = camera_figures(before, steps, 0, 100 * H)
    assert f.observed_ms == 100 * H
    # online 0-10, 14-20, 30-40, 45-90; degraded 10-13, 90-100; offline 13-14, 40-41, 43-45; unknown 20-30, 41-43
    assert _times(f) == {"online": 71 * H, "degraded": 13 * H, "offline": 4 * H, "unknown": 12 * H}
    assert f.availability == 71 / 88
    assert f.fault_ms["image_black"] == 3 * H
    assert f.fault_ms["view_changed"] == 1 * H
    assert f.fault_ms["offline"] == 4 * H
    assert f.fault_ms["degraded"] == 10 * H
    got = {k: (e.started, e.restored, e.open, e.mean_time_to_restore_ms) for k, e in f.faults.items() if e.started}
    assert got == {
        "image_black": (1, 1, 0, 4 * H),
        "view_changed": (1, 1, 0, 2 * H),
        "offline": (2, 2, 0, (1 * H + 5 * H) / 2),
        "degraded": (1, 0, 1, None),
    }
    o = f.outages
    assert (o.started, o.restored, o.open, o.mean_time_to_restore_ms) == (3, 2, 1, (4 * H + 5 * H) / 2)


def test_what_carries_in_from_before_the_month_is_neither_counted_nor_timed_to_restore() -> None:
    # Offline since before the month: its time counts, the episode belongs to the month it started in.
    f = camera_figures(Step(-3 * H, "offline", "device_down"), [Step(2 * H, "online", "device_up")], 0, 10 * H)
    assert _times(f) == {"offline": 2 * H, "online": 8 * H}
    assert f.fault_ms["offline"] == 2 * H
    assert (f.faults["offline"].started, f.faults["offline"].restored, f.outages.started) == (0, 0, 0)
    # Going to another fault without a return to online: the carried episode stays, a new kind starts one.
    f = camera_figures(
        Step(-3 * H, "offline", "device_down"),
        [Step(2 * H, "degraded", "device_degraded: image_frozen: x"), Step(5 * H, "online", "device_up")],
        0,
        10 * H,
    )
    assert (f.faults["offline"].started, f.faults["image_frozen"].started) == (0, 1)
    assert f.faults["image_frozen"].mean_time_to_restore_ms == 3 * H
    assert f.outages.started == 0  # the outage began before the month


def test_no_history_is_unknown_and_no_availability() -> None:
    f = camera_figures(None, [], 0, 10 * H)
    assert _times(f) == {"unknown": 10 * H}
    assert f.availability is None
    # A camera first seen mid-month: unknown until then.
    f = camera_figures(None, [Step(4 * H, "online", "birth")], 0, 10 * H)
    assert _times(f) == {"unknown": 4 * H, "online": 6 * H}
    assert f.availability == 1.0


def test_transitions_outside_the_period_are_ignored_and_pooling_sums() -> None:
    a = camera_figures(
        Step(-H, "online", ""),
        [Step(-H // 2, "offline", ""), Step(5 * H, "offline", ""), Step(12 * H, "online", "")],
        0,
        10 * H,
    )
    assert _times(a) == {"online": 5 * H, "offline": 5 * H}
    assert (a.faults["offline"].started, a.faults["offline"].open) == (1, 1)
    b = camera_figures(
        Step(-H, "offline", ""),
        [Step(H, "online", ""), Step(2 * H, "offline", ""), Step(3 * H, "online", "")],
        0,
        10 * H,
    )
    total = pooled([a, b])
    assert total.cameras == 2
    assert total.observed_ms == 20 * H
    assert total.availability == (5 * H + 8 * H) / (20 * H)
    e = total.faults["offline"]
    assert (e.started, e.restored, e.open, e.mean_time_to_restore_ms) == (2, 1, 1, 1 * H)
    assert set(total.faults) == set(FAULT_KINDS)
    assert pooled([]).availability is None


def test_a_month_of_the_city_starts_at_local_midnight() -> None:
    hcm = ZoneInfo("Asia/Ho_Chi_Minh")
    start, _ = month_bounds(2026, 11, hcm)
    assert start == datetime(2026, 10, 31, 17, 0, tzinfo=ZoneInfo("UTC"))
