"""Hub settings, checked once at start.

Sources, lowest to highest priority: defaults, the YAML file given with ``ioc hub --config FILE``, environment
variables ``IOC_HUB_<SECTION>__<KEY>`` (for example ``IOC_HUB_MQTT__HOST``). Unknown keys are refused in both,
and every error names where the bad value came from (the file or the variable) and the field.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.config import is_loopback, read_yaml_mapping, refuse_unknown_env
from hub.alerts.rules import Severity
from hub.errors import ConfigError
from hub.ingest.admission import DEFAULT_KINDS, AdmissionRules
from hub.ingest.points import HUB_MEASUREMENTS
from hub.ingest.profile_fields import PROFILE_FIELD_TYPES
from wire.v1 import ID_PATTERN, KIND_PATTERN, MAX_DEVICES_PER_GATEWAY, MAX_MESSAGE_BYTES, METRIC_PATTERN

ENV_PREFIX: Final = "IOC_HUB_"
#: What the file's top level holds, for the error of a file that is not a mapping.
_TOP_LEVEL: Final = "of sections (mqtt, influx, ...)"
#: Secrets that ship in examples. Refused unless the broker is on loopback (a developer's machine).
PLACEHOLDER_SECRETS: Final = frozenset({"changeme", "changethis", "change-me"})


def _default_client_id() -> str:
    return f"ioc-hub-{socket.gethostname()}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """The hub's broker connections: the intake, the observer (``observe: all``) and the commands."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    #: The intake's account: reads ``data``, ``state``, ``event`` and ``cmd/ack`` of every gateway, writes nothing.
    username: str | None = None
    password: SecretStr | None = None
    #: The observer connection's account (``observe: all``), with the intake's ACL; unset: the intake's account.
    observer_username: str | None = None
    observer_password: SecretStr | None = None
    #: The command connection's account: writes ``cmd``, reads ``cmd/ack``; unset: the intake's account (which a
    #: broker with the narrow ACLs of ioc/stack and the ansible role does not let write ``cmd``).
    command_username: str | None = None
    command_password: SecretStr | None = None
    #: TLS to the broker. Required for a broker that is not on loopback, unless ``allow_plain_tcp`` is set.
    tls: bool = False
    #: Allow plain TCP (no TLS) to a broker that is not on loopback: passwords and data then cross the network
    #: in the clear. For a private network only; the hub logs a warning at start.
    allow_plain_tcp: bool = False
    #: CA bundle to verify the broker with (TLS only); the system's CAs when unset.
    ca_file: FilePath | None = None
    #: Stable across restarts: the broker keeps this session's unacknowledged messages while the hub is away.
    client_id: str = Field(default_factory=_default_client_id, min_length=1, max_length=128)
    #: How long the broker keeps the session of a stopped hub (MQTT 5 Session Expiry Interval).
    session_expiry_s: int = Field(default=3600, ge=0, le=0xFFFFFFFF)
    #: Subscribe as ``$share/{group}/...`` so several hub processes split the load (then set ``observe``).
    shared_group: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    #: What feeds this hub's operations side (registry, health, alerts, commands, live events): ``share`` the
    #: messages it stores (one hub: everything; the default without ``shared_group``); ``all`` a second,
    #: unshared connection (``{client_id}-observe``, QoS 0) that hears every gateway, for the one operations hub
    #: of a group; ``none`` nothing (a storage-only hub of a group). Required with ``shared_group``: ``share``
    #: there would judge health and alerts on a part of the traffic (docs/deployment.md, "Several hubs").
    observe: Literal["share", "all", "none"] | None = None
    keepalive_s: int = Field(default=60, ge=5, le=65535)
    #: Timeout of the TCP/TLS connect to the broker.
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Reconnect backoff: doubles from min to max, each wait a random time between half of it and all of it.
    reconnect_min_s: int = Field(default=1, ge=1, le=300)
    reconnect_max_s: int = Field(default=30, ge=1, le=3600)
    #: Payload bytes the lanes from the intake to the pipeline hold in memory at most, besides ``batch.queue_size``
    #: messages, and twice this waiting to be written to the lanes' overflow files: the intake stops reading from
    #: the broker while any is reached (at least the contract's largest message, ``wire.v1.MAX_MESSAGE_BYTES``).
    queue_max_bytes: int = Field(default=64 * 1024 * 1024, ge=MAX_MESSAGE_BYTES, le=1024**4)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ca_file is not None and not self.tls:
            raise ValueError("mqtt.ca_file is set but mqtt.tls is off")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("mqtt.reconnect_max_s is smaller than mqtt.reconnect_min_s")
        if self.shared_group is not None and self.observe is None:
            raise ValueError(
                "mqtt.shared_group is set: set mqtt.observe to 'all' on the one hub that runs the operations side "
                "(health, alerts, commands) and to 'none' on the storage-only hubs ('share' judges health on a "
                "part of the traffic)"
            )
        if self.observe == "all" and len(self.client_id) > 128 - len("-observe"):
            raise ValueError("mqtt.client_id is too long for mqtt.observe 'all' (its '-observe' connection)")
        if not self.tls and not self.allow_plain_tcp and not is_loopback(self.host):
            raise PydanticCustomError(
                "plain_tcp_to_remote_broker",
                "is off for the broker '{host}', which is not on loopback: turn mqtt.tls on (passwords and data "
                "would cross the network in the clear), or set mqtt.allow_plain_tcp for a private network",
                {"field": "mqtt.tls", "host": self.host},
            )
        for name in ("observer", "command"):
            if (getattr(self, f"{name}_username") is None) != (getattr(self, f"{name}_password") is None):
                raise PydanticCustomError(
                    "account_half_set",
                    "and mqtt.{name}_password are set together (or neither: the intake's account)",
                    {"field": f"mqtt.{name}_username", "name": name},
                )
        return self

    @property
    def plain_tcp_to_remote(self) -> bool:
        """Plain TCP to a broker not on loopback (allowed by ``allow_plain_tcp``): worth a warning at start."""
        return not self.tls and not is_loopback(self.host)

    def credentials(self, connection: Literal["intake", "observer", "command"]) -> tuple[str | None, str | None]:
        """(username, password) of a connection's account (the intake's where its own is unset)."""
        username, password = self.username, self.password
        if connection == "observer" and self.observer_username is not None:
            username, password = self.observer_username, self.observer_password
        elif connection == "command" and self.command_username is not None:
            username, password = self.command_username, self.command_password
        return username, password.get_secret_value() if password is not None else None

    @property
    def observe_mode(self) -> Literal["share", "all", "none"]:
        """``observe`` with its default filled in (``share``)."""
        return self.observe or "share"


class InfluxSettings(_Section):
    """The InfluxDB the hub writes to."""

    url: str = "http://127.0.0.1:8086"
    database: str = Field(default="ioc", min_length=1, max_length=64)
    username: str | None = None
    password: SecretStr | None = None
    #: Timeout of each HTTP request (connect, read, write, pool).
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: ``v1``: ``POST /write`` with ``database`` and optional basic auth (InfluxDB 1.x; 2.x through a DBRP
    #: mapping; 3.x). ``v2``: ``POST /api/v2/write`` with ``token``, ``org`` and ``bucket`` (InfluxDB 2.x, 3.x,
    #: Cloud). Each api ignores the other's settings (docs/storage.md).
    api: Literal["v1", "v2"] = "v1"
    #: v2 only: the API token, sent as ``Authorization: Token <token>``; needs write permission on the bucket.
    token: SecretStr | None = None
    #: v2 only: the organization (name or ID) and the bucket to write to.
    org: str | None = Field(default=None, min_length=1)
    bucket: str | None = Field(default=None, min_length=1)
    #: Send the body gzip-compressed (InfluxDB 1.x and later accept ``Content-Encoding: gzip``).
    gzip: bool = True
    #: Retry backoff for writes that failed for a retryable reason: capped exponential with jitter.
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=30.0, gt=0, le=600)
    #: v1 only: at start, ``CREATE DATABASE`` (and the retention policy below) if the account may; a refusal is
    #: logged, not fatal (an operator may have created it with other rights).
    create_database: bool = True
    #: v1 only: the DEFAULT retention policy ``ioc_retention`` created with the database, e.g. ``90d``, ``52w``,
    #: ``INF``; unset: InfluxDB's own ``autogen`` (keep forever).
    retention: Annotated[str, Field(pattern=r"^([1-9][0-9]*(h|d|w)|INF)$")] | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8086")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_v2(self) -> Self:
        if self.api != "v2":
            return self
        missing = [
            name
            for name, value in (
                ("token", self.token.get_secret_value().strip() if self.token is not None else None),
                ("org", self.org),
                ("bucket", self.bucket),
            )
            if not value
        ]
        if missing:
            raise PydanticCustomError(
                "v2_setting_missing",
                "is required when influx.api is 'v2' (missing: {missing})",
                {"field": f"influx.{missing[0]}", "missing": ", ".join(f"influx.{name}" for name in missing)},
            )
        return self


class BatchSettings(_Section):
    """How messages are batched into writes, and the bounds that keep memory in check."""

    #: A batch is written when it holds this many lines...
    max_lines: int = Field(default=5000, ge=1, le=1_000_000)
    #: ...or when its first message has waited this long.
    max_delay_ms: int = Field(default=250, ge=1, le=60_000)
    #: Concurrent writes to InfluxDB.
    max_in_flight: int = Field(default=2, ge=1, le=64)
    #: Messages received but not yet acknowledged; at the cap the hub stops taking messages from the broker.
    max_pending_messages: int = Field(default=20_000, ge=1, le=10_000_000)
    #: ...or when their payloads add up to this many bytes (memory stays bounded whatever the messages' sizes).
    max_pending_bytes: int = Field(default=256 * 1024 * 1024, ge=MAX_MESSAGE_BYTES, le=1024**4)
    #: The bounded queue between the MQTT intake and the pipeline (the intake stops reading while it is full).
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    #: On stop, how long to keep trying to store what was received before leaving it to the broker's session.
    drain_timeout_s: float = Field(default=10.0, ge=0, le=600)


class AdmissionSettings(_Section):
    """What a gateway may write, beyond the contract (hub/ingest/admission.py, docs/security.md)."""

    #: The kinds (measurements) gateways may write: those of the device profiles the hub knows. Add the kinds of a
    #: city's own profiles here; the hub's own measurements (alerts, kpi, vn_aqi, device_health...) are refused.
    kinds: list[Annotated[str, Field(pattern=KIND_PATTERN)]] = Field(default_factory=lambda: list(DEFAULT_KINDS))
    #: Oldest reading accepted, in seconds before now: at least the longest outage an agent's outbox holds and
    #: replays (edge ``publish.outbox``). Older readings are dead-lettered.
    max_replay_age_s: float = Field(default=30 * 86_400, ge=60, le=10 * 365 * 86_400)
    #: Newest reading accepted, in seconds after now (a gateway's clock running ahead); past it the reading is
    #: dead-lettered and the gateway gets a ``clock_skew`` problem.
    max_clock_skew_s: float = Field(default=300, ge=1, le=86_400)
    #: New device ids a gateway may announce at once (the contract's largest birth by default)...
    new_devices_burst: int = Field(default=MAX_DEVICES_PER_GATEWAY, ge=1, le=1_000_000)
    #: ...and how many more a minute after that.
    new_devices_per_minute: float = Field(default=6.0, gt=0, le=100_000)
    #: Field types of a city's own profiles, ``{kind: {metric: float|boolean|string}}``, fixed from the first
    #: message like the shipped profiles' (hub/ingest/profile_fields.py); other fields take their first value's.
    field_types: dict[
        Annotated[str, Field(pattern=KIND_PATTERN)],
        dict[Annotated[str, Field(pattern=METRIC_PATTERN)], Literal["float", "boolean", "string"]],
    ] = {}

    @field_validator("kinds")
    @classmethod
    def _no_hub_measurement(cls, kinds: list[str]) -> list[str]:
        owned = sorted(set(kinds) & HUB_MEASUREMENTS)
        if owned:
            raise ValueError(f"{', '.join(owned)}: measurements the hub writes itself cannot be gateways' kinds")
        return kinds

    def rules(self) -> AdmissionRules:
        return AdmissionRules(
            kinds=frozenset(self.kinds),
            max_replay_age_s=self.max_replay_age_s,
            max_clock_skew_s=self.max_clock_skew_s,
            new_devices_burst=self.new_devices_burst,
            new_devices_per_minute=self.new_devices_per_minute,
            field_types={
                **PROFILE_FIELD_TYPES,
                **{(kind, metric): t for kind, fields in self.field_types.items() for metric, t in fields.items()},
            },
        )


class DeadLetterSettings(_Section):
    """The quarantine of refused messages (``GET /api/v1/dead-letters``)."""

    keep: int = Field(default=1000, ge=1, le=1_000_000)
    payload_bytes: int = Field(default=1024, ge=0, le=1_048_576)
    #: SQLite file that keeps the newest ``keep`` dead letters across restarts; unset: in memory only.
    path: Path | None = None


class SpillSettings(_Section):
    """The on-disk spill for batches InfluxDB cannot take now (hub/storage/spill.py). Off while ``dir`` is unset."""

    #: This hub's own folder (two hub processes must not share one).
    dir: Path | None = None
    #: Bound on disk; when full, acks are held and the broker keeps the messages in the hub's session.
    max_bytes: int = Field(default=1024**3, ge=1024, le=1024**4)
    #: Size at which a segment file is closed (a written-back segment is deleted as a whole).
    segment_bytes: int = Field(default=16 * 1024**2, ge=1024, le=1024**3)
    #: InfluxDB slow: when every write slot is taken by a write running this long, new batches are spilled.
    slow_write_s: float = Field(default=5.0, gt=0, le=600)


class LanesSettings(_Section):
    """How the hub is shared between gateways (hub/ingest/lanes.py, docs/security.md): a gateway sending more than
    the hub stores, captured or replaying a long outage, takes its share and cannot delay the others' readings."""

    #: Payload bytes a gateway's turn hands to the pipeline before the next gateway's turn (deficit round robin).
    quantum_bytes: int = Field(default=256 * 1024, ge=1024, le=MAX_MESSAGE_BYTES)
    #: One gateway's messages held in memory; past it the rest go to its overflow file (or wait, without one).
    max_bytes: int = Field(default=4 * 1024**2, ge=64 * 1024, le=1024**4)
    #: One gateway's messages taken by the pipeline and not yet stored; past it that gateway waits for its writes.
    #: Less than ``batch.max_pending_bytes``, so that one gateway cannot fill the pipeline; 0: no share.
    max_pending_bytes: int = Field(default=8 * 1024**2, ge=0, le=1024**4)
    #: The overflow folder, this hub's own (two hub processes must not share one). Unset: ``{spill.dir}/overflow``
    #: when the spill is on, else no overflow (a gateway past its share of memory then waits at the broker, in the
    #: one queue of the hub's session, in front of the others).
    overflow_dir: Path | None = None
    #: Bytes of one gateway's overflow on disk, and of all of them; at a bound that gateway's messages wait.
    overflow_gateway_max_bytes: int = Field(default=1024**3, ge=MAX_MESSAGE_BYTES, le=1024**5)
    overflow_max_bytes: int = Field(default=8 * 1024**3, ge=MAX_MESSAGE_BYTES, le=1024**5)


class CardinalitySettings(_Section):
    """The guards on what becomes a tag or a field in InfluxDB."""

    #: Tag names the device registry may add to a device's lines (e.g. its district); nothing else becomes a tag.
    enrichment_tags: tuple[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], ...] = (
        "district",
        "zone",
        "area",
        "operator",
    )
    #: Distinct metric names (fields) kept per device since the hub started; new ones beyond are quarantined.
    max_metrics_per_device: int = Field(default=512, ge=1, le=100_000)

    @field_validator("enrichment_tags")
    @classmethod
    def _no_base_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        taken = sorted(set(value) & {"device", "gateway", "kind", "site", "type"})
        if taken:
            raise ValueError(f"{', '.join(taken)} are tags of their own and cannot be enrichment tags")
        return value


class MetricsSettings(_Section):
    """The hub's own health (hub/metrics.py): served at ``GET /metrics``, written to InfluxDB periodically."""

    #: How often the ``hub_health`` point is written to InfluxDB; 0 turns the writing off (/metrics stays).
    interval_s: float = Field(default=10.0, ge=0, le=3600)
    #: The ``hub`` tag of those points; the MQTT client id when unset.
    instance: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class HttpSettings(_Section):
    """The hub's HTTP API."""

    host: str = "127.0.0.1"
    #: 0 picks a free port; the actual port is logged and exposed by the service.
    port: int = Field(default=8080, ge=0, le=65535)
    #: Require a viewer token for ``GET /metrics`` and ``GET /api/v1/ingest/stats``. Off by default: they carry
    #: counters only (no payload, device or ward), and a Prometheus scrape or the benchmarks read them without a
    #: token. ``/api/v1/health`` always stays open (liveness probes); ``/api/v1/dead-letters`` always needs one.
    metrics_need_token: bool = False
    #: The largest request body, in bytes, refused with 413 before it is read (from ``Content-Length``, or
    #: counted as it streams in). ``POST /api/v1/kpis`` (2 MiB) and ``POST /api/v1/inventory`` (20 MiB) have
    #: their own larger limits.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: HTTPS: the certificate file (PEM, the server's certificate then its chain). Both TLS files or neither;
    #: unset: plain HTTP (behind a TLS-terminating proxy, or on loopback).
    tls_cert_file: FilePath | None = None
    #: HTTPS: the certificate's private key (PEM, unencrypted; readable by the hub's user only).
    tls_key_file: FilePath | None = None

    @model_validator(mode="after")
    def _tls_files_together(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("http.tls_cert_file", "http.tls_key_file")
                if self.tls_key_file is None
                else ("http.tls_key_file", "http.tls_cert_file")
            )
            raise ValueError(f"{missing} is not set but {given} is: HTTPS needs both (or neither, for plain HTTP)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class AqiSettings(_Section):
    """The periodic VN_AQI computation (hub/operations/aqi.py): reads ``air_quality``, writes ``vn_aqi``."""

    enabled: bool = True
    #: How often the index is recomputed (the current hour and day are rewritten each time).
    interval_s: float = Field(default=300.0, ge=1, le=86_400)
    #: Hours recomputed each run, the current one included (late readings still count).
    hours_back: int = Field(default=3, ge=1, le=48)
    #: The local day of the daily index (Decision 1459: 01:00 to 00:00 local time).
    timezone: str = "Asia/Ho_Chi_Minh"
    #: The measurement holding the ``pm25``, ``pm10`` (and ``o3``, ``no2``, ``so2``, ``co``) fields in µg/m³.
    source_measurement: str = Field(default="air_quality", min_length=1)

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        import zoneinfo  # noqa: PLC0415 - only needed for this check

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Ho_Chi_Minh)") from exc
        return value


class ReportSettings(_Section):
    """Availability reports (hub/reports/, docs/reports.md): the city's months and the printable PDF."""

    #: The city's time zone (an IANA name): a report's month runs from 00:00 on its first day to 00:00 on the
    #: first day of the next month, local time.
    timezone: str = "Asia/Ho_Chi_Minh"
    #: The headless Chromium that prints the report to PDF: a path, or a name looked up in PATH (Debian's package
    #: ``chromium``). Missing: the PDF format answers 503, the others work.
    chromium: str = Field(default="chromium", min_length=1)
    #: How long printing one PDF may take before Chromium is stopped and the request answered 504.
    pdf_timeout_s: float = Field(default=60.0, gt=0, le=600)
    #: How often this month's camera availability per ward is written to InfluxDB for the leadership board
    #: (measurement ``camera_availability``, hub/reports/series.py); 0 turns the job off.
    series_interval_s: float = Field(default=300.0, ge=0, le=86_400)

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        import zoneinfo  # noqa: PLC0415 - only needed for this check

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Ho_Chi_Minh)") from exc
        return value


class RegistrySettings(_Section):
    """The hub's database (hub/registry/): sites, devices, health transitions, alerts, commands, API tokens."""

    #: SQLAlchemy URL: ``sqlite:///path/hub.db`` (WAL; one hub process) or ``postgresql+psycopg://user:pw@host/ioc``
    #: (several hub processes; needs a PostgreSQL driver installed). Unset: a temporary SQLite file removed at stop.
    url: Annotated[str, Field(min_length=1)] | None = None
    #: An inventory file (YAML or CSV, hub/registry/inventory.py) imported at every start.
    inventory_file: FilePath | None = None


class HealthSettings(_Section):
    """Device and gateway health (hub/health/)."""

    #: A device with no reading for this many poll intervals is offline (per-device ``inactivity_s`` overrides).
    inactivity_factor: float = Field(default=3.0, ge=1.0, le=100)
    #: Flap damping: this many state changes within the window make the entity "degraded (flapping)"...
    flap_changes: int = Field(default=6, ge=2, le=1000)
    flap_window_s: float = Field(default=300.0, gt=0, le=86_400)
    #: ...until its state has not changed for this long.
    flap_quiet_s: float = Field(default=120.0, ge=0, le=86_400)
    #: A gateway's problem (``clock_skew``: readings stamped outside the accepted window) is shown until this long
    #: has passed without a new report.
    problem_quiet_s: float = Field(default=600.0, gt=0, le=7 * 86_400)


class AlertSettings(_Section):
    """Alert rules and webhooks (hub/alerts/)."""

    #: The rules file (YAML); unset: device-offline and gateway-offline rules only.
    rules_file: FilePath | None = None
    #: How often the alert figures for the boards (measurements ``alerts`` and ``alert_resolved``, hub/alerts/series.py)
    #: are written to InfluxDB; 0 turns the job off.
    series_interval_s: float = Field(default=60.0, ge=0, le=3600)
    #: Seconds within which an alert of a severity counts as resolved in time, replacing the defaults of
    #: hub/alerts/series.py (critical 1 h, major 4 h, warning and info 24 h) for the severities given.
    resolve_targets_s: dict[Severity, Annotated[float, Field(gt=0, le=365 * 86_400)]] = Field(default_factory=dict)
    #: A security alert (a gateway's input refused as foreign_device, hub_owned_kind, unknown_kind, field_type or
    #: device_rate; hub/alerts/security.py) resolves after this long without such a refusal from that gateway.
    security_quiet_s: float = Field(default=900.0, gt=0, le=7 * 86_400)


class CommandSettings(_Section):
    """Remote commands (hub/operations/commands.py)."""

    #: The default ``timeout_s`` of a command when the request gives none.
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: A gateway that sends data for a device its current birth did not announce is asked for a new birth
    #: (``rebirth``) at most once per this many seconds.
    rebirth_interval_s: float = Field(default=60.0, gt=0, le=86_400)


class SnapshotSettings(_Section):
    """Camera snapshots (hub/snapshots/, docs/cameras.md "Snapshots on the hub"): what a gateway may send, where
    they are kept and for how long."""

    #: The folder of the snapshots, one sub-folder per camera. Unset: a temporary folder removed at stop (the
    #: Ansible role sets it in the hub's state directory). Several hubs of a group share one folder (a network
    #: file system), or each keeps the snapshots of its share and serves only those.
    dir: Path | None = None
    #: Device kinds whose snapshots are kept: a snapshot of a device its gateway's birth announced with another
    #: kind is refused (``not_a_camera``).
    kinds: list[Annotated[str, Field(pattern=KIND_PATTERN)]] = Field(default_factory=lambda: ["camera"], min_length=1)
    #: Snapshots one camera may send at once...
    burst: int = Field(default=10, ge=1, le=1000)
    #: ...and how many a minute after that; more are refused (``snapshot_rate``, a security alert). An agent at
    #: its defaults sends one per image check at most, and a camera's checks come at least ``image_confirm_s``
    #: (60 s) apart: raise this for cameras whose checks are set closer.
    max_per_minute: float = Field(default=1.0, gt=0, le=600)
    #: The smallest and the largest side of a snapshot's picture, in pixels (read from the JPEG's frame header);
    #: other sizes are refused (``bad_image``).
    min_side: int = Field(default=16, ge=1, le=65_535)
    max_side: int = Field(default=8192, ge=1, le=65_535)
    #: Snapshots older than this are removed...
    max_age_days: float = Field(default=14.0, gt=0, le=3650)
    #: ...and, while all of them take more bytes than this, the oldest of the camera holding the most bytes
    #: within the gateway holding the most: a gateway that floods evicts its own pictures first.
    max_total_bytes: int = Field(default=10 * 1024**3, ge=1024**2, le=1024**5)
    #: Snapshots kept per camera at most (its oldest go first, at every write and retention check).
    max_per_device: int = Field(default=5000, ge=1, le=1_000_000)
    #: Bytes kept per camera at most (its oldest go first, at every write and retention check). 256 MiB: twice
    #: what a camera at the agent's defaults sends in ``max_age_days`` (14 days x 96 a day x 96 KiB at most =
    #: 126 MiB); raise it with ``max_age_days``.
    max_bytes_per_device: int = Field(default=256 * 1024**2, ge=1024**2, le=1024**4)
    #: How often the age and bytes bounds are enforced.
    retention_check_s: float = Field(default=300.0, gt=0, le=86_400)
    #: Snapshots admitted and waiting to be written; one that finds the queue full is dropped and counted.
    queue_size: int = Field(default=64, ge=1, le=100_000)

    @model_validator(mode="after")
    def _sides(self) -> Self:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) is larger than max_side ({self.max_side})")
        return self


class HubSettings(BaseSettings):
    """All settings of ``ioc hub``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    batch: BatchSettings = BatchSettings()
    admission: AdmissionSettings = AdmissionSettings()
    dead_letters: DeadLetterSettings = DeadLetterSettings()
    spill: SpillSettings = SpillSettings()
    lanes: LanesSettings = LanesSettings()
    cardinality: CardinalitySettings = CardinalitySettings()
    metrics: MetricsSettings = MetricsSettings()
    http: HttpSettings = HttpSettings()
    registry: RegistrySettings = RegistrySettings()
    health: HealthSettings = HealthSettings()
    alerts: AlertSettings = AlertSettings()
    commands: CommandSettings = CommandSettings()
    aqi: AqiSettings = AqiSettings()
    reports: ReportSettings = ReportSettings()
    snapshots: SnapshotSettings = SnapshotSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as keyword arguments); no .env or secrets dir.
        return (env_settings, init_settings)

    @property
    def overflow_dir(self) -> Path | None:
        """Where the lanes' overflow files go (``lanes.overflow_dir``, else beside the spill), or None."""
        if self.lanes.overflow_dir is not None:
            return self.lanes.overflow_dir
        return self.spill.dir / "overflow" if self.spill.dir is not None else None

    @model_validator(mode="after")
    def _one_gateway_cannot_fill_the_pipeline(self) -> Self:
        if self.lanes.max_pending_bytes >= self.batch.max_pending_bytes:
            raise PydanticCustomError(
                "lane_share",
                "lanes.max_pending_bytes ({lane}) must be less than batch.max_pending_bytes ({total}): one gateway "
                "could otherwise fill the pipeline in front of the others",
                {
                    "field": "lanes.max_pending_bytes",
                    "lane": self.lanes.max_pending_bytes,
                    "total": self.batch.max_pending_bytes,
                },
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Self:
        if is_loopback(self.mqtt.host):
            return self
        secrets = (
            ("mqtt.password", self.mqtt.password),
            ("mqtt.observer_password", self.mqtt.observer_password),
            ("mqtt.command_password", self.mqtt.command_password),
            ("influx.password", self.influx.password),
            ("influx.token", self.influx.token),
        )
        for name, secret in secrets:
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise PydanticCustomError(
                    "placeholder_secret",
                    "is a placeholder secret; set a real one "
                    "(placeholders are accepted only when mqtt.host is loopback, not '{host}')",
                    {"field": name, "host": self.mqtt.host},
                )
        return self


def load_settings(config_file: Path | None = None, environ: Mapping[str, str] | None = None) -> HubSettings:
    """Load and check the settings once; raise :class:`ConfigError` naming the file or variable and the field.

    ``environ`` is only used to name the source of an error and to refuse unknown variables; the values
    themselves are read from ``os.environ`` by pydantic-settings.
    """
    env = dict(os.environ if environ is None else environ)
    refuse_unknown_env(env, ENV_PREFIX, HubSettings.model_fields, noun="setting section", error=ConfigError)
    data = read_yaml_mapping(config_file, top_level=_TOP_LEVEL, error=ConfigError) if config_file is not None else {}
    try:
        return HubSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_file, env)) from exc


_SECRET_FIELDS: Final = frozenset({"password", "token", "observer_password", "command_password"})
#: Checks across fields that name the field they are about in their context (``ctx["field"]``).
_CROSS_FIELD_ERRORS: Final = frozenset(
    {"placeholder_secret", "v2_setting_missing", "plain_tcp_to_remote_broker", "account_half_set"}
)


def _describe(exc: ValidationError, config_file: Path | None, env: Mapping[str, str]) -> str:
    upper_env = {k.upper() for k in env}
    lines: list[str] = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if error["type"] in _CROSS_FIELD_ERRORS and "field" in error.get("ctx", {}):
            # A check across fields or sections (placeholder secrets, v2 settings) names its field in the context.
            loc = str(error["ctx"]["field"]).split(".")
        field = ".".join(loc)
        env_name = ENV_PREFIX + "__".join(loc).upper()
        if loc and env_name in upper_env:
            where = f"environment variable {env_name}"
        elif config_file is not None:
            where = str(config_file)
        else:
            where = "settings"
        message = "unknown key" if error["type"] == "extra_forbidden" else str(error["msg"])
        message = message.removeprefix("Value error, ")
        got = ""
        if loc and loc[-1] not in _SECRET_FIELDS and error["type"] != "extra_forbidden" and "input" in error:
            value = error["input"]
            if isinstance(value, str | int | float | bool) or value is None:
                got = f" (got {value!r})"
        lines.append(f"{where}: {field}: {message}{got}" if field else f"{where}: {message}")
    return "invalid hub settings:\n  " + "\n  ".join(lines)
