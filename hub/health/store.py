"""Where health transitions go: the ``health_transitions`` table and InfluxDB, in batches, off the hot path.

InfluxDB schema (docs/storage.md):

- ``device_health``, tags ``site``, ``gateway``, ``device``, ``kind``; fields ``state`` (string), ``code``
  (float: offline 0, unknown 1, degraded 2, online 3), ``reason`` (string). One point per transition, at the
  time of the transition: the state holds until the next point, so uptime is the time-weighted share of 3.
- ``gateway_health``, tags ``site``, ``gateway``; the same fields.

Writes are retried with capped backoff while InfluxDB is unreachable; at most ``max_pending`` lines are held
(the oldest are dropped beyond, logged once: the table keeps every transition anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hub.errors import StorageError
from hub.health.machine import CODES, Health
from hub.health.monitor import Transition
from hub.registry.db import Base, Database
from hub.storage.lineproto import LineProtocolError, line

log = logging.getLogger(__name__)


class HealthTransitionRow(Base):
    __tablename__ = "health_transitions"
    __table_args__ = (Index("ix_health_transitions_key_ts", "key", "ts_ms"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(130))
    site: Mapped[str] = mapped_column(String(64), default="")
    gateway: Mapped[str] = mapped_column(String(64), default="")
    device: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[str] = mapped_column(String(32), default="")
    old: Mapped[str] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(600), default="")
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LineWriter(Protocol):
    async def write(self, body: bytes) -> None: ...


def transition_line(t: Transition) -> str:
    """The InfluxDB line of one transition."""
    fields: dict[str, Any] = {"state": t.new, "code": float(CODES[Health(t.new)]), "reason": t.reason[:1000]}
    if t.entity == "gateway":
        return line("gateway_health", {"site": t.site, "gateway": t.gateway}, fields, t.ts_ms)
    tags = {"site": t.site, "gateway": t.gateway, "device": t.device, "kind": t.kind}
    return line("device_health", tags, fields, t.ts_ms)


def recent_transitions(session: Session, key: str, limit: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(HealthTransitionRow)
        .where(HealthTransitionRow.key == key)
        .order_by(HealthTransitionRow.ts_ms.desc(), HealthTransitionRow.id.desc())
        .limit(limit)
    )
    return [{"old": r.old, "new": r.new, "reason": r.reason, "ts_ms": r.ts_ms, "entity": r.entity} for r in rows]


class TransitionSink:
    """Collects transitions (``add`` is the monitor's listener) and stores them every ``flush_s``."""

    def __init__(
        self,
        db: Database | None,
        writer: LineWriter | None,
        *,
        flush_s: float = 0.5,
        max_pending: int = 50_000,
        retry_max_s: float = 30.0,
    ) -> None:
        self._db = db
        self._writer = writer
        self._flush_s = flush_s
        self._rows: list[Transition] = []
        self._lines: deque[str] = deque(maxlen=max_pending)
        self._retry_max_s = retry_max_s
        self._influx_down = False
        self._wake = asyncio.Event()
        #: One InfluxDB write at a time: a ``flush`` waits for the one in flight, so when it returns every line
        #: added before it has been written, in order.
        self._write_lock = asyncio.Lock()
        self.stored = 0
        self.written = 0

    def add(self, transition: Transition) -> None:
        self._rows.append(transition)
        if self._writer is not None:
            try:
                self._lines.append(transition_line(transition))
            except LineProtocolError as exc:
                log.warning("health: transition of %s cannot be written to InfluxDB: %s", transition.key, exc)

    async def run(self) -> None:
        """Flush every ``flush_s`` until cancelled (then flush what is left, best effort)."""
        attempt = 0
        try:
            while True:
                await asyncio.sleep(self._flush_s)
                await self._store_rows()
                if await self._write_lines():
                    attempt = 0
                else:
                    attempt += 1
                    ceiling = min(self._retry_max_s, 0.5 * 2 ** min(attempt, 16))
                    await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 5)

    async def flush(self) -> None:
        await self._store_rows()
        await self._write_lines()

    async def caught_up(self) -> None:
        """Return once every transition added so far is in the database: those still pending are stored now,
        and those already on their way (the writer thread runs in order) have landed. So a reader that was
        told of a transition (the live events) finds it in ``GET /api/v1/devices/{id}``."""
        if self._db is None:
            return
        if self._rows:
            await self._store_rows()
        else:
            await self._db.write(lambda _session: None)

    async def _store_rows(self) -> None:
        rows, self._rows = self._rows, []
        if not rows or self._db is None:
            return
        try:
            await self._db.write(lambda session: _insert(session, rows))
        except Exception:
            log.exception("health: could not store %d transitions", len(rows))
        else:
            self.stored += len(rows)

    async def _write_lines(self) -> bool:
        async with self._write_lock:
            return await self._write_pending_lines()

    async def _write_pending_lines(self) -> bool:
        if not self._lines or self._writer is None:
            return True
        batch = list(self._lines)
        self._lines.clear()
        try:
            await self._writer.write("\n".join(batch).encode())
        except StorageError as exc:
            # Put them back in front of what came meanwhile; beyond max_pending the oldest go.
            self._lines = deque([*batch, *self._lines], maxlen=self._lines.maxlen)
            if not self._influx_down:
                self._influx_down = True
                log.warning("health: InfluxDB write failed (%s); retrying with backoff", exc)
            return False
        self.written += len(batch)
        if self._influx_down:
            self._influx_down = False
            log.info("health: InfluxDB writes work again")
        return True


def _insert(session: Session, rows: Sequence[Transition]) -> None:
    session.add_all(HealthTransitionRow(**asdict(t), at=datetime.fromtimestamp(t.ts_ms / 1000, UTC)) for t in rows)
