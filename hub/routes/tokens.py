"""``/api/v1/tokens`` (role admin): create (the token is in the answer, once), list, revoke.

An admin limited to wards manages only tokens limited to wards within its own: it creates only those, lists
only those, and revoking another answers 404 as if it did not exist (``Principal.manages``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from hub.auth import MAX_EXPIRES_IN_S
from hub.routes.deps import Admin, Ops, not_found
from hub.routes.models import CreatedToken, Token, TokensPage
from wire.v1 import ID_PATTERN

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["viewer", "operator", "technician", "admin"]
    name: Annotated[str, Field(max_length=100)] = ""
    #: Limit the token to these wards; omitted: every ward.
    wards: Annotated[list[Annotated[str, Field(pattern=ID_PATTERN)]], Field(min_length=1, max_length=100)] | None = None
    #: The token stops working this many seconds after its creation; omitted: it does not expire.
    expires_in_s: Annotated[int, Field(ge=60, le=MAX_EXPIRES_IN_S)] | None = None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CreatedToken)
async def create_token(principal: Admin, ops: Ops, body: TokenRequest) -> CreatedToken:
    """A new token; ``token`` is shown only in this answer (only its hash is stored)."""
    if not principal.manages(body.wards):
        assert principal.wards is not None
        outside = sorted(set(body.wards) - principal.wards) if body.wards is not None else ["(every ward)"]
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"this token may only create tokens within its wards (not {', '.join(outside)})",
        )
    token, row = await ops.tokens.create(
        body.role, wards=body.wards, name=body.name, created_by=principal.label, expires_in_s=body.expires_in_s
    )
    return CreatedToken.model_validate({**row, "token": token})


@router.get("", response_model=TokensPage)
async def list_tokens(principal: Admin, ops: Ops) -> TokensPage:
    """The tokens this admin manages (every token for an admin not limited to wards); never their secrets."""
    items = [Token.model_validate(t) for t in await ops.tokens.list_tokens(by=principal)]
    return TokensPage(total=len(items), items=items)


@router.delete("/{token_id}", response_model=Token)
async def revoke_token(principal: Admin, ops: Ops, token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]) -> Token:
    """Revoke a token (it stops working within 30 s in every hub process; its open event streams end within a
    few seconds)."""
    row = await ops.tokens.revoke(token_id, by=principal)
    if row is None:
        raise not_found("token", token_id)
    return Token.model_validate(row)
