"""A clock the unit test sets by hand: the hub's components take ``clock: Callable[[], float]`` (seconds), and a
test moves ``now`` instead of sleeping."""

from __future__ import annotations


class Clock:
    """Reads ``now`` (seconds, 1000.0 unless given), which the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
