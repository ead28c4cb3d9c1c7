"""Messages the hub cannot store: kept in a bounded in-memory ring, counted by kind, logged once per kind.

The persistent quarantine comes later; it will take :class:`DeadLetter` records from the same place
(:meth:`DeadLetterRing.add`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

MAX_ERROR_TEXT: Final = 1024


class DeadLetterKind(StrEnum):
    """Why a message was dead-lettered."""

    BAD_TOPIC = "bad_topic"
    """Not a v1 topic (wrong root, unknown channel, invalid site/gateway ID)."""
    MALFORMED = "malformed"
    """Not JSON."""
    CONTRACT = "contract"
    """JSON that violates the v1 contract (missing field, wrong type, ID pattern, limits)."""
    REJECTED = "rejected"
    """InfluxDB refused its lines (HTTP 400/413: field type conflict, unparsable line, too large)."""
    UNREPRESENTABLE = "unrepresentable"
    """No value of the message can be written (for example integers beyond the float range)."""
    INTERNAL = "internal"
    """The hub failed on it (a bug): kept here with the error, and logged with its traceback."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused message: where it came from, when, why, and the start of its payload."""

    topic: str
    received_ms: int
    kind: DeadLetterKind
    error: str
    payload: str
    """The first ``payload_bytes`` of the payload, decoded as UTF-8 with replacement characters."""
    payload_size: int


class DeadLetterRing:
    """The last ``keep`` dead letters, newest last; older ones fall off."""

    def __init__(self, keep: int, payload_bytes: int) -> None:
        self._items: deque[DeadLetter] = deque(maxlen=keep)
        self._payload_bytes = payload_bytes
        self.total = 0

    def add(self, topic: str, payload: bytes, kind: DeadLetterKind, error: str, received_ms: int) -> DeadLetter:
        letter = DeadLetter(
            topic=topic,
            received_ms=received_ms,
            kind=kind,
            error=error[:MAX_ERROR_TEXT],
            payload=payload[: self._payload_bytes].decode("utf-8", errors="replace"),
            payload_size=len(payload),
        )
        self._items.append(letter)
        self.total += 1
        return letter

    def latest(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, newest first."""
        if limit <= 0:
            return []
        items = list(self._items)[-limit:]
        items.reverse()
        return items

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _KindLogState:
    last_logged: float
    suppressed: int = 0
    last_detail: str = ""


class OncePerKindLog:
    """Log the first occurrence of each kind at once, then one summary per ``interval_s`` while it repeats.

    A flood of bad messages must not flood the log: state changes are logged, not every repeat.
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: dict[str, _KindLogState] = {}

    def record(self, kind: str, detail: str) -> None:
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None:
            self._kinds[kind] = _KindLogState(last_logged=now)
            self._logger.warning(
                "dead letter (%s): %s; further ones of this kind are summarised every %.0f s",
                kind,
                detail,
                self._interval_s,
            )
            return
        state.suppressed += 1
        state.last_detail = detail
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Log the summary of each kind whose interval has passed (called periodically by the pipeline)."""
        now = self._clock() if now is None else now
        for kind, state in self._kinds.items():
            if state.suppressed and now - state.last_logged >= self._interval_s:
                self._logger.warning(
                    "%d more dead letters (%s) in the last %.0f s; last: %s",
                    state.suppressed,
                    kind,
                    now - state.last_logged,
                    state.last_detail,
                )
                state.suppressed = 0
                state.last_logged = now
