"""How config problems are worded: ``<source>: devices[i] (id 'x'): <field>: <message>``, one line each."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

#: Values of these fields are never echoed in an error message.
SECRET_FIELDS: Final = frozenset({"password", "token", "secret", "community"})
#: The ``user:password@`` (or ``user@``) part of a URL: removed from every message, whatever the field (a stream
#: URL with the camera's account in it is not a secret field, but the password in it is a secret).
_URL_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def without_url_credentials(text: str) -> str:
    """``text`` with the userinfo of every URL in it removed (``rtsp://admin:pin@cam/s`` -> ``rtsp://cam/s``)."""
    return _URL_USERINFO.sub(r"\1", text)


def device_label(index: int, device_id: str | None) -> str:
    """``devices[1] (id 'aq-2')``, or ``devices[1]`` when the entry has no usable id."""
    return f"devices[{index}] (id {device_id!r})" if device_id else f"devices[{index}]"


def dotted(loc: Sequence[str | int]) -> str:
    """``('options', 'port')`` -> ``options.port``; ``('a', 0, 'b')`` -> ``a[0].b``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def pydantic_message(error: Any) -> str:
    """The message of one pydantic error (``ValidationError.errors()`` item), with the bad value if harmless."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (not allowed)"
    if kind == "missing":
        return "missing (required)"
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = error.get("loc") or ()
    value = error.get("input")
    if loc and str(loc[-1]) not in SECRET_FIELDS and isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    return without_url_credentials(message)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one device entry."""

    index: int
    device_id: str | None
    field: str | None
    message: str

    def render(self, source: str) -> str:
        parts = [source, device_label(self.index, self.device_id), self.field or "", self.message]
        return without_url_credentials(": ".join(p for p in parts if p))


def plain_tcp_to_remote_broker(host: str) -> str:
    """The problem of a broker off this machine reached without TLS, naming the field that fixes it."""
    return (
        f"broker.tls is off for the broker {host!r}, which is not on loopback: turn broker.tls on (the gateway's "
        "password and data would cross the network in the clear), or set broker.allow_plain_tcp for a private "
        "network"
    )


def plain_tcp_warning(host: str) -> str:
    """What the agent logs at start when ``broker.allow_plain_tcp`` lets it reach a remote broker without TLS."""
    return (
        f"plain TCP to the broker {host!r}, which is not on loopback (broker.allow_plain_tcp): the gateway's "
        "password and data cross the network in the clear"
    )
