"""Per-gateway bookkeeping of the intake: the current session state and the data sequence numbers.

Both are in-memory maps bounded by the number of gateways (site and gateway IDs come from topics that the
broker's ACLs restrict to provisioned gateways).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wire.v1 import DeviceInfo, State


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What the hub currently believes about one gateway."""

    online: bool
    session: str
    ts_ms: int
    """The state's own ``ts`` if it has one (a birth), else when the hub received it (a will has none)."""
    agent: str = ""
    devices: tuple[DeviceInfo, ...] = ()
    reason: str = ""


class GatewayStates:
    """gateway -> current :class:`GatewayState`, applying births and deaths.

    A death whose ``session`` differs from the current session is a late Last Will of an older connection
    (the gateway has reconnected since): it is ignored, so it never marks the newer session offline
    (docs/protocol.md, ``state``).
    """

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], GatewayState] = {}

    def apply(self, site: str, gateway: str, state: State, received_ms: int) -> bool:
        """Apply a state message; return False if it was ignored as stale."""
        key = (site, gateway)
        current = self._states.get(key)
        if not state.online and current is not None and current.session != state.session:
            return False
        self._states[key] = GatewayState(
            online=state.online,
            session=state.session,
            ts_ms=state.ts if state.ts is not None else received_ms,
            agent=state.agent,
            devices=tuple(state.devices) if state.online else (current.devices if current else ()),
            reason=state.reason,
        )
        return True

    def get(self, site: str, gateway: str) -> GatewayState | None:
        return self._states.get((site, gateway))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``"site/gateway" -> {online, session, ts_ms, devices}`` for the API."""
        return {
            f"{site}/{gateway}": {
                "online": s.online,
                "session": s.session,
                "ts_ms": s.ts_ms,
                "agent": s.agent,
                "devices": len(s.devices),
                "reason": s.reason,
            }
            for (site, gateway), s in sorted(self._states.items())
        }

    @property
    def online_count(self) -> int:
        return sum(1 for s in self._states.values() if s.online)

    def __len__(self) -> int:
        return len(self._states)


@dataclass(slots=True)
class _SeqState:
    session: str
    last: int


@dataclass(slots=True)
class SeqTracker:
    """Counts gaps in the ``seq`` of data batches, per gateway and session.

    Within one session ``seq`` goes up by one per message, so a jump from 4 to 7 means 2 messages are missing.
    A new session starts counting afresh (the hub cannot know what it missed before it first saw a session).
    A ``seq`` at or below the last one is a repeat (QoS 1 redelivery, or a replay sent late): counted, and it
    does not move the last seen number back.
    """

    gaps: dict[str, int] = field(default_factory=dict)
    """``"site/gateway"`` -> messages missing so far."""
    repeats: int = 0
    _last: dict[tuple[str, str], _SeqState] = field(default_factory=dict)

    def observe(self, site: str, gateway: str, session: str, seq: int) -> int:
        """Record one data batch; return how many messages are missing just before it (0 if none)."""
        key = (site, gateway)
        state = self._last.get(key)
        if state is None or state.session != session:
            self._last[key] = _SeqState(session, seq)
            return 0
        if seq <= state.last:
            self.repeats += 1
            return 0
        gap = seq - state.last - 1
        state.last = seq
        if gap:
            name = f"{site}/{gateway}"
            self.gaps[name] = self.gaps.get(name, 0) + gap
        return gap

    @property
    def total_gaps(self) -> int:
        return sum(self.gaps.values())
