"""How wire messages become InfluxDB lines: the schema of ``docs/storage.md``, in one place.

- ``data``: one line per reading; measurement = ``reading.kind``; tags ``device``, ``gateway``, ``kind``, ``site``
  (an allow-list, never free text); fields = the metrics; timestamp = ``reading.ts`` in ms.
- ``state``: measurement ``gateway_state``, tags ``gateway``, ``site``, fields ``online``, ``session``.
- ``event``: measurement ``device_event``, tags ``device``, ``gateway``, ``site``, ``type``, field ``reason``.
- enrichment: a device's registry tags (e.g. ``district``), from an in-memory map set by the registry, are added
  to its ``data`` and ``event`` lines; only tag names on the allow-list (``tags.enrichment``) are accepted.

``site`` and ``gateway`` always come from the topic (the broker's ACL guarantees them), never from the payload.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Final

import msgspec

from hub.storage.lineproto import (
    LineProtocolError,
    escape_key,
    escape_measurement,
    format_tags,
    format_value,
    line,
)
from wire.v1 import DataBatch, Event, MetricValue, Reading, State

GATEWAY_STATE: Final = "gateway_state"
DEVICE_EVENT: Final = "device_event"
#: Every measurement the hub writes itself (docs/storage.md); none of them can be a reading's kind.
#: tests/unit/hub/test_admission.py checks that each module's own constant is in it.
HUB_MEASUREMENTS: Final = frozenset(
    {
        GATEWAY_STATE,
        DEVICE_EVENT,
        "device_health",
        "gateway_health",
        "alerts",
        "alert_resolved",
        "camera_availability",
        "kpi",
        "vn_aqi",
        "hub_health",
        "hub_seq_gaps",
    }
)
#: Tags of reading and event lines; an enrichment may never replace them.
BASE_TAGS: Final = frozenset({"device", "gateway", "kind", "site", "type"})
#: Tag names an enrichment (the device registry) may add to a device's lines by default (``tags.enrichment``).
DEFAULT_ENRICHMENT_TAGS: Final = ("district", "zone", "area", "operator")

#: Line protocol string field values escape a backslash and a double quote (as hub.storage.lineproto does).
_STRING_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})

#: device id -> its extra tags, pre-escaped and sorted: ``((key, ",key=value"), ...)``.
Enrichment = Mapping[str, tuple[tuple[str, str], ...]]
NO_ENRICHMENT: Final[Enrichment] = MappingProxyType({})


def build_enrichment(mapping: Mapping[str, Mapping[str, str]], allowed: Collection[str]) -> Enrichment:
    """Check and pre-escape ``device -> {tag: value}`` once, so line building only concatenates.

    Raise ``ValueError`` naming the device and tag for a tag outside ``allowed`` (an allow-list keeps series
    cardinality in check), a base tag, or a value the line protocol cannot carry (``TypeError`` for a value that
    is not a string). Empty values are left out.
    """
    result: dict[str, tuple[tuple[str, str], ...]] = {}
    for device, tags in mapping.items():
        pairs: list[tuple[str, str]] = []
        for key, value in tags.items():
            if key in BASE_TAGS or key not in allowed:
                raise ValueError(
                    f"enrichment of device {device!r}: tag {key!r} is not allowed "
                    f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
                )
            if not isinstance(value, str):
                raise TypeError(f"enrichment of device {device!r}: tag {key!r} must be a string, got {value!r}")
            if not value:
                continue
            try:
                pairs.append((key, f",{escape_key(key)}={escape_key(value)}"))
            except LineProtocolError as exc:
                raise ValueError(f"enrichment of device {device!r}: tag {key!r}: {exc}") from exc
        if pairs:
            result[device] = tuple(sorted(pairs))
    return MappingProxyType(result)


def _tag_prefix(measurement_e: str, base: list[tuple[str, str]], extra: tuple[tuple[str, str], ...]) -> str:
    """``measurement,k=v,...`` with the base and enrichment tags merged in key order."""
    return measurement_e + "".join(text for _, text in sorted([*base, *extra]))


#: Tag prefixes kept per gateway by a caller's cache (cleared when full; devices x kinds of one gateway).
PREFIX_CACHE_SIZE: Final = 10_000
#: Escaped field keys remembered (cleared when full): metric names, a few hundred in a city.
FIELD_KEY_CACHE_SIZE: Final = 100_000
_FIELD_KEYS: dict[str, str] = {}


def _field_key(name: str) -> str:
    """``name`` escaped as a field key (raise :class:`LineProtocolError` for a newline), remembered."""
    key = escape_key(name)
    if len(_FIELD_KEYS) >= FIELD_KEY_CACHE_SIZE:
        _FIELD_KEYS.clear()
    _FIELD_KEYS[name] = key
    return key


def reading_lines(  # noqa: PLR0912 - the hot loop, inlined on purpose
    site: str,
    gateway: str,
    batch: DataBatch,
    enrichment: Enrichment = NO_ENRICHMENT,
    prefixes: dict[tuple[str, str], str] | None = None,
) -> tuple[list[str], int]:
    """The lines of every reading in ``batch``, and how many metric values could not be represented.

    A reading whose every value is unrepresentable (an integer beyond the float range) gives no line.
    ``enrichment`` adds a device's registry tags (:func:`build_enrichment`). ``prefixes``: the caller's cache of
    this gateway's ``(kind, device) -> "measurement,tags "``, kept between batches; the caller clears it when
    the enrichment changes (and gives each (site, gateway) its own).
    """
    # site and gateway come from a parsed topic, device and kind from a decoded batch, all checked against the
    # contract's patterns, which leave nothing to escape. They are escaped all the same (once per prefix, so the
    # hot path does not pay): a mistake upstream must not become a line of the sender's choosing.
    site_e = gateway_e = ""
    if prefixes is None:
        prefixes = {}
    lines: list[str] = []
    append = lines.append
    dropped = 0
    field_keys = _FIELD_KEYS
    for reading in batch.readings:
        key = (reading.kind, reading.device)
        prefix = prefixes.get(key)
        if prefix is None:
            if not site_e:
                site_e, gateway_e = escape_key(site), escape_key(gateway)
            measurement_e = escape_measurement(reading.kind)
            kind_e = escape_key(reading.kind)
            device_e = escape_key(reading.device)
            extra = enrichment.get(reading.device)
            if extra is None:
                prefix = f"{measurement_e},device={device_e},gateway={gateway_e},kind={kind_e},site={site_e} "
            else:
                base = [
                    ("device", f",device={device_e}"),
                    ("gateway", f",gateway={gateway_e}"),
                    ("kind", f",kind={kind_e}"),
                    ("site", f",site={site_e}"),
                ]
                prefix = _tag_prefix(measurement_e, base, extra) + " "
            if len(prefixes) >= PREFIX_CACHE_SIZE:
                prefixes.clear()
            prefixes[key] = prefix
        # format_contract_fields (hub.storage.lineproto), inlined: the call and its list per reading were a tenth of
        # reading_lines; values are dispatched on their type (the contract's: float, bool, int, str).
        fields: list[str] = []
        for name, value in reading.metrics.items():
            fkey = field_keys.get(name)
            if fkey is None:
                fkey = _field_key(name)
            if value.__class__ is float:  # exact type: msgspec decodes floats as float (isinstance costs more)
                if value - value == 0.0:  # finite: inf - inf and nan - nan are nan
                    fields.append(f"{fkey}={value!r}")
                else:
                    dropped += 1
            elif value is True:
                fields.append(f"{fkey}=true")
            elif value is False:
                fields.append(f"{fkey}=false")
            elif isinstance(value, str):
                if "\n" in value or "\r" in value:  # the contract refuses them; never let one end a line
                    dropped += 1
                else:
                    fields.append(f'{fkey}="{value.translate(_STRING_ESCAPES)}"')
            else:
                try:
                    fields.append(f"{fkey}={float(value)!r}")
                except OverflowError:
                    dropped += 1
        if fields:
            append(f"{prefix}{','.join(fields)} {reading.ts}")
    return lines, dropped


def gateway_state_line(site: str, gateway: str, state: State, ts_ms: int) -> str:
    """The ``gateway_state`` point of a birth or death, at ``ts_ms`` (the state's own ts, or its arrival)."""
    return line(
        GATEWAY_STATE, {"gateway": gateway, "site": site}, {"online": state.online, "session": state.session}, ts_ms
    )


def device_event_line(site: str, gateway: str, event: Event, enrichment: Enrichment = NO_ENRICHMENT) -> str:
    """The ``device_event`` point of a device health event (with the device's enrichment tags)."""
    base = [("device", event.device), ("gateway", gateway), ("site", site), ("type", event.type.value)]
    extra = enrichment.get(event.device)
    if extra is None:
        tags = format_tags(base)
    else:
        tags = "".join(text for _, text in sorted([*((k, format_tags([(k, v)])) for k, v in base), *extra]))
    return f"{escape_measurement(DEVICE_EVENT)}{tags} reason={format_value(event.reason)} {event.ts}"


class MetricCap:
    """The cardinality guard on fields: at most ``max_per_device`` distinct metric names per device.

    Every metric name is a field key InfluxDB indexes for the measurement; a device that invents names (a
    counter in the name, a firmware bug) would grow the schema without bound. Names seen first are kept; a new
    name beyond the cap is left out of the lines and reported (the pipeline quarantines the message with it).
    The names are remembered since the hub started (memory: devices x cap names at most).
    """

    def __init__(self, max_per_device: int) -> None:
        self.max_per_device = max_per_device
        self._known: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.refused_values = 0

    def check(self, site: str, gateway: str, batch: DataBatch) -> tuple[DataBatch, str]:
        """``batch`` with the names beyond the cap removed, and what was refused ('' when nothing was)."""
        devices = self._known.get((site, gateway))
        if devices is not None:
            for reading in batch.readings:
                known = devices.get(reading.device)
                if known is None or not reading.metrics.keys() <= known:
                    break
            else:
                return batch, ""
        return self._admit(site, gateway, batch)

    def _admit(self, site: str, gateway: str, batch: DataBatch) -> tuple[DataBatch, str]:
        readings: list[Reading] = []
        refused: dict[str, list[str]] = {}
        devices = self._known.setdefault((site, gateway), {})
        for reading in batch.readings:
            known = devices.setdefault(reading.device, set())
            kept: dict[str, MetricValue] = {}
            for name, value in reading.metrics.items():
                if name in known:
                    kept[name] = value
                elif len(known) < self.max_per_device:
                    known.add(name)
                    kept[name] = value
                else:
                    refused.setdefault(reading.device, []).append(name)
                    self.refused_values += 1
            if len(kept) == len(reading.metrics):
                readings.append(reading)
            elif kept:
                readings.append(msgspec.structs.replace(reading, metrics=kept))
        if not refused:
            return batch, ""
        detail = "; ".join(
            f"device {device!r} already has {self.max_per_device} metric names "
            f"(cardinality.max_metrics_per_device), refused: {', '.join(sorted(set(names)))}"
            for device, names in refused.items()
        )
        if not readings:
            return msgspec.structs.replace(batch, readings=[]), detail
        return msgspec.structs.replace(batch, readings=readings), detail
