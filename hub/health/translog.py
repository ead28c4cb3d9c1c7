"""The operators' log of health transitions: each at DEBUG, at INFO a summary at most once a second.

A broker restart makes every gateway and device of the city change state within seconds (20,000 of them for
5,000 gateways of 4 devices): a line each at INFO was a log storm for the operators and, formatted on the event
loop, a sixth of its time in that storm. Each transition is kept anyway in the ``health_transitions`` table and
InfluxDB (:mod:`hub.health.store`) and goes to the live event stream (``hub/routes/eventhub.py``); the log says
that it happens and how much:

- the first transition after a quiet second is logged at INFO as it is (a single device going offline in a calm
  city is worth its own line, as before);
- those that follow within the window are counted by new state, and at the window's end one INFO line sums them
  up (``health: 4,812 transitions in 1.0 s (1,203 gateways, 3,609 devices): 4,800 online, 12 degraded``); the
  next window starts there, so a storm gives one line a second;
- a window that ends with nothing counted ends the busy period: the next transition is logged on its own again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Final

#: At most one summary line per this many seconds while transitions happen.
SUMMARY_WINDOW_S: Final = 1.0


class TransitionLog:
    """Logs transitions to ``logger`` as the module says; ``clock`` is monotonic seconds."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], window_s: float = SUMMARY_WINDOW_S) -> None:
        self._log = logger
        self._clock = clock
        self._window_s = window_s
        self._started: float | None = None
        """Start of the current window; ``None`` while quiet."""
        self._states: Counter[str] = Counter()
        self._gateways = 0
        self._devices = 0

    def record(self, entity: str, name: str, old: str, new: str, reason: str) -> None:
        """One transition of ``entity`` (``gateway`` or ``device``) ``name``."""
        now = self._clock()
        self.flush(now)
        if self._started is None:
            self._started = now
            self._log.info("%s %s: %s -> %s (%s)", entity, name, old, new, reason)
            return
        self._log.debug("%s %s: %s -> %s (%s)", entity, name, old, new, reason)
        self._states[new] += 1
        if entity == "gateway":
            self._gateways += 1
        else:
            self._devices += 1

    def flush(self, now: float | None = None) -> None:
        """Ends the window if it is over: its summary, if anything was counted (the health clock calls this on
        each tick, so the last summary of a storm comes within a tick of the window's end)."""
        if self._started is None:
            return
        now = self._clock() if now is None else now
        elapsed = now - self._started
        if elapsed < self._window_s:
            return
        if not self._states:
            self._started = None
            return
        total = self._gateways + self._devices
        states = ", ".join(f"{n:,} {state}" for state, n in self._states.most_common())
        self._log.info(
            "health: %s transitions in %.1f s (%s gateways, %s devices): %s",
            f"{total:,}",
            elapsed,
            f"{self._gateways:,}",
            f"{self._devices:,}",
            states,
        )
        self._states.clear()
        self._gateways = self._devices = 0
        self._started = now
