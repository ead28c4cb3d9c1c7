"""Fan-out of live events to the connected server-sent event streams (``GET /api/v1/events``).

Each event is ``event: device|gateway|alert|snapshot|seen`` with a JSON ``data`` line: ``device`` and
``gateway`` a health transition, ``alert`` an alert's change, ``snapshot`` a camera's snapshot once stored
(``snapshot_events`` in hub/routes/cameras.py), ``seen`` the devices of a ward heard from lately
(hub/routes/services.py). A comment line every :data:`KEEPALIVE_S` keeps proxies from closing an idle stream.
A client that does not keep up (its queue of :data:`CLIENT_QUEUE` events is full) is disconnected rather than
slowing the hub; it reconnects and reloads.
A ward-limited token only gets events of its wards. A stream ends within :data:`TOKEN_CHECK_S` once its token
is revoked (through any hub process) or expires, with a last ``event: closed`` saying why: the token was checked
once, when the stream opened, and the stream would otherwise outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from fastapi import Request

from hub.auth import Principal
from hub.health.monitor import Transition
from hub.registry.db import utcnow

KEEPALIVE_S: Final = 15.0
CLIENT_QUEUE: Final = 1000
#: How often an open stream checks that its token is still valid.
TOKEN_CHECK_S: Final = 2.0
#: The last frame of a stream whose token was revoked or expired.
CLOSED_FRAME: Final = 'event: closed\ndata: {"reason":"token revoked or expired"}\n\n'


class EventHub:
    """Fans events out to the connected streams."""

    def __init__(self, ward_of_site: Any) -> None:
        self._ward_of_site = ward_of_site
        self._clients: set[asyncio.Queue[tuple[str | None, str] | None]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, kind: str, ward: str | None, data: dict[str, Any]) -> None:
        if not self._clients:
            return  # nobody listens: no frame to build (a birth storm is thousands of transitions a second)
        frame = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for queue in list(self._clients):
            try:
                queue.put_nowait((ward, frame))
            except asyncio.QueueFull:
                self._clients.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)  # tells the stream to end

    def transition(self, t: Transition) -> None:
        if not self._clients:
            return
        self.publish(
            t.entity,
            self._ward_of_site(t.site),
            {
                "key": t.key,
                "site": t.site,
                "gateway": t.gateway,
                "device": t.device,
                "old": t.old,
                "state": t.new,
                "reason": t.reason,
                "ts_ms": t.ts_ms,
            },
        )

    def alert(self, event: str, alert: dict[str, Any]) -> None:
        self.publish("alert", alert.get("ward"), {"event": event, "alert": alert})

    async def stream(
        self,
        principal: Principal,
        request: Request,
        token_active: Callable[[Principal], Awaitable[bool]],
        *,
        token_check_s: float = TOKEN_CHECK_S,
    ) -> AsyncIterator[str]:
        """The frames for one client; ``token_active`` is asked every ``token_check_s`` (and at the token's
        expiry, when that comes sooner) whether the stream may go on."""
        queue: asyncio.Queue[tuple[str | None, str] | None] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        loop = asyncio.get_running_loop()
        try:
            yield ": connected\n\n"
            next_keepalive = loop.time() + KEEPALIVE_S
            next_check = loop.time() + token_check_s
            while not await request.is_disconnected():
                wake = min(next_keepalive, next_check)
                if principal.expires is not None:
                    wake = min(wake, loop.time() + max(0.0, (principal.expires - utcnow()).total_seconds()))
                try:
                    async with asyncio.timeout_at(wake):
                        item = await queue.get()
                except TimeoutError:
                    now = loop.time()
                    if now >= next_check or principal.expired():
                        next_check = now + token_check_s
                        if not await token_active(principal):
                            yield CLOSED_FRAME
                            return
                    if now >= next_keepalive:
                        next_keepalive = now + KEEPALIVE_S
                        yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                ward, frame = item
                if principal.sees(ward):
                    yield frame
        finally:
            self._clients.discard(queue)
