"""Table-driven cases for read planning: which registers share a request, and why.

What a profile and the driver's options make of it (coalescing, holes bridged or not, the 125-register split,
the tables' order, the plan lines the driver logs) are golden cases in tests/golden/modbus_plan/; here, what a
profile cannot express: max_count, overlapping registers, bits by the thousand, no registers at all."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from devices.drivers.modbus.plan import ReadRequest, plan_reads
from devices.errors import DeviceConfigError
from devices.profile import RegisterSpec


def reg(name: str, address: int, table: str = "holding", type_: str = "uint16") -> RegisterSpec:
    return RegisterSpec.model_validate({"name": name, "address": address, "table": table, "type": type_})


def shape(plan: list[ReadRequest]) -> list[tuple[str, int, int, list[str]]]:
    return [(r.table, r.address, r.count, [x.name for x in r.registers]) for r in plan]


@dataclass(frozen=True)
class Case:
    id: str
    registers: list[RegisterSpec]
    expected: list[tuple[str, int, int, list[str]]]
    max_gap: int = 8
    max_count: int | None = None


CASES = [
    Case("single register", [reg("a", 5)], [("holding", 5, 1, ["a"])]),
    Case(
        "bits: 2000 per request",
        [reg("a", 0, "coil", "bool"), reg("b", 1999, "coil", "bool"), reg("c", 2000, "coil", "bool")],
        [("coil", 0, 2000, ["a", "b"]), ("coil", 2000, 1, ["c"])],
        max_gap=5000,
    ),
    Case(
        "max_count below the protocol limit",
        [reg("a", 0), reg("b", 1), reg("c", 2), reg("d", 3)],
        [("holding", 0, 2, ["a", "b"]), ("holding", 2, 2, ["c", "d"])],
        max_count=2,
    ),
    Case(
        "max_count above the protocol limit is capped",
        [reg("a", 0), reg("b", 130)],
        [("holding", 0, 1, ["a"]), ("holding", 130, 1, ["b"])],
        max_gap=500,
        max_count=1000,
    ),
    Case(
        "overlapping registers share one request",
        [reg("whole", 10, "holding", "uint32"), reg("high", 10)],
        [("holding", 10, 2, ["high", "whole"])],
    ),
    Case(
        "SDM630 layout: three runs",
        [
            reg("v1", 0x00, "input", "float32"),
            reg("v2", 0x02, "input", "float32"),
            reg("i1", 0x06, "input", "float32"),
            reg("p", 0x34, "input", "float32"),
            reg("f", 0x46, "input", "float32"),
            reg("kwh", 0x48, "input", "float32"),
            reg("kwh_total", 0x156, "input", "float32"),
        ],
        [
            ("input", 0x00, 8, ["v1", "v2", "i1"]),
            ("input", 0x34, 2, ["p"]),
            ("input", 0x46, 4, ["f", "kwh"]),
            ("input", 0x156, 2, ["kwh_total"]),
        ],
    ),
    Case("no registers, no requests", [], []),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_reads(case: Case) -> None:
    assert shape(plan_reads(case.registers, max_gap=case.max_gap, max_count=case.max_count)) == case.expected


def test_every_register_is_in_exactly_one_request() -> None:
    regs = [reg(f"r{i}", a) for i, a in enumerate([0, 3, 4, 17, 30, 31, 60, 200, 201, 324])]
    plan = plan_reads(regs, max_gap=8)
    names = [r.name for req in plan for r in req.registers]
    assert sorted(names) == sorted(r.name for r in regs)
    for req in plan:
        assert req.count <= 125
        for r in req.registers:
            assert req.address <= r.address
            assert r.address + r.width <= req.end


@pytest.mark.parametrize(("max_gap", "max_count"), [(-1, None), (8, 0)])
def test_bad_limits_are_config_errors(max_gap: int, max_count: int | None) -> None:
    with pytest.raises(DeviceConfigError):
        plan_reads([reg("a", 0)], max_gap=max_gap, max_count=max_count)


def test_register_wider_than_max_count_is_refused() -> None:
    with pytest.raises(DeviceConfigError, match="'a' is wider than max_count"):
        plan_reads([reg("a", 0, "input", "float32")], max_count=1)
