"""Wire messages -> InfluxDB lines: the schema of docs/storage.md."""

from __future__ import annotations

import pytest

from hub.ingest import points
from hub.ingest.points import (
    DEFAULT_ENRICHMENT_TAGS,
    build_enrichment,
    device_event_line,
    gateway_state_line,
    reading_lines,
)
from hub.storage.lineproto import format_contract_fields
from wire import v1

TS = 1_764_331_200_123
SESSION = "k3J9xQ2mPzA1"


def test_readings_become_one_line_each_with_allow_listed_sorted_tags_from_the_topic() -> None:
    batch = v1.DataBatch(
        session=SESSION,
        seq=42,
        readings=[
            v1.Reading(device="aq-01", kind="air_quality", ts=TS, metrics={"pm25": 35.2, "pm10": 61}),
            v1.Reading(device="wl-02", kind="water_level", ts=TS + 877, metrics={"level_m": 1.82, "alarm": False}),
            v1.Reading(device="aq-01", kind="air_quality", ts=TS + 5000, metrics={"pm25": 36, "mode": 'a"b'}),
        ],
    )
    lines, dropped = reading_lines("site-b", "gw-2", batch)
    assert dropped == 0
    assert lines == [
        "air_quality,device=aq-01,gateway=gw-2,kind=air_quality,site=site-b pm25=35.2,pm10=61.0 1764331200123",
        "water_level,device=wl-02,gateway=gw-2,kind=water_level,site=site-b level_m=1.82,alarm=false 1764331201000",
        r'air_quality,device=aq-01,gateway=gw-2,kind=air_quality,site=site-b pm25=36.0,mode="a\"b" 1764331205123',
    ]


def test_unrepresentable_values_are_dropped_and_counted_the_rest_of_the_reading_is_kept() -> None:
    batch = v1.DataBatch(
        session=SESSION,
        seq=1,
        readings=[
            v1.Reading(device="d-1", kind="meter", ts=TS, metrics={"huge": 10**400, "ok": 2}),
            v1.Reading(device="d-1", kind="meter", ts=TS + 1, metrics={"huge": 10**400}),
        ],
    )
    lines, dropped = reading_lines("s", "g", batch)
    assert lines == ["meter,device=d-1,gateway=g,kind=meter,site=s ok=2.0 1764331200123"]
    assert dropped == 2


def test_gateway_state_line() -> None:
    birth = v1.State(online=True, session=SESSION, ts=TS)
    assert gateway_state_line("site-a", "gw-1", birth, TS) == (
        f'gateway_state,gateway=gw-1,site=site-a online=true,session="{SESSION}" {TS}'
    )
    will = v1.State(online=False, session=SESSION, reason="connection lost")
    assert gateway_state_line("site-a", "gw-1", will, 1) == (
        f'gateway_state,gateway=gw-1,site=site-a online=false,session="{SESSION}" 1'
    )


def test_device_event_line() -> None:
    event = v1.Event(session=SESSION, device="aq-01", type=v1.EventType.DEVICE_DOWN, ts=TS, reason='timeout "3 s"')
    assert device_event_line("site-a", "gw-1", event) == (
        r'device_event,device=aq-01,gateway=gw-1,site=site-a,type=device_down reason="timeout \"3 s\"" 1764331200123'
    )
    no_reason = v1.Event(session=SESSION, device="aq-01", type=v1.EventType.DEVICE_UP, ts=TS)
    assert device_event_line("s", "g", no_reason).endswith(' reason="" 1764331200123')


def test_inlined_field_formatting_matches_format_contract_fields() -> None:
    values: list[dict[str, bool | int | float | str]] = [
        {"a": 1.5, "b": True, "c": False, "d": 7, "e": 'say "hi" \\ there', "f": -0.0},
        {"a": float("nan"), "b": 2},
        {"a": float("inf"), "b": float("-inf")},  # nothing representable: no line
        {"big": 2**63 - 1, "x": ""},
    ]
    readings = [v1.Reading(device="d-1", kind="k", ts=1_764_300_000_000 + i, metrics=m) for i, m in enumerate(values)]
    lines, dropped = reading_lines("s", "g", v1.DataBatch(session="sess-0001", seq=1, readings=readings))
    expected = [format_contract_fields(m) for m in values]
    assert dropped == sum(bad for _, bad in expected) == 3
    prefix = "k,device=d-1,gateway=g,kind=k,site=s "
    assert all(line.startswith(prefix) for line in lines)
    assert [line[len(prefix) : line.rindex(" ")] for line in lines] == [text for text, _ in expected if text]


def test_a_prefix_cache_is_reused_across_batches_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(points, "PREFIX_CACHE_SIZE", 2)
    cache: dict[tuple[str, str], str] = {}

    def batch(*devices: str) -> v1.DataBatch:
        readings = [v1.Reading(device=d, kind="meter", ts=TS, metrics={"v": 1.5}) for d in devices]
        return v1.DataBatch(session=SESSION, seq=1, readings=readings)

    lines, _ = reading_lines("s", "g", batch("d-1"), prefixes=cache)
    assert lines == ["meter,device=d-1,gateway=g,kind=meter,site=s v=1.5 1764331200123"]
    assert cache == {("meter", "d-1"): "meter,device=d-1,gateway=g,kind=meter,site=s "}
    # What is in the cache is what the next batch uses (the pipeline gives each gateway its own cache and
    # drops them all when the enrichment changes).
    cache[("meter", "d-1")] = "meter,device=d-1,district=x,gateway=g,kind=meter,site=s "
    lines, _ = reading_lines("s", "g", batch("d-1", "d-2", "d-3"), prefixes=cache)
    assert lines[0] == "meter,device=d-1,district=x,gateway=g,kind=meter,site=s v=1.5 1764331200123"
    assert lines[2] == "meter,device=d-3,gateway=g,kind=meter,site=s v=1.5 1764331200123"
    assert len(cache) <= 2  # cleared when full, then refilled


def test_lines_without_a_cache_are_the_same_as_with_one() -> None:
    batch = v1.DataBatch(
        session=SESSION,
        seq=1,
        readings=[
            v1.Reading(device="aq-01", kind="air_quality", ts=TS, metrics={"pm25": 35.2, "ok": True, "n": 3}),
            v1.Reading(device="aq-01", kind="air_quality", ts=TS + 1, metrics={"pm25": float("inf"), "s": "a b"}),
        ],
    )
    enrichment = build_enrichment({"aq-01": {"district": "q1"}}, DEFAULT_ENRICHMENT_TAGS)
    cache: dict[tuple[str, str], str] = {}
    first = reading_lines("s", "g", batch, enrichment, cache)
    assert first == reading_lines("s", "g", batch, enrichment, cache) == reading_lines("s", "g", batch, enrichment)
    prefix = "air_quality,device=aq-01,district=q1,gateway=g,kind=air_quality,site=s"
    assert first == ([f"{prefix} pm25=35.2,ok=true,n=3.0 {TS}", f'{prefix} s="a b" {TS + 1}'], 1)
