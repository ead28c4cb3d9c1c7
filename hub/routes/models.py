"""The hub API's answers as public pydantic models: each route declares one as its ``response_model``, so the
OpenAPI document (``/api/v1/openapi.json``) describes every answer, and clients of this repository
(``dashboards/registry.py``) read the answers with the same models instead of guessing their shape.

Every model refuses a field it does not declare: an answer that drifts from its model fails the route's response
validation, in the tests, rather than changing the API unnoticed. Times are ISO 8601 strings (``null`` when not
set), as the stores write them. The ingest counters are :mod:`hub.stats`'s snapshots, served as they are.

This module imports pydantic and the hub's plain data modules only (no FastAPI, no database), so a client such as
``ioc dashboards`` can import it cheaply.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from hub.stats import HubStats
from hub.storage.deadletter import DeadLetter

__all__ = [
    "Alert",
    "AlertsPage",
    "ApiModel",
    "CommandRecord",
    "CommandsPage",
    "Conflict",
    "ConflictDetail",
    "ConflictsPage",
    "CreatedToken",
    "DeadLetter",
    "DeadLettersPage",
    "DeliveriesPage",
    "Delivery",
    "DeviceDetail",
    "DeviceItem",
    "DevicesPage",
    "Gateway",
    "GatewayProblem",
    "GatewaysPage",
    "Health",
    "HealthCounters",
    "HubStats",
    "InfluxLink",
    "InventoryResult",
    "KpiProblem",
    "KpiRowProblem",
    "KpisStored",
    "Liveness",
    "MqttLink",
    "Site",
    "SitesPage",
    "Token",
    "TokensPage",
    "Transition",
]


class ApiModel(BaseModel):
    """An answer of the API: every field declared, field docstrings as the schema's descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ---------------------------------------------------------------------------------------------- the hub itself


class MqttLink(ApiModel):
    connected: bool


class InfluxLink(ApiModel):
    reachable: bool


class HealthCounters(ApiModel):
    """A few of the ingest counters (all of them: ``GET /api/v1/ingest/stats``)."""

    messages_received: int
    lines_written: int
    dead_letters: int
    """Dead letters since the hub started, of every kind."""
    pending_messages: int
    write_retries: int


class Health(ApiModel):
    """``ok`` while connected to the broker and InfluxDB answers its ping, else ``degraded``."""

    status: Literal["ok", "degraded"]
    mqtt: MqttLink
    influx: InfluxLink
    counters: HealthCounters


class Liveness(ApiModel):
    status: Literal["ok"]


class DeadLettersPage(ApiModel):
    total: int
    """Dead letters since the hub started (the ring keeps only the newest)."""
    items: list[DeadLetter]
    """The newest first."""


# ---------------------------------------------------------------------------------------------- registry


class Site(ApiModel):
    id: str
    name: str
    ward: str | None
    lat: float | None
    lon: float | None
    devices: int
    """Devices registered at the site."""
    states: dict[str, int]
    """Health state -> how many of its devices are in it."""


class SitesPage(ApiModel):
    total: int
    items: list[Site]


class GatewayProblem(ApiModel):
    """Something a gateway does wrong while up (``clock_skew``), shown until it stops being reported."""

    problem: str
    detail: str
    since_ms: int
    count: int


class DeviceItem(ApiModel):
    """One device of ``GET /api/v1/devices``: registry data and its current health."""

    id: str
    kind: str
    profile: str
    driver: str
    site: str | None
    gateway: str | None
    ward: str | None
    lat: float | None
    lon: float | None
    installed: str | None
    interval_s: float | None
    tags: dict[str, str]
    state: str
    reason: str
    last_seen_ms: int | None
    problems: list[GatewayProblem]
    """Its gateway's problems (``clock_skew``...): what the device's readings suffer from."""
    conflicts: int


class DevicesPage(ApiModel):
    total: int
    """Every device that matches the filters."""
    limit: int
    offset: int
    items: list[DeviceItem]


class Transition(ApiModel):
    """A health state change of a device or gateway."""

    old: str
    new: str
    reason: str
    ts_ms: int
    entity: str


class ConflictDetail(ApiModel):
    field: str
    announced: Any
    inventory: Any
    message: str


class DeviceDetail(DeviceItem):
    """One device of ``GET /api/v1/devices/{id}``: both sources, their conflicts, recent transitions and the open
    alerts as well."""

    inactivity_s: float | None
    announced: dict[str, Any] | None
    """What its gateway's birth says of it."""
    inventory: dict[str, Any] | None
    """What the technicians' inventory says of it."""
    conflict_details: list[ConflictDetail]
    transitions: list[Transition]
    """The newest first."""
    open_alerts: list[Alert]


class Gateway(ApiModel):
    key: str
    """``site/gateway``."""
    site: str
    gateway: str
    state: str
    reason: str
    flapping: bool
    devices: int
    problems: list[GatewayProblem]
    refusals: dict[str, int]
    """What the hub refused of it since it started, by reason."""
    refused_acks: int


class GatewaysPage(ApiModel):
    total: int
    items: list[Gateway]


class Conflict(ApiModel):
    """Birth and inventory disagree about a field of a device, or a gateway announced another's device."""

    device: str
    field: str
    announced: Any
    inventory: Any
    source: str
    message: str


class ConflictsPage(ApiModel):
    total: int
    items: list[Conflict]


class InventoryResult(ApiModel):
    """What an inventory import changed, and the conflicts it leaves."""

    sites_added: int
    sites_updated: int
    devices_added: int
    devices_updated: int
    conflicts: list[Conflict]


# ---------------------------------------------------------------------------------------------- commands


class CommandRecord(ApiModel):
    """A command and its outcome: ``status`` ``pending``, ``ok``, ``error``, ``timeout`` or ``unsupported``."""

    id: str
    device: str
    site: str
    gateway: str
    action: str
    params: dict[str, Any]
    timeout_s: float
    requested_by: str
    status: str
    detail: str
    result: dict[str, Any]
    created: str | None
    finished: str | None
    duration_ms: float | None


class CommandsPage(ApiModel):
    total: int
    items: list[CommandRecord]
    """The newest first."""


# ---------------------------------------------------------------------------------------------- alerts


class Alert(ApiModel):
    id: int
    rule: str
    subject: str
    subject_type: str
    site: str
    gateway: str
    ward: str | None
    kind: str
    severity: str
    state: str
    message: str
    value: float | None
    opened_at: str | None
    acked_at: str | None
    acked_by: str | None
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None


class AlertsPage(ApiModel):
    total: int
    limit: int
    offset: int
    items: list[Alert]


class Delivery(ApiModel):
    """One webhook delivery attempt."""

    id: int
    alert_id: int
    event: str
    webhook: str
    """The webhook's name (never its URL, which holds secrets)."""
    attempt: int
    ok: bool
    status_code: int | None
    error: str
    duration_ms: int
    at: str | None


class DeliveriesPage(ApiModel):
    total: int
    items: list[Delivery]


# ---------------------------------------------------------------------------------------------- tokens


class Token(ApiModel):
    """An API token, without its secret."""

    id: str
    name: str
    role: str
    wards: list[str] | None
    """The wards it is limited to; ``null``: every ward."""
    created: str | None
    created_by: str
    revoked: str | None
    expires: str | None
    """When it stops working; ``null``: it does not expire."""


class CreatedToken(Token):
    token: str
    """The bearer token: shown in this answer only."""


class TokensPage(ApiModel):
    total: int
    items: list[Token]


# ---------------------------------------------------------------------------------------------- KPIs


class KpisStored(ApiModel):
    stored: int
    """Rows stored (all the body's)."""


class KpiRowProblem(ApiModel):
    row: int | None
    """The row, 1-based in body order; ``null``: the body as a whole."""
    field: str
    message: str


class KpiProblem(ApiModel):
    """Why nothing was stored: each bad row and field, or one sentence."""

    detail: list[KpiRowProblem] | str
