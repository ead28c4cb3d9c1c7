"""How wire messages become InfluxDB lines: the schema of ``docs/storage.md``, in one place.

- ``data``: one line per reading; measurement = ``reading.kind``; tags ``device``, ``gateway``, ``kind``, ``site``
  (an allow-list, never free text); fields = the metrics; timestamp = ``reading.ts`` in ms.
- ``state``: measurement ``gateway_state``, tags ``gateway``, ``site``, fields ``online``, ``session``.
- ``event``: measurement ``device_event``, tags ``device``, ``gateway``, ``site``, ``type``, field ``reason``.

``site`` and ``gateway`` always come from the topic (the broker's ACL guarantees them), never from the payload.
"""

from __future__ import annotations

from typing import Final

from hub.lineproto import escape_key, escape_measurement, format_fields, format_tags, format_value, line
from wire.v1 import DataBatch, Event, State

GATEWAY_STATE: Final = "gateway_state"
DEVICE_EVENT: Final = "device_event"


def reading_lines(site: str, gateway: str, batch: DataBatch) -> tuple[list[str], int]:
    """The lines of every reading in ``batch``, and how many metric values could not be represented.

    A reading whose every value is unrepresentable (an integer beyond the float range) gives no line.
    """
    site_e = escape_key(site)
    gateway_e = escape_key(gateway)
    # Tag keys in sorted order: device, gateway, kind, site. The prefix repeats for every reading of a
    # device in the batch, so it is built once per (kind, device).
    prefixes: dict[tuple[str, str], str] = {}
    lines: list[str] = []
    dropped = 0
    for reading in batch.readings:
        key = (reading.kind, reading.device)
        prefix = prefixes.get(key)
        if prefix is None:
            kind_e = escape_key(reading.kind)
            prefix = (
                f"{escape_measurement(reading.kind)},device={escape_key(reading.device)},"
                f"gateway={gateway_e},kind={kind_e},site={site_e} "
            )
            prefixes[key] = prefix
        fields, bad = format_fields(reading.metrics)
        dropped += len(bad)
        if fields:
            lines.append(f"{prefix}{fields} {reading.ts}")
    return lines, dropped


def gateway_state_line(site: str, gateway: str, state: State, ts_ms: int) -> str:
    """The ``gateway_state`` point of a birth or death, at ``ts_ms`` (the state's own ts, or its arrival)."""
    return line(
        GATEWAY_STATE, {"gateway": gateway, "site": site}, {"online": state.online, "session": state.session}, ts_ms
    )


def device_event_line(site: str, gateway: str, event: Event) -> str:
    """The ``device_event`` point of a device health event."""
    tags = format_tags([("device", event.device), ("gateway", gateway), ("site", site), ("type", event.type.value)])
    return f"{escape_measurement(DEVICE_EVENT)}{tags} reason={format_value(event.reason)} {event.ts}"
