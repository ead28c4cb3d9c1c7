"""Device profiles: what one hardware model exposes, read from YAML in ``devices/profiles/``.

A profile names the model (``manufacturer``, ``model``), the public document it is modelled on (``source``),
the measurement its readings land in (``kind``) and, for Modbus, the register map: one entry per metric with
its table, 0-based protocol address, type, byte and word order, and a linear scale (``value = raw * scale +
offset``). Optional ``sim`` hints tell the simulator how the value moves. Profiles are checked once, when
loaded; every error names the file, the register and the field.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devices.errors import DeviceConfigError

#: Where the shipped profiles live (inside the package, so they are part of the wheel).
PROFILES_DIR: Final = Path(__file__).parent / "profiles"

#: Same rules as the wire contract (``wire/v1.py``); repeated here because ``devices`` never imports ``wire``.
ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"
METRIC_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
KIND_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"

Table = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "bool"]
Order = Literal["big", "little"]

#: Tables of single bits (read with function codes 1 and 2) and of 16-bit registers (3 and 4).
BIT_TABLES: Final[frozenset[str]] = frozenset({"coil", "discrete"})
#: Width of each type in table units: registers for register tables, bits for bit tables.
TYPE_WIDTH: Final[dict[str, int]] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "bool": 1,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimHints(_Strict):
    """How the simulator moves a value (engineering units, after scale and offset).

    ``mode``: ``walk`` (random walk of at most ``step`` per update, kept within ``min``..``max``),
    ``counter`` (grows by up to ``step`` per update, like an energy meter or rain counter) or ``constant``.
    Booleans start at ``typical`` (non-zero is true) and flip with ``flip_probability`` per update.
    """

    min: float | None = None
    max: float | None = None
    typical: float | None = None
    step: float | None = Field(default=None, gt=0)
    mode: Literal["walk", "counter", "constant"] = "walk"
    flip_probability: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_range(self) -> SimHints:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.typical is not None:
            if self.min is not None and self.typical < self.min:
                raise ValueError(f"typical ({self.typical}) is below min ({self.min})")
            if self.max is not None and self.typical > self.max:
                raise ValueError(f"typical ({self.typical}) is above max ({self.max})")
        return self


class RegisterSpec(_Strict):
    """One metric of a Modbus device: where it is and how to turn its raw value into a number."""

    name: str = Field(pattern=METRIC_PATTERN)
    address: int = Field(ge=0, le=65535, description="0-based protocol address (register 40001 is holding 0)")
    table: Table
    type: RegisterType
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    sim: SimHints | None = None

    @property
    def width(self) -> int:
        """How many registers (or bits) the value spans."""
        return TYPE_WIDTH[self.type]

    @property
    def is_bit(self) -> bool:
        return self.table in BIT_TABLES

    @model_validator(mode="after")
    def _check_consistency(self) -> RegisterSpec:
        if self.is_bit and self.type != "bool":
            raise ValueError(f"table {self.table!r} holds single bits: type must be 'bool', not {self.type!r}")
        if not self.is_bit and self.type == "bool":
            raise ValueError(f"type 'bool' needs table 'coil' or 'discrete', not {self.table!r}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.width - 1 > 65535:
            raise ValueError(f"address {self.address} + {self.width} registers runs past 65535")
        return self


class Profile(_Strict):
    """What one hardware model exposes."""

    id: str = Field(pattern=ID_PATTERN)
    kind: str = Field(pattern=KIND_PATTERN, description="the InfluxDB measurement, e.g. air_quality")
    manufacturer: str = Field(min_length=1)
    model: str = Field(min_length=1)
    source: str = Field(min_length=1, description="the public datasheet or register map this is modelled on")
    driver: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="protocol family, e.g. modbus")
    description: str = ""
    registers: tuple[RegisterSpec, ...] = ()

    @model_validator(mode="after")
    def _check_registers(self) -> Profile:
        if self.driver == "modbus" and not self.registers:
            raise ValueError("a modbus profile needs at least one register")
        seen: set[str] = set()
        for reg in self.registers:
            if reg.name in seen:
                raise ValueError(f"register name {reg.name!r} is used twice")
            seen.add(reg.name)
        by_table: dict[str, list[RegisterSpec]] = {}
        for reg in self.registers:
            by_table.setdefault(reg.table, []).append(reg)
        for table, regs in by_table.items():
            regs.sort(key=lambda r: r.address)
            for before, after in itertools.pairwise(regs):
                if after.address < before.address + before.width:
                    raise ValueError(
                        f"registers {before.name!r} and {after.name!r} overlap in table {table!r} "
                        f"(address {after.address} is inside {before.address}..{before.address + before.width - 1})"
                    )
        return self

    def register(self, name: str) -> RegisterSpec:
        """The register called ``name``; :class:`KeyError` if there is none."""
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(name)


def describe_validation_error(exc: ValidationError, data: Any = None) -> list[str]:
    """One line per problem: ``register 'x' (registers[2]) field 'scale': message`` or ``field 'kind': ...``.

    ``data`` is the raw document that was validated; it is used to name list items by their ``name`` key.
    """
    lines: list[str] = []
    for err in exc.errors():
        loc = list(err["loc"])
        where: list[str] = []
        node: Any = data
        path: list[str] = []
        i = 0
        while i < len(loc):
            part = loc[i]
            nxt = loc[i + 1] if i + 1 < len(loc) else None
            if isinstance(part, str) and isinstance(nxt, int):
                item = node.get(part) if isinstance(node, dict) else None
                entry = item[nxt] if isinstance(item, list) and 0 <= nxt < len(item) else None
                label = entry.get("name") if isinstance(entry, dict) else None
                singular = part.removesuffix("s")
                where.append(f"{singular} {label!r} ({part}[{nxt}])" if label else f"{part}[{nxt}]")
                node = entry
                i += 2
                continue
            path.append(str(part))
            node = node.get(part) if isinstance(node, dict) and isinstance(part, str) else None
            i += 1
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (not allowed)"
        elif err["type"] == "missing":
            message = "missing (required)"
        if path:
            where.append(f"field {'.'.join(path)!r}")
        lines.append(f"{' '.join(where) or 'document'}: {message}")
    return lines


def parse_profile(data: Any, source: str) -> Profile:
    """Validate a profile document; ``source`` (usually the file) prefixes every error."""
    if not isinstance(data, dict):
        raise DeviceConfigError(f"{source}: a profile must be a mapping, not {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, data)
        raise DeviceConfigError(f"{source}: " + "; ".join(problems)) from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeviceConfigError(f"{path}: cannot read profile ({exc.strerror or exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeviceConfigError(f"{path}: not valid YAML ({exc})") from exc


def _is_path(name_or_path: str | Path) -> bool:
    if isinstance(name_or_path, Path):
        return True
    return "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by id (``devices/profiles/<id>.yaml``) or from a file path.

    A file is parsed once while it stays unchanged (same size and modification time): the devices of one
    model share one frozen :class:`Profile` instead of holding a copy each. Raises :class:`DeviceConfigError`
    naming the file, the register and the field of the first problems.
    """
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise DeviceConfigError(f"{path}: no such profile file")
        return _parse_cached(path, None)
    name = str(name_or_path)
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles()) or "none"
        raise DeviceConfigError(f"unknown profile {name!r} (known: {known})")
    return _parse_cached(path, name)


#: Resolved path -> ((size, mtime_ns), profile): see :func:`load_profile`.
_PARSED: dict[Path, tuple[tuple[int, int], Profile]] = {}


def _parse_cached(path: Path, name: str | None) -> Profile:
    try:
        stat = path.stat()
        key = path.resolve()
    except OSError as exc:
        raise DeviceConfigError(f"{path}: cannot read profile ({exc.strerror or exc})") from exc
    signature = (stat.st_size, stat.st_mtime_ns)
    cached = _PARSED.get(key)
    if cached is not None and cached[0] == signature:
        profile = cached[1]
    else:
        profile = parse_profile(_read_yaml(path), str(path))
        _PARSED[key] = (signature, profile)
    if name is not None and profile.id != name:
        raise DeviceConfigError(f"{path}: field 'id' is {profile.id!r} but the file is named {name!r}.yaml")
    return profile


def available_profiles() -> list[str]:
    """Ids of the shipped profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
