"""Line protocol: escaping, number types, strings, tag order. Each case is what InfluxDB 1.x must receive."""

from __future__ import annotations

from typing import Any

import pytest

from hub.storage.lineproto import (
    FieldValue,
    LineProtocolError,
    escape_key,
    escape_measurement,
    format_contract_fields,
    format_fields,
    format_value,
    line,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(3, "3.0", id="int-written-as-float"),
        pytest.param(0, "0.0", id="zero"),
        pytest.param(-7, "-7.0", id="negative-int"),
        pytest.param(35.2, "35.2", id="float"),
        pytest.param(1e-05, "1e-05", id="small-float"),
        pytest.param(10**20, "1e+20", id="big-int"),
        pytest.param(-0.0, "-0.0", id="negative-zero"),
        pytest.param(True, "true", id="bool-true-not-1"),
        pytest.param(False, "false", id="bool-false-not-0"),
        pytest.param("run", '"run"', id="string"),
        pytest.param("", '""', id="empty-string"),
        pytest.param('say "hi"', r'"say \"hi\""', id="string-quotes"),
        pytest.param("C:\\dir\\", r'"C:\\dir\\"', id="string-backslashes-incl-trailing"),
        pytest.param("a\nb", '"a\nb"', id="string-newline-kept-inside-quotes"),
        pytest.param("KẸT XE", '"KẸT XE"', id="string-unicode"),
        pytest.param("a,b=c d", '"a,b=c d"', id="string-specials-not-escaped"),
    ],
)
def test_field_values(value: FieldValue, expected: str) -> None:
    assert format_value(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(10**400, id="int-beyond-float"),
    ],
)
def test_unrepresentable_numbers_are_refused(value: FieldValue) -> None:
    with pytest.raises(LineProtocolError):
        format_value(value)


@pytest.mark.parametrize(
    ("raw", "measurement", "key"),
    [
        ("air_quality", "air_quality", "air_quality"),
        ("a b", r"a\ b", r"a\ b"),
        ("a,b", r"a\,b", r"a\,b"),
        ("a=b", "a=b", r"a\=b"),  # '=' needs no escape in a measurement
        ("a b,c=d", r"a\ b\,c=d", r"a\ b\,c\=d"),
    ],
)
def test_escaping_of_names(raw: str, measurement: str, key: str) -> None:
    assert escape_measurement(raw) == measurement
    assert escape_key(raw) == key


def test_newlines_in_names_are_refused() -> None:
    with pytest.raises(LineProtocolError):
        escape_measurement("a\nb")
    with pytest.raises(LineProtocolError):
        escape_key("a\nb")
    with pytest.raises(LineProtocolError):
        escape_measurement("")


def test_full_line_sorts_tags_escapes_everything_and_keeps_field_order() -> None:
    got = line(
        "my meas",
        {"site": "site a", "device": "d,1", "kind": "k=1", "gateway": "gw-1"},
        {"pm25": 35, "ok": True, "note": 'x "y"'},
        1764331200123,
    )
    assert got == (
        r"my\ meas,device=d\,1,gateway=gw-1,kind=k\=1,site=site\ a"
        r' pm25=35.0,ok=true,note="x \"y\"" 1764331200123'
    )


def test_empty_tag_values_are_left_out() -> None:
    assert line("m", {"b": "", "a": "x"}, {"v": 1.5}, 1) == "m,a=x v=1.5 1"


def test_unrepresentable_fields_are_dropped_and_reported() -> None:
    assert format_fields({"a": 1, "b": 10**400, "c": "x"}) == ('a=1.0,c="x"', ["b"])
    with pytest.raises(LineProtocolError, match="no representable field"):
        line("m", {}, {"b": 10**400}, 1)


@pytest.mark.parametrize(
    ("metrics", "expected", "dropped"),
    [
        ({"a": 1.5, "b": 2, "c": True, "d": False}, "a=1.5,b=2.0,c=true,d=false", 0),
        ({"s": 'say "hi" \\ bye'}, 's="say \\"hi\\" \\\\ bye"', 0),
        ({"big": 10**400, "inf": float("inf"), "nan": float("nan"), "ok": 0.0}, "ok=0.0", 3),
        ({"neg": -1e308}, "neg=-1e+308", 0),
    ],
)
def test_contract_fields_match_the_generic_formatting(metrics: dict[str, Any], expected: str, dropped: int) -> None:
    text, bad = format_contract_fields(metrics)
    assert (text, bad) == (expected, dropped)
    generic, generic_bad = format_fields(metrics)
    assert (generic, len(generic_bad)) == (text, bad)
