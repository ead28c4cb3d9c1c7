"""``POST /api/v1/inventory``: import the technicians' inventory (role technician, not limited to wards).

The body is the inventory as JSON (``application/json``), YAML (``application/yaml``) or CSV (``text/csv``),
in the formats of :mod:`hub.registry.inventory`. The answer says what changed and lists every conflict between
the inventory and what the gateways announced. A bad inventory is refused whole (422, naming the entry and the
field); nothing of it is applied.
"""

from __future__ import annotations

import asyncio
from typing import Final

from fastapi import APIRouter, HTTPException, Request, status

from hub.registry.inventory import InventoryError, parse_text
from hub.routes.deps import Ops, Technician
from hub.routes.models import InventoryResult

router = APIRouter(prefix="/api/v1", tags=["inventory"])

MAX_BODY: Final = 20 * 1024 * 1024
FORMATS: Final = {"application/json": "json", "application/yaml": "yaml", "text/yaml": "yaml", "text/csv": "csv"}


@router.post(
    "/inventory",
    response_model=InventoryResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
    responses={415: {"description": "unsupported content type"}, 413: {"description": "too large"}},
)
async def import_inventory(principal: Technician, ops: Ops, request: Request) -> InventoryResult:
    """Merge an inventory into the registry; returns counts and the conflicts with gateway births."""
    if principal.wards is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "importing the inventory needs a token not limited to wards")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = FORMATS.get(media)
    if fmt is None:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"content type {media or 'none'!r} is not supported (use {', '.join(FORMATS)})",
        )
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the inventory exceeds {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body: not valid UTF-8") from exc
    try:
        # Parsed in a thread: a big YAML inventory takes seconds and must not stall ingestion.
        inventory = await asyncio.to_thread(parse_text, text, fmt, "body")
    except InventoryError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    # A device the inventory puts under another gateway is moved: recorded with the token that imported it.
    result = ops.registry.apply_inventory(inventory, by=f"inventory import by {principal.label}")
    await ops.registry.flush()
    return InventoryResult.model_validate(result.as_dict())
