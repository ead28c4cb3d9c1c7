"""InfluxDB line protocol, built directly as strings (no client library on the hot path).

Reference: https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/ ::

    measurement,tag_key=tag_value,... field_key=field_value,... timestamp

- measurement: escape comma and space; tag keys, tag values and field keys: escape comma, equals and space.
  A newline cannot be represented in any of them, so it is refused.
- field values: a number without suffix is a float (``3.0``; we never write the ``i`` integer suffix, because
  InfluxDB 1.x refuses a field whose type differs from what a shard already holds, so a device sending ``3``
  once and ``3.5`` later would otherwise lose data); booleans ``true``/``false``; strings in double quotes with
  ``"`` and ``\\`` escaped (a newline inside a quoted string is accepted by InfluxDB as is).
- tags are sorted by key (InfluxDB's recommendation: it is the order it stores them in, so it skips a sort).
  A tag with an empty value is left out: the line protocol cannot express it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

FieldValue = bool | int | float | str


class LineProtocolError(ValueError):
    """A value that the line protocol cannot represent (a newline in a key, an infinite number...)."""


_MEASUREMENT_ESCAPES: Final = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    if not name or "\n" in name:
        raise LineProtocolError(f"measurement {name!r} is empty or contains a newline")
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(key: str) -> str:
    """Escape a tag key, a tag value or a field key."""
    if "\n" in key:
        raise LineProtocolError(f"key or tag value {key!r} contains a newline")
    return key.translate(_KEY_ESCAPES)


def format_value(value: FieldValue) -> str:
    """Format one field value: numbers as floats, bools as ``true``/``false``, strings quoted and escaped."""
    # bool before int: bool is a subclass of int.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return '"' + value.translate(_STRING_ESCAPES) + '"'
    try:
        number = float(value)
    except OverflowError as exc:
        raise LineProtocolError(f"number {value} is too large for a float field") from exc
    if not math.isfinite(number):
        raise LineProtocolError(f"number {value!r} is not finite")
    return repr(number)


def format_tags(tags: Iterable[tuple[str, str]]) -> str:
    """``,k=v,k=v`` for the tags sorted by key, leaving out empty values ('' when there are none)."""
    return "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags) if v)


def format_fields(fields: Mapping[str, FieldValue]) -> tuple[str, list[str]]:
    """``k=v,k=v`` in the given order, and the keys whose value could not be represented (left out)."""
    parts: list[str] = []
    dropped: list[str] = []
    for key, value in fields.items():
        try:
            parts.append(f"{escape_key(key)}={format_value(value)}")
        except LineProtocolError:
            dropped.append(key)
    return ",".join(parts), dropped


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], ts_ms: int) -> str:
    """One complete line; raise :class:`LineProtocolError` if no field can be represented."""
    field_text, dropped = format_fields(fields)
    if not field_text:
        raise LineProtocolError(f"no representable field in {measurement!r} (left out: {', '.join(dropped)})")
    return f"{escape_measurement(measurement)}{format_tags(tags.items())} {field_text} {int(ts_ms)}"


def format_contract_fields(fields: Mapping[str, FieldValue]) -> tuple[str, int]:
    """:func:`format_fields` for metrics the wire contract has checked, on the hot path; and how many were left out.

    The contract's ``METRIC_PATTERN`` (``[a-z][a-z0-9_]*``) leaves nothing to escape in a metric name, so names
    are used as they are, and values are dispatched on their exact type (profiled: escaping and the generic
    formatting were a fifth of the hub's time).
    """
    parts: list[str] = []
    dropped = 0
    for key, value in fields.items():
        if isinstance(value, float):
            if value - value == 0.0:  # finite: inf - inf and nan - nan are nan
                parts.append(f"{key}={value!r}")
            else:
                dropped += 1
        elif isinstance(value, str):
            parts.append(f'{key}="{value.translate(_STRING_ESCAPES)}"')
        elif value is True:
            parts.append(f"{key}=true")
        elif value is False:
            parts.append(f"{key}=false")
        else:
            try:
                parts.append(f"{key}={float(value)!r}")
            except OverflowError:
                dropped += 1
    return ",".join(parts), dropped
