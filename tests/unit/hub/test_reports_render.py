"""The availability report's CSV and HTML (hub/reports/render.py) and the PDF printer's failures
(hub/reports/pdf.py): registry text escaped on output, numbers as each language writes them, a missing, failing or
hanging Chromium reported as such (a hanging one killed with its children)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hub.registry.db import Database
from hub.reports.labels import LABELS, duration, percent
from hub.reports.models import AvailabilityReport
from hub.reports.pdf import PdfFailed, PdfUnavailable, print_pdf
from hub.reports.render import CSV_COLUMNS, to_csv, to_html
from hub.reports.report import Camera, build_report

HOSTILE_SITE = '<script>alert("x")</script> & Co'


@pytest.fixture
def report(tmp_path: Path) -> AvailabilityReport:
    """Last month's report of two cameras without history (the figures are the other tests'), one at a site whose
    name is hostile and one whose id starts like a spreadsheet formula."""
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.create_schema()
    try:
        cameras = [
            Camera("cam-1", "site-a", HOSTILE_SITE, "quan-1"),
            Camera("-cam", "=site", "=HYPERLINK(1)", None),
        ]
        now = datetime.now(UTC)
        tz = ZoneInfo("Asia/Ho_Chi_Minh")
        local = now.astimezone(tz)
        year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
        return db.run_sync(lambda s: build_report(s, cameras=cameras, year=year, month=month, tz=tz, now=now))
    finally:
        db.close()


def test_csv_has_a_header_and_defuses_formulas(report: AvailabilityReport) -> None:
    rows = list(csv.reader(io.StringIO(to_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == ["camera", "camera", "ward", "ward", "total"]
    camera = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert (camera["site_name"], camera["availability"], camera["outages_mttr_s"]) == (HOSTILE_SITE, "", "")
    other = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert (other["device"], other["site"], other["site_name"]) == ("'-cam", "'=site", "'=HYPERLINK(1)")
    assert float(other["unknown_s"]) == float(other["observed_s"]) > 27 * 86_400


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_html_escapes_registry_text_and_is_in_one_language(report: AvailabilityReport, lang: str) -> None:
    html = to_html(report, lang, "2026-12-07 09:00 +07")  # type: ignore[arg-type]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in html
    index = 1 if lang == "vi" else 0
    other = 0 if lang == "vi" else 1
    for key in ("title", "availability", "mttr", "fault.image_covered"):
        assert LABELS[key][index] in html
        assert LABELS[key][other] not in html or LABELS[key][other] == LABELS[key][index]
    assert f'<html lang="{lang}">' in html


def test_numbers_as_each_language_writes_them() -> None:
    assert percent(0.98765, "en") == "98.77 %"
    assert percent(0.98765, "vi") == "98,77 %"
    assert percent(None, "vi") == "không có dữ liệu"
    assert duration(26 * 3600 + 5 * 60 + 20, "en") == "26 h 05 min"
    assert duration(59.6 * 60, "vi") == "1 giờ 00 phút"
    assert duration(None, "en") == "none"


async def test_a_missing_chromium_is_named() -> None:
    with pytest.raises(PdfUnavailable, match=r"reports\.chromium 'no-such-chromium-here' is not installed"):
        await print_pdf("<p>x</p>", chromium="no-such-chromium-here", timeout_s=5)


async def test_a_chromium_that_fails_gives_its_message(tmp_path: Path) -> None:
    program = tmp_path / "chromium"
    program.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    program.chmod(0o755)
    with pytest.raises(PdfFailed, match="chromium exited with 3 and no PDF: cannot open display") as failed:
        await print_pdf("<p>x</p>", chromium=str(program), timeout_s=30)
    assert not failed.value.timed_out


async def test_a_hanging_chromium_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    program = tmp_path / "chromium"
    # The browser starts a child (as Chromium starts its renderers), then both hang.
    program.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwait\n")
    program.chmod(0o755)
    with pytest.raises(PdfFailed, match=r"did not print the report within 3 s") as failed:
        await print_pdf("<p>x</p>", chromium=str(program), timeout_s=3)
    assert failed.value.timed_out
    for pid in map(int, pids.read_text().split()):
        for _ in range(200):  # the child is reaped by init once killed
            if not _alive(pid):
                break
            await asyncio.sleep(0.01)
        assert not _alive(pid), pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its new parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"
