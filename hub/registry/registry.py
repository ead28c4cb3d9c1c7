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

**A device belongs to one gateway** (its owner: ``Device.site`` / ``Device.gateway``): the one the inventory
states, else the first gateway that announced it. A site box can be captured, so a birth never re-homes a device:
one listing a device owned by another gateway leaves it where it is, and the claim is a :class:`Conflict`
(``source="owner"``) until that gateway's next birth drops it. The ingest admission takes such devices out of a
birth before the registry sees it and reports them (``foreign_device``): :meth:`Registry.note_claim` records
those claims, which last until a birth of that gateway comes without one. Moving a device is a technician's act: an
inventory import that states another gateway, or :meth:`Registry.move` (``POST /api/v1/devices/{id}/move``),
only to a site and gateway the registry knows (:meth:`Registry.check_place`: a mistyped target creates nothing);
each is a :class:`Move` (who, when, from, to), logged and persisted. :meth:`Registry.owners` is the map the
ingest pipeline checks gateway input against (pushed to it on every change, like the enrichment).

**Written behind, coalesced.** A change marks its sites and devices (and adds its moves) to the next write; one
write, a single transaction in the database's writer thread, takes everything marked in the
:data:`WRITE_COALESCE_S` after the first change, and at most one write runs at a time (changes meanwhile wait for
the next one). Each row is written with its values at the time of the write. When thousands of gateways are born
at once (a broker restart, a hub start), this is one transaction per batch of births instead of one per birth,
whose statement, commit and thread hand-over held the event loop's interpreter lock (the writer thread's Python
competes with the loop for it). :meth:`Registry.flush` writes what is marked at once and waits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub.registry.db import Database, iso, utcnow
from hub.registry.inventory import Inventory
from hub.registry.models import DeviceMoveRow, DeviceRow, SiteRow
from wire.v1 import State

log = logging.getLogger(__name__)

#: Fields both a birth and the inventory may state; a difference is a conflict.
COMPARED: Final = ("kind", "profile", "site", "gateway", "interval_s")
#: Fields the owner's birth gives (what the gateway runs); the inventory fills in those no birth gave.
MERGED: Final = ("kind", "profile", "interval_s", "driver")
#: ``Conflict.source`` of a birth from another gateway than the device's owner.
OWNER: Final = "owner"
#: How long the first change waits for others to share its database write (seconds).
WRITE_COALESCE_S: Final = 0.05
#: ``Move.source``: a technician through the API, or an inventory import.
MOVED_BY_API: Final = "api"
MOVED_BY_INVENTORY: Final = "inventory"


@dataclass(frozen=True, slots=True)
class Conflict:
    """Birth and inventory disagree about one field of one device (``source="inventory"``), or a gateway
    (``announced``: ``site/gateway``) announced a device owned by another (``inventory``: the owner) and the
    device was not moved (``source="owner"``)."""

    device: str
    field: str
    announced: Any
    inventory: Any
    source: str = "inventory"

    def describe(self) -> str:
        if self.source == OWNER:
            return (
                f"device {self.device}: claimed by gateway {self.announced}, but it belongs to {self.inventory}; "
                "not moved (a technician moves a device: the inventory or POST /api/v1/devices/{id}/move)"
            )
        return (
            f"device {self.device}: {self.field} is {self.announced!r} in the gateway's birth "
            f"but {self.inventory!r} in the inventory"
        )


@dataclass(frozen=True, slots=True)
class Move:
    """A device given to another gateway: by whom (``source`` api or inventory, ``by`` the token's label or the
    inventory's source), when and why."""

    device: str
    from_site: str | None
    from_gateway: str | None
    to_site: str | None
    to_gateway: str
    source: str
    by: str
    reason: str
    at: datetime

    def describe(self) -> str:
        return (
            f"device {self.device} moved from {_place(self.from_site, self.from_gateway)} to "
            f"{_place(self.to_site, self.to_gateway)} by {self.by} ({self.source})"
            + (f": {self.reason}" if self.reason else "")
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": iso(self.at)}


class UnknownPlace(LookupError):
    """A move to a site or a gateway the registry does not know; the message names which, and why."""


def _place(site: str | None, gateway: str | None) -> str:
    return f"{site or '?'}/{gateway}" if gateway else "no gateway"


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
    claims: set[tuple[str, str]] = field(default_factory=set)
    """Other gateways (site, gateway) whose current birth lists this device."""

    @property
    def owner(self) -> str:
        return _place(self.site, self.gateway)

    def merge(self) -> list[Conflict]:
        """Recompute the effective fields from both sources; return the conflicts (also kept on the device).

        ``site`` and ``gateway`` are the owner, set by the registry (never by a birth of another gateway); a
        device without an owning gateway yet is at the inventory's site."""
        inv = self.inventory or {}
        ann = self.announced or {}
        for name in MERGED:
            if name in ann:
                setattr(self, name, ann[name])
            elif name in inv:
                setattr(self, name, inv[name])
        if self.gateway is None:
            self.site = inv.get("site")
        for name in ("lat", "lon", "inactivity_s"):
            setattr(self, name, inv.get(name))
        self.installed = date.fromisoformat(inv["installed"]) if "installed" in inv else None
        self.tags = dict(inv.get("tags", {}))
        self.conflicts = [
            Conflict(self.id, name, ann[name], inv[name])
            for name in COMPARED
            if name in ann and name in inv and ann[name] != inv[name]
        ]
        self.conflicts += [
            Conflict(self.id, "gateway", f"{site}/{gateway}", self.owner, OWNER)
            for site, gateway in sorted(self.claims)
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
        #: Marked for the next write (:meth:`_submit`): sites and devices by id, moves in order.
        self._dirty_sites: dict[str, Site] = {}
        self._dirty_devices: dict[str, Device] = {}
        self._dirty_moves: list[Move] = []
        self._write_timer: asyncio.TimerHandle | None = None
        self._logged_conflicts: set[Conflict] = set()
        #: (site, gateway) -> the devices of another owner its current birth lists.
        self._claims: dict[tuple[str, str], set[str]] = {}
        #: (site, gateway) -> the claims the ingest admission reported since that gateway's last birth.
        self._noted: dict[tuple[str, str], set[str]] = {}
        #: The gateways whose birth came since the hub started (one that announced no device is known by it alone).
        self._born: set[tuple[str, str]] = set()
        #: Every device by id, for the API's pages (:meth:`sorted_devices`).
        self._sorted: list[Device] = []
        #: Changes with every change of a site or a device (the API's lists are kept until it does).
        self.version = 0
        #: The sites and devices changed since the API's kept list answers last took them (:meth:`take_changes`):
        #: their reader, which re-encodes those rows alone.
        self.changed_sites: set[str] = set()
        self.changed_devices: set[str] = set()

    # ------------------------------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Read every site and device (blocking; once at start)."""
        if self._db is None:
            return

        def read(session: Session) -> tuple[list[SiteRow], list[DeviceRow], set[str]]:
            moved = select(DeviceMoveRow.device).where(DeviceMoveRow.source == MOVED_BY_API).distinct()
            return (
                list(session.scalars(select(SiteRow))),
                list(session.scalars(select(DeviceRow))),
                set(session.scalars(moved)),
            )

        sites, devices, moved_by_api = self._db.run_sync(read)
        for s in sites:
            self.sites[s.id] = Site(s.id, s.name, s.ward, s.lat, s.lon)
        for d in devices:
            device = Device(d.id, site=d.site, gateway=d.gateway, announced=d.announced, inventory=d.inventory)
            inv = d.inventory or {}
            stated = inv.get("gateway")
            legacy = stated is not None and d.id not in moved_by_api
            if legacy and (stated, inv.get("site", d.site)) != (d.gateway, d.site):
                # A row written before devices had owners holds the last birth's gateway; the inventory's wins
                # (only a technician's move through the API, recorded, may leave a device elsewhere).
                device.site = inv.get("site", d.site if d.gateway == stated else None)
                device.gateway = stated
            device.merge()
            self.devices[d.id] = device
        log.info("registry: %d sites and %d devices loaded", len(self.sites), len(self.devices))

    async def flush(self) -> None:
        """Wait until every change so far is in the database (what waits to be coalesced is written now)."""
        while self._writes or self._dirty():
            if self._writes:
                await asyncio.gather(*list(self._writes), return_exceptions=True)
            else:
                self._write_marked()

    def subscribe(self, listener: Listener) -> None:
        """``listener(devices)`` is called (on the loop) with the devices a birth or an import changed."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------------------------------ queries

    def take_changes(self) -> tuple[set[str], set[str]]:
        """The ids of the sites and of the devices changed since the last call (one reader: the API's kept list
        answers, ``hub/routes/sites.py``)."""
        sites, devices = self.changed_sites, self.changed_devices
        self.changed_sites, self.changed_devices = set(), set()
        return sites, devices

    def sorted_devices(self) -> list[Device]:
        """Every device, by id: the registry's own list, not to be changed. Devices are only ever added (at the end
        of :attr:`devices`, in insertion order), so a call after new ones merges them in (a sort of sorted runs)
        and a call after none costs nothing: the API pages 20,000 devices without sorting them each time."""
        if len(self._sorted) != len(self.devices):
            self._sorted.extend(itertools.islice(self.devices.values(), len(self._sorted), None))
            self._sorted.sort(key=_device_id)
        return self._sorted

    def ward_of_site(self, site: str | None) -> str | None:
        found = self.sites.get(site) if site is not None else None
        return found.ward if found is not None else None

    def ward_of(self, device: Device) -> str | None:
        return self.ward_of_site(device.site)

    def devices_of(self, site: str, gateway: str) -> list[Device]:
        return [d for d in self.devices.values() if d.site == site and d.gateway == gateway]

    def conflicts(self) -> list[Conflict]:
        return [c for d in self.devices.values() for c in d.conflicts]

    def owners(self) -> dict[str, tuple[str, str]]:
        """device id -> (site, gateway) of its owner, for every device that has one (the ingest admission's map)."""
        return {d.id: owner for d in self.devices.values() if (owner := self.owner_of(d)) is not None}

    def owns(self, site: str, gateway: str, device_id: str) -> bool:
        """Whether ``device_id`` belongs to ``site``/``gateway`` (False for a device of no or another owner)."""
        d = self.devices.get(device_id)
        return d is not None and d.gateway == gateway and d.site == site

    def knows_gateway(self, site: str, gateway: str) -> bool:
        """Whether ``site``/``gateway`` is a gateway the registry knows: its birth came since the hub started, or it
        owns or claims a device, or the inventory puts a device under it. A scan of the devices: for a technician's
        move, not the ingest path."""
        key = (site, gateway)
        if key in self._born:
            return True
        for d in self.devices.values():
            if (d.site, d.gateway) == key or key in d.claims:
                return True
            inv = d.inventory
            if inv is not None and inv.get("gateway") == gateway and inv.get("site", d.site) == site:
                return True
        return False

    def check_place(self, site: str, gateway: str) -> None:
        """:class:`UnknownPlace` unless the site is known (the inventory's sites, and those of births and of the
        inventory's devices) and :meth:`knows_gateway` the gateway there."""
        if site not in self.sites:
            raise UnknownPlace(f"site {site!r} is not in the registry: neither the inventory nor a birth names it")
        if not self.knows_gateway(site, gateway):
            raise UnknownPlace(
                f"gateway {gateway!r} of site {site!r} is not in the registry: no birth since the hub started, "
                "inventory entry or device names it"
            )

    def owned_elsewhere(self, site: str, gateway: str, device_id: str) -> bool:
        """Whether ``device_id`` belongs to another gateway than ``site``/``gateway`` (False when it has none)."""
        d = self.devices.get(device_id)
        return d is not None and d.gateway is not None and (d.gateway != gateway or d.site not in (None, site))

    async def moves(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The device's moves, newest first."""
        if self._db is None:
            return []

        def query(session: Session) -> list[dict[str, Any]]:
            rows = session.scalars(
                select(DeviceMoveRow)
                .where(DeviceMoveRow.device == device_id)
                .order_by(DeviceMoveRow.id.desc())
                .limit(limit)
            )
            return [_move_of(r).as_dict() for r in rows]

        return await self._db.read(query)

    def enrichment(self) -> dict[str, dict[str, str]]:
        """device id -> extra InfluxDB tags from the registry (``district``: the ward of its site)."""
        out: dict[str, dict[str, str]] = {}
        for device in self.devices.values():
            tags = self.enrichment_of(device)
            if tags:
                out[device.id] = tags
        return out

    def enrichment_of(self, device: Device) -> dict[str, str]:
        """The device's entry of :meth:`enrichment` (empty: none)."""
        ward = self.ward_of(device)
        return {"district": ward} if ward else {}

    @staticmethod
    def owner_of(device: Device) -> tuple[str, str] | None:
        """The device's entry of :meth:`owners` (None: no owner yet)."""
        if device.site is None or device.gateway is None:
            return None
        return device.site, device.gateway

    # ------------------------------------------------------------------------------------------ sources

    def apply_birth(self, site: str, gateway: str, state: State) -> list[Conflict]:
        """Record the devices a gateway announces; return the conflicts with the inventory."""
        if not state.online:
            return []
        self._born.add((site, gateway))
        changed_sites: list[Site] = []
        if site not in self.sites:
            self.sites[site] = Site(site, name=site)
            changed_sites.append(self.sites[site])
        changed: list[Device] = []
        key = (site, gateway)
        claimed: set[str] = set()
        for info in state.devices:
            device = self.devices.get(info.id)
            if device is None:
                device = self.devices[info.id] = Device(info.id)
            placed = (device.site, device.gateway)
            if not self._take(device, site, gateway):
                # Owned by another gateway: left where it is, the claim reported until this gateway drops it.
                claimed.add(info.id)
                if key not in device.claims:
                    device.claims.add(key)
                    device.merge()
                    changed.append(device)
                continue
            announced = {
                "kind": info.kind,
                "profile": info.profile,
                "driver": info.driver,
                "interval_s": info.interval_s,
                "site": site,
                "gateway": gateway,
            }
            if device.announced == announced:
                if (device.site, device.gateway) != placed:
                    changed.append(device)  # it has an owner now: the listeners must hear of it
                continue
            device.announced = announced
            device.merge()
            changed.append(device)
        # Claims the admission reported (it took them out of this birth) stand with the birth's own.
        claimed |= self._noted.pop(key, set()) & self._claims.get(key, set())
        for device_id in sorted(self._claims.pop(key, set()) - claimed):
            device = self.devices[device_id]
            if key in device.claims:
                device.claims.discard(key)
                device.merge()
                changed.append(device)
        if claimed:
            self._claims[key] = claimed
        # A site a birth creates holds no device but this birth's (every device's site is a known one), so the
        # listeners hear of the changed devices alone: no look at the others, whose number grows with the city.
        self._changed(changed_sites, changed, others_of_sites=False)
        return [c for d in changed for c in d.conflicts]

    def note_claim(self, site: str, gateway: str, device_id: str) -> None:
        """``site``/``gateway`` wrote about ``device_id``, which another gateway owns (the ingest admission's
        ``foreign_device`` refusal): a conflict until a birth of that gateway comes without such a claim. Cheap when
        the claim is known already (a repeat is one set lookup)."""
        device = self.devices.get(device_id)
        key = (site, gateway)
        if device is None or device.gateway is None or not self.owned_elsewhere(site, gateway, device_id):
            return
        self._noted.setdefault(key, set()).add(device_id)
        if key in device.claims:
            return
        device.claims.add(key)
        self._claims.setdefault(key, set()).add(device_id)
        device.merge()
        self._changed([], [device])

    def _take(self, device: Device, site: str, gateway: str) -> bool:
        """Whether a birth of ``site``/``gateway`` may describe ``device``: its owner's, or the first one to
        announce a device of no owning gateway yet (which becomes its owner)."""
        if device.gateway is None:
            device.site, device.gateway = site, gateway
            return True
        if device.gateway != gateway:
            return False
        if device.site is None:  # the inventory named the gateway, not its site
            device.site = site
        return device.site == site

    def move(self, device_id: str, site: str, gateway: str, *, by: str, reason: str = "") -> Move | None:
        """Give a device to ``site``/``gateway`` (a technician's act); the move, or None if it is there already.
        Raises :class:`KeyError` for an unknown device and :class:`UnknownPlace` for a site or gateway the registry
        does not know (:meth:`check_place`), changing nothing."""
        device = self.devices[device_id]
        self.check_place(site, gateway)
        move = self._set_owner(device, site, gateway, MOVED_BY_API, by=by, reason=reason)
        if move is None:
            return None
        device.merge()
        self._changed([], [device], [move])
        return move

    def _set_owner(
        self, device: Device, site: str | None, gateway: str, source: str, *, by: str, reason: str
    ) -> Move | None:
        """Make ``site``/``gateway`` the owner; a :class:`Move` when it had another one, or when a technician
        (``source`` api) gives a device of no gateway its first (logged), else None."""
        if (device.site, device.gateway) == (site, gateway):
            return None
        before_site, before_gateway = device.site, device.gateway
        device.site, device.gateway = site, gateway
        if site is not None:
            device.claims.discard((site, gateway))
            self._claims.get((site, gateway), set()).discard(device.id)
        if before_gateway is None:
            if source != MOVED_BY_API:
                # An import naming a new device's gateway says where it is, as it does for its site: no move.
                return None
        elif device.announced is not None and before_site is not None:
            # The former owner's current birth lists it: a claim now, until that gateway's next birth drops it.
            device.claims.add((before_site, before_gateway))
            self._claims.setdefault((before_site, before_gateway), set()).add(device.id)
        # What the former owner announced no longer describes it; the new owner's next birth does.
        device.announced = None
        move = Move(device.id, before_site, before_gateway, site, gateway, source, by[:100], reason[:300], utcnow())
        log.warning("registry: %s", move.describe())
        return move

    def apply_inventory(self, inventory: Inventory, *, by: str = "inventory") -> ImportResult:
        """Merge an inventory: sites are replaced by the inventory's, devices' inventory sides too.

        A device whose inventory entry states another (site, gateway) than the last import did (or that has no
        owning gateway yet) belongs to that gateway from now on: a move recorded with ``by``. An entry that
        states the same place as before leaves a device a technician moved through the API where it is."""
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
        moves: list[Move] = []
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
            before = device.inventory or {}
            device.inventory = asserted
            stated = asserted.get("gateway")
            if stated is not None and (
                device.gateway is None or (before.get("site"), before.get("gateway")) != (dev.site, stated)
            ):
                place = dev.site if dev.site is not None else (device.site if device.gateway == stated else None)
                move = self._set_owner(device, place, stated, MOVED_BY_INVENTORY, by=by, reason="")
                if move is not None:
                    moves.append(move)
            device.merge()
            changed.append(device)
        self._changed(changed_sites, changed, moves)
        conflicts = [c for d in self.devices.values() for c in d.conflicts]
        return ImportResult(sites_added, sites_updated, devices_added, devices_updated, conflicts)

    def _changed(
        self, sites: list[Site], devices: list[Device], moves: Sequence[Move] = (), *, others_of_sites: bool = True
    ) -> None:
        """Log new conflicts, tell the listeners (the changed devices, and with ``others_of_sites`` every other
        device of a changed site), write behind."""
        for device in devices:
            for conflict in device.conflicts:
                if conflict not in self._logged_conflicts:
                    self._logged_conflicts.add(conflict)
                    log.warning("registry conflict: %s", conflict.describe())
        if not sites and not devices:
            return
        self.version += 1
        self.changed_sites.update(s.id for s in sites)
        self.changed_devices.update(d.id for d in devices)
        affected = devices
        if others_of_sites and sites:
            site_ids = {s.id for s in sites}
            changed_ids = {d.id for d in devices}
            affected = devices + [d for d in self.devices.values() if d.site in site_ids and d.id not in changed_ids]
        if affected:
            for listener in self._listeners:
                listener(affected)
        if self._db is not None:
            self._submit(sites, devices, moves)

    def _submit(self, sites: list[Site], devices: list[Device], moves: Sequence[Move]) -> None:
        """Mark for the next write; schedule it unless one is scheduled or running (its end schedules the next)."""
        for site in sites:
            self._dirty_sites[site.id] = site
        for device in devices:
            self._dirty_devices[device.id] = device
        self._dirty_moves.extend(moves)
        if self._write_timer is None and not self._writes:
            self._write_timer = asyncio.get_running_loop().call_later(WRITE_COALESCE_S, self._write_marked)

    def _dirty(self) -> bool:
        return bool(self._dirty_sites or self._dirty_devices or self._dirty_moves)

    def _write_marked(self) -> None:
        """One write of everything marked, with the values the sites and devices have now."""
        assert self._db is not None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if not self._dirty():
            return
        sites = [asdict(s) for s in self._dirty_sites.values()]
        devices = [_row_values(d) for d in self._dirty_devices.values()]
        moves = [_move_values(m) for m in self._dirty_moves]
        self._dirty_sites, self._dirty_devices, self._dirty_moves = {}, {}, []
        future = asyncio.ensure_future(self._db.write(lambda session: _persist(session, sites, devices, moves)))
        self._writes.add(future)
        future.add_done_callback(self._write_done)

    def _write_done(self, future: asyncio.Future[None]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("registry: could not save to the database: %s", future.exception())
        if self._dirty() and self._write_timer is None and not self._writes:
            # Changes made while it ran: the next write, after as long again for more to join it.
            self._write_timer = asyncio.get_running_loop().call_later(WRITE_COALESCE_S, self._write_marked)

    def persist_now(self) -> None:
        """Write every site and device synchronously (the CLI, tests)."""
        assert self._db is not None
        sites = [asdict(s) for s in self.sites.values()]
        devices = [_row_values(d) for d in self.devices.values()]
        self._db.run_sync(lambda session: _persist(session, sites, devices, []))


def _device_id(device: Device) -> str:
    return device.id


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


def _move_values(move: Move) -> dict[str, Any]:
    return asdict(move)


def _move_of(row: DeviceMoveRow) -> Move:
    return Move(
        row.device,
        row.from_site,
        row.from_gateway,
        row.to_site,
        row.to_gateway,
        row.source,
        row.by,
        row.reason,
        row.at,
    )


def _persist(
    session: Session, sites: list[dict[str, Any]], devices: list[dict[str, Any]], moves: list[dict[str, Any]]
) -> None:
    """Upsert sites, then devices (they refer to sites), then add the moves: one transaction."""
    _upsert(session, SiteRow, sites)
    _upsert(session, DeviceRow, devices)
    session.add_all(DeviceMoveRow(**values) for values in moves)


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
