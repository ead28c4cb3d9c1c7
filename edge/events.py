"""Device health events on their way to the broker: a small bounded queue, peeked and removed once sent.

The scheduler puts a :class:`DeviceEvent` on each state change of a device (down, up, degraded: its problems,
worded by :func:`problems_reason`); the publisher stamps it with the current session and publishes it as a
:class:`wire.v1.Event`. Events wait here while the broker is unreachable; beyond ``max_events`` the oldest are
dropped (and counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from edge.stats import EdgeStats
from wire.v1 import Event, EventType, clean_text

log = logging.getLogger(__name__)

#: Events held while the broker is unreachable (a few per device and outage).
DEFAULT_MAX_EVENTS: Final = 10_000
#: ``wire.v1.Event.reason`` is at most this long.
MAX_REASON: Final = 512
#: Each problem's detail in a ``device_degraded`` reason is cut to this, so that every raised problem's name fits
#: in :data:`MAX_REASON` (five camera problems: 5 x (16 + 2 + 96) + 4 x 2 < 600, and their details run ~40-90).
MAX_PROBLEM_DETAIL: Final = 96
#: Between two problems in a ``device_degraded`` reason; made ", " inside a detail, so the reason splits back.
PROBLEM_SEPARATOR: Final = "; "


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device's state change, as observed (``ts_ms`` is when)."""

    device: str
    type: EventType
    ts_ms: int
    reason: str = ""

    def to_wire(self, session: str) -> Event:
        reason = clean_text(self.reason, MAX_REASON)
        return Event(session=session, device=self.device, type=self.type, ts=self.ts_ms, reason=reason)


def problems_reason(problems: Mapping[str, str]) -> str:
    """The ``reason`` of a ``device_degraded`` event: the raised problems sorted by name, each
    ``<name>: <detail>``, joined by ``"; "`` (``image_black: 100% of the picture black (limit 98%); view_changed:
    ...``), at most :data:`MAX_REASON` characters in all (cut with ``...``).

    A contract with the hub's readers (docs/protocol.md, "event"): each detail is cleaned
    (:func:`wire.v1.clean_text`), cut to :data:`MAX_PROBLEM_DETAIL` characters, and any ``;`` in it made ``,``,
    so splitting on ``"; "`` and then at the first ``": "`` gives the problems back. A problem without a detail
    gets ``raised``.
    """
    parts = []
    for name in sorted(problems):
        detail = clean_text(problems[name].replace(";", ","), MAX_PROBLEM_DETAIL).strip() or "raised"
        parts.append(f"{clean_text(name, MAX_PROBLEM_DETAIL)}: {detail}")
    return clean_text(PROBLEM_SEPARATOR.join(parts), MAX_REASON)


class EventQueue:
    """FIFO of :class:`DeviceEvent`; :meth:`first` then :meth:`remove_first` once published."""

    def __init__(self, stats: EdgeStats, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self._stats = stats
        self._items: deque[DeviceEvent] = deque()
        self._max = max_events
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: DeviceEvent) -> None:
        self._items.append(event)
        if len(self._items) > self._max:
            dropped = self._items.popleft()
            self._stats.events_dropped += 1
            log.debug("event queue full: dropped %s of %s", dropped.type, dropped.device)
        self._changed.set()

    def items(self) -> list[DeviceEvent]:
        """A copy of what is queued (oldest first)."""
        return list(self._items)

    def first(self) -> DeviceEvent | None:
        return self._items[0] if self._items else None

    def remove_first(self, event: DeviceEvent) -> None:
        """Remove ``event`` if it is still the first (it may have been dropped meanwhile)."""
        if self._items and self._items[0] is event:
            self._items.popleft()

    async def wait(self) -> None:
        """Until at least one event is queued."""
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
