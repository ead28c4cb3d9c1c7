"""The alert figures for InfluxDB (hub/alerts/series.py): counting open alerts, targets, resolved-alert lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.alerts.series import (
    RESOLVE_TARGETS_S,
    SEVERITIES,
    AlertSeriesJob,
    Counts,
    OpenAlert,
    ResolvedAlert,
    check_targets,
    count_open,
    open_lines,
    resolved_line,
    target_of,
)
from hub.registry.db import Database

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
WARDS = {"site-a": "ben-thanh", "site-b": "sai-gon"}


def ward_of(site: str) -> str | None:
    return WARDS.get(site)


def test_severities_are_the_rules_and_each_has_a_target() -> None:
    assert set(SEVERITIES) == {"info", "warning", "major", "critical"}
    assert set(RESOLVE_TARGETS_S) == set(SEVERITIES)
    assert RESOLVE_TARGETS_S["critical"] < RESOLVE_TARGETS_S["major"] < RESOLVE_TARGETS_S["warning"]


@pytest.mark.parametrize(
    ("alerts", "wards", "expected"),
    [
        pytest.param([], [], {}, id="nothing open: zeros for no ward only"),
        pytest.param([], ["ben-thanh"], {}, id="nothing open: zeros for every ward"),
        pytest.param(
            [OpenAlert("site-a", None, "critical", "firing")],
            ["ben-thanh"],
            {("ben-thanh", "critical"): Counts(1, 0)},
            id="ward from the registry",
        ),
        pytest.param(
            [OpenAlert("site-a", "old-ward", "major", "acknowledged")],
            [],
            {("ben-thanh", "major"): Counts(0, 1)},
            id="the registry's ward now wins over the stored one",
        ),
        pytest.param(
            [OpenAlert("site-x", "tan-dinh", "major", "firing")],
            [],
            {("tan-dinh", "major"): Counts(1, 0)},
            id="stored ward when the registry has none",
        ),
        pytest.param(
            [OpenAlert("", None, "warning", "firing"), OpenAlert("site-x", None, "warning", "acknowledged")],
            ["ben-thanh"],
            {("", "warning"): Counts(1, 1)},
            id="no ward anywhere: the series without a ward",
        ),
        pytest.param(
            [
                OpenAlert("site-a", None, "critical", "firing"),
                OpenAlert("site-a", None, "critical", "firing"),
                OpenAlert("site-a", None, "critical", "acknowledged"),
                OpenAlert("site-b", None, "info", "firing"),
            ],
            ["ben-thanh", "sai-gon"],
            {("ben-thanh", "critical"): Counts(2, 1), ("sai-gon", "info"): Counts(1, 0)},
            id="counted per ward and severity, firing and acknowledged apart",
        ),
        pytest.param(
            [OpenAlert("site-a", None, "minor", "firing")],
            [],
            {("ben-thanh", "minor"): Counts(1, 0)},
            id="an unknown severity is still counted",
        ),
    ],
)
def test_count_open(alerts: list[OpenAlert], wards: list[str], expected: dict[tuple[str, str], Counts]) -> None:
    counts = count_open(alerts, wards, ward_of)
    every_ward = {"", *wards}
    zeros = {(w, s): Counts() for w in every_ward for s in SEVERITIES}
    assert counts == zeros | expected
    assert all(counts[key].open == c.firing + c.acknowledged for key, c in expected.items())


def test_open_lines_write_zeros_and_leave_out_an_empty_ward() -> None:
    counts = count_open([OpenAlert("site-a", None, "critical", "firing")], ["ben-thanh"], ward_of)
    lines = open_lines(counts, 1_000)
    assert len(lines) == 2 * len(SEVERITIES)
    assert "alerts,severity=critical,ward=ben-thanh open=1.0,firing=1.0,acknowledged=0.0 1000" in lines
    assert "alerts,severity=major,ward=ben-thanh open=0.0,firing=0.0,acknowledged=0.0 1000" in lines
    assert "alerts,severity=major open=0.0,firing=0.0,acknowledged=0.0 1000" in lines


def _resolved(severity: str, after: timedelta, **kw: Any) -> ResolvedAlert:
    values: dict[str, Any] = {
        "id": 7,
        "rule": "device-offline",
        "subject": "aq-01",
        "site": "site-a",
        "ward": None,
        "severity": severity,
        "opened_at": T0,
        "resolved_at": T0 + after,
        "resolved_by": "system",
    }
    return ResolvedAlert(**(values | kw))


@pytest.mark.parametrize(
    ("severity", "after", "in_time"),
    [
        ("critical", timedelta(minutes=59), True),
        ("critical", timedelta(hours=1), True),  # at the target is in time
        ("critical", timedelta(hours=1, milliseconds=1), False),
        ("major", timedelta(hours=3, minutes=59), True),
        ("major", timedelta(hours=4, seconds=1), False),
        ("warning", timedelta(hours=23), True),
        ("warning", timedelta(hours=25), False),
        ("info", timedelta(hours=24), True),
        ("info", timedelta(days=2), False),
        ("minor", timedelta(hours=23), True),  # unknown: the loosest target (24 h)
        ("minor", timedelta(hours=25), False),
    ],
)
def test_resolved_in_time_against_the_severity_target(severity: str, after: timedelta, in_time: bool) -> None:
    target = target_of(severity, RESOLVE_TARGETS_S)
    text = resolved_line(_resolved(severity, after), RESOLVE_TARGETS_S, ward_of)
    seconds = after.total_seconds()
    assert text == (
        f"alert_resolved,rule=device-offline,severity={severity},subject=aq-01,ward=ben-thanh "
        f"resolve_s={seconds!r},target_s={target!r},in_time={1.0 if in_time else 0.0},alert_id=7.0,manual=false "
        f"{int((T0 + after).timestamp() * 1000)}"
    )


def test_resolved_line_uses_the_stored_ward_first_and_naive_times_as_utc() -> None:
    naive = _resolved(
        "major",
        timedelta(0),
        ward="tan-dinh",
        opened_at=datetime(2026, 11, 28, 8, 0),  # noqa: DTZ001 - SQLite gives back naive UTC
        resolved_at=datetime(2026, 11, 28, 9, 0, 0, 500_000),  # noqa: DTZ001
        resolved_by="operator-1",
    )
    text = resolved_line(naive, RESOLVE_TARGETS_S, ward_of)
    assert ",ward=tan-dinh " in text
    assert "resolve_s=3600.5," in text
    assert "manual=true" in text
    assert text.endswith(f" {int(datetime(2026, 11, 28, 9, 0, 0, 500_000, tzinfo=UTC).timestamp() * 1000)}")
    # Resolved "before" it opened (clocks of two hub instances): 0 s, not negative.
    backwards = _resolved("major", -timedelta(seconds=3))
    assert "resolve_s=0.0," in resolved_line(backwards, RESOLVE_TARGETS_S)


def test_the_same_alert_always_gives_the_same_line() -> None:
    alert = _resolved("critical", timedelta(minutes=5))
    assert resolved_line(alert, RESOLVE_TARGETS_S, ward_of) == resolved_line(alert, RESOLVE_TARGETS_S, ward_of)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"critical": 60.0}, "no target for severity info, warning, major"),
        ({**RESOLVE_TARGETS_S, "major": 0.0}, "'major' must be a positive number of seconds: 0.0"),
        ({**RESOLVE_TARGETS_S, "info": "1h"}, "'info' must be a positive number of seconds: '1h'"),
        ({**RESOLVE_TARGETS_S, "info": True}, "'info' must be a positive number of seconds: True"),
    ],
)
def test_bad_targets_are_refused_by_name(targets: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="alert resolve target") as raised:
        check_targets(targets)
    assert message in str(raised.value)


def test_custom_targets_are_used() -> None:
    targets = check_targets({**RESOLVE_TARGETS_S, "critical": 600})
    assert "in_time=0.0" in resolved_line(_resolved("critical", timedelta(minutes=11)), targets)
    assert "target_s=600.0" in resolved_line(_resolved("critical", timedelta(minutes=9)), targets)


@pytest.mark.parametrize("name", ["interval_s", "backfill_s", "overlap_s"])
def test_job_refuses_non_positive_periods(name: str, tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    try:

        async def write(_body: bytes) -> None:
            return None

        periods = {"interval_s": 60.0, "backfill_s": 60.0, "overlap_s": 60.0} | {name: 0.0}
        with pytest.raises(ValueError, match=f"{name} must be positive"):
            AlertSeriesJob(
                db,
                write,
                interval_s=periods["interval_s"],
                backfill_s=periods["backfill_s"],
                overlap_s=periods["overlap_s"],
            )
    finally:
        db.close()
