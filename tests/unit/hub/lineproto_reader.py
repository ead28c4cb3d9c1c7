"""An independent reader of InfluxDB line protocol, written from the reference, not from hub.storage.lineproto.

https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/ : one point per line
(``\\n``); ``measurement[,tag=value...] field=value[,field=value...] [timestamp]``; in measurements a comma
and a space are escaped with a backslash, in tag keys, tag values and field keys a comma, an equals sign and a
space; string field values are double-quoted with ``"`` and ``\\`` escaped; ``true``/``false``; a number
is a float unless it ends in ``i``. Anything else makes :func:`read` raise ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass

Value = float | int | bool | str


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, Value]
    ts: int | None


def _token(text: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to an unescaped character of ``stops``; return the unescaped text and the index of the stop."""
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    return "".join(out), i


def _value(text: str, i: int) -> tuple[Value, int]:
    if text[i] == '"':
        out: list[str] = []
        i += 1
        while True:
            if i >= len(text):
                raise ValueError("unterminated string")
            c = text[i]
            if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                out.append(text[i + 1])
                i += 2
            elif c == '"':
                return "".join(out), i + 1
            else:
                out.append(c)
                i += 1
    j = i
    while j < len(text) and text[j] not in ", ":
        j += 1
    raw = text[i:j]
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True, j
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False, j
    if raw.endswith("i"):
        return int(raw[:-1]), j
    number = float(raw)  # ValueError for anything else
    return number, j


def read_line(text: str) -> Point:
    measurement, i = _token(text, 0, ", ", ", ")
    if not measurement:
        raise ValueError(f"no measurement in {text!r}")
    tags: dict[str, str] = {}
    while i < len(text) and text[i] == ",":
        key, i = _token(text, i + 1, "=", ",= ")
        if i >= len(text) or text[i] != "=":
            raise ValueError(f"tag without '=' in {text!r}")
        value, i = _token(text, i + 1, ", ", ",= ")
        if not key or not value or key in tags:
            raise ValueError(f"empty or repeated tag in {text!r}")
        tags[key] = value
    if i >= len(text) or text[i] != " ":
        raise ValueError(f"no fields in {text!r}")
    fields: dict[str, Value] = {}
    i += 1
    while True:
        key, i = _token(text, i, "=", ",= ")
        if i >= len(text) or not key or key in fields:
            raise ValueError(f"bad field in {text!r}")
        fields[key], i = _value(text, i + 1)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        break
    ts: int | None = None
    if i < len(text):
        if text[i] != " ":
            raise ValueError(f"junk after the fields in {text!r}")
        ts = int(text[i + 1 :])
    return Point(measurement, tags, fields, ts)


def read(body: str) -> list[Point]:
    """Every point of a body, one per line; ValueError for a line that does not parse."""
    return [read_line(line) for line in body.split("\n") if line]
