"""Read planning: a profile's registers merged into the fewest Modbus read requests.

Registers are grouped per table and sorted by address; a register joins the current request when the hole
before it is at most ``max_gap`` addresses and the request stays within ``max_count`` (the protocol allows
125 registers or 2000 bits per read). Reading a few unused registers is cheaper than another round trip on a
9600-baud line, which is why Telegraf's modbus input and Home Assistant's do the same; a device that refuses
reads across holes gets ``max_gap: 0``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from devices.errors import DeviceConfigError
from devices.profile import RegisterSpec, Table

#: Protocol limits per request (Modbus Application Protocol v1.1b3, function codes 1-4).
MAX_COUNT: Final[dict[str, int]] = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}
#: Default largest hole (in addresses) a request may span to merge two registers.
DEFAULT_MAX_GAP: Final = 8
#: Order in which tables are read and listed.
TABLE_ORDER: Final[tuple[Table, ...]] = ("coil", "discrete", "holding", "input")
#: Function code per table.
FUNCTION_CODE: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``table`` from ``address``, carrying ``registers``."""

    table: Table
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.address + self.count

    def describe(self) -> str:
        unit = "bits" if self.table in ("coil", "discrete") else "registers"
        names = ", ".join(r.name for r in self.registers)
        last = self.end - 1
        return (
            f"fc{FUNCTION_CODE[self.table]} {self.table} {self.address}..{last} "
            f"(0x{self.address:04X}..0x{last:04X}, {self.count} {unit}): {names}"
        )


def plan_reads(
    registers: Iterable[RegisterSpec],
    max_gap: int = DEFAULT_MAX_GAP,
    max_count: int | None = None,
) -> list[ReadRequest]:
    """Merge ``registers`` into read requests, per table in :data:`TABLE_ORDER`, by address.

    ``max_count`` caps every request (never above the protocol limit of its table); ``None`` uses the limit.
    Registers that overlap (the same address read as two types) share a request.
    """
    if max_gap < 0:
        raise DeviceConfigError(f"max_gap must be >= 0, not {max_gap}")
    if max_count is not None and max_count < 1:
        raise DeviceConfigError(f"max_count must be >= 1, not {max_count}")
    by_table: dict[str, list[RegisterSpec]] = {}
    for reg in registers:
        by_table.setdefault(reg.table, []).append(reg)
    plan: list[ReadRequest] = []
    for table in TABLE_ORDER:
        regs = sorted(by_table.get(table, ()), key=lambda r: (r.address, r.width))
        if not regs:
            continue
        limit = MAX_COUNT[table] if max_count is None else min(max_count, MAX_COUNT[table])
        start = regs[0].address
        end = start + regs[0].width
        members: list[RegisterSpec] = [regs[0]]
        if regs[0].width > limit:
            raise DeviceConfigError(f"register {regs[0].name!r} is wider than max_count ({limit})")
        for reg in regs[1:]:
            if reg.width > limit:
                raise DeviceConfigError(f"register {reg.name!r} is wider than max_count ({limit})")
            new_end = max(end, reg.address + reg.width)
            if reg.address - end <= max_gap and new_end - start <= limit:
                end = new_end
                members.append(reg)
                continue
            plan.append(ReadRequest(table, start, end - start, tuple(members)))
            start, end, members = reg.address, reg.address + reg.width, [reg]
        plan.append(ReadRequest(table, start, end - start, tuple(members)))
    return plan
