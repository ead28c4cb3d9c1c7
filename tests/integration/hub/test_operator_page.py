"""The operator page in a real headless browser (Debian's chromium driven by Playwright) against a running hub,
the real broker and InfluxDB: it loads with Vietnamese labels (English on demand), shows a device going offline
without a reload, acknowledges an alert with its button, shows a device's transitions, and fits a phone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Gateway, auth, ops_settings, running_hub, tokens, wait_until
from page_support import launched_chromium
from playwright.async_api import Browser, expect

from ioc.stack import StackEndpoints
from wire.v1 import EventType

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INVENTORY: dict[str, Any] = {"sites": [{"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"}]}
RULES: dict[str, Any] = {
    "rules": [
        {"id": "fps-low", "type": "threshold", "kinds": ["camera"], "metric": "fps", "below": 10, "clear": 12,
         "severity": "major"},
    ]
}  # fmt: skip
#: How long the page may take to show a change: a bound on the wait for the condition, not a speed check (the
#: page's and the API's speed are measured by ``benchmarks/api_list.py``). Generous because chromium, the hub,
#: the broker and InfluxDB share two cores with the rest of a test run; Playwright's own default is 5 s.
UI_TIMEOUT_MS = 30_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as b:
        yield b


@pytest.mark.timeout(300)
async def test_operator_page_live(stack: StackEndpoints, influx_db: str, tmp_path: Path, browser: Browser) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, rules=RULES, inventory=INVENTORY)
    gw = Gateway(stack, "site-a", "gw-1")
    try:
        async with running_hub(settings) as hub:
            tok = await tokens(hub)
            gw.birth([("cam-01", "camera", 30.0), ("aq-01", "air_quality", 30.0)])
            gw.data(("cam-01", "camera", {"fps": 25.0}), ("aq-01", "air_quality", {"pm25": 20.0}))
            await wait_until(lambda: hub.operations.health.device_state("aq-01").value == "online", 30)

            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            await page.add_init_script(f"localStorage.setItem('ioc.token', {tok['operator']!r})")
            await page.goto(hub.api_url + "/")
            await expect(page.locator("h1")).to_have_text("Vận hành thiết bị", timeout=UI_TIMEOUT_MS)
            row = page.locator('tr[data-device="aq-01"]')
            await expect(row.locator(".state")).to_have_text("Trực tuyến", timeout=UI_TIMEOUT_MS)
            await expect(page.locator("#live")).to_have_class("live on", timeout=UI_TIMEOUT_MS)
            await page.evaluate("window.__loaded_once = true")

            # The driver reports the device down: the row turns offline by itself.
            gw.event("aq-01", EventType.DEVICE_DOWN, "timeout after 3.0 s")
            await expect(row).to_have_attribute("data-state", "offline", timeout=UI_TIMEOUT_MS)
            await expect(row.locator(".state")).to_have_text("Mất kết nối", timeout=UI_TIMEOUT_MS)
            await expect(row.locator(".reason")).to_have_text("device_down: timeout after 3.0 s", timeout=UI_TIMEOUT_MS)
            assert await page.evaluate("window.__loaded_once") is True  # no reload happened

            # A low frame rate opens an alert; the operator acknowledges it from the page.
            gw.data(("cam-01", "camera", {"fps": 3.0}))
            alert = page.locator("#alerts li[data-alert]")
            await expect(alert).to_have_count(1, timeout=UI_TIMEOUT_MS)
            await expect(alert).to_contain_text("cam-01 — fps-low", timeout=UI_TIMEOUT_MS)
            await expect(page.locator("#alert-count")).to_have_text("1", timeout=UI_TIMEOUT_MS)
            await alert.locator("button.ack").click()
            await expect(alert).to_have_attribute("data-state", "acknowledged", timeout=UI_TIMEOUT_MS)
            alert_id = int(await alert.get_attribute("data-alert") or 0)
            async with httpx.AsyncClient(base_url=hub.api_url) as http:
                stored = (await http.get(f"/api/v1/alerts/{alert_id}", headers=auth(tok["viewer"]))).json()
            assert stored["state"] == "acknowledged"
            assert stored["acked_by"].startswith("test-operator")

            # A device's recent transitions.
            await row.click()
            panel = page.locator("#detail-panel")
            await expect(panel).to_be_visible(timeout=UI_TIMEOUT_MS)
            newest = panel.locator("#transitions li").first
            await expect(newest).to_contain_text("device_down: timeout after 3.0 s", timeout=UI_TIMEOUT_MS)

            # English on demand.
            await page.locator("#lang").click()
            await expect(page.locator("h1")).to_have_text("Device operations", timeout=UI_TIMEOUT_MS)
            await expect(row.locator(".state")).to_have_text("Offline", timeout=UI_TIMEOUT_MS)

            # Recovery shows up live too.
            gw.event("aq-01", EventType.DEVICE_UP)
            await expect(row).to_have_attribute("data-state", "online", timeout=UI_TIMEOUT_MS)

            # A phone: one column, nothing wider than the screen.
            phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            await phone.add_init_script(f"localStorage.setItem('ioc.token', {tok['viewer']!r})")
            await phone.goto(hub.api_url + "/")
            await expect(phone.locator('tr[data-device="cam-01"]')).to_be_visible(timeout=UI_TIMEOUT_MS)
            overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"the page is {overflow} px wider than the phone"
            await phone.close()

            # A wrong token: the page asks for one instead of showing data.
            bad = await browser.new_page()
            await bad.add_init_script("localStorage.setItem('ioc.token', 'ioc_000000000000_xxxxxxxxxxxxxxxxxxxxxxxx')")
            await bad.goto(hub.api_url + "/")
            await expect(bad.locator("#login")).to_be_visible(timeout=UI_TIMEOUT_MS)
            await expect(bad.locator("#login-error")).to_have_text("Token không hợp lệ", timeout=UI_TIMEOUT_MS)
            await bad.close()
            await page.close()
    finally:
        gw.close()
