"""The operator page under the hub's Content-Security-Policy in a real headless browser (Debian's chromium driven
by Playwright): it loads its data and the live stream with no violation reported, while the policy is in force
(an injected inline script does not run) and nothing may frame the page (``frame-ancestors 'none'``); when its
token is revoked, the stream ends and the page asks for another token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import auth, ops_settings, running_hub, tokens, wait_until
from page_support import RECORD_VIOLATIONS, launched_chromium
from playwright.async_api import Browser, ConsoleMessage, expect

from ioc.stack import StackEndpoints

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INVENTORY: dict[str, Any] = {
    "sites": [{"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"}],
    "devices": [{"id": "aq-01", "kind": "air_quality", "site": "site-a", "gateway": "gw-1"}],
}
#: A bound on the wait for the page, not a speed check (the machine is shared with the rest of a test run).
UI_TIMEOUT_MS = 30_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as b:
        yield b


@pytest.mark.timeout(240)
async def test_the_operator_page_works_under_the_policy(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, browser: Browser
) -> None:
    async with running_hub(ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)) as hub:
        tok = await tokens(hub)
        page = await browser.new_page()
        console: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            console.append(message.text)

        page.on("console", on_console)
        await page.add_init_script(RECORD_VIOLATIONS)
        await page.add_init_script(f"localStorage.setItem('ioc.token', {tok['viewer']!r})")
        response = await page.goto(hub.api_url + "/")
        assert response is not None
        assert "frame-ancestors 'none'" in (await response.header_value("content-security-policy") or "")
        await expect(page.locator('tr[data-device="aq-01"] .state')).to_have_text("Không rõ", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#live")).to_have_class("live on", timeout=UI_TIMEOUT_MS)
        assert await page.evaluate("window.__violations") == []
        assert not [m for m in console if "Content Security Policy" in m]

        # The policy is in force: an inline script added to the page does not run, and is reported.
        await page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
            " document.body.append(s); }"
        )
        assert await page.evaluate("window.__inline") is None
        await wait_until(lambda: page.evaluate("window.__violations.length"), UI_TIMEOUT_MS / 1000)
        assert [v.split()[0] for v in await page.evaluate("window.__violations")] == ["script-src-elem"]

        # Framed by another page: the browser refuses to show the hub inside it.
        framer = await browser.new_page()
        framed: list[str] = []
        framer.on("console", lambda m: framed.append(m.text))
        await framer.set_content(f'<iframe id="hub" src="{hub.api_url}/"></iframe>')
        await wait_until(lambda: any("frame-ancestors" in m for m in framed), UI_TIMEOUT_MS / 1000)
        frame = framer.frame_locator("#hub")
        await expect(frame.locator("h1[data-i18n=title]")).to_have_count(0)
        await framer.close()

        # The page's token is revoked: the hub ends its event stream and the page asks for another token.
        token_id = tok["viewer"].split("_")[1]
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
            r = await http.delete(f"/api/v1/tokens/{token_id}", headers=auth(tok["admin"]))
            assert r.status_code == 200
        await expect(page.locator("#login")).to_be_visible(timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#login-error")).to_have_text("Token không hợp lệ", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#live")).to_have_class("live off", timeout=UI_TIMEOUT_MS)
        await page.close()
