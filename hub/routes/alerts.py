"""``GET /api/v1/alerts`` (history, filters), ``GET /api/v1/alerts/{id}``, ``.../deliveries``, and
``POST /api/v1/alerts/{id}/ack`` / ``/resolve`` (role operator)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from hub.alerts.store import AlertConflict
from hub.auth import Principal
from hub.routes.deps import Operator, Ops, Viewer, not_found
from hub.routes.models import Alert, AlertsPage, DeliveriesPage, Delivery
from wire.v1 import ID_PATTERN

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**62)]
AlertState = Literal["firing", "acknowledged", "resolved", "open"]


@router.get("", response_model=AlertsPage)
async def list_alerts(  # noqa: PLR0917 - FastAPI query parameters
    principal: Viewer,
    ops: Ops,
    state: Annotated[list[AlertState] | None, Query(description="repeatable; 'open' = firing + acknowledged")] = None,
    device: Annotated[str | None, Query(pattern=ID_PATTERN, description="the alert's subject")] = None,
    rule: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AlertsPage:
    """Alerts, newest first: the open ones and the history."""
    states: list[str] | None = None
    if state:
        states = sorted({s for st in state for s in (("firing", "acknowledged") if st == "open" else (st,))})
    wards = sorted(principal.wards) if principal.wards is not None else None
    total, items = await ops.alert_store.query(
        states=states, subject=device, rule=rule, wards=wards, since=since, limit=limit, offset=offset
    )
    return AlertsPage(total=total, limit=limit, offset=offset, items=[Alert.model_validate(a) for a in items])


async def _visible(ops: Ops, principal: Principal, alert_id: int) -> dict[str, Any]:
    alert = await ops.alert_store.get(alert_id)
    if alert is None or not principal.sees(alert["ward"]):
        raise not_found("alert", alert_id)
    return alert


@router.get("/{alert_id}", response_model=Alert)
async def get_alert(principal: Viewer, ops: Ops, alert_id: AlertId) -> Alert:
    return Alert.model_validate(await _visible(ops, principal, alert_id))


@router.get("/{alert_id}/deliveries", response_model=DeliveriesPage)
async def alert_deliveries(principal: Viewer, ops: Ops, alert_id: AlertId) -> DeliveriesPage:
    """The webhook delivery log of the alert: one row per attempt."""
    await _visible(ops, principal, alert_id)
    items = [Delivery.model_validate(d) for d in await ops.alert_store.deliveries(alert_id)]
    return DeliveriesPage(total=len(items), items=items)


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=300)] = ""


@router.post(
    "/{alert_id}/ack",
    response_model=Alert,
    responses={404: {"description": "no such alert"}, 409: {"description": "resolved"}},
)
async def acknowledge(principal: Operator, ops: Ops, alert_id: AlertId) -> Alert:
    """firing -> acknowledged (who, when). Acknowledging an acknowledged alert changes nothing."""
    await _visible(ops, principal, alert_id)
    try:
        alert = await ops.alert_store.acknowledge(alert_id, principal.label)
    except AlertConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    if alert is None:
        raise not_found("alert", alert_id)
    ops.alerts.notify("acknowledged", alert)
    return Alert.model_validate(alert)


@router.post(
    "/{alert_id}/resolve",
    response_model=Alert,
    responses={404: {"description": "no such alert"}, 409: {"description": "resolved"}},
)
async def resolve(
    principal: Operator, ops: Ops, alert_id: AlertId, body: Annotated[ResolveRequest | None, Body()] = None
) -> Alert:
    """-> resolved (who, when, note). If the condition still holds or comes back, the rule fires a new alert."""
    await _visible(ops, principal, alert_id)
    note = body.note if body is not None else ""
    try:
        alert = await ops.alert_store.resolve(
            alert_id, principal.label, f"resolved by hand{': ' + note if note else ''}"
        )
    except AlertConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    if alert is None:
        raise not_found("alert", alert_id)
    ops.alerts.manual_resolved(alert["subject"], alert["rule"])
    ops.alerts.notify("resolved", alert)
    return Alert.model_validate(alert)
