"""The outbox's storage: one SQLite table, written and read by one thread, bounded in bytes (and optionally in
readings).

Each reading is one row: its ``position`` (the rowid: put order, so per-device sampling order), its encoded
size, and its contract JSON (``wire.v1.Reading``, with the sampling ``ts``: a replayed duplicate is the same
point in InfluxDB and collapses). Counts, bytes and lane boundaries are kept in memory, so no operation scans
the table: appends, peeks, commits and drops touch only the rows they move (rowid range scans), O(batch).

Durability (the issue: "survives kill -9 and a power cut"): the database is in WAL mode with
``synchronous=FULL``. A transaction is on disk when its COMMIT returns, because the WAL is fsynced at every
commit. With ``NORMAL`` a commit only reaches the OS (enough for ``kill -9``, which leaves the page cache
intact) but the WAL is fsynced only at checkpoints, so a power cut could roll back the last readings the agent
already took in; WAL mode keeps the file consistent either way. FULL costs one fsync per transaction, and
:class:`edge.outbox_sqlite.SqliteOutbox` groups every put waiting during a write into one transaction, so the
fsyncs per second are bounded by the disk, not by the number of devices (about 1.5 ms per commit of 500
readings on the development machine's disk). A commit (delete) that a power cut rolls back only re-sends readings,
which collapse in InfluxDB.

Lanes: rows up to ``boundary`` are the *backlog* (everything queued when the current connect attempt began,
and everything restored from disk at start); rows after it are *live*. Both are FIFO by position; the
publisher sends live readings first and the backlog under a rate limit (:mod:`edge.outbox_replay`).

Bounds: the stored bytes (``len(json) + ROW_OVERHEAD`` per reading, not the file size: SQLite adds page slack,
keeps the pages a drained backlog freed for reuse rather than shrinking the file, and has a WAL of at most
``JOURNAL_SIZE_LIMIT`` after a checkpoint), and, only if one is given, the number of readings (the requirement: "the
outbox is bounded in bytes"; a count says little about disk use, readings differ in size ten-fold between a
two-metric sensor and a power meter). The count of readings held is always exact. A put that goes past a bound
drops the
oldest readings first (backlog before live), except the batch being published (it is about to be delivered,
so dropping it would count as lost what the hub receives). Every dropped reading is counted.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge.errors import EdgeError

log = logging.getLogger(__name__)

#: Accounted per row on top of the JSON: the rowid, the size column and SQLite's record header.
ROW_OVERHEAD: Final = 16
#: Oldest rows examined per query when dropping.
DROP_CHUNK: Final = 1024
#: Let SQLite wait this long for a lock (only another process opening the same file can hold one).
BUSY_TIMEOUT_MS: Final = 5000
#: Bytes the WAL file is cut back to after a checkpoint.
JOURNAL_SIZE_LIMIT: Final = 16 * 1024 * 1024
#: A path that keeps the outbox in memory (nothing survives a restart).
MEMORY: Final = ":memory:"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    position INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
)
"""


class OutboxStoreError(EdgeError):
    """The outbox file cannot be opened or written (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Levels:
    """A consistent snapshot of the store, replaced as a whole after every operation."""

    readings: int = 0
    bytes: int = 0
    backlog: int = 0
    #: The first position of the live lane (None when it is empty).
    live_first: int | None = None
    #: Readings dropped since the store was opened (oldest first, because of the bounds).
    dropped: int = 0

    @property
    def live(self) -> int:
        return self.readings - self.backlog


@dataclass(frozen=True, slots=True)
class Appended:
    first: int
    last: int
    dropped: int


class OutboxStore:
    """The SQLite table. Not thread-safe: one thread (the outbox's executor) calls every method."""

    def __init__(self, path: Path | str, max_bytes: int, max_readings: int | None = None) -> None:
        if max_bytes < 1 or (max_readings is not None and max_readings < 1):
            raise ValueError("max_bytes and max_readings must be >= 1")
        self.path = str(path)
        self.max_bytes = max_bytes
        self.max_readings = max_readings
        self._db = self._open()
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(position) FROM readings").fetchone()
        count, nbytes, last = int(row[0]), int(row[1]), row[2]
        self._next = 0 if last is None else int(last) + 1
        #: Positions up to here are the backlog lane; restored readings all are.
        self._boundary = self._next - 1
        self._inflight: tuple[int, int] | None = None
        self.levels = Levels(readings=count, bytes=nbytes, backlog=count)
        if count:
            log.info("outbox %s: %d readings (%d bytes) restored from disk", self.path, count, nbytes)
        if self._over(count, nbytes):
            dropped = self._drop_over_bounds()
            self._db.commit()
            log.warning("outbox %s: over its bounds after a restart; dropped the %d oldest", self.path, dropped)

    def _open(self) -> sqlite3.Connection:
        if self.path != MEMORY:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise OutboxStoreError(f"outbox {self.path}: cannot create its folder: {exc}") from exc
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if self.path == MEMORY or (isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc)):
                raise OutboxStoreError(f"outbox {self.path}: cannot open: {exc}") from exc
            # Not a database (or damaged beyond SQLite's recovery): keep it for inspection, start afresh
            # rather than stop the agent from taking new readings.
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.error("outbox %s is damaged (%s); moved it to %s and starting an empty outbox", self.path, exc, aside)  # noqa: TRY400 - the cause is in the line
            for suffix in ("", "-wal", "-shm"):
                damaged = Path(self.path + suffix)
                if damaged.exists():
                    damaged.replace(aside + suffix)
            try:
                return self._connect()
            except sqlite3.DatabaseError as again:
                raise OutboxStoreError(f"outbox {self.path}: cannot open: {again}") from again

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # After a checkpoint the WAL file is truncated to this, so a burst does not keep its disk space.
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            db.execute(_SCHEMA)
            db.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        db.isolation_level = "DEFERRED"  # explicit transactions from here on: one per operation
        return db

    def close(self) -> None:
        self._db.close()

    # --------------------------------------------------------------------------------------- operations

    def append(self, payloads: Sequence[bytes]) -> Appended:
        """Store readings (encoded) in one transaction; then drop the oldest beyond the bounds."""
        first = self._next
        rows = [(first + i, len(p) + ROW_OVERHEAD, p) for i, p in enumerate(payloads)]
        self._next = first + len(rows)
        added = sum(r[1] for r in rows)
        try:
            self._db.executemany("INSERT INTO readings (position, size, data) VALUES (?, ?, ?)", rows)
            lv = self.levels
            self.levels = Levels(
                readings=lv.readings + len(rows),
                bytes=lv.bytes + added,
                backlog=lv.backlog,
                live_first=first if lv.live_first is None else lv.live_first,
                dropped=lv.dropped,
            )
            dropped = self._drop_over_bounds()
            self._db.commit()
        except sqlite3.Error as exc:
            self._db.rollback()
            self._reload()
            raise OutboxStoreError(f"outbox {self.path}: cannot store {len(rows)} readings: {exc}") from exc
        return Appended(first, self._next - 1, dropped)

    def start_backlog(self) -> int:
        """Everything queued now becomes the backlog (a new broker session starts). Returns its size."""
        self._boundary = self._next - 1
        self._inflight = None
        lv = self.levels
        self.levels = Levels(readings=lv.readings, bytes=lv.bytes, backlog=lv.readings, dropped=lv.dropped)
        return lv.readings

    def peek(self, limit: int, backlog: bool) -> list[tuple[int, bytes]]:
        """Up to ``limit`` oldest rows of one lane, left in place (and kept from being dropped)."""
        if backlog:
            sql = "SELECT position, data FROM readings WHERE position <= ? ORDER BY position LIMIT ?"
        else:
            sql = "SELECT position, data FROM readings WHERE position > ? ORDER BY position LIMIT ?"
        rows = [(int(p), bytes(d)) for p, d in self._db.execute(sql, (self._boundary, limit))]
        self._db.commit()  # end the read transaction, so checkpoints are not held back
        self._inflight = (rows[0][0], rows[-1][0]) if rows else None
        return rows

    def commit(self, through: int, backlog: bool) -> int:
        """Remove the lane's readings up to ``through`` (those still there); return how many were removed."""
        lo, hi = (0, min(through, self._boundary)) if backlog else (self._boundary + 1, through)
        if hi < lo:
            return 0
        try:
            count, nbytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings WHERE position BETWEEN ? AND ?", (lo, hi)
            ).fetchone()
            self._db.execute("DELETE FROM readings WHERE position BETWEEN ? AND ?", (lo, hi))
            live_first = self.levels.live_first
            if not backlog and count:
                live_first = self._first_after(hi)
            self._db.commit()
        except sqlite3.Error as exc:
            self._db.rollback()
            self._reload()
            raise OutboxStoreError(f"outbox {self.path}: cannot remove sent readings: {exc}") from exc
        self._inflight = None
        lv = self.levels
        self.levels = Levels(
            readings=lv.readings - count,
            bytes=lv.bytes - nbytes,
            backlog=lv.backlog - (count if backlog else 0),
            live_first=live_first,
            dropped=lv.dropped,
        )
        return int(count)

    def discard(self, positions: Sequence[int]) -> int:
        """Drop rows that cannot be read back (damaged); counted as dropped. Returns how many were removed."""
        removed = 0
        for position in positions:
            row = self._db.execute("SELECT size FROM readings WHERE position = ?", (position,)).fetchone()
            if row is None:
                continue
            self._db.execute("DELETE FROM readings WHERE position = ?", (position,))
            removed += 1
            lv = self.levels
            self.levels = Levels(
                readings=lv.readings - 1,
                bytes=lv.bytes - int(row[0]),
                backlog=lv.backlog - (1 if position <= self._boundary else 0),
                live_first=lv.live_first,
                dropped=lv.dropped + 1,
            )
        self._db.commit()
        lv = self.levels
        live_first = self._first_after(self._boundary) if lv.readings > lv.backlog else None
        self.levels = Levels(lv.readings, lv.bytes, lv.backlog, live_first, lv.dropped)
        return removed

    # --------------------------------------------------------------------------------------- internals

    def _first_after(self, position: int) -> int | None:
        row = self._db.execute("SELECT MIN(position) FROM readings WHERE position > ?", (position,)).fetchone()
        return None if row[0] is None else int(row[0])

    def _over(self, readings: int, nbytes: int) -> bool:
        return nbytes > self.max_bytes or (self.max_readings is not None and readings > self.max_readings)

    def _drop_over_bounds(self) -> int:
        """Delete the oldest rows (skipping the batch in flight) until within bounds; inside the caller's
        transaction. Returns how many were dropped and updates the levels."""
        lv = self.levels
        if not self._over(lv.readings, lv.bytes):
            return 0
        readings, nbytes, backlog = lv.readings, lv.bytes, lv.backlog
        ranges: list[tuple[int, int]] = []
        # Oldest first: the rows before the batch in flight, then those after it (all rows if none is).
        skip_lo, skip_hi = self._inflight if self._inflight is not None else (0, -1)
        for lo, hi in ((0, skip_lo - 1), (skip_hi + 1, self._next - 1)):
            after = lo - 1
            while self._over(readings, nbytes) and after < hi:
                chunk = self._db.execute(
                    "SELECT position, size FROM readings WHERE position > ? AND position <= ? "
                    "ORDER BY position LIMIT ?",
                    (after, hi, DROP_CHUNK),
                ).fetchall()
                if not chunk:
                    break
                start = int(chunk[0][0])
                for position, size in chunk:
                    readings -= 1
                    nbytes -= int(size)
                    if position <= self._boundary:
                        backlog -= 1
                    after = int(position)
                    if not self._over(readings, nbytes):
                        break
                ranges.append((start, after))
        dropped = lv.readings - readings
        for lo, hi in ranges:
            self._db.execute("DELETE FROM readings WHERE position BETWEEN ? AND ?", (lo, hi))
        live_first = self._first_after(self._boundary) if readings > backlog else None
        self.levels = Levels(
            readings=readings, bytes=nbytes, backlog=backlog, live_first=live_first, dropped=lv.dropped + dropped
        )
        return dropped

    def _reload(self) -> None:
        """After a failed transaction: recount from the table (rare; O(n))."""
        try:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), "
                "COALESCE(SUM(position <= ?), 0), MIN(CASE WHEN position > ? THEN position END) FROM readings",
                (self._boundary, self._boundary),
            ).fetchone()
        except sqlite3.Error:
            log.exception("outbox %s: cannot recount after a failed write", self.path)
            return
        self.levels = Levels(
            readings=int(row[0]),
            bytes=int(row[1]),
            backlog=int(row[2]),
            live_first=None if row[3] is None else int(row[3]),
            dropped=self.levels.dropped,
        )
