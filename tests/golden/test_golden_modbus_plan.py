"""Modbus read-plan golden cases: each ``modbus_plan/<case>/`` holds a device profile (``profile.yaml``, the
format of ``devices/profiles/``) and the ``modbus_tcp`` options of one device (``options.yaml``); ``expected.txt``
is the plan the driver derives from them, or the refusal.

The driver is built as ``ioc edge check`` builds it (:func:`devices.drivers.build_driver`), in the case folder
with the profile given as ``profile.yaml``, so every message names that file and nothing of the machine. The
rendering: the driver's own plan lines (what it logs and ``ioc edge check`` prints, one per request), each
followed by the metrics that request carries: the offset in the answer, the type and byte layout, the linear
scale, and, for a register with a ``sim.typical`` value, the raw registers that value travels in (from the same
codec the driver decodes with). A refused case renders as ``refused: <the error>``. Adding a case is adding a
folder; see ``tests/golden/README.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from golden_cases import case_names, check_golden

from devices.drivers import build_driver
from devices.drivers.modbus import ModbusDriver
from devices.drivers.modbus.codec import codec_for
from devices.drivers.modbus.plan import plan_reads
from devices.errors import DeviceConfigError
from devices.profile import RegisterSpec

SUITE = Path(__file__).parent / "modbus_plan"
PROFILE = "profile.yaml"
OPTIONS = "options.yaml"
DRIVER = "modbus_tcp"
CASES = case_names(SUITE, PROFILE)

#: The bytes of a value, most significant first, as they lie in the registers (Modbus convention: "ABCD").
LAYOUT = {
    ("big", "big"): "ABCD",
    ("big", "little"): "CDAB",
    ("little", "big"): "BADC",
    ("little", "little"): "DCBA",
}


def layout(reg: RegisterSpec) -> str:
    """``ABCD`` and its swaps for 32-bit values, ``AB`` or ``BA`` for 16-bit ones, ``bit`` for coils and inputs."""
    if reg.is_bit:
        return "bit"
    order = LAYOUT[(reg.byte_order, reg.word_order)]
    return order if reg.width == 2 else order[:2]


def describe_register(reg: RegisterSpec, offset: int) -> str:
    where = f"+{offset}" if reg.width == 1 else f"+{offset}..+{offset + reg.width - 1}"
    line = f"{where} {reg.name}: {reg.type} {layout(reg)}"
    if not reg.is_bit:
        sign = "-" if reg.offset < 0 else "+"
        line += f", raw * {reg.scale:g} {sign} {abs(reg.offset):g}"
    if reg.unit:
        line += f" {reg.unit}"
    typical = reg.sim.typical if reg.sim is not None else None
    if typical is not None and not reg.is_bit:
        codec = codec_for(reg)
        raw = codec.encode(typical)
        decoded = codec.decode([int(r) for r in raw], 0)
        # The golden text shows the encoding; decoding it must give the value back, or the codec lies one way.
        assert isinstance(decoded, float)
        assert math.isclose(decoded, typical, rel_tol=1e-6, abs_tol=abs(reg.scale) / 2), (reg.name, decoded)
        line += f"; typical {typical:g} is raw {' '.join(f'0x{int(r):04X}' for r in raw)}"
    return line


def render(folder: Path) -> str:
    """The plan of the case in ``folder`` (the current directory), as ``expected.txt`` holds it."""
    options = yaml.safe_load((folder / OPTIONS).read_text(encoding="utf-8")) if (folder / OPTIONS).is_file() else {}
    try:
        driver = build_driver(DRIVER, options or {}, PROFILE)
    except DeviceConfigError as exc:
        return f"refused: {exc}\n"
    assert isinstance(driver, ModbusDriver)
    profile = driver.profile
    requests = plan_reads(profile.registers, max_gap=driver.config.max_gap)
    # The driver's own lines, one per request, are the ones shown; the metrics under each come from the same plan.
    assert [r.describe() for r in requests] == driver.describe_plan()
    lines = [
        f"{PROFILE}: profile {profile.id}, kind {profile.kind}; {DRIVER} max_gap {driver.config.max_gap}",
        f"{len(profile.registers)} metrics in {len(requests)} request{'' if len(requests) == 1 else 's'} per poll:",
    ]
    for request, described in zip(requests, driver.describe_plan(), strict=True):
        lines.append(described)
        lines.extend(f"  {describe_register(r, r.address - request.address)}" for r in request.registers)
    return "\n".join(lines) + "\n"


def test_every_case_folder_has_its_profile() -> None:
    """A folder without ``profile.yaml`` would be skipped silently: a misnamed input fails here instead."""
    assert sorted(p.name for p in SUITE.iterdir() if p.is_dir()) == CASES


@pytest.mark.parametrize("case", CASES)
def test_modbus_plan(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = SUITE / case
    monkeypatch.chdir(folder)
    check_golden(folder, render(folder))
