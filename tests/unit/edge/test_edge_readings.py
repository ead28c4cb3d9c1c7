"""Driver readings -> contract readings: what the contract refuses is dropped, warned once, never sent."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from devices.driver import Reading as DriverReading
from edge.readings import ReadingFilter
from edge.stats import EdgeStats
from wire.v1 import DataBatch, Reading, decode, encode

TS = 1_764_331_200_123

# (case, metrics in, metrics out)
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "all good",
        {"pm25": 35.2, "alarm": False, "count": 7, "mode": "auto"},
        {"pm25": 35.2, "alarm": False, "count": 7, "mode": "auto"},
    ),
    ("nan", {"pm25": float("nan"), "pm10": 61.0}, {"pm10": 61.0}),
    ("infinity", {"pm25": float("inf"), "pm10": float("-inf"), "ok": 1.0}, {"ok": 1.0}),
    ("name with capitals", {"PM25": 1.0, "pm10": 2.0}, {"pm10": 2.0}),
    ("name with a dash", {"pm-25": 1.0, "pm10": 2.0}, {"pm10": 2.0}),
    ("name starting with a digit", {"2pm": 1.0, "pm10": 2.0}, {"pm10": 2.0}),
    ("string too long", {"text": "x" * 1025, "short": "x" * 1024}, {"short": "x" * 1024}),
    ("integer beyond 64 bits", {"big": 2**64, "fits": 2**63 - 1}, {"fits": 2**63 - 1}),
    ("not a scalar", {"list": [1, 2], "none": None, "ok": True}, {"ok": True}),
]


@pytest.mark.parametrize(("metrics", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_values_the_contract_refuses_are_dropped(metrics: dict[str, Any], expected: dict[str, Any]) -> None:
    stats = EdgeStats()
    out = ReadingFilter("aq-1", "air_quality", stats).convert([DriverReading(TS, metrics)])
    assert out == [Reading(device="aq-1", kind="air_quality", ts=TS, metrics=expected)]
    assert stats.values_dropped == len(metrics) - len(expected)
    # What is left passes the hub's own check of the contract.
    batch = decode(encode(DataBatch(session="abcdefgh12", seq=1, readings=out)), DataBatch)
    assert batch.readings == out


@pytest.mark.parametrize(
    ("ts", "metrics"),
    [(1_764_331_200, {"a": 1.0}), (1_764_331_200_123_000, {"a": 1.0}), (TS, {"a": float("nan")}), (TS, {})],
    ids=["seconds", "microseconds", "nothing left", "empty"],
)
def test_readings_that_cannot_be_sent_are_dropped_whole(ts: int, metrics: dict[str, Any]) -> None:
    stats = EdgeStats()
    assert ReadingFilter("aq-1", "air_quality", stats).convert([DriverReading(ts, metrics)]) == []
    assert stats.values_dropped >= 1


def test_a_drop_is_warned_once_per_device_and_metric(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.readings")
    stats = EdgeStats()
    first = ReadingFilter("aq-1", "air_quality", stats)
    second = ReadingFilter("aq-2", "air_quality", stats)
    for _ in range(5):
        first.convert([DriverReading(TS, {"pm25": float("nan"), "pm10": float("nan"), "ok": 1.0})])
        second.convert([DriverReading(TS, {"pm25": float("nan"), "ok": 1.0})])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(warnings) == sorted(
        [
            "device aq-1: metric 'pm25' dropped (nan is not a finite number); further drops of it are not logged",
            "device aq-1: metric 'pm10' dropped (nan is not a finite number); further drops of it are not logged",
            "device aq-2: metric 'pm25' dropped (nan is not a finite number); further drops of it are not logged",
        ]
    )
    assert stats.values_dropped == 15


def test_at_most_256_metrics_per_reading() -> None:
    stats = EdgeStats()
    metrics = {f"m{i}": float(i) for i in range(300)}
    [reading] = ReadingFilter("aq-1", "air_quality", stats).convert([DriverReading(TS, metrics)])
    assert len(reading.metrics) == 256
    assert stats.values_dropped == 44


def test_a_devices_stamps_only_go_forward_when_the_clock_steps_back() -> None:
    stats = EdgeStats()
    f = ReadingFilter("th-01", "weather", stats)
    t = 1_800_000_000_000
    sent = [f.convert([DriverReading(ts, {"temperature_c": float(i)})])[0] for i, ts in enumerate((t, t + 1000))]
    # The clock steps back 20 s: the next readings would land on (or before) stored ones and overwrite them.
    stepped = [f.convert([DriverReading(ts, {"temperature_c": 9.0})])[0] for ts in (t - 20_000, t - 19_000, t + 1000)]
    assert [r.ts for r in sent + stepped] == [t, t + 1000, t + 1001, t + 1002, t + 1003]
    assert stats.readings_restamped == 3
    # Once the clock is past the last stamp, readings carry their own time again.
    assert f.convert([DriverReading(t + 5000, {"temperature_c": 1.0})])[0].ts == t + 5000
    assert stats.readings_restamped == 3
    # Another device keeps its own stamps.
    assert ReadingFilter("th-02", "weather", stats).convert([DriverReading(t - 20_000, {"x": 1.0})])[0].ts == t - 20_000
