"""Registry tables: sites, devices and device moves.

A device row keeps what each source said (``announced``: the last birth of its own gateway, ``inventory``: the
last inventory import) next to the merged, effective columns, so a conflict can always be shown with both sides.
Its ``site`` and ``gateway`` are its owner: the only gateway whose births, data, events and acks about it the
hub accepts. A change of owner is a technician's act, one ``device_moves`` row each (who, when, from, to).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, DateTime, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.registry.db import Base, utcnow


class SiteRow(Base):
    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    ward: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    lat: Mapped[float | None] = mapped_column(Float, default=None)
    lon: Mapped[float | None] = mapped_column(Float, default=None)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class DeviceRow(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True, default="")
    profile: Mapped[str] = mapped_column(String(128), default="")
    driver: Mapped[str] = mapped_column(String(64), default="")
    site: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), index=True, default=None)
    gateway: Mapped[str | None] = mapped_column(String(64), default=None)
    lat: Mapped[float | None] = mapped_column(Float, default=None)
    lon: Mapped[float | None] = mapped_column(Float, default=None)
    installed: Mapped[date | None] = mapped_column(Date, default=None)
    interval_s: Mapped[float | None] = mapped_column(Float, default=None)
    inactivity_s: Mapped[float | None] = mapped_column(Float, default=None)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    announced: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    inventory: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    conflicts: Mapped[list[Any]] = mapped_column(default=list)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class DeviceMoveRow(Base):
    """A device given to another gateway by a technician (API) or an inventory import. A database made before
    this table gets it from the first migration (hub/registry/migrations/versions/r0001_first_schema.py)."""

    __tablename__ = "device_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device: Mapped[str] = mapped_column(String(64), index=True)
    from_site: Mapped[str | None] = mapped_column(String(64), default=None)
    from_gateway: Mapped[str | None] = mapped_column(String(64), default=None)
    to_site: Mapped[str | None] = mapped_column(String(64), default=None)
    to_gateway: Mapped[str] = mapped_column(String(64))
    #: ``api`` (POST /api/v1/devices/{id}/move) or ``inventory`` (an import that states another gateway).
    source: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(100), default="")
    reason: Mapped[str] = mapped_column(String(300), default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
