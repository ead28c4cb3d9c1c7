"""The edge agent's config: one YAML file per gateway, checked once at start.

Sources, lowest to highest priority: defaults, the YAML file, environment variables ``IOC_EDGE_<SECTION>__<KEY>``
(for example ``IOC_EDGE_BROKER__PASSWORD``; names are case-insensitive; a whole section or list, such as
``IOC_EDGE_BROKER`` or ``IOC_EDGE_DEVICES``, is given as JSON). Unknown keys are refused in both. The variables
are read by :func:`env_overrides`, with the rules of pydantic-settings' ``env_nested_delimiter="__"``, without
importing pydantic-settings: the agent runs on small site hardware, and that package and its sources (cloud
secret stores, dotenv, a CLI parser) cost it about 2 MB of resident memory for a dozen lines of work.

Each device's driver options and profile are checked by the driver itself
(:func:`devices.drivers.build_driver`) while loading, so ``ioc edge check`` catches them. Every error names the
file (or variable), the device (index and id) and the field, e.g.
``gateway.yaml: devices[1] (id 'aq-2'): options.port: Input should be a valid integer``.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from common.config import is_loopback, read_yaml_mapping, refuse_unknown_env
from edge.errors import ConfigError
from edge.plan import DevicePlan, DevicePlanError, build_device_plans
from edge.problems import device_label, dotted, plain_tcp_to_remote_broker, pydantic_message
from wire.v1 import ID_PATTERN, MAX_DEVICES_PER_GATEWAY, MAX_READINGS_PER_BATCH, METRIC_PATTERN

ENV_PREFIX: Final = "IOC_EDGE_"
#: What the file's top level holds, for the error of a file that is not a mapping.
_TOP_LEVEL: Final = "(site, gateway, broker, publish, devices)"
#: A poll never waits longer than this by default (``devices[].timeout_s`` is ``min(interval_s, this)``).
DEFAULT_POLL_TIMEOUT_CAP_S: Final = 10.0

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Section):
    """The MQTT broker and the gateway's own account on it."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    #: TLS to the broker. Required for a broker that is not on loopback, unless ``allow_plain_tcp`` is set.
    tls: bool = False
    #: Allow plain TCP (no TLS) to a broker that is not on loopback: the password and data then cross the
    #: network in the clear. For a private network only; the agent logs a warning at start.
    allow_plain_tcp: bool = False
    #: CA bundle to verify the broker with (TLS only); the system's CAs when unset.
    ca_file: FilePath | None = None
    #: MQTT keepalive; a dead link is noticed after 1.5 x this at the latest.
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    #: Timeout of the connect (TCP/TLS and waiting for CONNACK).
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Timeout of one QoS 1 publish (waiting for PUBACK); on expiry the session is dropped and redone.
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Reconnect backoff: doubles from min to max, with jitter.
    reconnect_min_s: float = Field(default=1.0, gt=0, le=300)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ca_file is not None and not self.tls:
            raise ValueError("broker.ca_file is set but broker.tls is off")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("broker.reconnect_max_s is smaller than broker.reconnect_min_s")
        if self.plain_tcp_to_remote and not self.allow_plain_tcp:
            raise ValueError(plain_tcp_to_remote_broker(self.host))
        return self

    @property
    def plain_tcp_to_remote(self) -> bool:
        """No TLS to a broker that is not on loopback (``localhost``, 127.0.0.0/8, ::1)."""
        return not self.tls and not is_loopback(self.host)


class PublishConfig(_Section):
    """How readings are batched, and how much is held while the broker is unreachable."""

    #: Readings per data message at most; a batch whose encoding would pass the contract's byte limit
    #: (``wire.v1.MAX_MESSAGE_BYTES``, 4 MiB) is cut there and the rest goes in the next message.
    max_batch: int = Field(default=500, ge=1, le=MAX_READINGS_PER_BATCH)
    #: A reading waits at most this long for its batch to fill before it is sent.
    max_delay_ms: int = Field(default=1000, ge=1, le=600_000)
    #: An optional cap on the readings held in the outbox, besides ``outbox_max_bytes`` (unset: bytes only).
    outbox_max: int | None = Field(default=None, ge=1, le=100_000_000)
    #: The store-and-forward outbox (SQLite). Relative paths are taken from the config file's folder; unset,
    #: ``state/<site>.<gateway>.outbox.sqlite`` there (:func:`load_config`). ``:memory:`` (and configs built in
    #: code without a path) keep it in memory: nothing survives a restart.
    outbox_path: Path | None = None
    #: The outbox's bound: bytes of readings it holds at most (the file is somewhat larger); beyond, the oldest
    #: readings are dropped and counted. 256 MiB hold about 2 million readings of a few metrics.
    outbox_max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024, le=1024**4)
    #: Readings per second replayed from the backlog after an outage, besides the live ones; 0 = no limit.
    replay_rate: float = Field(default=2000.0, ge=0, le=1_000_000)
    #: On a clean shutdown, how long to keep sending queued readings before the death message.
    drain_timeout_s: float = Field(default=5.0, ge=0, le=300)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.outbox_max is not None and self.outbox_max < self.max_batch:
            raise ValueError("publish.outbox_max is smaller than publish.max_batch")
        return self


MetricKey = Annotated[str, Field(pattern=METRIC_PATTERN)]


class ReportConfig(_Section):
    """Report-by-exception of one device (:mod:`edge.exception`): a metric is sent when it moved beyond its
    deadband since it was last sent, or when it was last sent ``max_silence_s`` ago or more. Metrics without a
    deadband (and every bool or string) are sent on any change."""

    #: Every metric is sent at least this often, changed or not (so a quiet sensor still shows it is alive).
    max_silence_s: float = Field(default=300.0, gt=0, le=86_400)
    #: metric -> absolute deadband, in the metric's own unit.
    deadband: dict[MetricKey, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(default_factory=dict)
    #: metric -> deadband in percent of the value last sent.
    deadband_pct: dict[MetricKey, Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        both = sorted(set(self.deadband) & set(self.deadband_pct))
        if both:
            raise ValueError(f"metric {both[0]!r} has both deadband and deadband_pct: give one")
        return self


class DeviceConfig(_Section):
    """One device instance: where it is (``options``, checked by its driver) and how often to poll it."""

    id: Id
    #: A registered driver, e.g. ``modbus_tcp``.
    driver: str = Field(min_length=1, max_length=64)
    #: A profile id (``devices/profiles/<id>.yaml``); it gives the device's kind.
    profile: str = Field(min_length=1, max_length=128)
    interval_s: float = Field(ge=0.1, le=86_400)
    #: Timeout of one poll (and of opening the connection); ``min(interval_s, 10)`` when unset.
    timeout_s: float | None = Field(default=None, gt=0, le=600)
    options: dict[str, Any] = Field(default_factory=dict)
    #: Report-by-exception; unset: every reading is sent whole.
    report: ReportConfig | None = None

    @property
    def poll_timeout_s(self) -> float:
        """The timeout applied to each open and poll."""
        if self.timeout_s is not None:
            return self.timeout_s
        return min(self.interval_s, DEFAULT_POLL_TIMEOUT_CAP_S)


class SelfMetricsConfig(_Section):
    """The agent's own figures (:mod:`edge.selfmetrics`), published as readings of kind ``agent``."""

    enabled: bool = True
    interval_s: float = Field(default=60.0, ge=1, le=86_400)


class SnapshotConfig(_Section):
    """Camera snapshots (:mod:`edge.snapshots`): which of the JPEGs a camera's image checks keep leave the gateway,
    on the ``snapshot`` channel, never through the readings' outbox."""

    #: Send snapshots at all (a camera's own ``snapshots`` option decides whether it keeps JPEGs).
    enabled: bool = True
    #: A camera's regular snapshot: one at least this long after its last (its first check sends one at once).
    #: 0: only on image problems raised and cleared. Each image problem raised or cleared sends one besides.
    interval_s: float = Field(default=900.0, ge=0, le=86_400)


class EdgeConfig(BaseModel):
    """The whole config of one gateway's agent (the environment is applied by :func:`load_config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Id
    gateway: Id
    broker: BrokerConfig
    publish: PublishConfig = PublishConfig()
    devices: list[DeviceConfig] = Field(default_factory=list, max_length=MAX_DEVICES_PER_GATEWAY)
    self_metrics: SelfMetricsConfig = SelfMetricsConfig()
    snapshots: SnapshotConfig = SnapshotConfig()

    _plans: list[DevicePlan] | None = PrivateAttr(default=None)

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        first: dict[str, int] = {}
        for index, device in enumerate(devices):
            if device.id in first:
                raise PydanticCustomError(
                    "duplicate_device_id",
                    "duplicate device id (already used by devices[{first}])",
                    {"first": first[device.id], "index": index, "id": device.id},
                )
            first[device.id] = index
        return devices

    def device_plans(self) -> list[DevicePlan]:
        """The devices with their drivers built (not connected), in config order. Built once, then reused.

        Raises :class:`~edge.plan.DevicePlanError` naming the device and field if a driver refuses its options.
        """
        if self._plans is None:
            self._plans = build_device_plans(self.devices)
        return self._plans


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> EdgeConfig:
    """Read, validate and plan the config once; raise :class:`ConfigError` naming the file, device and field.

    ``environ`` (default ``os.environ``) gives the ``IOC_EDGE_*`` variables that override the file.
    """
    path = Path(path)
    env = dict(os.environ if environ is None else environ)
    refuse_unknown_env(env, ENV_PREFIX, EdgeConfig.model_fields, noun="setting", error=ConfigError)
    data = _deep_merge(read_yaml_mapping(path, top_level=_TOP_LEVEL, error=ConfigError), env_overrides(env))
    try:
        config = EdgeConfig(**data)
    except ValidationError as exc:
        raise ConfigError("\n".join(describe_errors(exc, str(path), data, env))) from None
    config = _place_outbox(config, path)
    try:
        config.device_plans()
    except DevicePlanError as exc:
        raise ConfigError("\n".join(p.render(str(path)) for p in exc.problems)) from None
    return config


OUTBOX_MEMORY: Final = ":memory:"


def _place_outbox(config: EdgeConfig, path: Path) -> EdgeConfig:
    """``publish.outbox_path``: unset, ``state/<site>.<gateway>.outbox.sqlite`` next to the config file;
    relative, taken from the config file's folder; made absolute."""
    target = config.publish.outbox_path
    if target is None:
        target = Path("state") / f"{config.site}.{config.gateway}.outbox.sqlite"
    if str(target) != OUTBOX_MEMORY and not target.is_absolute():
        target = path.resolve().parent / target
    return config.model_copy(update={"publish": config.publish.model_copy(update={"outbox_path": target})})


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings of the ``IOC_EDGE_*`` variables as nested mappings, ``IOC_EDGE_BROKER__PORT=1999`` giving
    ``{"broker": {"port": "1999"}}``. Names are case-insensitive. The value of a section, list or mapping
    (``IOC_EDGE_BROKER``, ``IOC_EDGE_DEVICES``, ``IOC_EDGE_PUBLISH``...) is JSON; any other is left as text
    for the model to convert and check, so errors name the variable and the field like a file's do.
    Raises :class:`ConfigError` for JSON that does not parse or a variable that clashes with another."""
    overrides: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(parts):
            raise ConfigError(f"environment variable {name}: empty name between '__' separators")
        value: Any = environ[name]
        if _is_structured(parts):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ConfigError(f"environment variable {name}: not valid JSON ({exc})") from None
        node = overrides
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {part!r} is also set whole by another variable")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"environment variable {name}: {parts[-1]!r} is also set key by key")
        node[parts[-1]] = value
    return overrides


def _is_structured(parts: Sequence[str]) -> bool:
    """Whether the field at ``parts`` (from :class:`EdgeConfig`) holds a model, list or mapping."""
    model: type[BaseModel] = EdgeConfig
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False  # refused by the model as an unknown key, naming the variable
        kinds = _annotation_kinds(field.annotation)
        if index == len(parts) - 1:
            return any(k in (list, dict) or _is_model(k) for k in kinds)
        nested = [k for k in kinds if _is_model(k)]
        if not nested:
            return False
        model = nested[0]
    return False


def _annotation_kinds(annotation: Any) -> list[Any]:
    """``X | None`` and ``Annotated[X, ...]`` taken apart: the classes (or origins, for ``list[...]``) in it."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _annotation_kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [k for arg in typing.get_args(annotation) for k in _annotation_kinds(arg)]
    return [origin or annotation]


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, mappings merged key by key (the file's other keys stay)."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = _deep_merge(below, value) if isinstance(below, Mapping) and isinstance(value, dict) else value
    return merged


def describe_errors(
    exc: ValidationError, source: str, data: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> list[str]:
    """One line per problem: ``<file or variable>: [devices[i] (id 'x'): ]<field>: <message>``."""
    upper_env = {k.upper() for k in (env or {})}
    raw_devices = data.get("devices")
    lines: list[str] = []
    for error in exc.errors():
        loc: list[str | int] = list(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "duplicate_device_id":
            loc = ["devices", int(ctx["index"]), "id"]
        env_name = ENV_PREFIX + "__".join(_leading_names(loc)).upper()
        where = f"environment variable {env_name}" if loc and env_name in upper_env else source
        device = ""
        if len(loc) >= 2 and loc[0] == "devices" and isinstance(loc[1], int):
            device = device_label(loc[1], _device_id(raw_devices, loc[1]))
            loc = loc[2:]
        parts = [where, device, dotted(loc), pydantic_message(error)]
        lines.append(": ".join(p for p in parts if p))
    return lines


def _leading_names(loc: Sequence[str | int]) -> list[str]:
    """The field names of ``loc`` up to the first list index: the environment variable that set them."""
    names: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        names.append(part)
    return names


def _device_id(raw_devices: Any, index: int) -> str | None:
    if isinstance(raw_devices, Sequence) and 0 <= index < len(raw_devices):
        entry = raw_devices[index]
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            return str(entry["id"])
    return None
