"""``GET /api/v1/sites``, ``GET /api/v1/gateways``, ``POST /api/v1/gateways/{site}/{gateway}/commands``,
``GET /api/v1/registry/conflicts``.

The two lists answer every site and every gateway a token may see, whole: 5,000 of each in a city, while thousands
of births may arrive within seconds (a broker restart). An answer's cost follows what changed, not the city's size
(:class:`KeptAnswers`, one per hub):

- **rows**: each site's and each gateway's item is kept as its JSON (validated by its model, ``Site``, ``Gateway``,
  once when built), and built again only when its inputs changed. The sources mark what changed, wherever their
  ``version`` changes, and the answers take the marks at every call (``take_changes``, ``take_changed``,
  ``take_refused``, one reader each): the registry its sites (name, ward, place) and devices (their site), the
  health monitor its gateways (state, reason, flapping, devices, problems) and devices (their state: their site's
  counts), the security alerts the gateways whose refusal counts changed, the command service those with a
  refused ack. A device's site is followed here (the devices of each site), so a move re-counts both sites; a
  site's change (its ward) re-encodes its gateways too.
- **views**: per set of wards a token may have (None: every ward), the keys it shows, sorted, and their rows in that
  order, updated in place when a row changes, comes or goes (bisect), or shows for other wards; the answer is
  ``{"total":N,"items":[`` + the rows joined by ``,`` + ``]}``, the JSON the page's model gives (no spaces), and
  kept until one of its rows changes.

So every answer shows every change made before it (no time-based staleness), a call after none builds nothing, and
one after a birth re-encodes that gateway's row and its site's and joins the rows again (a copy of bytes).
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Response

from hub.operations.operations import Operations
from hub.routes.deps import Ops, Technician, Viewer, not_found
from hub.routes.devices import CommandRequest
from hub.routes.models import CommandRecord, Conflict, ConflictsPage, Gateway, GatewaysPage, Site, SitesPage
from wire.v1 import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["sites"])


#: Views kept per list: more ward sets than this (tokens of many ward sets) start afresh.
KEPT_WARD_SETS: Final = 64

Wards = frozenset[str] | None


#: A row's JSON, as the page's model gives it (``model_dump_json``, as bytes).
_SITE_JSON: Final = Site.__pydantic_serializer__.to_json
_GATEWAY_JSON: Final = Gateway.__pydantic_serializer__.to_json


def _visible(ward: str | None, wards: Wards) -> bool:
    return wards is None or (ward is not None and ward in wards)


@dataclass(slots=True)
class _View:
    """One ward set's answer: the keys it shows, sorted, their rows in that order, and the answer joined (None: to
    be joined again)."""

    wards: Wards
    keys: list[str]
    rows: list[bytes]
    body: bytes | None = None


@dataclass(slots=True)
class RowList:
    """One list's items by key, each kept as its JSON with the ward it shows for, and the views of the ward sets
    asked for, kept sorted by key."""

    rows: dict[str, bytes] = field(default_factory=dict)
    wards: dict[str, str | None] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    """Every key, sorted."""
    views: dict[Wards, _View] = field(default_factory=dict)
    joins: int = 0
    """How many answers were joined (the others were kept ones)."""

    def put(self, key: str, row: bytes, ward: str | None) -> None:
        """The row of ``key`` (new or changed), shown for ``ward``; the views showing it are updated in place."""
        old = self.rows.get(key)
        old_ward = self.wards.get(key)
        if old is None:
            bisect.insort(self.keys, key)
        elif old == row and old_ward == ward:
            return
        self.rows[key], self.wards[key] = row, ward
        for view in self.views.values():
            was = old is not None and _visible(old_ward, view.wards)
            shown = _visible(ward, view.wards)
            if not was and not shown:
                continue
            i = bisect.bisect_left(view.keys, key)
            if was and shown:
                view.rows[i] = row
            elif was:
                del view.keys[i], view.rows[i]
            else:
                view.keys.insert(i, key)
                view.rows.insert(i, row)
            view.body = None

    def remove(self, key: str) -> None:
        """``key`` is no more (none of the lists loses items today: for completeness)."""
        if key not in self.rows:
            return
        del self.rows[key]
        ward = self.wards.pop(key)
        del self.keys[bisect.bisect_left(self.keys, key)]
        for view in self.views.values():
            if _visible(ward, view.wards):
                i = bisect.bisect_left(view.keys, key)
                del view.keys[i], view.rows[i]
                view.body = None

    def answer(self, wards: Wards) -> bytes:
        """The page of the rows ``wards`` sees, as its model's JSON."""
        view = self.views.get(wards)
        if view is None:
            if len(self.views) >= KEPT_WARD_SETS:
                self.views.clear()
            keys = [key for key in self.keys if _visible(self.wards[key], wards)]
            view = self.views[wards] = _View(wards, keys, [self.rows[key] for key in keys])
        if view.body is None:
            view.body = b'{"total":%d,"items":[%b]}' % (len(view.keys), b",".join(view.rows))
            self.joins += 1
        return view.body


class KeptAnswers:
    """One hub's site and gateway lists, kept row by row (see the module's docstring)."""

    def __init__(self) -> None:
        self.sites = RowList()
        self.gateways = RowList()
        self.rows_built = 0
        """How many rows were encoded."""
        self._started = False
        self._site_of: dict[str, str] = {}
        """Registry device id -> its site (those with one)."""
        # Dictionaries of strings to None, not sets: the garbage collector leaves them alone (10,000 fewer objects
        # for its full collections to visit in a city of 5,000 sites).
        self._devices_at: dict[str, dict[str, None]] = {}
        """Site -> the ids of the registry's devices at it."""
        self._gateways_at: dict[str, dict[str, None]] = {}
        """Site -> the keys of the health monitor's gateways at it."""

    @property
    def builds(self) -> int:
        """How many answers were joined (the others were kept ones)."""
        return self.sites.joins + self.gateways.joins

    def sync(self, ops: Operations) -> None:
        """Take every source's marks and encode the rows they concern again (every row the first time)."""
        registry, health = ops.registry, ops.health
        sites, devices = registry.take_changes()
        gateways, restated = health.take_changes()
        gateways |= ops.security.take_changed()
        gateways |= ops.commands.take_refused()
        if not self._started:
            self._started = True
            sites, devices, gateways = set(registry.sites), set(registry.devices), set(health.gateways)
        if not (sites or devices or gateways or restated):
            return
        for site in sites:  # a site's ward shows its gateways to other tokens
            gateways.update(self._gateways_at.get(site, ()))
        sites = set(sites)
        for device_id in devices:  # their site may have changed: both sites' counts
            device = registry.devices.get(device_id)
            new = device.site if device is not None else None
            old = self._site_of.get(device_id)
            if new == old:
                continue
            if old is not None:
                del self._devices_at[old][device_id]
                sites.add(old)
            if new is None:
                del self._site_of[device_id]
            else:
                self._site_of[device_id] = new
                self._devices_at.setdefault(new, {})[device_id] = None
                sites.add(new)
        for device_id in restated:  # a device whose state changed: its site's counts
            at = self._site_of.get(device_id)
            if at is not None:
                sites.add(at)
        for site in sites:
            self._put_site(ops, site)
        for key in gateways:
            self._put_gateway(ops, key)

    def _put_site(self, ops: Operations, site_id: str) -> None:
        site = ops.registry.sites.get(site_id)
        if site is None:
            self.sites.remove(site_id)
            return
        device_state = ops.health.device_state
        states: dict[str, int] = {}
        devices = self._devices_at.get(site_id, ())
        for device_id in devices:
            state = device_state(device_id).value
            states[state] = states.get(state, 0) + 1
        item: dict[str, Any] = {"id": site.id, "name": site.name, "ward": site.ward, "lat": site.lat, "lon": site.lon}
        item |= {"devices": len(devices), "states": dict(sorted(states.items()))}
        self.sites.put(site_id, _SITE_JSON(Site.model_validate(item)), site.ward)
        self.rows_built += 1

    def _put_gateway(self, ops: Operations, key: str) -> None:
        gw = ops.health.gateways.get(key)
        if gw is None:  # refusals or acks of a gateway the monitor does not know: not listed
            self.gateways.remove(key)
            return
        site = gw.site
        self._gateways_at.setdefault(site, {})[key] = None
        machine = gw.machine
        item = {
            "key": key,
            "site": site,
            "gateway": gw.gateway,
            "state": machine.state.value,
            "reason": machine.reason,
            "flapping": machine.flapping,
            "devices": len(gw.devices),
            # What it does wrong while up (clock_skew...), and what the hub refused of it since it started.
            "problems": ops.health.problems(site, gw.gateway),
            "refusals": ops.security.counts(site, gw.gateway),
            "refused_acks": ops.commands.refused_acks.get(key, 0),
        }
        ward = ops.registry.ward_of_site(site)
        self.gateways.put(key, _GATEWAY_JSON(Gateway.model_validate(item)), ward)
        self.rows_built += 1


_answers: weakref.WeakKeyDictionary[Operations, KeptAnswers] = weakref.WeakKeyDictionary()


def kept_answers(ops: Operations) -> KeptAnswers:
    """The answers kept for ``ops`` (one per hub: tests start several in one process)."""
    found = _answers.get(ops)
    if found is None:
        found = _answers[ops] = KeptAnswers()
    return found


@router.get("/sites", response_model=SitesPage)
async def list_sites(principal: Viewer, ops: Ops) -> Response:
    """Sites the token may see, each with its device count per health state."""
    kept = kept_answers(ops)
    kept.sync(ops)
    return Response(kept.sites.answer(principal.wards), media_type="application/json")


@router.get("/gateways", response_model=GatewaysPage)
async def list_gateways(principal: Viewer, ops: Ops) -> Response:
    """Gateways seen since the hub started, with their health."""
    kept = kept_answers(ops)
    kept.sync(ops)
    return Response(kept.gateways.answer(principal.wards), media_type="application/json")


@router.get("/registry/conflicts", response_model=ConflictsPage)
async def list_conflicts(principal: Viewer, ops: Ops) -> ConflictsPage:
    """Where a gateway's birth and the inventory disagree about a device."""
    items = [
        Conflict(**asdict(c), message=c.describe())
        for d in ops.registry.devices.values()
        if principal.sees(ops.registry.ward_of(d))
        for c in d.conflicts
    ]
    return ConflictsPage(total=len(items), items=items)


@router.post(
    "/gateways/{site}/{gateway}/commands",
    response_model=CommandRecord,
    responses={404: {"description": "unknown gateway"}},
)
async def send_gateway_command(
    principal: Technician,
    ops: Ops,
    site: Annotated[str, Path(pattern=ID_PATTERN)],
    gateway: Annotated[str, Path(pattern=ID_PATTERN)],
    body: CommandRequest,
) -> CommandRecord:
    """A command for the edge agent itself (``reload_config``), answered like a device's command."""
    if ops.health.gateway(site, gateway) is None or not principal.sees(ops.registry.ward_of_site(site)):
        raise not_found("gateway", f"{site}/{gateway}")
    timeout_s = body.timeout_s if body.timeout_s is not None else ops.settings.commands.timeout_s
    outcome = await ops.commands.send_to_gateway(
        site, gateway, body.action, dict(body.params), timeout_s=timeout_s, requested_by=principal.label
    )
    return CommandRecord.model_validate(outcome)
