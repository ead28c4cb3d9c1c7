"""``GET /api/v1/sites``, ``GET /api/v1/gateways``, ``POST /api/v1/gateways/{site}/{gateway}/commands``,
``GET /api/v1/registry/conflicts``."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path

from hub.routes.deps import Ops, Technician, Viewer, not_found
from hub.routes.devices import CommandRequest
from hub.routes.models import CommandRecord, Conflict, ConflictsPage, Gateway, GatewaysPage, Site, SitesPage
from wire.v1 import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["sites"])


@router.get("/sites", response_model=SitesPage)
async def list_sites(principal: Viewer, ops: Ops) -> SitesPage:
    """Sites the token may see, each with its device count per health state."""
    registry, health = ops.registry, ops.health
    counts: dict[str, Counter[str]] = {}
    for device in registry.devices.values():
        if device.site is not None:
            counts.setdefault(device.site, Counter())[health.device_state(device.id).value] += 1
    items = [
        Site(
            **asdict(site),
            devices=sum(counts.get(site.id, Counter()).values()),
            states=dict(counts.get(site.id, {})),
        )
        for site in sorted(registry.sites.values(), key=lambda s: s.id)
        if principal.sees(site.ward)
    ]
    return SitesPage(total=len(items), items=items)


@router.get("/gateways", response_model=GatewaysPage)
async def list_gateways(principal: Viewer, ops: Ops) -> GatewaysPage:
    """Gateways seen since the hub started, with their health."""
    items = []
    for key, gw in sorted(ops.health.gateways.items()):
        if not principal.sees(ops.registry.ward_of_site(gw.site)):
            continue
        items.append(
            Gateway.model_validate(
                {
                    "key": key,
                    "site": gw.site,
                    "gateway": gw.gateway,
                    "state": gw.machine.state.value,
                    "reason": gw.machine.reason,
                    "flapping": gw.machine.flapping,
                    "devices": len(gw.devices),
                    # What it does wrong while up (clock_skew...), and what the hub refused of it since it started.
                    "problems": ops.health.problems(gw.site, gw.gateway),
                    "refusals": ops.security.counts(gw.site, gw.gateway),
                    "refused_acks": ops.commands.refused_acks.get(key, 0),
                }
            )
        )
    return GatewaysPage(total=len(items), items=items)


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
