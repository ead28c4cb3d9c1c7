"""``GET /api/v1/events``: live device, gateway and alert changes as server-sent events (hub/routes/eventhub.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from hub.routes.deps import Ops, Viewer

router = APIRouter(tags=["events"])


@router.get(
    "/api/v1/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "server-sent events"}
    },
)
async def events(principal: Viewer, ops: Ops, request: Request) -> StreamingResponse:
    """Live device, gateway and alert changes (server-sent events); the stream ends, with ``event: closed``,
    within a few seconds of its token's revocation or expiry."""
    return StreamingResponse(
        ops.events.stream(principal, request, ops.tokens.active),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
