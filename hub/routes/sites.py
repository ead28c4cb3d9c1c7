"""``GET /api/v1/sites``, ``GET /api/v1/gateways``, ``POST /api/v1/gateways/{site}/{gateway}/commands``,
``GET /api/v1/registry/conflicts``.

The two lists answer every site and every gateway a token may see, whole: 5,000 of each in a city. Their answers
are kept, serialized, per set of wards (:class:`KeptAnswers`) and built again only when something in them may have
changed: the registry's :attr:`~hub.registry.registry.Registry.version` (sites, wards, devices' places), the health
monitor's :attr:`~hub.health.monitor.HealthMonitor.version` (states, reasons, gateways' devices and problems), and
for the gateways what the hub refused of each (the refusal counts and refused acks, compared as they are). An
answer built is validated by its model (``SitesPage``, ``GatewaysPage``) as FastAPI would and returned as JSON.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel

from hub.operations.operations import Operations
from hub.routes.deps import Ops, Technician, Viewer, not_found
from hub.routes.devices import CommandRequest
from hub.routes.models import CommandRecord, Conflict, ConflictsPage, GatewaysPage, SitesPage
from wire.v1 import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["sites"])


#: Answers kept per kind of list and set of wards: more sets than this (tokens of many ward sets) start afresh.
KEPT_WARD_SETS: Final = 64

Wards = frozenset[str] | None


@dataclass(slots=True)
class _Kept:
    stamp: tuple[Any, ...]
    body: bytes


@dataclass(slots=True)
class KeptAnswers:
    """One hub's list answers, serialized, by list and the token's wards (None: every ward), with the stamp of
    what they were built from; an answer whose stamp differs from the current one is built again."""

    kept: dict[tuple[str, Wards], _Kept] = field(default_factory=dict)
    builds: int = 0
    """How many answers were built (the others were kept ones)."""

    def answer(self, kind: str, wards: Wards, stamp: tuple[Any, ...], build: Callable[[], BaseModel]) -> Response:
        found = self.kept.get((kind, wards))
        if found is None or found.stamp != stamp:
            if found is None and len(self.kept) >= KEPT_WARD_SETS:
                self.kept.clear()
            found = self.kept[(kind, wards)] = _Kept(stamp, build().model_dump_json().encode())
            self.builds += 1
        return Response(found.body, media_type="application/json")


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
    stamp = (ops.registry.version, ops.health.version)
    return kept_answers(ops).answer("sites", principal.wards, stamp, lambda: sites_page(ops, principal.wards))


def sites_page(ops: Operations, wards: Wards) -> SitesPage:
    """The sites of ``wards`` (None: all), built from the registry and the health monitor."""
    registry, device_state = ops.registry, ops.health.device_state
    counts: dict[str, Counter[str]] = {}
    for device in registry.devices.values():
        if device.site is not None:
            found = counts.get(device.site)
            if found is None:
                found = counts[device.site] = Counter()
            found[device_state(device.id).value] += 1
    none: Counter[str] = Counter()
    items = []
    for site in sorted(registry.sites.values(), key=lambda s: s.id):
        if wards is None or (site.ward is not None and site.ward in wards):
            states = counts.get(site.id, none)
            item = {"id": site.id, "name": site.name, "ward": site.ward, "lat": site.lat, "lon": site.lon}
            items.append({**item, "devices": sum(states.values()), "states": dict(states)})
    return SitesPage.model_validate({"total": len(items), "items": items})


@router.get("/gateways", response_model=GatewaysPage)
async def list_gateways(principal: Viewer, ops: Ops) -> Response:
    """Gateways seen since the hub started, with their health."""
    # The refusal counts live outside the registry and the monitor: compared as they are (a dictionary lookup
    # per gateway, most of them empty), so a refusal shows in the next answer.
    counts = ops.security.counts
    refusals = [(key, found) for key, gw in ops.health.gateways.items() if (found := counts(gw.site, gw.gateway))]
    stamp = (ops.registry.version, ops.health.version, refusals, dict(ops.commands.refused_acks))
    refused = dict(refusals)
    return kept_answers(ops).answer(
        "gateways", principal.wards, stamp, lambda: gateways_page(ops, principal.wards, refused)
    )


def gateways_page(ops: Operations, wards: Wards, refused: dict[str, dict[str, int]]) -> GatewaysPage:
    """The gateways of ``wards`` (None: all) seen since the hub started, with their health; ``refused`` the refusal
    counts of the gateways that have any, by key (those the answer's stamp holds: looked up once per call)."""
    health, ward_of_site, acks = ops.health, ops.registry.ward_of_site, ops.commands.refused_acks
    items = []
    for key, gw in sorted(health.gateways.items()):
        if wards is not None:
            ward = ward_of_site(gw.site)
            if ward is None or ward not in wards:
                continue
        items.append(
            {
                "key": key,
                "site": gw.site,
                "gateway": gw.gateway,
                "state": gw.machine.state.value,
                "reason": gw.machine.reason,
                "flapping": gw.machine.flapping,
                "devices": len(gw.devices),
                # What it does wrong while up (clock_skew...), and what the hub refused of it since it started.
                "problems": health.problems(gw.site, gw.gateway),
                "refusals": refused.get(key, {}),
                "refused_acks": acks.get(key, 0),
            }
        )
    return GatewaysPage.model_validate({"total": len(items), "items": items})


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
