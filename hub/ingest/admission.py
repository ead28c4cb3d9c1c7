"""What a gateway may write: the hub's checks on a decoded message before anything of it is stored or observed.

A site box can be captured, so whatever its account publishes is hostile until checked. The contract
(:mod:`wire.v1`) has already checked shapes, sizes and patterns; admission checks what only the hub knows:

- a device belongs to one gateway (the registry's owner, else the first gateway that announced it); births,
  data and events about a device owned by another gateway are refused (``foreign_device``);
- data for a device the gateway's current birth did not announce is refused (``unannounced_device``), and the
  hub asks that gateway for a new birth;
- measurements the hub writes itself cannot be a reading's kind (``hub_owned_kind``), and kinds outside the
  configured set are refused (``unknown_kind``);
- the type of each (kind, metric) is fixed by its first stored value; a value of another type is refused on its
  own (``field_type``), so InfluxDB never refuses a whole batch of other gateways' data for a type conflict;
- timestamps outside [now - max replay age, now + max skew] are refused (``clock_skew``);
- new device ids per gateway are rate-limited (``device_rate``).

Each refusal is reported to the refusal observers (the security alert, the rebirth request, the gateway's
``clock_skew`` health problem) and counted per gateway; the message is dead-lettered with the refusals named,
and what was admitted is stored and observed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class RefusalReason(StrEnum):
    """Why part of a gateway's message was refused."""

    FOREIGN_DEVICE = "foreign_device"
    UNANNOUNCED_DEVICE = "unannounced_device"
    HUB_OWNED_KIND = "hub_owned_kind"
    UNKNOWN_KIND = "unknown_kind"
    FIELD_TYPE = "field_type"
    CLOCK_SKEW = "clock_skew"
    DEVICE_RATE = "device_rate"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused part of a message from ``site``/``gateway``: about ``device`` (``""`` for the gateway)."""

    site: str
    gateway: str
    reason: RefusalReason
    device: str
    detail: str


RefusalObserver = Callable[[Refusal], None]
"""Called once per refusal, in the event loop; must be cheap and must not raise."""
