"""Registry tables: sites and devices.

A device row keeps what each source said (``announced``: the last gateway birth, ``inventory``: the last
inventory import) next to the merged, effective columns, so a conflict can always be shown with both sides.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, DateTime, Float, ForeignKey, String
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
