"""The registry in memory, persisted in the background.

Everything the hot path needs (a device's site, ward, poll interval) is answered from dictionaries; the
database is written behind (births and imports are rare) and read once at start. Two sources describe a device:

- the **birth** of its gateway (``wire.v1.State.devices``): what actually runs: kind, profile, driver, poll
  interval, and, from the topic, the site and gateway;
- the **inventory** technicians keep (:mod:`hub.registry.inventory`): where it is installed, when, its tags,
  and what they believe its kind, profile, site and gateway are.

They merge: a birth's values win for what it announces (it is what the gateway really runs), the inventory
fills in the rest. Where both state a value and they differ, a :class:`Conflict` is recorded on the device,
logged once, returned by the import and shown by the API, until one side is corrected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub.registry.db import Database, utcnow
from hub.registry.inventory import Inventory
from hub.registry.models import DeviceRow, SiteRow
from wire.v1 import State

log = logging.getLogger(__name__)

#: Fields both a birth and the inventory may state; a difference is a conflict.
COMPARED: Final = ("kind", "profile", "site", "gateway", "interval_s")


@dataclass(frozen=True, slots=True)
class Conflict:
    """Birth and inventory disagree about one field of one device."""

    device: str
    field: str
    announced: Any
    inventory: Any

    def describe(self) -> str:
        return (
            f"device {self.device}: {self.field} is {self.announced!r} in the gateway's birth "
            f"but {self.inventory!r} in the inventory"
        )


@dataclass(slots=True)
class Site:
    id: str
    name: str = ""
    ward: str | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass(slots=True)
class Device:
    id: str
    kind: str = ""
    profile: str = ""
    driver: str = ""
    site: str | None = None
    gateway: str | None = None
    lat: float | None = None
    lon: float | None = None
    installed: date | None = None
    interval_s: float | None = None
    inactivity_s: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    announced: dict[str, Any] | None = None
    inventory: dict[str, Any] | None = None
    conflicts: list[Conflict] = field(default_factory=list)

    def merge(self) -> list[Conflict]:
        """Recompute the effective fields from both sources; return the conflicts (also kept on the device)."""
        inv = self.inventory or {}
        ann = self.announced or {}
        for name in ("kind", "profile", "site", "gateway", "interval_s", "driver"):
            if name in ann:
                setattr(self, name, ann[name])
            elif name in inv:
                setattr(self, name, inv[name])
        for name in ("lat", "lon", "inactivity_s"):
            setattr(self, name, inv.get(name))
        self.installed = date.fromisoformat(inv["installed"]) if "installed" in inv else None
        self.tags = dict(inv.get("tags", {}))
        self.conflicts = [
            Conflict(self.id, name, ann[name], inv[name])
            for name in COMPARED
            if name in ann and name in inv and ann[name] != inv[name]
        ]
        return self.conflicts


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an inventory import changed, and the conflicts it leaves."""

    sites_added: int
    sites_updated: int
    devices_added: int
    devices_updated: int
    conflicts: list[Conflict]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["conflicts"] = [{**asdict(c), "message": c.describe()} for c in self.conflicts]
        return data


Listener = Callable[[list[Device]], None]


class Registry:
    """Sites and devices. Loaded from the database at start, kept in memory, written behind."""

    def __init__(self, db: Database | None = None) -> None:
        self._db = db
        self.sites: dict[str, Site] = {}
        self.devices: dict[str, Device] = {}
        self._listeners: list[Listener] = []
        self._writes: set[asyncio.Future[None]] = set()
        self._logged_conflicts: set[Conflict] = set()

    # ------------------------------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Read every site and device (blocking; once at start)."""
        if self._db is None:
            return

        def read(session: Session) -> tuple[list[SiteRow], list[DeviceRow]]:
            return list(session.scalars(select(SiteRow))), list(session.scalars(select(DeviceRow)))

        sites, devices = self._db.run_sync(read)
        for s in sites:
            self.sites[s.id] = Site(s.id, s.name, s.ward, s.lat, s.lon)
        for d in devices:
            device = Device(d.id, announced=d.announced, inventory=d.inventory)
            device.merge()
            self.devices[d.id] = device
        log.info("registry: %d sites and %d devices loaded", len(self.sites), len(self.devices))

    async def flush(self) -> None:
        """Wait until every write submitted so far is in the database."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def subscribe(self, listener: Listener) -> None:
        """``listener(devices)`` is called (on the loop) with the devices a birth or an import changed."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------------------------------ queries

    def ward_of_site(self, site: str | None) -> str | None:
        found = self.sites.get(site) if site is not None else None
        return found.ward if found is not None else None

    def ward_of(self, device: Device) -> str | None:
        return self.ward_of_site(device.site)

    def devices_of(self, site: str, gateway: str) -> list[Device]:
        return [d for d in self.devices.values() if d.site == site and d.gateway == gateway]

    def conflicts(self) -> list[Conflict]:
        return [c for d in self.devices.values() for c in d.conflicts]

    def enrichment(self) -> dict[str, dict[str, str]]:
        """device id -> extra InfluxDB tags from the registry (``district``: the ward of its site)."""
        out: dict[str, dict[str, str]] = {}
        for device in self.devices.values():
            ward = self.ward_of(device)
            if ward:
                out[device.id] = {"district": ward}
        return out

    # ------------------------------------------------------------------------------------------ sources

    def apply_birth(self, site: str, gateway: str, state: State) -> list[Conflict]:
        """Record the devices a gateway announces; return the conflicts with the inventory."""
        if not state.online:
            return []
        changed_sites: list[Site] = []
        if site not in self.sites:
            self.sites[site] = Site(site, name=site)
            changed_sites.append(self.sites[site])
        changed: list[Device] = []
        for info in state.devices:
            announced = {
                "kind": info.kind,
                "profile": info.profile,
                "driver": info.driver,
                "interval_s": info.interval_s,
                "site": site,
                "gateway": gateway,
            }
            device = self.devices.get(info.id)
            if device is None:
                device = self.devices[info.id] = Device(info.id)
            elif device.announced == announced:
                continue
            device.announced = announced
            device.merge()
            changed.append(device)
        self._changed(changed_sites, changed)
        return [c for d in changed for c in d.conflicts]

    def apply_inventory(self, inventory: Inventory) -> ImportResult:
        """Merge an inventory: sites are replaced by the inventory's, devices' inventory sides too."""
        sites_added = sites_updated = devices_added = devices_updated = 0
        changed_sites: list[Site] = []
        for entry in inventory.sites:
            site = Site(entry.id, entry.name or entry.id, entry.ward, entry.lat, entry.lon)
            old = self.sites.get(entry.id)
            if old == site:
                continue
            sites_added += old is None
            sites_updated += old is not None
            self.sites[entry.id] = site
            changed_sites.append(site)
        changed: list[Device] = []
        for dev in inventory.devices:
            if dev.site is not None and dev.site not in self.sites:
                self.sites[dev.site] = Site(dev.site, name=dev.site)
                changed_sites.append(self.sites[dev.site])
                sites_added += 1
            asserted = dev.asserted()
            device = self.devices.get(dev.id)
            if device is None:
                device = self.devices[dev.id] = Device(dev.id)
                devices_added += 1
            elif device.inventory == asserted:
                continue
            else:
                devices_updated += 1
            device.inventory = asserted
            device.merge()
            changed.append(device)
        self._changed(changed_sites, changed)
        conflicts = [c for d in self.devices.values() for c in d.conflicts]
        return ImportResult(sites_added, sites_updated, devices_added, devices_updated, conflicts)

    def _changed(self, sites: list[Site], devices: list[Device]) -> None:
        for device in devices:
            for conflict in device.conflicts:
                if conflict not in self._logged_conflicts:
                    self._logged_conflicts.add(conflict)
                    log.warning("registry conflict: %s", conflict.describe())
        if not sites and not devices:
            return
        site_ids = {s.id for s in sites}
        changed_ids = {d.id for d in devices}
        affected = devices + [d for d in self.devices.values() if d.site in site_ids and d.id not in changed_ids]
        if affected:
            for listener in self._listeners:
                listener(affected)
        if self._db is not None:
            self._submit(list(sites), [_row_values(d) for d in devices])

    def _submit(self, sites: list[Site], devices: list[dict[str, Any]]) -> None:
        assert self._db is not None
        site_values = [asdict(s) for s in sites]
        future = asyncio.ensure_future(self._db.write(lambda session: _persist(session, site_values, devices)))
        self._writes.add(future)
        future.add_done_callback(self._write_done)

    def _write_done(self, future: asyncio.Future[None]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("registry: could not save to the database: %s", future.exception())

    def persist_now(self) -> None:
        """Write every site and device synchronously (the CLI, tests)."""
        assert self._db is not None
        sites = [asdict(s) for s in self.sites.values()]
        devices = [_row_values(d) for d in self.devices.values()]
        self._db.run_sync(lambda session: _persist(session, sites, devices))


def _row_values(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "kind": device.kind,
        "profile": device.profile,
        "driver": device.driver,
        "site": device.site,
        "gateway": device.gateway,
        "lat": device.lat,
        "lon": device.lon,
        "installed": device.installed,
        "interval_s": device.interval_s,
        "inactivity_s": device.inactivity_s,
        "tags": dict(device.tags),
        "announced": device.announced,
        "inventory": device.inventory,
        "conflicts": [asdict(c) for c in device.conflicts],
    }


def _persist(session: Session, sites: list[dict[str, Any]], devices: list[dict[str, Any]]) -> None:
    """Upsert sites, then devices (they refer to sites)."""
    _upsert(session, SiteRow, sites)
    _upsert(session, DeviceRow, devices)


def _upsert(session: Session, model: type[SiteRow] | type[DeviceRow], rows: list[dict[str, Any]]) -> None:
    """``INSERT ... ON CONFLICT (id) DO UPDATE``, the same statement on SQLite and PostgreSQL.

    Atomic per row, so two hubs on one PostgreSQL writing the same birth at once both succeed (a SELECT, then
    an INSERT of the rows not found, fails for the second one on the primary key). Rows go in id order, so two
    such statements lock rows in the same order and cannot deadlock. ``first_seen`` is set on insert only.
    """
    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(model)
    changed = {key: stmt.excluded[key] for key in rows[0] if key != "id"} | {"updated": stmt.excluded.updated}
    now = utcnow()
    # One statement, many parameter sets: SQLAlchemy sends them as batched multi-row INSERTs ("insertmanyvalues").
    params = [{**row, "updated": now} for row in sorted(rows, key=lambda r: str(r["id"]))]
    session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed), params)
