"""The camera wall on the operator page, in a real headless browser (Debian's chromium driven by Playwright)
against a running hub, the real broker and InfluxDB, under the hub's Content-Security-Policy: snapshots published
over MQTT by the gateways' own accounts, admitted, stored and served by the hub, drawn by the page.

A ward-limited operator sees the cameras of its ward only, each with its latest snapshot, its health badge, its
image problems and the time of its last change; a camera that recovers (``device_up`` and a ``cleared`` snapshot)
changes on the wall by itself, through the event stream, without the page reading the camera list again.

``IOC_SCREENSHOT_DIR=docs`` saves the wall as ``camera-wall.png`` there (docs/cameras.md shows it); otherwise it
goes to the test's temporary folder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ops_support import Gateway, now_ms, ops_settings, running_hub, tokens, wait_until
from page_support import RECORD_VIOLATIONS, launched_chromium
from playwright.async_api import Browser, ConsoleMessage, Response, expect
from snapshot_support import jpeg, snapshot_payload

from hub.config import SnapshotSettings
from ioc.stack import StackEndpoints
from wire.v1 import EventType, SnapshotTrigger

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "site-a", "name": "Chợ Bến Thành", "ward": "quan-1"},
        {"id": "site-b", "name": "Nhà Văn hóa Thanh niên", "ward": "quan-3"},
    ]
}
#: A bound on the wait for the page, not a speed check (the machine is shared with the rest of a test run).
UI_TIMEOUT_MS = 30_000
#: The mean of a canvas's pixels (R+G+B over 3), read in the page.
MEAN_LEVEL = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i] + data[i + 1] + data[i + 2];
  return sum / (data.length / 4) / 3;
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as b:
        yield b


@pytest.mark.timeout(300)
async def test_the_camera_wall_shows_the_wards_cameras_live(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, browser: Browser
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY).model_copy(
        update={"snapshots": SnapshotSettings(dir=tmp_path / "snapshots")}
    )
    gw1, gw2 = Gateway(stack, "site-a", "gw-1"), Gateway(stack, "site-b", "gw-2")
    pictures = {
        "cam-01": jpeg(640, 360, "testsrc2"),
        "cam-02": jpeg(640, 360, "color=c=black"),
        "cam-03": jpeg(640, 360, "smptebars"),
        "cam-04": jpeg(640, 360, "mandelbrot"),
        "cam-09": jpeg(640, 360, "testsrc"),
    }
    try:
        async with running_hub(settings) as hub:
            tok = await tokens(hub)
            health, store = hub.operations.health, hub.pipeline.snapshots.store  # type: ignore[union-attr]
            gw1.birth([(c, "camera", 30.0) for c in ("cam-01", "cam-02", "cam-03", "cam-04")])
            gw2.birth([("cam-09", "camera", 30.0)])
            for gw, cams in ((gw1, ("cam-01", "cam-02", "cam-03", "cam-04")), (gw2, ("cam-09",))):
                gw.data(*((c, "camera", {"fps": 25.0}) for c in cams))
            await wait_until(lambda: all(health.device_state(c).value == "online" for c in pictures), 30)
            taken = now_ms() - 5000
            for cam in ("cam-01", "cam-03", "cam-04"):
                gw1.raw("snapshot", snapshot_payload(gw1.session, cam, taken, pictures[cam]))
            gw1.raw("event", b"")  # a malformed message between them changes nothing
            gw1.event("cam-02", EventType.DEVICE_DEGRADED, "image_black: the picture is black (mean luma 16)")
            black = SnapshotTrigger.PROBLEM
            gw1.raw(
                "snapshot", snapshot_payload(gw1.session, "cam-02", taken, pictures["cam-02"], black, ("image_black",))
            )
            gw1.event("cam-04", EventType.DEVICE_DOWN, "ONVIF: timeout after 5.0 s")
            gw2.raw("snapshot", snapshot_payload(gw2.session, "cam-09", taken, pictures["cam-09"]))
            await wait_until(lambda: all(store.latest(c) is not None for c in pictures), 30)
            await wait_until(lambda: health.device_state("cam-04").value == "offline", 30)

            page = await browser.new_page(viewport={"width": 1600, "height": 1200})
            console: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                console.append(message.text)

            page.on("console", on_console)
            camera_lists: list[int] = []

            def on_response(response: Response) -> None:
                if "/api/v1/cameras" in response.url:
                    camera_lists.append(response.status)

            page.on("response", on_response)
            await page.add_init_script(RECORD_VIOLATIONS)
            await page.add_init_script(f"localStorage.setItem('ioc.token', {tok['operator']!r})")
            await page.add_init_script("localStorage.setItem('ioc.lang', 'en')")
            await page.goto(hub.api_url + "/")
            await expect(page.locator("#live")).to_have_class("live on", timeout=UI_TIMEOUT_MS)
            wall = page.locator("#cameras")
            tiles = wall.locator("figure.camera")
            # Troubled first: offline, degraded, then the rest by id.
            await expect(tiles).to_have_count(5, timeout=UI_TIMEOUT_MS)
            assert await tiles.evaluate_all("ts => ts.map(t => t.dataset.camera)") == [
                "cam-04",
                "cam-02",
                "cam-01",
                "cam-03",
                "cam-09",
            ]
            for cam in pictures:
                canvas = wall.locator(f'figure[data-camera="{cam}"] canvas')
                await expect(canvas).to_have_attribute("data-ts", str(taken), timeout=UI_TIMEOUT_MS)
                assert await canvas.evaluate("c => [c.width, c.height]") == [640, 360]
            cam2 = wall.locator('figure[data-camera="cam-02"]')
            await expect(cam2).to_have_attribute("data-state", "degraded")
            await expect(cam2.locator(".state")).to_have_text("Degraded")
            await expect(cam2.locator('.problem[data-problem="image_black"]')).to_have_attribute(
                "title", "Black picture"
            )
            await expect(cam2.locator(".snapshot")).to_contain_text("on a problem")
            await expect(cam2.locator(".changed")).to_contain_text("State changed: ")
            assert "never" not in (await cam2.locator(".changed").text_content() or "")
            await expect(wall.locator('figure[data-camera="cam-04"]')).to_have_attribute("data-state", "offline")
            await expect(wall.locator('figure[data-camera="cam-01"] .problem')).to_have_count(0)
            # The pictures are the ones published: black is black, the test pattern is not.
            black_level = await cam2.locator("canvas").evaluate(MEAN_LEVEL)
            pattern_level = await wall.locator('figure[data-camera="cam-01"] canvas').evaluate(MEAN_LEVEL)
            assert black_level < 20 < pattern_level, (black_level, pattern_level)

            shots = Path(os.environ.get("IOC_SCREENSHOT_DIR") or tmp_path)
            await page.locator("#cameras-panel").screenshot(path=str(shots / "camera-wall.png"))

            # cam-02 recovers: its event and its "cleared" snapshot change the tile, with no new camera list.
            lists_before = len(camera_lists)
            cleared = now_ms() - 1000
            gw1.event("cam-02", EventType.DEVICE_UP, "")
            picture = jpeg(640, 360, "testsrc2")
            gw1.raw("snapshot", snapshot_payload(gw1.session, "cam-02", cleared, picture, SnapshotTrigger.CLEARED))
            await expect(cam2).to_have_attribute("data-state", "online", timeout=UI_TIMEOUT_MS)
            await expect(cam2.locator("canvas")).to_have_attribute("data-ts", str(cleared), timeout=UI_TIMEOUT_MS)
            await expect(cam2.locator(".problem")).to_have_count(0)
            await expect(cam2.locator(".snapshot")).to_contain_text("problem cleared")
            assert await cam2.locator("canvas").evaluate(MEAN_LEVEL) > 20
            assert len(camera_lists) == lists_before, "the wall changed by reading the list again, not live"

            # A ward-limited operator sees its ward's cameras only (and not gw-2's cam-09 of quan-3).
            ward_page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await ward_page.add_init_script(f"localStorage.setItem('ioc.token', {tok['operator-quan-3']!r})")
            await ward_page.goto(hub.api_url + "/")
            ward_tiles = ward_page.locator("#cameras figure.camera")
            await expect(ward_tiles).to_have_count(1, timeout=UI_TIMEOUT_MS)
            await expect(ward_tiles).to_have_attribute("data-camera", "cam-09")
            await expect(ward_tiles.locator("canvas")).to_have_attribute("data-ts", str(taken), timeout=UI_TIMEOUT_MS)

            # A small screen fetches the pictures of the tiles it shows only, the others once scrolled to.
            small = await browser.new_page(viewport={"width": 800, "height": 400})
            fetched: list[str] = []

            def on_small_response(response: Response) -> None:
                if "/snapshots/" in response.url:
                    fetched.append(response.url.split("/devices/")[1].split("/")[0])

            small.on("response", on_small_response)
            await small.add_init_script(f"localStorage.setItem('ioc.token', {tok['operator']!r})")
            await small.goto(hub.api_url + "/")
            small_tiles = small.locator("#cameras figure.camera")
            await expect(small_tiles).to_have_count(5, timeout=UI_TIMEOUT_MS)
            await expect(small.locator("#live")).to_have_class("live on", timeout=UI_TIMEOUT_MS)
            await small.wait_for_timeout(1000)
            # The wall is below the alerts and the sites: at most its first row is near the screen.
            assert "cam-09" not in fetched, fetched
            assert len(fetched) < len(pictures), fetched
            last = small.locator('#cameras figure[data-camera="cam-09"]')
            await last.scroll_into_view_if_needed()
            await expect(last.locator("canvas")).to_have_attribute("data-ts", str(taken), timeout=UI_TIMEOUT_MS)
            assert "cam-09" in fetched
            assert len(fetched) == len(set(fetched)), fetched  # each picture fetched once
            await small.close()

            # Vietnamese by default; all of it under the hub's Content-Security-Policy.
            await expect(ward_page.locator("#cameras-title")).to_contain_text("Tường camera")
            assert await page.evaluate("window.__violations") == []
            assert not [m for m in console if "Content Security Policy" in m or "snapshot:" in m]
            await ward_page.close()
            await page.close()
    finally:
        for gw in (gw1, gw2):
            gw.client.loop_stop()
            gw.client.disconnect()
