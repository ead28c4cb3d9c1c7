"""The inventory technicians keep: sites and devices in a YAML or CSV file (or a JSON body of the API).

YAML (or JSON), every key optional except the ids::

    sites:
      - {id: ben-thanh, name: "Chợ Bến Thành", ward: quan-1, lat: 10.7725, lon: 106.6980}
    devices:
      - {id: aq-01, kind: air_quality, profile: pm-sensor-rs485, site: ben-thanh, gateway: gw-1,
         lat: 10.7726, lon: 106.6981, installed: 2025-03-01, inactivity_s: 30, tags: {owner: doe}}

CSV: one device per row, header ``id,kind,profile,site,gateway,lat,lon,installed,interval_s,inactivity_s,tags``
plus optional site columns ``site_name,ward,site_lat,site_lon`` (tags as ``key=value;key=value``). Unknown keys
and columns are refused; every error names the file, the row or entry, the device and the field.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hub.errors import HubError
from wire.v1 import ID_PATTERN, KIND_PATTERN

IdStr = Annotated[str, Field(pattern=ID_PATTERN)]
TagKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
TagValue = Annotated[str, Field(max_length=200)]
#: An inventory is a file a person keeps; bigger than this is a mistake (a log pasted in...).
MAX_ENTRIES: Final = 100_000

CSV_DEVICE_COLUMNS: Final = (
    "id",
    "kind",
    "profile",
    "site",
    "gateway",
    "lat",
    "lon",
    "installed",
    "interval_s",
    "inactivity_s",
    "tags",
)
CSV_SITE_COLUMNS: Final = ("site_name", "ward", "site_lat", "site_lon")


class InventoryError(HubError):
    """An inventory that cannot be imported; the message names the source, the entry and the field."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InventorySite(_Entry):
    """A site: a place with one or more gateways."""

    id: IdStr
    name: Annotated[str, Field(max_length=200)] = ""
    ward: IdStr | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None


class InventoryDevice(_Entry):
    """A device as the technicians record it. Fields left out are not asserted (no conflict is reported)."""

    id: IdStr
    kind: Annotated[str, Field(pattern=KIND_PATTERN)] | None = None
    profile: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    site: IdStr | None = None
    gateway: IdStr | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    installed: date | None = None
    interval_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    #: Overrides the default inactivity timeout (3 x the poll interval) of the health monitor.
    inactivity_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    tags: Annotated[dict[TagKey, TagValue], Field(max_length=32)] = {}

    def asserted(self) -> dict[str, Any]:
        """The fields the inventory states (JSON-ready), for the device row's ``inventory`` column."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"id"})


class Inventory(_Entry):
    """A whole inventory document."""

    sites: Annotated[list[InventorySite], Field(max_length=MAX_ENTRIES)] = []
    devices: Annotated[list[InventoryDevice], Field(max_length=MAX_ENTRIES)] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> Inventory:
        for what, ids in (("sites", [s.id for s in self.sites]), ("devices", [d.id for d in self.devices])):
            seen: set[str] = set()
            for i, entry_id in enumerate(ids):
                if entry_id in seen:
                    raise ValueError(f"{what}[{i}]: {entry_id!r} is listed twice")
                seen.add(entry_id)
        return self


def describe_errors(exc: ValidationError, source: str, data: Any, *, csv_rows: bool = False) -> str:
    """One line per error: ``source: devices[3] (aq-01): kind: <message> (got 'X')``."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] in ("sites", "devices") and isinstance(loc[1], int):
            section, index = str(loc[0]), loc[1]
            entry_id = ""
            entries = data.get(section) if isinstance(data, dict) else None
            if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
                entry_id = str(entries[index].get("id", ""))
            where = f"row {index + 2}" if csv_rows else f"{section}[{index}]"
            if entry_id:
                where += f" ({entry_id})"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        message = "unknown key" if error["type"] == "extra_forbidden" else str(error["msg"])
        message = message.removeprefix("Value error, ")
        got = ""
        if error["type"] != "extra_forbidden" and isinstance(error.get("input"), str | int | float):
            got = f" (got {error['input']!r})"
        parts = [p for p in (source, where, field) if p]
        lines.append(": ".join(parts) + f": {message}{got}")
    return "invalid inventory:\n  " + "\n  ".join(lines)


def parse_mapping(data: Any, source: str) -> Inventory:
    """Check an already-parsed YAML/JSON document."""
    if data is None:
        return Inventory()
    if not isinstance(data, dict):
        raise InventoryError(f"{source}: the top level must be a mapping with 'sites' and/or 'devices'")
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(describe_errors(exc, source, data)) from exc


def parse_yaml(text: str, source: str) -> Inventory:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InventoryError(f"{source}: not valid YAML: {exc}") from exc
    return parse_mapping(data, source)


def _tags(value: str, source: str, row: int) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(";"))):
        key, sep, val = item.partition("=")
        if not sep:
            raise InventoryError(f"{source}: row {row}: tags: {item!r} is not key=value")
        tags[key.strip()] = val.strip()
    return tags


def parse_csv(text: str, source: str) -> Inventory:
    """One device per row; the site columns, when filled, define the row's site."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "id" not in header:
        raise InventoryError(f"{source}: the header must have an 'id' column (got {', '.join(header) or 'nothing'})")
    unknown = [c for c in header if c not in CSV_DEVICE_COLUMNS and c not in CSV_SITE_COLUMNS]
    if unknown:
        raise InventoryError(
            f"{source}: unknown column(s) {', '.join(unknown)} "
            f"(known: {', '.join((*CSV_DEVICE_COLUMNS, *CSV_SITE_COLUMNS))})"
        )
    devices: list[dict[str, Any]] = []
    sites: dict[str, dict[str, Any]] = {}
    for row_number, row in enumerate(reader, start=2):
        if None in row:
            raise InventoryError(f"{source}: row {row_number}: more values than columns")
        values = {k: v.strip() for k, v in row.items() if v is not None and v.strip() != ""}
        site_values = {k: values.pop(k) for k in CSV_SITE_COLUMNS if k in values}
        if "tags" in values:
            values["tags"] = _tags(values["tags"], source, row_number)
        devices.append(values)
        if site_values and "site" in values:
            site = sites.setdefault(values["site"], {"id": values["site"]})
            for key, target in (("site_name", "name"), ("ward", "ward"), ("site_lat", "lat"), ("site_lon", "lon")):
                if key in site_values:
                    site[target] = site_values[key]
    data = {"sites": list(sites.values()), "devices": devices}
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(describe_errors(exc, source, data, csv_rows=True)) from exc


def parse_text(text: str, fmt: str, source: str) -> Inventory:
    """``fmt`` is ``csv``, ``yaml`` or ``json``."""
    if fmt == "csv":
        return parse_csv(text, source)
    if fmt == "yaml":
        return parse_yaml(text, source)
    if fmt == "json":
        # Not through the YAML parser, of which JSON is a subset: PyYAML is ~50 times slower on big files.
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InventoryError(f"{source}: not valid JSON: {exc}") from exc
        return parse_mapping(data, source)
    raise InventoryError(f"{source}: unknown inventory format {fmt!r} (csv, yaml or json)")


def load_file(path: Path) -> Inventory:
    """Read an inventory file; the format comes from the suffix (``.csv``, ``.yaml``/``.yml``, ``.json``)."""
    suffix = path.suffix.lower()
    fmt = {".csv": "csv", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(suffix)
    if fmt is None:
        raise InventoryError(f"{path}: unknown inventory file type {suffix!r} (.csv, .yaml, .yml or .json)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from exc
    return parse_text(text, fmt, str(path))
