"""Broker sessions: a new id on every connect, and the birth / will / death messages that carry it.

The will is registered with the broker at connect time; it has the same session id as the birth that
follows, so a will delivered late (after the gateway reconnected with a new session) is recognised as stale
(see ``wire.v1.State``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from devices.driver import now_ms
from wire.v1 import DeviceInfo, State, clean_text

#: ``State.reason`` of the Last Will: the broker publishes it when the connection ends without DISCONNECT.
REASON_CONNECTION_LOST = "connection lost"
#: ``State.reason`` of a clean shutdown.
REASON_SHUTDOWN = "shutdown"


def new_session_id() -> str:
    """16 URL-safe characters (12 random bytes), matching ``wire.v1.SessionId``."""
    return secrets.token_urlsafe(12)


@dataclass
class Session:
    """One connection to the broker: its id, when it started (wall clock, ms) and its data sequence.

    A session starts when its connect attempt starts; the publisher fixes the outbox's backlog at that moment
    (everything queued then is sent marked ``replay``, see :mod:`edge.outbox_replay`), so readings taken during
    the attempt itself, like the first polls of a starting agent racing its first connect, are not a replay.
    """

    id: str = field(default_factory=new_session_id)
    started_ms: int = field(default_factory=now_ms)
    last_seq: int = 0
    births: int = 0
    """Births made for this session: the first at connect, then one per change of devices or rebirth request."""

    def next_seq(self) -> int:
        """The ``seq`` of the next data message: 1, 2, 3... within this session."""
        self.last_seq += 1
        return self.last_seq

    def birth(self, agent: str, devices: Sequence[DeviceInfo], keepalive_s: int | None = None) -> State:
        """``keepalive_s`` (the connection's MQTT keep-alive) promises a ``data`` message at least that often."""
        self.births += 1
        return State(
            online=True, session=self.id, ts=now_ms(), agent=agent, devices=list(devices), keepalive_s=keepalive_s
        )

    def will(self) -> State:
        # No ts: the will is written at connect time, the broker publishes it whenever the link dies.
        return State(online=False, session=self.id, reason=REASON_CONNECTION_LOST)

    def death(self, reason: str = REASON_SHUTDOWN) -> State:
        return State(online=False, session=self.id, ts=now_ms(), reason=clean_text(reason, 256))
