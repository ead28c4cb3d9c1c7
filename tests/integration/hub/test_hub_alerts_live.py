"""Alerts on a running hub against the real broker: webhook notifications with retries and their delivery log
(a real HTTP receiver on loopback), and an open alert taken over by a restarted hub (no duplicate, cleared by
itself later)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Gateway, auth, ops_settings, running_hub, tokens, wait_until

from ioc.stack import StackEndpoints

# The alert tests' webhook receiver, imported top-level as they import it (its folder on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "hub"))

from webhook_support import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INVENTORY: dict[str, Any] = {"sites": [{"id": "site-a", "ward": "quan-1"}]}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver("/ioc") as found:
        yield found


def rules(url: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "rules": [
            {"id": "fps-low", "type": "threshold", "kinds": ["camera"], "metric": "fps", "below": 10, "clear": 12,
             "severity": "major"},
            {"id": "pm25-high", "type": "threshold", "kinds": ["air_quality"], "metric": "pm25", "above": 150,
             "clear": 120, "severity": "warning"},
        ]
    }  # fmt: skip
    if url is not None:
        doc["webhooks"] = [{"url": url, "min_severity": "major", "retries": 3, "timeout_s": 2}]
    return doc


@pytest.mark.timeout(60)
async def test_webhooks_are_retried_and_logged(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.answers = [500, 503]
    settings = ops_settings(stack, influx_db, tmp_path, rules=rules(receiver.url), inventory=INVENTORY)
    gw = Gateway(stack, "site-a", "gw-1")
    try:
        async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            tok = await tokens(hub)
            gw.birth([("cam-01", "camera", 30.0), ("aq-01", "air_quality", 30.0)])
            gw.data(("cam-01", "camera", {"fps": 4.0}), ("aq-01", "air_quality", {"pm25": 200.0}))
            await wait_until(lambda: len(receiver.received) >= 3)
            alert = receiver.received[-1]["alert"]
            assert receiver.received[-1]["event"] == "fired"
            assert (alert["subject"], alert["rule"], alert["ward"]) == ("cam-01", "fps-low", "quan-1")
            log = (await http.get(f"/api/v1/alerts/{alert['id']}/deliveries", headers=auth(tok["viewer"]))).json()
            assert [(d["attempt"], d["status_code"], d["ok"]) for d in reversed(log["items"])] == [
                (1, 500, False),
                (2, 503, False),
                (3, 200, True),
            ]
            r = await http.post(f"/api/v1/alerts/{alert['id']}/ack", headers=auth(tok["operator"]))
            assert r.status_code == 200
            await wait_until(lambda: receiver.received[-1]["event"] == "acknowledged")
            gw.data(("cam-01", "camera", {"fps": 25.0}))
            await wait_until(lambda: receiver.received[-1]["event"] == "resolved")
            # The warning (below the webhook's min_severity) was never sent.
            assert {m["alert"]["rule"] for m in receiver.received} == {"fps-low"}
            open_alerts = (await http.get("/api/v1/alerts?state=open", headers=auth(tok["viewer"]))).json()
            assert [a["rule"] for a in open_alerts["items"]] == ["pm25-high"]
    finally:
        gw.close()


@pytest.mark.timeout(60)
async def test_a_restarted_hub_takes_over_open_alerts(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, rules=rules(), inventory=INVENTORY)
    gw = Gateway(stack, "site-a", "gw-1")
    try:
        gw.birth([("cam-01", "camera", 30.0)])
        async with running_hub(settings) as hub:
            gw.data(("cam-01", "camera", {"fps": 4.0}))
            await wait_until(lambda: _open_is(hub, 1))
        async with running_hub(settings) as hub:
            # Still breaching after the restart: the alert already open is kept, no second one.
            gw.data(("cam-01", "camera", {"fps": 3.0}))
            gw.data(("cam-01", "camera", {"fps": 2.0}))
            await hub.operations.alerts.drain()
            total, items = await hub.operations.alert_store.query()
            assert total == 1
            assert items[0]["state"] == "firing"
            gw.data(("cam-01", "camera", {"fps": 30.0}))
            await wait_until(lambda: _resolved_by_system(hub))
    finally:
        gw.close()


async def _open_is(hub: Any, count: int) -> bool:
    total, _ = await hub.operations.alert_store.query(states=["firing", "acknowledged"])
    return bool(total == count)


async def _resolved_by_system(hub: Any) -> bool:
    _, items = await hub.operations.alert_store.query(states=["resolved"])
    return bool(items) and items[0]["resolved_by"] == "system"
