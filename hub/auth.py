"""API tokens: bearer tokens with a role and, optionally, a set of wards; stored hashed.

A token reads ``ioc_<id>_<secret>``: the id finds the row, the secret is checked against its SHA-256 (the secret
is 256 random bits, so a plain hash is enough; no password stretching is needed), compared in constant time.
Only the hash is stored; the token itself is shown once, when it is created.

Roles, each including the ones before it:

- ``viewer``: read everything the token's wards allow;
- ``operator``: acknowledge and resolve alerts;
- ``technician``: send commands to devices, import the inventory;
- ``admin``: create, list and revoke tokens; an admin limited to wards only tokens limited to wards within its
  own (it neither sees nor revokes the others, and cannot create an unlimited one).

A token limited to wards sees only sites of those wards, their devices, alerts and events; anything else
answers 404, as if it did not exist. A token may have an expiry (``expires``): from then on it is refused.
Lookups are cached for :data:`CACHE_S`, so a revoked token stops working within that time, and the database
is not queried per request; expiry is checked on every request. :meth:`TokenStore.active` is the fresher check
that open event streams repeat (:data:`ACTIVE_CACHE_S`).

The ``expires`` column came after the first tokens table: the first migration
(``hub/registry/migrations/versions/r0001_first_schema.py``) adds it to a database made before it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hub.registry.db import Base, Database, iso, utcnow

ROLES: Final = ("viewer", "operator", "technician", "admin")
RANK: Final = {role: i for i, role in enumerate(ROLES)}
CACHE_S: Final = 30.0
#: How stale the answer of :meth:`TokenStore.active` may be (the event streams' revocation check).
ACTIVE_CACHE_S: Final = 1.0
#: The longest expiry a token may be given (``--expires-in``, ``expires_in_s``): ten years.
MAX_EXPIRES_IN_S: Final = 10 * 366 * 86_400
_TOKEN_RE: Final = re.compile(r"^ioc_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


class TokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(16))
    wards: Mapped[list[Any] | None] = mapped_column(default=None)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    #: None: the token does not expire.
    expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


def _aware(value: datetime) -> datetime:
    # SQLite gives back naive datetimes, which were stored as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, name, role, wards (None: every ward) and expiry (None: never)."""

    token_id: str
    name: str
    role: str
    wards: frozenset[str] | None
    expires: datetime | None = None

    def has(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    def sees(self, ward: str | None) -> bool:
        return self.wards is None or (ward is not None and ward in self.wards)

    def manages(self, wards: Iterable[str] | None) -> bool:
        """Whether this (admin) token may see, create or revoke a token limited to ``wards`` (None: every ward):
        an unlimited admin every token, a ward-limited one only tokens limited to wards within its own."""
        return self.wards is None or (wards is not None and set(wards) <= self.wards)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or utcnow()) >= self.expires

    @property
    def label(self) -> str:
        """How the principal is recorded in ``acked_by``, ``requested_by``...: ``name (token id)``."""
        return f"{self.name} ({self.token_id})" if self.name else self.token_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_dict(row: TokenRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "wards": row.wards,
        "created": iso(row.created),
        "created_by": row.created_by,
        "revoked": iso(row.revoked),
        "expires": iso(row.expires),
    }


def create_token_in(
    session: Session,
    role: str,
    *,
    wards: list[str] | None = None,
    name: str = "",
    created_by: str = "",
    expires_in_s: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Insert a new token (expiring ``expires_in_s`` from now, or never); return (the token, shown only now; its
    row as a dict)."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if expires_in_s is not None and not 1 <= expires_in_s <= MAX_EXPIRES_IN_S:
        raise ValueError(f"the expiry must be between 1 s and {MAX_EXPIRES_IN_S} s (ten years)")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = TokenRow(
        id=token_id,
        name=name,
        role=role,
        wards=sorted(set(wards)) if wards is not None else None,
        secret_sha256=_hash(secret),
        created_by=created_by,
        expires=utcnow() + timedelta(seconds=expires_in_s) if expires_in_s is not None else None,
    )
    session.add(row)
    session.flush()
    return f"ioc_{token_id}_{secret}", token_dict(row)


def list_tokens_in(session: Session) -> list[dict[str, Any]]:
    return [token_dict(r) for r in session.scalars(select(TokenRow).order_by(TokenRow.created))]


def revoke_in(session: Session, token_id: str) -> dict[str, Any] | None:
    """Revoke (idempotent); None if there is no such token."""
    row = session.get(TokenRow, token_id)
    if row is None:
        return None
    if row.revoked is None:
        row.revoked = utcnow()
    return token_dict(row)


def create_token(
    db_url: str, role: str, *, wards: list[str] | None = None, name: str = "", expires_in_s: int | None = None
) -> str:
    """Create a token in the database at ``db_url`` (the CLI, the demo); the schema is created if missing."""
    db = Database(db_url)
    try:
        db.create_schema()
        token, _ = db.run_sync(
            lambda s: create_token_in(s, role, wards=wards, name=name, created_by="cli", expires_in_s=expires_in_s)
        )
    finally:
        db.close()
    return token


class TokenStore:
    """Authenticates tokens with a small time-bounded cache; creates, lists and revokes them."""

    def __init__(self, db: Database, *, clock: Any = time.monotonic) -> None:
        self._db = db
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None, Principal | None]] = {}
        self._active: dict[str, tuple[float, bool]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        match = _TOKEN_RE.match(token)
        if match is None:
            return None
        token_id, secret = match.groups()
        now = self._clock()
        cached = self._cache.get(token_id)
        if cached is None or now - cached[0] > CACHE_S:

            def load(session: Session) -> tuple[str | None, Principal | None]:
                row = session.get(TokenRow, token_id)
                if row is None or row.revoked is not None:
                    return None, None
                wards = frozenset(row.wards) if row.wards is not None else None
                expires = _aware(row.expires) if row.expires is not None else None
                return row.secret_sha256, Principal(row.id, row.name, row.role, wards, expires)

            digest, principal = await self._db.read(load)
            if len(self._cache) > 10_000:
                self._cache.clear()  # bounded: someone is trying many ids
            cached = self._cache[token_id] = (now, digest, principal)
        _, digest, principal = cached
        if digest is None or not hmac.compare_digest(digest, _hash(secret)):
            return None
        if principal is None or principal.expired():
            return None
        return principal

    async def active(self, principal: Principal) -> bool:
        """Whether ``principal``'s token is still unrevoked and unexpired, read from the database at most every
        :data:`ACTIVE_CACHE_S` per token (an open event stream asks every few seconds; a revocation made through
        another hub process is seen here, which the :data:`CACHE_S` cache of :meth:`authenticate` would hide)."""
        if principal.expired():
            return False
        now = self._clock()
        cached = self._active.get(principal.token_id)
        if cached is None or now - cached[0] > ACTIVE_CACHE_S:

            def load(session: Session) -> bool:
                row = session.get(TokenRow, principal.token_id)
                return row is not None and row.revoked is None

            if len(self._active) > 10_000:
                self._active.clear()
            cached = self._active[principal.token_id] = (now, await self._db.read(load))
        return cached[1]

    async def create(
        self, role: str, *, wards: list[str] | None, name: str, created_by: str, expires_in_s: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        return await self._db.write(
            lambda s: create_token_in(s, role, wards=wards, name=name, created_by=created_by, expires_in_s=expires_in_s)
        )

    async def list_tokens(self, by: Principal | None = None) -> list[dict[str, Any]]:
        """Every token, or with ``by`` those that admin manages (:meth:`Principal.manages`)."""
        rows = await self._db.read(
            lambda s: [token_dict(r) for r in s.scalars(select(TokenRow).order_by(TokenRow.created))]
        )
        return [r for r in rows if by is None or by.manages(r["wards"])]

    async def revoke(self, token_id: str, by: Principal | None = None) -> dict[str, Any] | None:
        """Revoke (idempotent); None if there is no such token, or ``by`` does not manage it."""

        def revoke_managed(session: Session) -> dict[str, Any] | None:
            row = session.get(TokenRow, token_id)
            if row is None or (by is not None and not by.manages(row.wards)):
                return None
            return revoke_in(session, token_id)

        result = await self._db.write(revoke_managed)
        self._cache.pop(token_id, None)
        self._active.pop(token_id, None)
        return result
