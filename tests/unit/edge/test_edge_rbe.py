"""Report-by-exception (edge/exception.py): table-driven cases of what is sent, and the config's checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge.config import DeviceConfig, ReportConfig
from edge.exception import ExceptionFilter
from wire.v1 import Reading

T0 = 1_764_331_200_000


def reading(ts: int, **metrics: Any) -> Reading:
    return Reading(device="aq-1", kind="air_quality", ts=ts, metrics=metrics)


# (name, config, [(seconds after T0, metrics read)], [metrics sent per reading, None = reading not sent])
CASES: list[tuple[str, dict[str, Any], list[tuple[float, dict[str, Any]]], list[dict[str, Any] | None]]] = [
    (
        "the first value of every metric is sent",
        {"deadband": {"pm25": 5.0}},
        [(0, {"pm25": 10.0, "pm10": 20.0})],
        [{"pm25": 10.0, "pm10": 20.0}],
    ),
    (
        "absolute deadband: inside is held back, beyond is sent",
        {"deadband": {"pm25": 1.0}},
        [(0, {"pm25": 10.0}), (1, {"pm25": 10.9}), (2, {"pm25": 9.1}), (3, {"pm25": 11.5})],
        [{"pm25": 10.0}, None, None, {"pm25": 11.5}],
    ),
    (
        "exactly the deadband is not news",
        {"deadband": {"pm25": 0.5}},
        [(0, {"pm25": 10.0}), (1, {"pm25": 10.5}), (2, {"pm25": 9.5})],
        [{"pm25": 10.0}, None, None],
    ),
    (
        "a slow drift is measured from the value last sent, so it is sent once it crosses",
        {"deadband": {"level_m": 0.1}},
        [(0, {"level_m": 1.0}), (1, {"level_m": 1.05}), (2, {"level_m": 1.09}), (3, {"level_m": 1.11})],
        [{"level_m": 1.0}, None, None, {"level_m": 1.11}],
    ),
    (
        "percent deadband of the value last sent",
        {"deadband_pct": {"power_w": 10.0}},
        [(0, {"power_w": 200.0}), (1, {"power_w": 215.0}), (2, {"power_w": 179.0}), (3, {"power_w": 170.0})],
        [{"power_w": 200.0}, None, {"power_w": 179.0}, None],
    ),
    (
        "percent deadband after a zero: any change",
        {"deadband_pct": {"flow": 50.0}},
        [(0, {"flow": 0}), (1, {"flow": 0}), (2, {"flow": 0.01})],
        [{"flow": 0}, None, {"flow": 0.01}],
    ),
    (
        "metrics without a deadband are sent on any change",
        {"deadband": {"pm25": 5.0}},
        [(0, {"pm25": 1.0, "pm10": 2.0}), (1, {"pm25": 1.0, "pm10": 2.0}), (2, {"pm25": 1.0, "pm10": 2.5})],
        [{"pm25": 1.0, "pm10": 2.0}, None, {"pm10": 2.5}],
    ),
    (
        "bools and strings on change only; a bool is not the number 1",
        {"deadband": {"count": 10.0}},
        [
            (0, {"door": True, "mode": "auto", "count": 1}),
            (1, {"door": True, "mode": "auto", "count": 1}),
            (2, {"door": False, "mode": "auto", "count": 1}),
            (3, {"door": 1, "mode": "manual", "count": 1}),
        ],
        [{"door": True, "mode": "auto", "count": 1}, None, {"door": False}, {"door": 1, "mode": "manual"}],
    ),
    (
        "max silence: an unchanged metric is sent again after max_silence_s",
        {"max_silence_s": 60, "deadband": {"pm25": 1.0}},
        [(0, {"pm25": 10.0}), (30, {"pm25": 10.0}), (59.999, {"pm25": 10.2}), (60, {"pm25": 10.1})],
        [{"pm25": 10.0}, None, None, {"pm25": 10.1}],
    ),
    (
        "max silence counts per metric, from when each was last sent",
        {"max_silence_s": 60},
        [(0, {"a": 1, "b": 1}), (40, {"a": 2, "b": 1}), (60, {"a": 2, "b": 1}), (100, {"a": 2, "b": 1})],
        [{"a": 1, "b": 1}, {"a": 2}, {"b": 1}, {"a": 2}],
    ),
    (
        "a clock set back sends the metric and starts afresh",
        {"max_silence_s": 60},
        [(100, {"a": 1}), (10, {"a": 1}), (20, {"a": 1})],
        [{"a": 1}, {"a": 1}, None],
    ),
    (
        "int and float compare by value",
        {},
        [(0, {"n": 3}), (1, {"n": 3.0}), (2, {"n": 4})],
        [{"n": 3}, None, {"n": 4}],
    ),
]


@pytest.mark.parametrize(("config", "steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_is_sent(
    config: dict[str, Any], steps: list[tuple[float, dict[str, Any]]], expected: list[dict[str, Any] | None]
) -> None:
    rbe = ExceptionFilter("aq-1", ReportConfig(**config))
    held = 0
    for (seconds, metrics), want in zip(steps, expected, strict=True):
        ts = T0 + round(seconds * 1000)
        sent = rbe.filter([reading(ts, **metrics)])
        if want is None:
            assert sent == []
        else:
            assert sent == [reading(ts, **want)]
        held += len(metrics) - (len(want) if want else 0)
    assert rbe.suppressed == held


def test_several_readings_in_one_poll_are_filtered_in_order() -> None:
    rbe = ExceptionFilter("aq-1", ReportConfig(deadband={"v": 1.0}))
    sent = rbe.filter([reading(T0, v=1.0), reading(T0 + 1, v=1.5), reading(T0 + 2, v=2.1)])
    assert [r.metrics for r in sent] == [{"v": 1.0}, {"v": 2.1}]


def test_readings_sent_another_way_count_as_sent() -> None:
    rbe = ExceptionFilter("aq-1", ReportConfig(deadband={"v": 1.0}, max_silence_s=60))
    rbe.note_reported([reading(T0, v=5.0)])  # a read_now
    assert rbe.filter([reading(T0 + 1000, v=5.5)]) == []
    assert rbe.filter([reading(T0 + 2000, v=6.1)]) == [reading(T0 + 2000, v=6.1)]


@pytest.mark.parametrize(
    ("report", "fragment"),
    [
        ({"deadband": {"pm25": -1}}, "greater than or equal to 0"),
        ({"deadband": {"PM25": 1}}, "should match pattern"),
        ({"deadband": {"pm25": "inf"}}, "finite number"),
        ({"deadband_pct": {"pm25": 2000}}, "less than or equal to 1000"),
        ({"deadband": {"pm25": 1}, "deadband_pct": {"pm25": 5}}, "both deadband and deadband_pct"),
        ({"max_silence_s": 0}, "greater than 0"),
        ({"deadband": {"pm25": 1}, "every": 5}, "Extra inputs are not permitted"),
    ],
)
def test_bad_report_settings_are_refused(report: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        DeviceConfig(id="aq-1", driver="modbus_tcp", profile="pm-sensor-rs485", interval_s=1, report=report)


def test_report_is_off_by_default() -> None:
    assert DeviceConfig(id="aq-1", driver="modbus_tcp", profile="pm-sensor-rs485", interval_s=1).report is None


# How ``ioc edge check`` shows the report settings: tests/golden/edge_check/valid-report-by-exception/.
