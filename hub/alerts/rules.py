"""The alert rules file (YAML), checked once at start; errors name the file, the rule and the field.

::

    rules:
      - {id: pm25-high, type: threshold, kinds: [air_quality], metric: pm25, above: 150, clear: 120,
         for_s: 600, severity: critical}
      - {id: camera-fps-low, type: threshold, kinds: [camera], metric: fps, below: 10, clear: 12, for_s: 30}
      - {id: display-error, type: bits, kinds: [display], metric: error_bits, mask: 255}
      - {id: device-offline, type: offline, for_s: 60, severity: major}
      - {id: gateway-offline, type: offline, target: gateway, for_s: 0, clear_after_s: 60, severity: critical}
      - {id: stale-data, type: stale, max_age_s: 600}
    webhooks:
      - {name: chat-ops, url: "https://chat.example/hooks/ioc", min_severity: major, retries: 5, timeout_s: 5}

- ``threshold``: fires when ``metric`` is above ``above`` (or below ``below``) continuously for ``for_s``;
  resolves by itself only when it crosses the separate ``clear`` level (hysteresis: a value between the two
  levels changes nothing).
- ``bits``: fires when ``metric & mask`` is not zero (a display controller's error bits), clears at zero.
- ``offline``: fires when a device (or, with ``target: gateway``, a gateway) has been ``offline`` for ``for_s``;
  resolves once it has stayed back (online or degraded) for ``clear_after_s`` (default 60 s; 0: at once). Offline
  again before that keeps the same alert open, its ``value`` counting the times offline, so a link that flaps
  faster than the health machine's damping catches opens one alert, not one per drop (a recovery delay, as
  Zabbix's recovery expression and Nagios' flap detection avoid alert storms). The health state itself changes
  at once; only the alert's resolution waits. A flapping entity is ``degraded``, so it does not fire.
- ``stale``: fires when a device that reported before has sent no reading for ``max_age_s`` while its gateway
  is online (the data stopped, whatever the agent thinks of the device); clears at the next reading.

``kinds`` and ``devices`` restrict a rule (empty: every device).

A webhook's ``url`` usually holds a secret (a chat token in the path or query): the hub shows and logs a webhook
by its ``name`` only (default ``webhook-<n>``, its position in the list from 1), never by its URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hub.errors import ConfigError
from wire.v1 import ID_PATTERN, KIND_PATTERN, METRIC_PATTERN

Severity = Literal["info", "warning", "major", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "major": 2, "critical": 3}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Model):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    severity: Severity = "warning"
    description: Annotated[str, Field(max_length=500)] = ""
    kinds: list[Annotated[str, Field(pattern=KIND_PATTERN)]] = []
    devices: list[Annotated[str, Field(pattern=ID_PATTERN)]] = []

    def applies_to(self, device: str, kind: str) -> bool:
        return (not self.kinds or kind in self.kinds) and (not self.devices or device in self.devices)


class ThresholdRule(_Rule):
    type: Literal["threshold"]
    metric: Annotated[str, Field(pattern=METRIC_PATTERN)]
    above: float | None = None
    below: float | None = None
    clear: float
    for_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0

    @model_validator(mode="after")
    def _levels(self) -> Self:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' and 'below'")
        if self.above is not None and self.clear > self.above:
            raise ValueError(f"clear ({self.clear:g}) must not be above 'above' ({self.above:g})")
        if self.below is not None and self.clear < self.below:
            raise ValueError(f"clear ({self.clear:g}) must not be below 'below' ({self.below:g})")
        return self

    def breaches(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < (self.below or 0.0)

    def clears(self, value: float) -> bool:
        return value < self.clear if self.above is not None else value > self.clear


class BitsRule(_Rule):
    type: Literal["bits"]
    metric: Annotated[str, Field(pattern=METRIC_PATTERN)]
    mask: Annotated[int, Field(ge=1, le=2**63 - 1)] = 2**32 - 1
    for_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0


#: An offline rule's default ``clear_after_s``. Flap damping at its defaults (``health.flap_changes`` 6 within
#: ``health.flap_window_s`` 300 s) takes an entity as flapping when its changes come 60 s apart or closer
#: (300 / (6 - 1)): an offline alert held that long stays one alert through the changes that damping sees before
#: it steps in, while an ordinary outage's alert resolves a minute after the entity is back.
DEFAULT_CLEAR_AFTER_S = 60.0


class OfflineRule(_Rule):
    type: Literal["offline"]
    target: Literal["device", "gateway"] = "device"
    for_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    #: An open alert resolves once the entity has stayed back (online or degraded) this long; offline again
    #: before that keeps the same alert open (its value counts the times offline). 0: resolves at once.
    clear_after_s: Annotated[float, Field(ge=0, le=86_400)] = DEFAULT_CLEAR_AFTER_S


class StaleRule(_Rule):
    type: Literal["stale"]
    max_age_s: Annotated[float, Field(gt=0, le=30 * 86_400)]


Rule = Annotated[ThresholdRule | BitsRule | OfflineRule | StaleRule, Field(discriminator="type")]


class Webhook(_Model):
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+", max_length=2000)]
    #: How the webhook is shown in the delivery log and the hub's logs; unique in the file.
    name: Annotated[str, Field(pattern=ID_PATTERN)] = ""
    min_severity: Severity = "warning"
    #: Attempts after the first one; capped exponential backoff between them.
    retries: Annotated[int, Field(ge=0, le=20)] = 5
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    headers: dict[str, str] = {}


class RulesFile(_Model):
    rules: list[Rule] = []
    webhooks: list[Webhook] = []

    @field_validator("webhooks")
    @classmethod
    def _name_webhooks(cls, webhooks: list[Webhook]) -> list[Webhook]:
        named = [w if w.name else w.model_copy(update={"name": f"webhook-{i}"}) for i, w in enumerate(webhooks, 1)]
        names = [w.name for w in named]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"webhook name {twice[0]!r} is used twice")
        return named

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self


def parse_rules(data: object, source: str) -> RulesFile:
    if data is None:
        return RulesFile()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'rules' and 'webhooks'")
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = list(error["loc"])
            where = ""
            if len(loc) >= 2 and loc[0] in ("rules", "webhooks") and isinstance(loc[1], int):
                entries = data.get(loc[0])
                entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
                name = entry.get("id", "") if isinstance(entry, dict) else ""
                where = f"{loc[0]}[{loc[1]}]" + (f" ({name})" if name else "")
                # Drop the discriminator tag pydantic adds to the path (threshold, bits...).
                loc = [p for p in loc[2:] if p not in ("threshold", "bits", "offline", "stale")]
            field = ".".join(str(p) for p in loc)
            message = "unknown key" if error["type"] == "extra_forbidden" else str(error["msg"])
            message = message.removeprefix("Value error, ")
            lines.append(": ".join(p for p in (source, where, field) if p) + f": {message}")
        raise ConfigError("invalid alert rules:\n  " + "\n  ".join(lines)) from exc


def load_rules(path: Path) -> RulesFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the alert rules: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_rules(data, str(path))


#: Used when no rules file is configured: offline devices and gateways, stale data.
DEFAULT_RULES = RulesFile.model_validate(
    {
        "rules": [
            {"id": "device-offline", "type": "offline", "for_s": 60, "severity": "major"},
            {"id": "gateway-offline", "type": "offline", "target": "gateway", "for_s": 30, "severity": "critical"},
        ]
    }
)
