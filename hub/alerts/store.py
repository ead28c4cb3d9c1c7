"""Alert and webhook delivery tables, and the operations on them (run in the database threads).

**One open alert per (subject, rule), enforced by the database**: an open alert carries ``open_key`` =
``"{subject}|{rule}"`` under a UNIQUE constraint; resolving sets it to NULL (NULLs never collide, in SQLite and
PostgreSQL alike). Two hub processes, or two messages handled at once, that both try to open the same alert
get one row: the second insert fails on the constraint and returns the existing alert instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from hub.registry.db import Base, Database, iso, utcnow

FIRING: Final = "firing"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"
STATES: Final = (FIRING, ACKNOWLEDGED, RESOLVED)


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(130), index=True)
    subject_type: Mapped[str] = mapped_column(String(16), default="device")
    site: Mapped[str] = mapped_column(String(64), default="")
    gateway: Mapped[str] = mapped_column(String(64), default="")
    ward: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    kind: Mapped[str] = mapped_column(String(32), default="")
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(String(600), default="")
    value: Mapped[float | None] = mapped_column(Float, default=None)
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    acked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    # Indexed: the boards' series job reads the alerts resolved since its last run (hub/alerts/series.py).
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None, index=True)
    resolved_by: Mapped[str | None] = mapped_column(String(100), default=None)
    resolution: Mapped[str | None] = mapped_column(String(300), default=None)


class DeliveryRow(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer, index=True)
    event: Mapped[str] = mapped_column(String(16))
    # The webhook's name (hub/alerts/rules.py), never its URL, which holds secrets. The column keeps the name
    # ``url`` that databases made before hold; rows from then hold URLs and are shown without them.
    webhook: Mapped[str] = mapped_column("url", String(2000))
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str] = mapped_column(String(500), default="")
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def alert_dict(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule": row.rule,
        "subject": row.subject,
        "subject_type": row.subject_type,
        "site": row.site,
        "gateway": row.gateway,
        "ward": row.ward,
        "kind": row.kind,
        "severity": row.severity,
        "state": row.state,
        "message": row.message,
        "value": row.value,
        "opened_at": iso(row.opened_at),
        "acked_at": iso(row.acked_at),
        "acked_by": row.acked_by,
        "resolved_at": iso(row.resolved_at),
        "resolved_by": row.resolved_by,
        "resolution": row.resolution,
    }


class AlertConflict(Exception):
    """The alert is not in a state that allows the operation (e.g. acknowledging a resolved alert)."""


class AlertStore:
    """Alert operations; each ``async`` method runs in the database's threads."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self, values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Open an alert; (the alert, True) or, if one is already open for (subject, rule), (that one, False)."""
        key = f"{values['subject']}|{values['rule']}"

        def insert(session: Session) -> dict[str, Any]:
            row = AlertRow(**values, state=FIRING, open_key=key)
            session.add(row)
            session.flush()
            return alert_dict(row)

        try:
            return await self.db.write(insert), True
        except IntegrityError:
            existing = await self.db.write(
                lambda session: session.scalars(select(AlertRow).where(AlertRow.open_key == key)).first()
            )
            if existing is None:  # resolved in between: try once more
                return await self.db.write(insert), True
            return alert_dict(existing), False

    async def acknowledge(self, alert_id: int, by: str) -> dict[str, Any] | None:
        def ack(session: Session) -> dict[str, Any] | None:
            row = session.get(AlertRow, alert_id, with_for_update=True)
            if row is None:
                return None
            if row.state == RESOLVED:
                raise AlertConflict(f"alert {alert_id} is resolved; it cannot be acknowledged")
            if row.state == FIRING:
                row.state, row.acked_at, row.acked_by = ACKNOWLEDGED, utcnow(), by
            return alert_dict(row)

        return await self.db.write(ack)

    async def resolve(self, alert_id: int, by: str, resolution: str) -> dict[str, Any] | None:
        def resolve(session: Session) -> dict[str, Any] | None:
            row = session.get(AlertRow, alert_id, with_for_update=True)
            if row is None:
                return None
            if row.state == RESOLVED:
                raise AlertConflict(f"alert {alert_id} is already resolved")
            _close(row, by, resolution)
            return alert_dict(row)

        return await self.db.write(resolve)

    async def resolve_open(self, subject: str, rule: str, by: str, resolution: str) -> dict[str, Any] | None:
        """Resolve the open alert of (subject, rule), if any (the condition cleared)."""

        def resolve(session: Session) -> dict[str, Any] | None:
            # FOR UPDATE: another hub resolving it at the same moment makes this one wait, then PostgreSQL
            # re-checks the WHERE on the row it committed (open_key now NULL) and finds nothing: one "resolved".
            open_now = select(AlertRow).where(AlertRow.open_key == f"{subject}|{rule}").with_for_update()
            row = session.scalars(open_now).first()
            if row is None:
                return None
            _close(row, by, resolution)
            return alert_dict(row)

        return await self.db.write(resolve)

    async def get(self, alert_id: int) -> dict[str, Any] | None:
        def get(session: Session) -> dict[str, Any] | None:
            row = session.get(AlertRow, alert_id)
            return alert_dict(row) if row is not None else None

        return await self.db.read(get)

    async def open_alerts(self) -> list[dict[str, Any]]:
        """Every open alert (the engine's start-up state)."""
        return await self.db.read(
            lambda s: [alert_dict(r) for r in s.scalars(select(AlertRow).where(AlertRow.open_key.is_not(None)))]
        )

    async def query(
        self,
        *,
        states: list[str] | None = None,
        subject: str | None = None,
        rule: str | None = None,
        wards: list[str] | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, one page, newest first). ``wards`` limits to alerts of those wards."""

        def query(session: Session) -> tuple[int, list[dict[str, Any]]]:
            stmt = select(AlertRow)
            if states:
                stmt = stmt.where(AlertRow.state.in_(states))
            if subject is not None:
                stmt = stmt.where(AlertRow.subject == subject)
            if rule is not None:
                stmt = stmt.where(AlertRow.rule == rule)
            if wards is not None:
                stmt = stmt.where(AlertRow.ward.in_(wards))
            if since is not None:
                stmt = stmt.where(AlertRow.opened_at >= since)
            total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = session.scalars(stmt.order_by(AlertRow.id.desc()).limit(limit).offset(offset))
            return total, [alert_dict(r) for r in rows]

        return await self.db.read(query)

    async def log_delivery(self, values: dict[str, Any]) -> None:
        await self.db.write(lambda session: session.add(DeliveryRow(**values)))

    async def deliveries(self, alert_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        def query(session: Session) -> list[dict[str, Any]]:
            stmt = select(DeliveryRow)
            if alert_id is not None:
                stmt = stmt.where(DeliveryRow.alert_id == alert_id)
            rows = session.scalars(stmt.order_by(DeliveryRow.id.desc()).limit(limit))
            return [
                {
                    "id": r.id,
                    "alert_id": r.alert_id,
                    "event": r.event,
                    "webhook": r.webhook if "://" not in r.webhook else "(a URL, recorded before webhooks had names)",
                    "attempt": r.attempt,
                    "ok": r.ok,
                    "status_code": r.status_code,
                    "error": r.error,
                    "duration_ms": r.duration_ms,
                    "at": iso(r.at),
                }
                for r in rows
            ]

        return await self.db.read(query)


def _close(row: AlertRow, by: str, resolution: str) -> None:
    row.state, row.resolved_at, row.resolved_by, row.resolution, row.open_key = (
        RESOLVED,
        utcnow(),
        by,
        resolution[:300],
        None,
    )
