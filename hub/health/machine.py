"""The health state machine of one gateway or device, with flap damping.

Inputs propose a *raw* state (a birth, a will, a reading, a driver event, an inactivity timeout); the machine
decides the *effective* state operators see. Without damping a link that drops every few seconds would flip
online/offline each time and open an alert each time. So (as Nagios' flap detection does):

- a raw change is taken at once, unless the entity changed ``flap_changes`` times within ``flap_window_s``
  (changes to or from ``unknown`` are not counted: they follow the gateway, which has its own machine):
  then it is **flapping**: effective state ``degraded`` with the reason ``flapping``, and further raw changes
  are only recorded;
- once the raw state has not changed for ``flap_quiet_s``, flapping ends and the effective state becomes the raw
  one with the reason of its last change.

So a flapping entity makes at most ``flap_changes`` + 1 transitions (besides those to and from ``unknown``) however
often it flaps, and then one more when it settles.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Health(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


#: The numeric code written to InfluxDB (``code`` field): higher is healthier, so ``mean(code)`` and
#: ``code = 3`` make uptime boards easy.
CODES: Final = {Health.OFFLINE: 0, Health.UNKNOWN: 1, Health.DEGRADED: 2, Health.ONLINE: 3}


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    flap_window_s: float = 300.0
    flap_changes: int = 6
    flap_quiet_s: float = 120.0


@dataclass(slots=True)
class Change:
    """An effective state change the machine decided (the monitor turns it into a transition record)."""

    old: Health
    new: Health
    reason: str


@dataclass(slots=True)
class HealthMachine:
    """One entity. Times are monotonic seconds."""

    policy: FlapPolicy
    state: Health = Health.UNKNOWN
    reason: str = "not seen yet"
    raw: Health = Health.UNKNOWN
    raw_reason: str = "not seen yet"
    raw_since: float = 0.0
    flapping: bool = False
    _changes: deque[float] = field(default_factory=deque)

    def propose(self, raw: Health, reason: str, now: float) -> Change | None:
        """A new raw observation; returns the effective change, if any."""
        if raw == self.raw:
            return None
        counted = Health.UNKNOWN not in (raw, self.raw)
        self.raw, self.raw_reason, self.raw_since = raw, reason, now
        changes = self._changes
        if counted:
            # To or from "unknown" is its gateway's doing (the hub cannot see the device), not the device flapping.
            changes.append(now)
        while changes and changes[0] < now - self.policy.flap_window_s:
            changes.popleft()
        if self.flapping:
            return None
        if len(changes) >= self.policy.flap_changes:
            self.flapping = True
            return self._set(
                Health.DEGRADED,
                f"flapping: {len(changes)} changes within {self.policy.flap_window_s:g} s "
                f"(last: {raw.value}, {reason})",
            )
        return self._set(raw, reason)

    def tick(self, now: float) -> Change | None:
        """End flapping once the raw state has been quiet long enough."""
        if not self.flapping or now - self.raw_since < self.policy.flap_quiet_s:
            return None
        self.flapping = False
        self._changes.clear()
        return self._set(self.raw, f"stable for {now - self.raw_since:.0f} s: {self.raw_reason}")

    def _set(self, new: Health, reason: str) -> Change | None:
        old = self.state
        self.reason = reason
        if new == old:
            return None
        self.state = new
        return Change(old, new, reason)
