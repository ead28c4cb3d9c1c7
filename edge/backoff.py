"""Capped exponential backoff with jitter: the one retry policy of the agent (devices and the broker link)."""

from __future__ import annotations

import random

#: The jitter source of every :class:`Backoff` not given its own (a ``random.Random`` holds ~2.5 KB of state:
#: one per device would be a per-device copy of something no device needs for itself).
_SHARED_RNG = random.Random()


class Backoff:
    """Delays for successive failures: the n-th delay lies in ``[d/2, d]`` with ``d = min(cap, base * 2**(n-1))``.

    Half of each delay is random ("equal jitter"), so devices and gateways that failed together do not retry
    in lockstep, while a delay never drops below half its nominal value. :meth:`reset` after a success.
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if base_s <= 0:
            raise ValueError("base_s must be > 0")
        if cap_s < base_s:
            raise ValueError("cap_s must be >= base_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng or _SHARED_RNG
        self.failures = 0

    def nominal(self, failures: int) -> float:
        """The upper bound of the delay after ``failures`` consecutive failures (``failures >= 1``)."""
        # Capping the exponent keeps 2**n finite however long a device stays down.
        return min(self.cap_s, self.base_s * 2.0 ** min(max(failures, 1) - 1, 64))

    def next(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = self.nominal(self.failures)
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
