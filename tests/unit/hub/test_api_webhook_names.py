"""Webhook URLs hold secrets: the rules file names every webhook, and the delivery log and the hub's logs show
that name, never the URL (against real sockets: a port nothing listens on, a receiver answering 404)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from webhook_support import webhook_receiver

from hub.alerts.notify import Notifier
from hub.alerts.rules import parse_rules
from hub.alerts.store import AlertStore, DeliveryRow
from hub.errors import ConfigError
from hub.registry.db import Database

SECRET = "T0PS3CRET-chat-token"


@pytest.fixture
def receiver() -> Iterator[str]:
    """A receiver answering 404 to every post; its URL."""
    with webhook_receiver(status=404) as found:
        yield found.url


def test_webhooks_are_named_by_default_and_names_are_unique() -> None:
    rules = parse_rules(
        {
            "webhooks": [
                {"url": "https://a.example/x"},
                {"url": "https://b.example/y", "name": "chat-ops"},
                {"url": "https://c.example/z"},
            ]
        },
        "rules.yaml",
    )
    assert [w.name for w in rules.webhooks] == ["webhook-1", "chat-ops", "webhook-3"]
    with pytest.raises(ConfigError, match="webhook name 'chat-ops' is used twice"):
        parse_rules(
            {
                "webhooks": [
                    {"url": "https://a.example/x", "name": "chat-ops"},
                    {"url": "https://b.example/y", "name": "chat-ops"},
                ]
            },
            "rules.yaml",
        )
    with pytest.raises(ConfigError, match=r"webhooks\[0\]: name"):
        parse_rules({"webhooks": [{"url": "https://a.example/x", "name": "Chat Ops!"}]}, "rules.yaml")


async def test_deliveries_and_logs_name_the_webhook_never_its_url(
    db: Database, receiver: str, caplog: pytest.LogCaptureFixture
) -> None:
    rules = parse_rules(
        {
            "webhooks": [
                # Nothing listens on port 9 of loopback (discard, RFC 863, is not run here): a connection error.
                {"name": "down", "url": f"http://127.0.0.1:9/hooks/{SECRET}?token={SECRET}", "retries": 1},
                {"name": "refusing", "url": f"{receiver}/hooks/{SECRET}", "retries": 0},
            ]
        },
        "rules.yaml",
    )
    store = AlertStore(db)
    alert, _ = await store.open({"rule": "r", "subject": "aq-01", "severity": "critical", "message": "m"})
    notifier = Notifier(list(rules.webhooks), store, retry_initial_s=0.01)
    # The hub's loggers, all of them; httpx's own request log (INFO, with the URL) is silenced by ``ioc hub``.
    caplog.set_level(logging.DEBUG, logger="hub")
    async with httpx.AsyncClient() as client:
        for hook in rules.webhooks:
            assert not await notifier.deliver(client, hook, "fired", alert)
    deliveries = await store.deliveries(alert["id"])
    assert [(d["webhook"], d["attempt"], d["status_code"]) for d in reversed(deliveries)] == [
        ("down", 1, None),
        ("down", 2, None),
        ("refusing", 1, 404),
    ]
    assert all("url" not in d for d in deliveries)
    assert deliveries[-1]["error"].startswith("ConnectError")
    assert SECRET not in repr(deliveries)
    assert "not delivered to down" in caplog.text
    assert "not delivered to refusing" in caplog.text
    assert SECRET not in caplog.text
    stored = db.run_sync(lambda s: [r.webhook for r in s.query(DeliveryRow)])
    assert sorted(stored) == ["down", "down", "refusing"]


async def test_a_delivery_logged_before_webhooks_had_names_is_shown_without_its_url(db: Database) -> None:
    store = AlertStore(db)
    await store.log_delivery(
        {"alert_id": 7, "event": "fired", "webhook": f"https://chat.example/{SECRET}", "attempt": 1, "ok": True}
    )
    (delivery,) = await store.deliveries(7)
    assert delivery["webhook"] == "(a URL, recorded before webhooks had names)"
