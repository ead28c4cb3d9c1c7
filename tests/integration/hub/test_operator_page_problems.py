"""Gateway problems and security alerts on the operator page, in a real headless browser (Debian's chromium driven
by Playwright) against a running hub, the real broker and InfluxDB, under the hub's Content-Security-Policy.

gw-1 (site-a) stamps a reading an hour ahead (the admission refuses it: a ``clock_skew`` problem of gw-1) and
writes about gw-2's camera (``foreign_device``: a ``security-foreign-device`` alert). The page shows gw-1's
problem as a badge on its site and on its device's row, with the detail as the badge's title, in Vietnamese and
in English, and none for gw-2; the security alert is listed like any alert."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ops_support import Gateway, now_ms, ops_settings, running_hub, tokens, wait_until
from page_support import RECORD_VIOLATIONS, launched_chromium
from playwright.async_api import Browser, ConsoleMessage, Response, expect

from ioc.stack import StackEndpoints
from wire.v1 import DataBatch, Reading, encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"},
        {"id": "site-b", "name": "Nhà Văn hóa Thanh niên", "ward": "quan-3"},
    ]
}
#: A bound on the wait for the page, not a speed check (the machine is shared with the rest of a test run); above
#: the page's 15 s period for reading the gateways again.
UI_TIMEOUT_MS = 30_000


def starts_with(text: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(text))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as b:
        yield b


@pytest.mark.timeout(300)
async def test_the_page_shows_a_gateways_clock_skew_and_its_security_alert(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, browser: Browser
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    gw1, gw2 = Gateway(stack, "site-a", "gw-1"), Gateway(stack, "site-b", "gw-2")
    try:
        async with running_hub(settings) as hub:
            tok = await tokens(hub)
            health = hub.operations.health
            gw1.birth([("aq-01", "air_quality", 30.0)])
            gw2.birth([("cam-02", "camera", 30.0)])
            gw1.data(("aq-01", "air_quality", {"pm25": 20.0}))
            gw2.data(("cam-02", "camera", {"fps": 25.0}))
            await wait_until(
                lambda: health.device_state("aq-01").value == health.device_state("cam-02").value == "online", 30
            )

            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            console: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                console.append(message.text)

            page.on("console", on_console)
            gateway_reads: list[int] = []  # the page's answers from GET /api/v1/gateways

            def on_response(response: Response) -> None:
                if response.url.endswith("/api/v1/gateways"):
                    gateway_reads.append(response.status)

            page.on("response", on_response)
            await page.add_init_script(RECORD_VIOLATIONS)
            await page.add_init_script(f"localStorage.setItem('ioc.token', {tok['operator']!r})")
            await page.goto(hub.api_url + "/")
            aq_row, cam_row = page.locator('tr[data-device="aq-01"]'), page.locator('tr[data-device="cam-02"]')
            await expect(aq_row.locator(".state")).to_have_text("Trực tuyến", timeout=UI_TIMEOUT_MS)
            await expect(cam_row.locator(".state")).to_have_text("Trực tuyến", timeout=UI_TIMEOUT_MS)
            await expect(page.locator("#live")).to_have_class("live on", timeout=UI_TIMEOUT_MS)
            # Loaded twice (at start, and again once the event stream is up), both before the problem: the badge
            # can then only come from the page reading the gateways again by itself.
            await wait_until(lambda: len(gateway_reads) >= 2, UI_TIMEOUT_MS / 1000)
            await page.wait_for_timeout(500)
            # No problem yet: no badge anywhere.
            await expect(page.locator(".problem")).to_have_count(0)
            await expect(page.locator(".gateway-problems")).to_have_count(0)

            # gw-1's clock runs an hour ahead; it also writes about gw-2's camera.
            gw1.seq += 1
            ahead = Reading("aq-01", "air_quality", now_ms() + 3_600_000, {"pm25": 12.0})
            gw1.raw("data", encode(DataBatch(session=gw1.session, seq=gw1.seq, readings=[ahead])))
            gw1.data(("cam-02", "camera", {"fps": 1.0}))
            await wait_until(lambda: health.problems("site-a", "gw-1"), 30)
            [problem] = health.problems("site-a", "gw-1")

            # The badge comes by itself (the page reads the gateways again), on gw-1's site and device row.
            site_a = page.locator('.site[data-site="site-a"]')
            gw_badge = site_a.locator('li.gateway[data-gateway="site-a/gw-1"] .problem[data-problem="clock_skew"]')
            await expect(gw_badge).to_have_text("clock_skew", timeout=UI_TIMEOUT_MS)
            assert len(gateway_reads) >= 3, gateway_reads
            await expect(site_a.locator("li.gateway")).to_contain_text("Gateway gw-1")
            await expect(gw_badge).to_have_attribute(
                "title", starts_with(f"Đồng hồ gateway bị lệch: {problem['detail']} (từ ")
            )
            row_badge = aq_row.locator('.problem[data-problem="clock_skew"]')
            await expect(row_badge).to_have_text("clock_skew")
            assert (await row_badge.get_attribute("title") or "").startswith("Đồng hồ gateway bị lệch: ")
            assert problem["detail"].endswith("s beyond the allowed clock skew")
            # None for gw-2, which did nothing wrong with its clock.
            site_b = page.locator('.site[data-site="site-b"]')
            await expect(site_b.locator(".problem")).to_have_count(0)
            await expect(cam_row.locator(".problem")).to_have_count(0)

            # The security alert, listed like any alert, readable, and acknowledged from the page.
            alert = page.locator("#alerts li[data-alert]")
            await expect(alert).to_have_count(1, timeout=UI_TIMEOUT_MS)
            await expect(alert.locator("strong")).to_have_text("site-a/gw-1 — security-foreign-device")
            await expect(alert).to_contain_text("gateway site-a/gw-1 wrote about devices of another gateway")
            await expect(alert).to_have_attribute("data-severity", "critical")
            await expect(alert.locator(".meta")).to_contain_text("critical · đang báo")
            await alert.locator("button.ack").click()
            await expect(alert).to_have_attribute("data-state", "acknowledged", timeout=UI_TIMEOUT_MS)

            # The device's detail names its gateway's problem too.
            await aq_row.click()
            detail = page.locator("#detail-info .problems")
            await expect(detail.locator('.problem[data-problem="clock_skew"]')).to_have_text(
                "clock_skew", timeout=UI_TIMEOUT_MS
            )
            await expect(detail).to_contain_text(problem["detail"])

            # English on demand: the badge keeps its code, its title is in English.
            await page.locator("#lang").click()
            await expect(page.locator("h1")).to_have_text("Device operations", timeout=UI_TIMEOUT_MS)
            await expect(gw_badge).to_have_attribute(
                "title", starts_with(f"Gateway clock is off: {problem['detail']} (since "), timeout=UI_TIMEOUT_MS
            )
            await expect(site_a.locator("li.gateway")).to_contain_text("Gateway gw-1")
            await expect(cam_row.locator(".problem")).to_have_count(0)

            # All of it under the hub's Content-Security-Policy.
            assert await page.evaluate("window.__violations") == []
            assert not [m for m in console if "Content Security Policy" in m]
            await page.close()
    finally:
        gw1.close()
        gw2.close()
