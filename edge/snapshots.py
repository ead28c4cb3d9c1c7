"""Camera snapshots on their way out: which pictures leave the gateway, and the latest per camera waiting to go.

A camera's image checks keep one JPEG each (:class:`devices.driver.Frame`, via
:class:`devices.driver.FrameTaking`); after each poll the device's poller offers them here. A frame becomes a
snapshot (:class:`wire.v1.Snapshot`) when:

- its check raised a problem, or cleared one while others stay raised: trigger ``problem`` (``problems`` names
  those raised now);
- its check cleared the last raised problem: trigger ``cleared``;
- otherwise, when the camera's last snapshot is ``interval_s`` old or more (or it has none yet): ``periodic``.
  The frames come on the image checks' own schedule, a check a little earlier or later than its interval, so
  "old enough" allows :data:`PERIODIC_SLACK` of the interval: with checks every 300 s and snapshots every 900 s,
  the check at ~900 s takes one, not the one at 1,200 s.

Any snapshot restarts the camera's periodic clock (on the frames' own times). A frame that is not a whole JPEG of
1 to :data:`wire.v1.MAX_SNAPSHOT_BYTES` bytes never goes (``snapshots_refused``, logged once per camera): the
camera's ``snapshot_quality`` is the knob, the agent does not re-encode.

Snapshots never enter the readings' outbox: a picture must not crowd out readings on disk or on the link. The
publisher sends them on the ``snapshot`` channel while connected. While it is not, only the **latest** snapshot of
each camera waits, in memory (at most one JPEG per camera, 96 KiB each), and goes after the reconnect: it is the
camera's picture as it is now, which is what an operator wants after an outage; a waiting one replaced by a newer
one is counted (``snapshots_replaced``). None are written to disk, and those waiting at shutdown are lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from devices.driver import Frame
from edge.config import SnapshotConfig
from edge.stats import EdgeStats
from wire.v1 import MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_PROBLEMS, Snapshot, SnapshotTrigger

log = logging.getLogger(__name__)

_SOI: Final = b"\xff\xd8"
_EOI: Final = b"\xff\xd9"
#: The share of ``interval_s`` a periodic snapshot may come early (see the module docstring).
PERIODIC_SLACK: Final = 0.05
#: Width and height as the contract bounds them.
_MAX_SIDE: Final = 65_535


@dataclass(frozen=True, slots=True)
class PendingSnapshot:
    """A snapshot decided on and not yet sent; :meth:`to_wire` stamps it with the session."""

    device: str
    ts_ms: int
    jpeg: bytes
    trigger: SnapshotTrigger
    problems: tuple[str, ...]
    width: int | None
    height: int | None

    def to_wire(self, session: str) -> Snapshot:
        return Snapshot(
            session=session,
            device=self.device,
            ts=self.ts_ms,
            jpeg=self.jpeg,
            trigger=self.trigger,
            problems=list(self.problems),
            width=self.width,
            height=self.height,
        )


def trigger_of(frame: Frame, last_ts_ms: int | None, interval_s: float) -> SnapshotTrigger | None:
    """Why ``frame`` goes as a snapshot (see the module docstring), or None when it does not. ``last_ts_ms``:
    when the camera's last snapshot was taken (None: none yet)."""
    if frame.raised or (frame.cleared and frame.problems):
        return SnapshotTrigger.PROBLEM
    if frame.cleared:
        return SnapshotTrigger.CLEARED
    if interval_s <= 0:
        return None
    if last_ts_ms is None or frame.ts_ms - last_ts_ms >= interval_s * 1000 * (1 - PERIODIC_SLACK):
        return SnapshotTrigger.PERIODIC
    return None


def refusal(frame: Frame) -> str:
    """Why ``frame`` cannot go as a snapshot, or "" when it can: the contract's bounds, checked at the edge."""
    size = len(frame.jpeg)
    if size > MAX_SNAPSHOT_BYTES:
        return f"its JPEG is {size} bytes, more than a snapshot may carry ({MAX_SNAPSHOT_BYTES})"
    if size < 4 or not frame.jpeg.startswith(_SOI) or not frame.jpeg.endswith(_EOI):
        return f"not a whole JPEG ({size} bytes)"
    return ""


def _side(value: int | None) -> int | None:
    return value if value is not None and 1 <= value <= _MAX_SIDE else None


class SnapshotBox:
    """Decides which frames go, and holds the latest per camera until the publisher sends it."""

    def __init__(self, config: SnapshotConfig, stats: EdgeStats) -> None:
        self._interval_s = config.interval_s
        self._stats = stats
        #: When each camera's last snapshot was taken (its frame's time).
        self._last_ts: dict[str, int] = {}
        #: The snapshot waiting to be sent, per camera (insertion order: the oldest waiting goes first).
        self._pending: dict[str, PendingSnapshot] = {}
        #: Cameras whose refused frames were logged (once each, until one goes again).
        self._refusal_logged: set[str] = set()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, device: str, frames: Sequence[Frame]) -> None:
        """Take a camera's new frames (oldest first): those that go wait for the publisher."""
        for frame in frames:
            trigger = trigger_of(frame, self._last_ts.get(device), self._interval_s)
            if trigger is None:
                continue
            why = refusal(frame)
            if why:
                self._stats.snapshots_refused += 1
                if device not in self._refusal_logged:
                    self._refusal_logged.add(device)
                    log.warning("camera %s: a %s snapshot not sent: %s", device, trigger.value, why)
                continue
            self._refusal_logged.discard(device)
            self._last_ts[device] = frame.ts_ms
            if self._pending.pop(device, None) is not None:
                self._stats.snapshots_replaced += 1
            self._pending[device] = PendingSnapshot(
                device=device,
                ts_ms=frame.ts_ms,
                jpeg=frame.jpeg,
                trigger=trigger,
                problems=tuple(sorted(frame.problems))[:MAX_SNAPSHOT_PROBLEMS],
                width=_side(frame.width),
                height=_side(frame.height),
            )
            self._changed.set()

    def forget(self, device: str) -> None:
        """The device was removed: drop what waits for it and its clock."""
        self._pending.pop(device, None)
        self._last_ts.pop(device, None)

    def first(self) -> PendingSnapshot | None:
        """The snapshot that has waited longest."""
        return next(iter(self._pending.values()), None)

    def remove(self, snapshot: PendingSnapshot) -> None:
        """Remove ``snapshot`` once sent, unless a newer one of its camera replaced it meanwhile."""
        if self._pending.get(snapshot.device) is snapshot:
            del self._pending[snapshot.device]

    async def wait(self) -> None:
        """Until a snapshot waits."""
        while not self._pending:
            self._changed.clear()
            await self._changed.wait()
