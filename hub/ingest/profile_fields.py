"""The field types the shipped device profiles declare (devices/profiles/*.yaml), for admission.

A profile's register type fixes its metric's field type (every number is written as a float, ``bool`` registers as
booleans), so a captured gateway cannot be first to give one of these fields another type. The hub does not
import ``devices`` (docs/architecture.md), so the table is kept here;
``tests/unit/hub/test_admission.py::test_profile_field_types_are_the_shipped_profiles`` checks it against the
profiles. A city's own profiles add theirs through ``admission.field_types``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

NUMBER: Final = "float"
BOOLEAN: Final = "boolean"

PROFILE_FIELD_TYPES: Final[Mapping[tuple[str, str], str]] = MappingProxyType(
    {
        ("air_quality", "pm1"): NUMBER,
        ("air_quality", "pm10"): NUMBER,
        ("air_quality", "pm25"): NUMBER,
        ("power_meter", "current_l1_a"): NUMBER,
        ("power_meter", "current_l2_a"): NUMBER,
        ("power_meter", "current_l3_a"): NUMBER,
        ("power_meter", "export_energy_kwh"): NUMBER,
        ("power_meter", "frequency_hz"): NUMBER,
        ("power_meter", "import_energy_kwh"): NUMBER,
        ("power_meter", "neutral_current_a"): NUMBER,
        ("power_meter", "power_factor_l1"): NUMBER,
        ("power_meter", "power_factor_l2"): NUMBER,
        ("power_meter", "power_factor_l3"): NUMBER,
        ("power_meter", "power_l1_w"): NUMBER,
        ("power_meter", "power_l2_w"): NUMBER,
        ("power_meter", "power_l3_w"): NUMBER,
        ("power_meter", "total_apparent_power_va"): NUMBER,
        ("power_meter", "total_energy_kwh"): NUMBER,
        ("power_meter", "total_power_factor"): NUMBER,
        ("power_meter", "total_power_w"): NUMBER,
        ("power_meter", "total_reactive_power_var"): NUMBER,
        ("power_meter", "voltage_l1_l2_v"): NUMBER,
        ("power_meter", "voltage_l1_v"): NUMBER,
        ("power_meter", "voltage_l2_l3_v"): NUMBER,
        ("power_meter", "voltage_l2_v"): NUMBER,
        ("power_meter", "voltage_l3_l1_v"): NUMBER,
        ("power_meter", "voltage_l3_v"): NUMBER,
        ("water_level", "decimal_places"): NUMBER,
        ("water_level", "level_m"): NUMBER,
        ("water_level", "unit_code"): NUMBER,
        ("weather", "ambient_temperature_c"): NUMBER,
        ("weather", "board_temperature_c"): NUMBER,
        ("weather", "dry_surface_pct"): NUMBER,
        ("weather", "heater_temperature_c"): NUMBER,
        ("weather", "heating_power_pct"): NUMBER,
        ("weather", "humidity_pct"): NUMBER,
        ("weather", "model_code"): NUMBER,
        ("weather", "precipitation"): BOOLEAN,
        ("weather", "precipitation_valid"): BOOLEAN,
        ("weather", "rainfall_mm"): NUMBER,
        ("weather", "snow"): BOOLEAN,
        ("weather", "supply_voltage_v"): NUMBER,
        ("weather", "temperature_c"): NUMBER,
    }
)
