"""The simulator's value model, without sockets: walks stay in range, counters grow, pins hold."""

from __future__ import annotations

import itertools
import random

import pytest

from devices.profile import Profile, load_profile
from devices.sim.modbus import SimulatedUnit


def unit(profile_id: str, seed: int = 7) -> SimulatedUnit:
    return SimulatedUnit(1, load_profile(profile_id), random.Random(seed))


@pytest.mark.parametrize(
    "profile_id", ["pm-sensor-rs485", "xy-md02", "water-level-rs485", "eastron-sdm630", "deltaohm-hd2013-3"]
)
def test_values_start_at_typical_and_stay_in_range(profile_id: str) -> None:
    u = unit(profile_id)
    for reg in u.profile.registers:
        assert reg.sim is not None
        if reg.sim.typical is not None and reg.type != "bool":
            assert u.read(reg.name) == pytest.approx(reg.sim.typical, rel=1e-6, abs=abs(reg.scale) / 2)
    seen: dict[str, set[object]] = {r.name: set() for r in u.profile.registers}
    for _ in range(500):
        u.tick()
        for reg in u.profile.registers:
            value = u.read(reg.name)
            seen[reg.name].add(value)
            assert reg.sim is not None
            if reg.type == "bool" or isinstance(value, bool):
                continue
            assert isinstance(value, float)
            tol = abs(reg.scale) / 2 + 1e-6 * max(1.0, abs(value))
            if reg.sim.min is not None:
                assert value >= reg.sim.min - tol, (reg.name, value)
            if reg.sim.max is not None:
                assert value <= reg.sim.max + tol, (reg.name, value)
    for reg in u.profile.registers:
        assert reg.sim is not None
        if reg.sim.mode == "walk" and reg.type != "bool" and reg.sim.step:
            assert len(seen[reg.name]) > 5, f"{reg.name} does not move"


def test_counters_never_go_down() -> None:
    u = unit("eastron-sdm630")
    last = u.read("import_energy_kwh")
    assert isinstance(last, float)
    for _ in range(200):
        u.tick()
        now = u.read("import_energy_kwh")
        assert isinstance(now, float)
        assert now >= last
        last = now
    assert last > 183520.0


def test_constants_do_not_move() -> None:
    u = unit("water-level-rs485")
    for _ in range(50):
        u.tick()
    assert u.read("decimal_places") == 3.0
    assert u.read("unit_code") == 7.0


def test_pinned_value_holds_until_unpinned() -> None:
    u = unit("xy-md02")
    u.set_value("temperature_c", -12.3)
    for _ in range(20):
        u.tick()
    assert u.read("temperature_c") == -12.3
    u.unpin("temperature_c")
    for _ in range(50):
        u.tick()
    assert u.read("temperature_c") != -12.3


def test_set_value_checks_type_range_and_name() -> None:
    u = unit("deltaohm-hd2013-3")
    with pytest.raises(TypeError):
        u.set_value("precipitation", 1)
    with pytest.raises(TypeError):
        u.set_value("supply_voltage_v", True)
    with pytest.raises(ValueError, match="out of range"):
        u.set_value("supply_voltage_v", 5000.0)
    with pytest.raises(KeyError, match="no register 'nope'"):
        u.set_value("nope", 1.0)
    u.set_value("precipitation", True)
    assert u.read("precipitation") is True


def test_same_seed_same_walk() -> None:
    a, b = unit("pm-sensor-rs485", seed=3), unit("pm-sensor-rs485", seed=3)
    for _ in range(30):
        a.tick()
        b.tick()
    assert [a.read(n) for n in ("pm1", "pm25", "pm10")] == [b.read(n) for n in ("pm1", "pm25", "pm10")]


def test_an_unbounded_counter_rolls_over_at_the_type_limit() -> None:
    profile = Profile.model_validate(
        {
            "id": "tiny-counter",
            "kind": "test_device",
            "manufacturer": "test",
            "model": "t",
            "source": "this test",
            "driver": "modbus",
            "registers": [
                {
                    "name": "count",
                    "address": 0,
                    "table": "holding",
                    "type": "uint16",
                    "sim": {"step": 30000, "mode": "counter"},
                }
            ],
        }
    )
    u = SimulatedUnit(1, profile, random.Random(1))
    values: list[float] = []
    for _ in range(20):
        u.tick()
        value = u.read("count")
        assert isinstance(value, float)
        assert 0 <= value <= 65535
        values.append(value)
    assert any(b < a for a, b in itertools.pairwise(values)), "never rolled over"
