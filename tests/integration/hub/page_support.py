"""What the operator-page tests share: chromium launched headless as the machine allows (the env skill's flags:
without the background-networking ones chromium's connections are refused by this machine's closed network), and a
script that records every CSP violation the page reports (https://www.w3.org/TR/CSP3/#violation-events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

from ioc.stack.packages import find_binary

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    """Debian's chromium through Playwright, closed on exit."""
    chromium = find_binary("chromium")
    assert chromium is not None, "chromium is not installed: ioc stack ensure (or apt-get install chromium)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
