"""Admission: what a gateway may write (hub.ingest.admission), rule by rule, with a clock the test sets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from clock_support import Clock

from devices.profile import load_profile
from hub import metrics
from hub.alerts import series
from hub.config import AdmissionSettings
from hub.ingest.admission import DEFAULT_KINDS, Admission, AdmissionRules, Refusal, RefusalReason, describe
from hub.ingest.points import DEVICE_EVENT, GATEWAY_STATE, HUB_MEASUREMENTS
from hub.ingest.profile_fields import PROFILE_FIELD_TYPES
from hub.routes import kpis
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, MetricValue, Reading, State

ROOT = Path(__file__).resolve().parents[3]
NOW_S = 2_000_000_000.0  # the clock every test here reads (2033-05-18)
NOW_MS = int(NOW_S * 1000)
A = ("site-a", "gw-1")
B = ("site-b", "gw-2")


def make(**rules: object) -> tuple[Admission, Clock]:
    clock = Clock(NOW_S)
    return Admission(AdmissionRules(**rules), clock=clock), clock  # type: ignore[arg-type]


def birth(*devices: tuple[str, str], ts: int | None = NOW_MS) -> State:
    return State(online=True, session="sess-0001", ts=ts, devices=[DeviceInfo(d, k, "p", 10.0) for d, k in devices])


def reading(device: str, kind: str = "air_quality", ts: int = NOW_MS, **values: MetricValue) -> Reading:
    return Reading(device=device, kind=kind, ts=ts, metrics=values or {"pm25": 1.0})


def batch(*readings: Reading) -> DataBatch:
    return DataBatch(session="sess-0001", seq=1, readings=list(readings))


def reasons(refusals: list[Refusal]) -> list[tuple[str, str]]:
    return sorted((r.reason.value, r.device) for r in refusals)


def test_default_kinds_are_the_shipped_profiles_kinds_and_the_agents() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (ROOT / "devices/profiles").glob("*.yaml")}
    assert set(DEFAULT_KINDS) == kinds | {"agent"}


def test_profile_field_types_are_the_shipped_profiles() -> None:
    declared = {
        (profile.kind, register.name): "boolean" if register.type == "bool" else "float"
        for profile in (load_profile(p) for p in sorted((ROOT / "devices/profiles").glob("*.yaml")))
        for register in profile.registers
    }
    assert declared
    assert dict(PROFILE_FIELD_TYPES) == declared


def test_a_profiles_field_type_holds_from_the_first_message() -> None:
    admission, _ = make()  # no value of weather.temperature_c seen yet
    admission.state(*A, birth(("th-01", "weather")))
    kept, refused = admission.data(*A, batch(reading("th-01", "weather", temperature_c="hot", humidity_pct=70)))
    assert kept is not None
    assert kept.readings[0].metrics == {"humidity_pct": 70}
    assert [r.detail for r in refused] == ["weather.temperature_c is a float field, got a string"]


def test_every_measurement_the_hub_writes_is_hub_owned() -> None:
    written = {
        GATEWAY_STATE,
        DEVICE_EVENT,
        kpis.MEASUREMENT,
        metrics.HEALTH_MEASUREMENT,
        metrics.GAPS_MEASUREMENT,
        series.OPEN_MEASUREMENT,
        series.RESOLVED_MEASUREMENT,
        "vn_aqi",
        "device_health",
        "gateway_health",
    }
    assert written <= HUB_MEASUREMENTS
    # and every measurement named literally where the hub builds a line (hub.storage.lineproto.line("name", ...))
    literal = {
        m.group(1)
        for path in (ROOT / "hub").rglob("*.py")
        for m in re.finditer(r'\bline\(\s*"([a-z_]+)"', path.read_text())
    }
    assert literal
    assert literal <= HUB_MEASUREMENTS
    assert not HUB_MEASUREMENTS & set(DEFAULT_KINDS)


def test_hub_owned_kinds_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="alerts"):
        AdmissionRules(kinds=frozenset({"air_quality", "alerts"}))


def test_a_gateways_announced_devices_are_admitted_on_the_fast_path() -> None:
    admission, _ = make()
    _state, refused = admission.state(*A, birth(("aq-01", "air_quality")))
    assert refused == []
    data = batch(reading("aq-01"), reading("gw-1", "agent", cpu=3.0))
    assert admission.data(*A, data) == (data, [])  # the same object: nothing copied
    assert admission.data(*A, data)[0] is data


def test_a_birth_cannot_take_another_gateways_device_and_its_data_is_refused() -> None:
    admission, _ = make()
    admission.state(*A, birth(("sign-07", "sign")))
    state, refused = admission.state(*B, birth(("sign-07", "sign"), ("aq-09", "air_quality")))
    assert [d.id for d in state.devices] == ["aq-09"]
    assert reasons(refused) == [("foreign_device", "sign-07")]
    assert refused[0].detail == "device 'sign-07' belongs to site-a/gw-1"
    kept, refused = admission.data(*B, batch(reading("sign-07", "sign", brightness=1.0), reading("aq-09")))
    assert kept is not None
    assert [r.device for r in kept.readings] == ["aq-09"]
    assert reasons(refused) == [("foreign_device", "sign-07")]
    assert admission.event(*B, Event("sess-0001", "sign-07", EventType.DEVICE_DOWN, NOW_MS)) != []
    assert admission.event(*A, Event("sess-0001", "sign-07", EventType.DEVICE_DOWN, NOW_MS)) == []


def test_the_registrys_owner_wins_over_the_first_announcer() -> None:
    admission, _ = make()
    admission.state(*B, birth(("sign-07", "sign")))
    admission.set_owners({"sign-07": A})  # a technician moved it (inventory or API)
    kept, refused = admission.data(*B, batch(reading("sign-07", "sign", brightness=1.0)))
    assert kept is None
    assert reasons(refused) == [("foreign_device", "sign-07")]
    _state, refused = admission.state(*A, birth(("sign-07", "sign")))
    assert refused == []
    assert admission.data(*A, batch(reading("sign-07", "sign", brightness=1.0)))[1] == []


def test_data_for_an_unannounced_device_or_kind_is_refused() -> None:
    admission, _ = make()
    admission.state(*A, birth(("aq-01", "air_quality")))
    kept, refused = admission.data(*A, batch(reading("aq-02"), reading("aq-01", "weather", temp=1.0)))
    assert kept is None
    assert reasons(refused) == [("unannounced_device", "aq-01"), ("unannounced_device", "aq-02")]
    assert "the birth announced 'air_quality'" in next(r.detail for r in refused if r.device == "aq-01")


def test_before_any_birth_the_registrys_devices_of_the_gateway_stand_in() -> None:
    admission, _ = make()
    admission.set_owners({"aq-01": A, "aq-02": B})
    kept, refused = admission.data(*A, batch(reading("aq-01"), reading("aq-02"), reading("aq-03")))
    assert kept is not None
    assert [r.device for r in kept.readings] == ["aq-01"]
    assert reasons(refused) == [("foreign_device", "aq-02"), ("unannounced_device", "aq-03")]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("alerts", "hub_owned_kind"), ("kpi", "hub_owned_kind"), ("vn_aqi", "hub_owned_kind"), ("x_y", "unknown_kind")],
)
def test_hub_owned_and_unknown_kinds_are_refused_in_births_and_data(kind: str, reason: str) -> None:
    admission, _ = make()
    state, refused = admission.state(*A, birth(("aq-01", kind)))
    assert state.devices == []
    assert reasons(refused) == [(reason, "aq-01")]
    assert reasons(admission.data(*A, batch(reading("aq-01", kind)))[1]) == [(reason, "aq-01")]


def test_a_value_of_another_type_is_refused_alone_and_the_first_type_stands() -> None:
    admission, _ = make(field_types={("water_level", "alarm"): "boolean"})
    admission.state(*A, birth(("wl-01", "water_level")))
    admission.state(*B, birth(("wl-02", "water_level")))
    assert admission.data(*A, batch(reading("wl-01", "water_level", level=1, alarm=False)))[1] == []
    kept, refused = admission.data(
        *B, batch(reading("wl-02", "water_level", level="high", alarm=True), reading("wl-02", "water_level", level=2.5))
    )
    assert kept is not None
    assert [r.metrics for r in kept.readings] == [{"alarm": True}, {"level": 2.5}]
    assert [(r.reason, r.detail) for r in refused] == [
        (RefusalReason.FIELD_TYPE, "water_level.level is a float field, got a string")
    ]
    _, refused = admission.data(*B, batch(reading("wl-02", "water_level", alarm=0)))
    assert refused[0].detail == "water_level.alarm is a boolean field, got a float"


@pytest.mark.parametrize(
    ("offset_ms", "admitted"),
    [
        (300_000, True),
        (300_001, False),
        (-30 * 86_400_000, True),
        (-30 * 86_400_000 - 1, False),
        (-1000 * 86_400_000, False),
    ],
)
def test_timestamps_outside_the_window_are_refused_as_clock_skew(offset_ms: int, admitted: bool) -> None:
    admission, _ = make()
    admission.state(*A, birth(("aq-01", "air_quality")))
    kept, refused = admission.data(*A, batch(reading("aq-01", ts=NOW_MS + offset_ms)))
    assert (kept is not None) is admitted
    assert reasons(refused) == ([] if admitted else [("clock_skew", "aq-01")])
    event = Event("sess-0001", "aq-01", EventType.DEVICE_DOWN, NOW_MS + offset_ms)
    assert reasons(admission.event(*A, event)) == ([] if admitted else [("clock_skew", "aq-01")])


def test_an_old_retained_birth_is_no_skew() -> None:
    admission, _ = make()
    state, refused = admission.state(*A, birth(("aq-01", "air_quality"), ts=NOW_MS - 400 * 86_400_000))
    assert refused == []
    assert state.ts == NOW_MS - 400 * 86_400_000


def test_a_birth_from_the_future_is_admitted_without_its_time() -> None:
    admission, clock = make()
    state, refused = admission.state(*A, birth(("aq-01", "air_quality"), ts=NOW_MS + 3_600_000))
    assert state.ts is None
    assert [d.id for d in state.devices] == ["aq-01"]
    assert reasons(refused) == [("clock_skew", "")]
    clock.now += 7200  # the window moves with the hub's clock
    assert admission.data(*A, batch(reading("aq-01", ts=NOW_MS + 3_600_000)))[1] == []


def test_new_device_ids_are_rate_limited_per_gateway() -> None:
    admission, clock = make(new_devices_burst=3, new_devices_per_minute=2)
    state, refused = admission.state(*A, birth(*((f"d-{i}", "weather") for i in range(5))))
    assert [d.id for d in state.devices] == ["d-0", "d-1", "d-2"]
    assert reasons(refused) == [("device_rate", "d-3"), ("device_rate", "d-4")]
    # another gateway has its own budget; the same gateway's known devices cost nothing again
    assert admission.state(*B, birth(("e-0", "weather")))[1] == []
    assert admission.state(*A, birth(("d-0", "weather"), ("d-1", "weather"), ("d-2", "weather")))[1] == []
    clock.now += 30  # one more a minute at 2 a minute
    state, refused = admission.state(*A, birth(*((f"d-{i}", "weather") for i in range(5))))
    assert [d.id for d in state.devices] == ["d-0", "d-1", "d-2", "d-3"]
    assert reasons(refused) == [("device_rate", "d-4")]


def test_the_gateways_own_id_is_its_agents() -> None:
    admission, _ = make()
    state, refused = admission.state(*A, birth(("gw-1", "weather"), ("aq-01", "air_quality")))
    assert [d.id for d in state.devices] == ["aq-01"]
    assert [(r.reason, r.device) for r in refused] == [(RefusalReason.RESERVED_ID, "gw-1")]
    assert admission.data(*A, batch(reading("gw-1", "agent", cpu=1.0)))[1] == []


def test_refusals_are_counted_per_gateway_and_described() -> None:
    admission, _ = make()
    admission.state(*A, birth(("aq-01", "air_quality")))
    _, refused = admission.data(*B, batch(reading("aq-01"), reading("aq-01", pm25=2.0), reading("x-1", "kpi")))
    assert describe(refused) == (
        "foreign_device aq-01: device 'aq-01' belongs to site-a/gw-1 (and 1 more); "
        "hub_owned_kind x-1: kind 'kpi' is a measurement the hub writes"
    )
    assert admission.refusals_by_gateway() == {"site-b/gw-2": {"foreign_device": 1, "hub_owned_kind": 1}}


def test_a_citys_own_profile_types_join_the_shipped_ones_from_settings() -> None:
    rules = AdmissionSettings(kinds=["agent", "flood_gauge"], field_types={"flood_gauge": {"alarm": "boolean"}}).rules()
    assert rules.field_types[("flood_gauge", "alarm")] == "boolean"
    assert rules.field_types[("weather", "temperature_c")] == "float"
    admission = Admission(rules, clock=Clock(NOW_S))
    admission.state(*A, birth(("fg-1", "flood_gauge")))
    _, refused = admission.data(*A, batch(reading("fg-1", "flood_gauge", alarm=1.0)))
    assert [r.detail for r in refused] == ["flood_gauge.alarm is a boolean field, got a float"]
    with pytest.raises(ValueError, match="alerts"):
        AdmissionSettings(kinds=["alerts"])
