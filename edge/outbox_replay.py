"""What the publisher sends next: live readings first, the backlog under a rate limit.

Ordering, and why it is safe: both lanes of the outbox are FIFO by put order, and a device's readings are put
in sampling order, so within each lane every device's readings reach the hub in order (``seq`` and sample
timestamps rising). The backlog holds only readings taken before the current session started, so each of its
readings is older than every live one of the same device: interleaving the lanes never lets a stored point
change, and InfluxDB orders points by their sampling ``ts`` (which a duplicate keeps: it collapses). The hub
sees the backlog of every device in order, and every reading arrives.

A live batch goes out as soon as it is full (``max_batch``) or its oldest reading has waited ``max_delay_s``;
between live batches, the backlog goes out in batches as the rate limit allows. The limit is a token bucket of
``rate`` readings per second holding at most :func:`burst` tokens, so a 10-minute backlog is sent as a steady
stream instead of a flood that would starve the live readings of a thin uplink. ``rate == 0`` lifts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from edge.outbox import Lane

#: The bucket holds at most this many seconds' worth of tokens (so batches go out a few times a second).
BURST_S: Final = 0.25


def burst(rate: float, max_batch: int) -> int:
    """Tokens the bucket holds at most: a quarter second of ``rate``, at least 1, at most one batch."""
    if rate <= 0:
        return max_batch
    return max(1, min(max_batch, math.floor(rate * BURST_S)))


class ReplayLimiter:
    """A token bucket of ``rate`` readings per second (``0``: unlimited); starts full."""

    def __init__(self, rate: float, max_batch: int, now: float) -> None:
        self.rate = rate
        self.capacity = burst(rate, max_batch)
        self._tokens = float(self.capacity)
        self._at = now

    def available(self, now: float) -> float:
        if self.rate <= 0:
            return math.inf
        self._tokens = min(float(self.capacity), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def take(self, count: int, now: float) -> None:
        if self.rate > 0:
            self.available(now)
            self._tokens -= count

    def wait_s(self, want: int, now: float) -> float:
        """Seconds until ``want`` tokens are there (0 when they are)."""
        missing = min(want, self.capacity) - self.available(now)
        return 0.0 if missing <= 0 else missing / self.rate


@dataclass(frozen=True, slots=True)
class Step:
    """Send up to ``limit`` readings of ``lane`` now, or (``lane is None``) wait up to ``wait_s`` (None: until
    something is put)."""

    lane: Lane | None
    limit: int = 0
    wait_s: float | None = None


def next_step(
    *,
    live: int,
    live_waited_s: float,
    backlog: int,
    limiter: ReplayLimiter,
    max_batch: int,
    max_delay_s: float,
    now: float,
) -> Step:
    """The publisher's next move (see the module docstring)."""
    if live >= max_batch or (live > 0 and live_waited_s >= max_delay_s):
        return Step(Lane.LIVE, max_batch)
    waits: list[float] = []
    if live > 0:
        waits.append(max_delay_s - live_waited_s)
    if backlog > 0:
        want = min(backlog, max_batch, limiter.capacity)
        tokens = limiter.available(now)
        if tokens >= want:
            return Step(Lane.BACKLOG, min(backlog, max_batch, int(min(tokens, max_batch))))
        waits.append(limiter.wait_s(want, now))
    return Step(None, wait_s=min(waits) if waits else None)
