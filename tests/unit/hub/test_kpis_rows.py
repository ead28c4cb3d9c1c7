"""KPI rows, table-driven: what ``POST /api/v1/kpis`` accepts (and the line it stores) and what it refuses, by field."""

from __future__ import annotations

from typing import Any

import pytest

from hub.routes.kpis import Problem, RowError, lines_of, row_line

NOW = 1_795_000_000_000  # 2026-11-18

GOOD = [
    ({"kpi": "dvc_on_time_rate", "value": 97.5}, f"kpi,kpi=dvc_on_time_rate value=97.5 {NOW}"),
    ({"kpi": "a", "value": "42", "ward": "quan-1"}, f"kpi,kpi=a,ward=quan-1 value=42.0 {NOW}"),
    ({"kpi": "a", "value": 1, "ts": 1_790_000_000_000}, "kpi,kpi=a value=1.0 1790000000000"),
    ({"kpi": "a", "value": 1, "ts": "1790000000000"}, "kpi,kpi=a value=1.0 1790000000000"),
    ({"kpi": "a", "value": 1, "ts": "2026-11-28"}, "kpi,kpi=a value=1.0 1795824000000"),
    ({"kpi": "a", "value": 1, "ts": "2026-11-28T07:00:00+07:00"}, "kpi,kpi=a value=1.0 1795824000000"),
    (
        {"kpi": "a", "value": 1, "unit": 'người "dân"', "target": "95"},
        f'kpi,kpi=a value=1.0,target=95.0,unit="người \\"dân\\"" {NOW}',
    ),
    ({"kpi": "a", "value": -3, "ward": "", "unit": "", "target": None}, f"kpi,kpi=a value=-3.0 {NOW}"),
]


@pytest.mark.parametrize(("row", "line"), GOOD)
def test_good_rows(row: dict[str, Any], line: str) -> None:
    assert row_line(row, NOW) == line


BAD = [
    ({"value": 1}, "kpi", "is required"),
    ({"kpi": "9lives", "value": 1}, "kpi", "lower-case"),
    ({"kpi": "a" * 65, "value": 1}, "kpi", "lower-case"),
    ({"kpi": "a"}, "value", "is required"),
    ({"kpi": "a", "value": ""}, "value", "is required"),
    ({"kpi": "a", "value": "1,5"}, "value", "must be a number"),
    ({"kpi": "a", "value": "nan"}, "value", "finite"),
    ({"kpi": "a", "value": 10**400}, "value", "too large"),
    ({"kpi": "a", "value": [1]}, "value", "must be a number"),
    ({"kpi": "a", "value": False}, "value", "true/false"),
    ({"kpi": "a", "value": 1, "target": "high"}, "target", "must be a number"),
    ({"kpi": "a", "value": 1, "ts": "²"}, "ts", "ISO 8601"),
    ({"kpi": "a", "value": 1, "ts": 10**400}, "ts", "between 2000 and 2100"),
    ({"kpi": "a", "value": 1, "ts": "1999-12-31"}, "ts", "between 2000 and 2100"),
    ({"kpi": "a", "value": 1, "ts": "28/11/2026"}, "ts", "ISO 8601"),
    ({"kpi": "a", "value": 1, "ts": "2026-11-28T08:00:00"}, "ts", "UTC offset"),
    ({"kpi": "a", "value": 1, "ts": True}, "ts", "true/false"),
    ({"kpi": "a", "value": 1, "ts": {"y": 2026}}, "ts", "epoch milliseconds"),
    ({"kpi": "a", "value": 1, "ward": "Quận 1"}, "ward", "lower-case"),
    ({"kpi": "a", "value": 1, "unit": "x" * 33}, "unit", "32 characters"),
    ({"kpi": "a", "value": 1, "unit": "a\nb"}, "unit", "one line"),
    ({"kpi": "a", "value": 1, "site": "x"}, "site", "unknown field"),
    (["kpi", "a"], "row", "an object"),
]


@pytest.mark.parametrize(("row", "field", "message"), BAD)
def test_bad_rows_name_the_field(row: Any, field: str, message: str) -> None:
    with pytest.raises(RowError, match=message) as info:
        row_line(row, NOW)
    assert info.value.field == field


def test_lines_of_names_every_bad_row_and_respects_wards() -> None:
    body = b'[{"kpi": "a", "value": 1}, {"kpi": "b"}, {"kpi": "c", "value": "x"}]'
    with pytest.raises(Problem) as info:
        lines_of(body, "application/json; charset=utf-8", NOW)
    assert info.value.status == 422
    assert info.value.detail == [
        {"row": 2, "field": "value", "message": "is required"},
        {"row": 3, "field": "value", "message": "must be a number (got 'x')"},
    ]
    ok = b'[{"kpi": "a", "value": 1, "ward": "quan-1"}, {"kpi": "b", "value": 2}]'
    with pytest.raises(Problem) as info:
        lines_of(ok, "application/json", NOW, wards=frozenset({"quan-1"}))
    assert info.value.status == 403
    assert info.value.detail == [
        {"row": 2, "field": "ward", "message": "this token may post for the wards quan-1 only"}
    ]
    assert len(lines_of(ok, "application/json", NOW)) == 2
