"""``GET /api/v1/reports/availability`` on a running hub (real broker, InfluxDB, SQLite registry), checked against a
health history the test writes into the hub's database: last month (in the city's time zone, Asia/Ho_Chi_Minh)
with transitions across both of its boundaries, every fault kind, a fault carried in from before the month, one
still open at its end, stretches of unknown, a camera first seen mid-month, two wards, and a sensor that is no
camera. Every figure of the JSON is computed by hand below; the CSV says the same; a ward-limited viewer sees its
ward only; bad input gets 422 naming the parameter. The PDF is printed by the real headless Chromium and its text
read back (a small reader of Chromium's PDFs: fonts with ToUnicode maps, FlateDecode streams); the HTML page,
opened from the hub in Chromium, is styled under its own Content-Security-Policy."""

from __future__ import annotations

import csv
import io
import re
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from ops_support import auth, ops_settings, running_hub, tokens
from page_support import RECORD_VIOLATIONS, launched_chromium

from hub.auth import create_token_in
from hub.config import ReportSettings
from hub.health.store import HealthTransitionRow
from hub.reports.render import CSV_COLUMNS
from hub.service import Hub
from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration

H = 3_600_000  # an hour, ms
URL = "/api/v1/reports/availability"
INVENTORY: dict[str, Any] = {
    "sites": [
        {"id": "rep-site-a", "name": "Chợ Bến Thành", "ward": "quan-1"},
        {"id": "rep-site-b", "name": "Tân Định", "ward": "quan-3"},
    ],
    "devices": [
        {"id": "cam-a1", "kind": "camera", "site": "rep-site-a", "gateway": "gw-1"},
        {"id": "cam-a2", "kind": "camera", "site": "rep-site-a", "gateway": "gw-1"},
        {"id": "cam-b1", "kind": "camera", "site": "rep-site-b", "gateway": "gw-2"},
        {"id": "aq-a1", "kind": "air_quality", "site": "rep-site-a", "gateway": "gw-1"},
    ],
}
BLACK_AND_MOVED = (
    "device_degraded: image_black: 99.1% of pixels darker than 24; view_changed: moved 40% of the reference view"
)


def last_month() -> tuple[str, int, int]:
    """Last month in Asia/Ho_Chi_Minh: ``YYYY-MM``, its first instant and the next month's (ms)."""
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    this_month = datetime.now(tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (this_month - timedelta(days=1)).replace(day=1)
    return start.strftime("%Y-%m"), int(start.timestamp()) * 1000, int(this_month.timestamp()) * 1000


def history(s: int, e: int) -> dict[str, list[tuple[int, str, str]]]:
    """(ts_ms, new state, reason) per device; ``s`` and ``e`` the month's bounds."""
    return {
        "cam-a1": [
            (s - 240 * H, "offline", "device_down: no answer"),
            (s - 48 * H, "online", "device_up"),  # the state at the month's start
            (s + 10 * H, "degraded", BLACK_AND_MOVED),
            (s + 12 * H, "degraded", "device_degraded: view_changed: moved 40% of the reference view"),
            (s + 15 * H, "online", "device_up"),
            (s + 20 * H, "offline", "device_down: no answer"),
            (s + 22 * H, "unknown", "gateway rep-site-a/gw-1 offline: connection lost"),
            (s + 30 * H, "offline", "device_down: no answer"),
            (s + 31 * H, "online", "device_up"),
            (e - 5 * H, "degraded", "device_degraded: image_frozen: the same frame for 300 s"),
            (e + 1 * H, "online", "device_up"),  # next month: the frozen picture is open at the month's end
        ],
        "cam-a2": [
            (s - 3 * H, "offline", "device_down: no answer"),  # carried in: not counted, its time is
            (s + 2 * H, "online", "device_up"),
            (s + 100 * H, "degraded", "device_degraded: image_covered: 0.4% of the detail of the reference"),
            (s + 101 * H, "degraded", "flapping: 6 changes within 300 s (last: online, device_up)"),
            (s + 103 * H, "online", "stable for 130 s: device_up"),
        ],
        "cam-b1": [  # first seen two days into the month
            (s + 48 * H, "online", "birth"),
            (s + 60 * H, "degraded", "device_degraded: image_blurred: sharpness 2.1"),
            (s + 61 * H, "offline", "device_down: no answer"),
            (s + 64 * H, "online", "device_up"),
            (s + 200 * H, "unknown", "gateway rep-site-b/gw-2 offline: connection lost"),
            (s + 210 * H, "online", "gateway back"),
        ],
        "aq-a1": [(s + 1 * H, "offline", "device_down"), (s + 2 * H, "online", "device_up")],
    }


def write_history(hub: Hub, s: int, e: int) -> None:
    rows = []
    for device, steps in history(s, e).items():
        site = "rep-site-b" if device == "cam-b1" else "rep-site-a"
        kind = "air_quality" if device.startswith("aq") else "camera"
        old = "unknown"
        for ts_ms, new, reason in steps:
            rows.append(
                HealthTransitionRow(
                    entity="device",
                    key=device,
                    site=site,
                    gateway="gw-1",
                    device=device,
                    kind=kind,
                    old=old,
                    new=new,
                    reason=reason,
                    ts_ms=ts_ms,
                    at=datetime.fromtimestamp(ts_ms / 1000, UTC),
                )
            )
            old = new
    hub.operations.db.run_sync(lambda session: session.add_all(rows))


def episodes(started: int, restored: int, open_: int, mean_ms: float | None) -> dict[str, Any]:
    return {
        "started": started,
        "restored": restored,
        "open": open_,
        "mean_time_to_restore_s": None if mean_ms is None else mean_ms / 1000,
    }


def figures(
    observed: int,
    states: dict[str, int],
    outages: dict[str, Any],
    faults: dict[str, tuple[dict[str, Any], int]],
) -> dict[str, Any]:
    """The JSON figures: ``states`` ms per state (online, degraded, offline, unknown), ``faults`` kind -> (episodes,
    time in fault ms); kinds not given had none."""
    kinds = ("offline", "image_black", "image_frozen", "image_blurred", "image_covered", "view_changed", "degraded")
    known = observed - states["unknown"]
    return {
        "observed_s": observed / 1000,
        "online_s": states["online"] / 1000,
        "degraded_s": states["degraded"] / 1000,
        "offline_s": states["offline"] / 1000,
        "unknown_s": states["unknown"] / 1000,
        "availability": states["online"] / known if known else None,
        "outages": outages,
        "faults": [
            {"kind": k, "time_s": faults.get(k, (None, 0))[1] / 1000, **faults.get(k, (episodes(0, 0, 0, None), 0))[0]}
            for k in kinds
        ],
    }


def expected(month: str, s: int, e: int) -> dict[str, Any]:
    """The report by hand. ``length`` is the month's (28 to 31 days)."""
    length = e - s
    cam_a1 = figures(
        length,
        # degraded 10-15 h and the last 5 h; offline 20-22, 30-31; unknown 22-30
        {"online": length - 21 * H, "degraded": 10 * H, "offline": 3 * H, "unknown": 8 * H},
        episodes(3, 2, 1, (5 * H + 11 * H) / 2),
        {
            "offline": (episodes(1, 1, 0, 11 * H), 3 * H),  # from 20 h (unknown between) to 31 h
            "image_black": (episodes(1, 1, 0, 5 * H), 2 * H),
            "view_changed": (episodes(1, 1, 0, 5 * H), 5 * H),
            "image_frozen": (episodes(1, 0, 1, None), 5 * H),
        },
    )
    cam_a2 = figures(
        length,
        {"online": length - 5 * H, "degraded": 3 * H, "offline": 2 * H, "unknown": 0},
        episodes(1, 1, 0, 3 * H),
        {
            "offline": (episodes(0, 0, 0, None), 2 * H),  # began before the month
            "image_covered": (episodes(1, 1, 0, 3 * H), 1 * H),
            "degraded": (episodes(1, 1, 0, 2 * H), 2 * H),
        },
    )
    cam_b1 = figures(
        length,
        {"online": length - 62 * H, "degraded": 1 * H, "offline": 3 * H, "unknown": 58 * H},
        episodes(1, 1, 0, 4 * H),
        {
            "offline": (episodes(1, 1, 0, 3 * H), 3 * H),
            "image_blurred": (episodes(1, 1, 0, 4 * H), 1 * H),
        },
    )
    quan_1 = figures(
        2 * length,
        {"online": 2 * length - 26 * H, "degraded": 13 * H, "offline": 5 * H, "unknown": 8 * H},
        episodes(4, 3, 1, (5 * H + 11 * H + 3 * H) / 3),
        {
            "offline": (episodes(1, 1, 0, 11 * H), 5 * H),
            "image_black": (episodes(1, 1, 0, 5 * H), 2 * H),
            "view_changed": (episodes(1, 1, 0, 5 * H), 5 * H),
            "image_frozen": (episodes(1, 0, 1, None), 5 * H),
            "image_covered": (episodes(1, 1, 0, 3 * H), 1 * H),
            "degraded": (episodes(1, 1, 0, 2 * H), 2 * H),
        },
    )
    total = figures(
        3 * length,
        {"online": 3 * length - 88 * H, "degraded": 14 * H, "offline": 8 * H, "unknown": 66 * H},
        episodes(5, 4, 1, (5 * H + 11 * H + 3 * H + 4 * H) / 4),
        {
            "offline": (episodes(2, 2, 0, (11 * H + 3 * H) / 2), 8 * H),
            "image_black": (episodes(1, 1, 0, 5 * H), 2 * H),
            "view_changed": (episodes(1, 1, 0, 5 * H), 5 * H),
            "image_frozen": (episodes(1, 0, 1, None), 5 * H),
            "image_covered": (episodes(1, 1, 0, 3 * H), 1 * H),
            "image_blurred": (episodes(1, 1, 0, 4 * H), 1 * H),
            "degraded": (episodes(1, 1, 0, 2 * H), 2 * H),
        },
    )
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    return {
        "month": month,
        "timezone": "Asia/Ho_Chi_Minh",
        "start": datetime.fromtimestamp(s / 1000, tz).isoformat(),
        "end": datetime.fromtimestamp(e / 1000, tz).isoformat(),
        "complete": True,
        "ward": None,
        "total": {"cameras": 3, **total},
        "wards": [
            {"ward": "quan-1", "cameras": 2, **quan_1},
            {"ward": "quan-3", "cameras": 1, **cam_b1},
        ],
        "cameras": [
            {"device": "cam-a1", "site": "rep-site-a", "site_name": "Chợ Bến Thành", "ward": "quan-1", **cam_a1},
            {"device": "cam-a2", "site": "rep-site-a", "site_name": "Chợ Bến Thành", "ward": "quan-1", **cam_a2},
            {"device": "cam-b1", "site": "rep-site-b", "site_name": "Tân Định", "ward": "quan-3", **cam_b1},
        ],
    }


async def both_wards_token(hub: Hub) -> str:
    """A viewer limited to the test's two wards: its total is exactly the test's cameras."""
    token, _ = await hub.operations.db.write(lambda s: create_token_in(s, "viewer", wards=["quan-1", "quan-3"]))
    return token


@pytest.mark.timeout(90)
async def test_figures_csv_scoping_and_bad_input(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    month, s, e = last_month()
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http:
        tok = await tokens(hub)
        both = await both_wards_token(hub)
        write_history(hub, s, e)
        want = expected(month, s, e)

        r = await http.get(URL, params={"month": month}, headers=auth(both))
        assert r.status_code == 200, r.text
        assert r.json() == want

        # One ward asked for: its cameras, and a total equal to that ward.
        r = await http.get(URL, params={"month": month, "ward": "quan-3"}, headers=auth(both))
        assert r.status_code == 200, r.text
        body = r.json()
        assert [c["device"] for c in body["cameras"]] == ["cam-b1"]
        assert body["ward"] == "quan-3"
        assert body["total"] == {k: v for k, v in want["wards"][1].items() if k != "ward"}

        # A viewer of quan-1 sees quan-1 only, and learns nothing of quan-3.
        r = await http.get(URL, params={"month": month}, headers=auth(tok["viewer-quan-1"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert [c["device"] for c in body["cameras"]] == ["cam-a1", "cam-a2"]
        assert body["wards"] == [want["wards"][0]]
        assert body["total"] == {k: v for k, v in want["wards"][0].items() if k != "ward"}
        r = await http.get(URL, params={"month": month, "ward": "quan-3"}, headers=auth(tok["viewer-quan-1"]))
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["query", "ward"]
        r_unknown = await http.get(URL, params={"month": month, "ward": "quan-9"}, headers=auth(tok["viewer-quan-1"]))
        assert r_unknown.status_code == 422
        assert r_unknown.json()["detail"][0]["msg"].replace("quan-9", "quan-3") == r.json()["detail"][0]["msg"]

        # An unlimited viewer sees the same cameras (the registry has no others).
        r = await http.get(URL, params={"month": month}, headers=auth(tok["viewer"]))
        assert r.json()["cameras"] == want["cameras"]

        # The CSV: a header row, a row per camera, per ward and the total, with the JSON's figures.
        r = await http.get(URL, params={"month": month, "format": "csv"}, headers=auth(both))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"] == f'attachment; filename="camera-availability-{month}.csv"'
        rows = list(csv.reader(io.StringIO(r.text)))
        assert tuple(rows[0]) == CSV_COLUMNS
        by_scope = [(row[0], row[1], row[4]) for row in rows[1:]]
        assert by_scope == [
            ("camera", "quan-1", "cam-a1"),
            ("camera", "quan-1", "cam-a2"),
            ("camera", "quan-3", "cam-b1"),
            ("ward", "quan-1", ""),
            ("ward", "quan-3", ""),
            ("total", "", ""),
        ]
        a1 = dict(zip(CSV_COLUMNS, rows[1], strict=True))
        j1 = want["cameras"][0]
        assert a1["site_name"] == "Chợ Bến Thành"
        assert float(a1["availability"]) == j1["availability"]
        assert float(a1["online_s"]) == j1["online_s"]
        assert float(a1["unknown_s"]) == 8 * 3600
        assert (a1["outages"], a1["outages_open"], float(a1["outages_mttr_s"])) == ("3", "1", 8 * 3600)
        assert (a1["offline_faults"], a1["offline_mttr_s"], a1["offline_time_s"]) == ("1", "39600.0", "10800.0")
        assert (a1["image_frozen_faults"], a1["image_frozen_open"], a1["image_frozen_mttr_s"]) == ("1", "1", "")
        total = dict(zip(CSV_COLUMNS, rows[-1], strict=True))
        assert (total["cameras"], float(total["availability"])) == ("3", want["total"]["availability"])

        # Bad input: 422 naming the parameter; no token: 401.
        for params, field in (
            ({"month": "2026-13"}, "month"),
            ({"month": "last"}, "month"),
            ({"month": "1969-12"}, "month"),
            ({"month": (datetime.now(UTC) + timedelta(days=70)).strftime("%Y-%m")}, "month"),
            ({"month": month, "format": "xml"}, "format"),
            ({"month": month, "lang": "fr"}, "lang"),
            ({"month": month, "ward": "bad ward!"}, "ward"),
            ({}, "month"),
        ):
            r = await http.get(URL, params=params, headers=auth(both))
            assert r.status_code == 422, (params, r.text)
            assert r.json()["detail"][0]["loc"] == ["query", field], (params, r.text)
        r = await http.get(URL, params={"month": (datetime.now(UTC) + timedelta(days=70)).strftime("%Y-%m")},
                           headers=auth(both))  # fmt: skip
        assert "has not begun" in r.json()["detail"][0]["msg"]
        assert (await http.get(URL, params={"month": month})).status_code == 401

        # This month is reported up to now.
        r = await http.get(URL, params={"month": datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%Y-%m")},
                           headers=auth(both))  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["complete"] is False

        # The OpenAPI document describes the answer.
        doc = (await http.get("/api/v1/openapi.json")).json()
        op = doc["paths"][URL]["get"]
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/AvailabilityReport")
        assert {"text/csv", "text/html", "application/pdf"} <= set(op["responses"]["200"]["content"])
        assert "availability" in doc["components"]["schemas"]["CameraAvailability"]["properties"]


def pdf_text(data: bytes) -> str:
    """The text Chromium's PDF shows, in drawing order: every hex string of the pages' content streams decoded
    with the ToUnicode map of the font in use (PDF 32000-1:2008, 9.10.3). Enough for Chromium's (Skia's) PDFs."""
    objects: dict[int, tuple[bytes, bytes | None]] = {}
    for num, body in re.findall(rb"(\d+) 0 obj\s*(.*?)endobj", data, re.DOTALL):
        head, _, rest = body.partition(b"stream")
        stream = None
        if rest:
            raw = rest.lstrip(b"\r\n").rsplit(b"endstream", 1)[0]
            stream = zlib.decompress(raw) if b"/FlateDecode" in head else raw
        objects[int(num)] = (head, stream)

    def to_unicode(number: int) -> dict[int, str]:
        cmap: dict[int, str] = {}
        text = (objects[number][1] or b"").decode("latin-1")
        for block in re.findall(r"beginbfchar(.*?)endbfchar", text, re.DOTALL):
            for src, dst in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                cmap[int(src, 16)] = bytes.fromhex(dst).decode("utf-16-be")
        for block in re.findall(r"beginbfrange(.*?)endbfrange", text, re.DOTALL):
            for low, high, dst in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                first = bytes.fromhex(dst).decode("utf-16-be")
                for i, code in enumerate(range(int(low, 16), int(high, 16) + 1)):
                    cmap[code] = first[:-1] + chr(ord(first[-1]) + i)
        return cmap

    fonts = {
        n: to_unicode(int(m.group(1)))
        for n, (head, _) in objects.items()
        if (m := re.search(rb"/ToUnicode\s+(\d+)\s+0\s+R", head))
    }
    shown: list[str] = []
    for head, _ in objects.values():
        resources = re.search(rb"(?s)/Font\s*<<(.*?)>>", head)
        if not re.search(rb"/Type\s*/Page\b", head) or resources is None:
            continue
        names = {k.decode(): fonts.get(int(v), {}) for k, v in re.findall(rb"/(\w+)\s+(\d+)\s+0\s+R", resources[1])}
        for contents in re.findall(rb"/Contents\s+(\d+)\s+0\s+R", head):
            font: dict[int, str] = {}
            stream = (objects[int(contents)][1] or b"").decode("latin-1")
            for name, hexes in re.findall(r"/(\w+)\s+[-\d.]+\s+Tf|<([0-9A-Fa-f]+)>", stream):
                if name:
                    font = names.get(name, {})
                    continue
                codes = bytes.fromhex(hexes)
                shown += (font.get(int.from_bytes(codes[i : i + 2]), "?") for i in range(0, len(codes), 2))
    return "".join(shown)


@pytest.mark.timeout(120)
async def test_html_and_pdf_in_both_languages(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    month, s, e = last_month()
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=90) as http:
        tok = await tokens(hub)
        write_history(hub, s, e)
        headers = auth(tok["viewer"])

        r = await http.get(URL, params={"month": month, "format": "html", "lang": "vi"}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        # Only its own style block (by hash), nothing else: the hub's page CSP would block the style.
        assert r.headers["content-security-policy"].startswith("default-src 'none'; style-src 'sha256-")
        html = r.text
        assert '<html lang="vi">' in html
        for words in ("Báo cáo tỷ lệ hoạt động của camera", "Chợ Bến Thành", "Tân Định", "cam-a1", "cam-b1",
                      "Hình ảnh đen", "Góc quay bị thay đổi", "Thời gian khắc phục trung bình"):  # fmt: skip
            assert words in html, words
        assert "aq-a1" not in html
        r = await http.get(URL, params={"month": month, "format": "html", "lang": "en"}, headers=headers)
        assert "Camera availability report" in r.text
        assert "Mean time to restore" in r.text

        # In a browser, from the hub: its style applies under its own CSP, and nothing is refused.
        async with launched_chromium() as browser:
            page = await browser.new_page(extra_http_headers=headers)
            await page.add_init_script(RECORD_VIOLATIONS)
            await page.goto(f"{hub.api_url}{URL}?month={month}&format=html&lang=vi")
            header_cell = page.locator("th", has_text="Số lần gián đoạn").first
            assert await header_cell.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(232, 232, 232)"
            assert await page.evaluate("window.__violations") == []

        for lang, title in (("vi", "Báo cáo tỷ lệ hoạt động của camera"), ("en", "Camera availability report")):
            r = await http.get(URL, params={"month": month, "format": "pdf", "lang": lang}, headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/pdf"
            assert r.headers["content-disposition"] == f'attachment; filename="camera-availability-{month}-{lang}.pdf"'
            pdf = r.content
            assert pdf.startswith(b"%PDF-")
            assert pdf.rstrip().endswith(b"%%EOF")
            # Every page object, as many as the page tree's root counts (the largest /Count of its nodes).
            pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
            assert pages >= 1
            assert pages == max(int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", pdf))
            text = pdf_text(pdf).replace(" ", "")
            for words in (title, "cam-a1", "cam-a2", "cam-b1", "Chợ Bến Thành", "Tân Định", "quan-1", "quan-3"):
                assert words.replace(" ", "") in text, (lang, words)

        # No Chromium: 503 saying so; the other formats still work.
        hub.operations.settings = hub.operations.settings.model_copy(
            update={"reports": ReportSettings(chromium="/nonexistent/chromium")}
        )
        r = await http.get(URL, params={"month": month, "format": "pdf"}, headers=headers)
        assert r.status_code == 503
        assert "reports.chromium '/nonexistent/chromium' is not installed" in r.json()["detail"]
        r = await http.get(URL, params={"month": month, "format": "html"}, headers=headers)
        assert r.status_code == 200
