"""Webhook notifications of alert events, with retries and a delivery log.

Each event (``fired``, ``acknowledged``, ``resolved``) of an alert at or above a webhook's ``min_severity`` is
POSTed to it as JSON ``{"event": ..., "alert": {...}}``. A delivery is retried on a connection error, a timeout,
HTTP 408, 429 or 5xx, up to ``retries`` more times with capped exponential backoff and jitter; other answers are
final. Every attempt is written to the ``webhook_deliveries`` table (``GET /api/v1/alerts/{id}/deliveries``).
The queue is bounded: beyond ``max_queued`` waiting events, new ones are dropped and counted.

A webhook URL usually holds a secret, so the delivery log and the hub's logs name the webhook (``name``) and
never hold its URL: an error text that quotes a URL (some of httpx's do) has it replaced by the name.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

import httpx

from common.tasks import cancel_and_wait
from hub.alerts.rules import SEVERITY_RANK, Webhook
from hub.alerts.store import AlertStore

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429})
#: Backoff between attempts: min(max, initial * 2^n), jittered to [d/2, d].
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 60.0
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


def scrub(text: str, hook: Webhook) -> str:
    """``text`` with the webhook's URL, and any other URL in it, replaced by ``<name>``."""
    return _URL.sub(f"<{hook.name}>", text.replace(hook.url, f"<{hook.name}>"))


class Notifier:
    """``enqueue`` is an alert listener; ``run`` delivers until cancelled (at most ``concurrency`` at once)."""

    def __init__(
        self,
        webhooks: list[Webhook],
        store: AlertStore,
        *,
        max_queued: int = 10_000,
        concurrency: int = 8,
        retry_initial_s: float = RETRY_INITIAL_S,
    ) -> None:
        self._webhooks = webhooks
        self._store = store
        self._queue: asyncio.Queue[tuple[Webhook, str, dict[str, Any]]] = asyncio.Queue(max_queued)
        self._concurrency = concurrency
        self._retry_initial_s = retry_initial_s
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    def enqueue(self, event: str, alert: dict[str, Any]) -> None:
        for hook in self._webhooks:
            if SEVERITY_RANK[alert["severity"]] < SEVERITY_RANK[hook.min_severity]:
                continue
            try:
                self._queue.put_nowait((hook, event, alert))
            except asyncio.QueueFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("webhooks: queue full, %d notifications dropped so far", self.dropped)  # noqa: TRY400

    async def run(self) -> None:
        if not self._webhooks:
            await asyncio.Event().wait()  # nothing to do; wait for cancellation
        async with httpx.AsyncClient(follow_redirects=False) as client:
            workers = [asyncio.create_task(self._worker(client)) for _ in range(self._concurrency)]
            try:
                await asyncio.gather(*workers)
            finally:
                await cancel_and_wait(workers)

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            hook, event, alert = await self._queue.get()
            try:
                await self.deliver(client, hook, event, alert)
            except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the worker
                # Not log.exception: a traceback's text may quote the URL.
                log.error("webhooks: delivery to %s failed unexpectedly: %s", hook.name, scrub(repr(exc), hook))  # noqa: TRY400

    async def deliver(self, client: httpx.AsyncClient, hook: Webhook, event: str, alert: dict[str, Any]) -> bool:
        """Deliver one event, retrying; True if the receiver took it."""
        body = {"event": event, "alert": alert}
        for attempt in range(1, hook.retries + 2):
            started = time.monotonic()
            status: int | None = None
            error = ""
            try:
                response = await client.post(hook.url, json=body, headers=hook.headers, timeout=hook.timeout_s)
                status = response.status_code
            except httpx.HTTPError as exc:
                error = scrub(f"{type(exc).__name__}: {exc}", hook)[:500]
            ok = status is not None and 200 <= status < 300
            retryable = status is None or status in RETRY_STATUS or status >= 500
            if status is not None and not ok:
                error = f"HTTP {status}"
            await self._store.log_delivery(
                {
                    "alert_id": alert["id"],
                    "event": event,
                    "webhook": hook.name,
                    "attempt": attempt,
                    "ok": ok,
                    "status_code": status,
                    "error": error,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                }
            )
            if ok:
                self.delivered += 1
                return True
            if not retryable or attempt > hook.retries:
                break
            ceiling = min(RETRY_MAX_S, self._retry_initial_s * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
        self.failed += 1
        log.warning("webhooks: %s of alert %s not delivered to %s (%s)", event, alert["id"], hook.name, error)
        return False
