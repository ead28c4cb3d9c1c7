"""Messages the hub cannot store: the quarantine, bounded, counted by kind, logged once per kind.

:class:`DeadLetterRing` keeps the newest ``keep`` in memory. :class:`Quarantine` adds persistence: with a
``path`` it saves every dead letter to a SQLite file (WAL, ``synchronous=FULL``), keeps the newest ``keep`` rows
there, and loads them back at start, so the list (``GET /api/v1/dead-letters``) survives a restart.

A quarantined message counts as stored: the pipeline acknowledges it only once :meth:`Quarantine.save` has
committed it (one transaction for everything added since the last save, so a flood of bad messages costs one
fsync per round, not one per message).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from hub.errors import HubError

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
    CARDINALITY = "cardinality"
    """Metric names beyond the per-device cap (``cardinality.max_metrics_per_device``); the rest was stored."""
    REFUSED = "refused"
    """What the gateway may not write (hub.ingest.admission): another gateway's device, an unannounced device, a
    hub-owned or unknown kind, a value of another field type, a timestamp out of bounds, too many new devices.
    The error names each refusal; what the gateway may write of the message was stored."""


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


class QuarantineError(HubError):
    """The quarantine file cannot be opened or written."""


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    error TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_size INTEGER NOT NULL
)
"""


class Quarantine(DeadLetterRing):
    """The ring, saved to SQLite at ``path`` when one is given (else in memory only, lost on restart)."""

    def __init__(self, keep: int, payload_bytes: int, path: Path | None = None) -> None:
        super().__init__(keep, payload_bytes)
        self.path = path
        self._unsaved: list[DeadLetter] = []
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.saved = 0
        if path is not None:
            self._open(path)

    @property
    def persistent(self) -> bool:
        return self._db is not None

    def _open(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            rows = db.execute(
                "SELECT topic, received_ms, kind, error, payload, payload_size FROM dead_letters "
                "ORDER BY id DESC LIMIT ?",
                (self._items.maxlen,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise QuarantineError(f"dead-letter file {path}: {exc}") from exc
        for topic, received_ms, kind, error, payload, size in reversed(rows):
            try:
                letter_kind = DeadLetterKind(kind)
            except ValueError:
                letter_kind = DeadLetterKind.INTERNAL
            self._items.append(DeadLetter(topic, received_ms, letter_kind, error, payload, size))
        self._db = db
        if rows:
            logging.getLogger(__name__).info("dead-letter file %s: %d dead letters kept from before", path, len(rows))

    def add(self, topic: str, payload: bytes, kind: DeadLetterKind, error: str, received_ms: int) -> DeadLetter:
        letter = super().add(topic, payload, kind, error, received_ms)
        if self._db is not None:
            with self._lock:
                self._unsaved.append(letter)
        return letter

    def save(self) -> int:
        """Commit every dead letter added so far (blocking: call it in a thread); return how many."""
        db = self._db
        if db is None:
            return 0
        with self._lock:
            batch, self._unsaved = self._unsaved, []
        if not batch:
            return 0
        keep = self._items.maxlen or 0
        try:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO dead_letters (topic, received_ms, kind, error, payload, payload_size) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(d.topic, d.received_ms, d.kind.value, d.error, d.payload, d.payload_size) for d in batch],
            )
            db.execute("DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?", (keep,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with self._lock:
                self._unsaved[:0] = batch
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise QuarantineError(f"dead-letter file {self.path}: {exc}") from exc
        self.saved += len(batch)
        return len(batch)

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


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
