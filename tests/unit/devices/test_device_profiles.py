"""Every shipped profile loads and says where its register map comes from; bad profiles say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devices.drivers.modbus.codec import codec_for
from devices.errors import DeviceConfigError
from devices.profile import PROFILES_DIR, available_profiles, load_profile

ALL_SHIPPED = available_profiles()
SHIPPED = [p for p in ALL_SHIPPED if load_profile(p).driver == "modbus"]
KINDS = {"air_quality", "weather", "water_level", "power_meter"}
# Profiles of the drivers that read a fixed protocol (no register map): the profile names the model.
OTHER_DRIVERS = {"camera-onvif-generic": "camera", "ntcip-dms-full-matrix": "ntcip", "gateway-host": "host"}


def test_the_catalogue_has_the_models_the_demo_uses() -> None:
    assert {"pm-sensor-rs485", "xy-md02", "water-level-rs485", "eastron-sdm630"} <= set(SHIPPED)
    assert len(SHIPPED) >= 4
    assert set(ALL_SHIPPED) == set(SHIPPED) | set(OTHER_DRIVERS)


@pytest.mark.parametrize("profile_id", sorted(OTHER_DRIVERS))
def test_shipped_profile_of_another_driver_loads(profile_id: str) -> None:
    profile = load_profile(profile_id)
    assert profile.id == profile_id
    assert profile.driver == OTHER_DRIVERS[profile_id]
    assert profile.description


@pytest.mark.parametrize("profile_id", SHIPPED)
def test_shipped_profile_loads(profile_id: str) -> None:
    profile = load_profile(profile_id)
    assert profile.id == profile_id
    assert profile.kind in KINDS
    assert profile.driver == "modbus"
    assert len(profile.source) > 40, "name the public document the map is modelled on"
    assert profile.registers
    for reg in profile.registers:
        assert reg.sim is not None, f"{reg.name}: give the simulator a range"
        codec = codec_for(reg)
        # The simulator must be able to put every bound of the range on the wire.
        for bound in (reg.sim.min, reg.sim.max, reg.sim.typical):
            if bound is not None and reg.type != "bool":
                codec.encode(bound)


def test_profile_can_be_loaded_by_path() -> None:
    profile = load_profile(PROFILES_DIR / "xy-md02.yaml")
    assert profile.id == "xy-md02"


def test_known_register_maps() -> None:
    sdm = load_profile("eastron-sdm630")
    expected = {
        "voltage_l1_v": 0x0000,
        "current_l1_a": 0x0006,
        "total_power_w": 0x0034,
        "frequency_hz": 0x0046,
        "import_energy_kwh": 0x0048,
    }
    for name, address in expected.items():
        reg = sdm.register(name)
        assert (reg.address, reg.table, reg.type, reg.byte_order, reg.word_order) == (
            address,
            "input",
            "float32",
            "big",
            "big",
        )
    th = load_profile("xy-md02")
    temp, hum = th.register("temperature_c"), th.register("humidity_pct")
    assert (temp.table, temp.address, temp.type, temp.scale) == ("input", 1, "int16", 0.1)
    assert (hum.table, hum.address, hum.scale) == ("input", 2, 0.1)


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _valid() -> dict[str, Any]:
    return {
        "id": "test-device",
        "kind": "weather",
        "manufacturer": "ACME",
        "model": "T-1",
        "source": "ACME T-1 manual, section 4",
        "driver": "modbus",
        "registers": [
            {"name": "temperature_c", "address": 1, "table": "input", "type": "int16", "scale": 0.1},
            {"name": "humidity_pct", "address": 2, "table": "input", "type": "uint16", "scale": 0.1},
        ],
    }


def test_a_valid_test_profile_loads(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, _valid()))
    assert [r.name for r in profile.registers] == ["temperature_c", "humidity_pct"]
    assert profile.registers[0].byte_order == "big"
    assert profile.registers[0].offset == 0.0


def _mutate(path: list[str | int], value: Any) -> dict[str, Any]:
    doc = _valid()
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


BAD = [
    ("scale is not a number", _mutate(["registers", 1, "scale"], "ten"), ["register 'humidity_pct'", "'scale'"]),
    (
        "unknown register key",
        _mutate(["registers", 0, "sclae"], 0.1),
        ["register 'temperature_c'", "'sclae'", "unknown"],
    ),
    ("bad table", _mutate(["registers", 0, "table"], "holdings"), ["register 'temperature_c'", "'table'"]),
    ("bad type", _mutate(["registers", 1, "type"], "float64"), ["register 'humidity_pct'", "'type'"]),
    ("address too big", _mutate(["registers", 0, "address"], 70000), ["register 'temperature_c'", "'address'"]),
    ("bool in a register table", _mutate(["registers", 0, "type"], "bool"), ["temperature_c", "'coil' or 'discrete'"]),
    ("metric name not snake_case", _mutate(["registers", 0, "name"], "Temp"), ["registers[0]", "'name'"]),
    ("unknown top-level key", _mutate(["vendor"], "x"), ["'vendor'", "unknown"]),
    ("kind not snake_case", _mutate(["kind"], "Air-Quality"), ["'kind'"]),
    (
        "sim range upside down",
        _mutate(["registers", 0, "sim"], {"min": 5, "max": 1}),
        ["temperature_c", "'sim'", "min"],
    ),
    ("zero scale", _mutate(["registers", 0, "scale"], 0), ["temperature_c", "scale must not be 0"]),
    ("overlap", _mutate(["registers", 1, "address"], 1), ["'temperature_c' and 'humidity_pct' overlap"]),
    ("duplicate name", _mutate(["registers", 1, "name"], "temperature_c"), ["'temperature_c' is used twice"]),
    ("no registers", _mutate(["registers"], []), ["at least one register"]),
]


@pytest.mark.parametrize(("doc", "fragments"), [(d, f) for _, d, f in BAD], ids=[i for i, _, _ in BAD])
def test_bad_profile_names_file_register_and_field(tmp_path: Path, doc: dict[str, Any], fragments: list[str]) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(DeviceConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, message


def test_missing_field_is_named(tmp_path: Path) -> None:
    doc = _valid()
    del doc["registers"][1]["type"]
    with pytest.raises(DeviceConfigError, match=r"register 'humidity_pct' \(registers\[1\]\) field 'type': missing"):
        load_profile(_write(tmp_path, doc))


def test_unknown_profile_id_lists_the_known_ones() -> None:
    with pytest.raises(DeviceConfigError, match=r"unknown profile 'nope' \(known: .*xy-md02"):
        load_profile("nope")


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    with pytest.raises(DeviceConfigError, match="not valid YAML"):
        load_profile(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(DeviceConfigError, match="must be a mapping"):
        load_profile(listing)


def test_missing_file() -> None:
    with pytest.raises(DeviceConfigError, match="no such profile file"):
        load_profile("/nonexistent/x.yaml")
