"""The availability report as CSV (one row per camera, ward and the total, with a header row) and as a printable
HTML page in Vietnamese or English (A4 landscape; hub/reports/pdf.py prints it).

Every text from the registry (ids, site names, wards) is escaped on output, for HTML and for CSV (a cell starting
with ``=``, ``+``, ``-``, ``@`` is quoted with a leading apostrophe so that a spreadsheet does not run it: OWASP,
"CSV Injection")."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from datetime import datetime
from html import escape
from typing import Final

from hub.reports.availability import FAULT_KINDS
from hub.reports.labels import Lang, duration, label, percent
from hub.reports.models import AvailabilityFigures, AvailabilityReport, EpisodeFigures

#: The CSV's columns after the identifying ones; times in seconds, availability as a share 0..1.
FIGURE_COLUMNS: Final = (
    "observed_s",
    "online_s",
    "degraded_s",
    "offline_s",
    "unknown_s",
    "availability",
    "outages",
    "outages_open",
    "outages_mttr_s",
    *(f"{kind}_{what}" for kind in FAULT_KINDS for what in ("faults", "open", "mttr_s", "time_s")),
)
CSV_COLUMNS: Final = ("scope", "ward", "site", "site_name", "device", "cameras", *FIGURE_COLUMNS)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")

STYLE: Final = """
@page { size: A4 landscape; margin: 12mm; }
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; font-size: 9pt; color: #111; }
h1 { font-size: 16pt; margin: 0 0 4pt; }
h2 { font-size: 12pt; margin: 12pt 0 4pt; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 0.5pt solid #888; padding: 2pt 4pt; text-align: right; }
th { background: #e8e8e8; }
td.t, th.t { text-align: left; }
table.meta { width: auto; }
table.meta th, table.meta td { border: none; text-align: left; background: none; }
tr { page-break-inside: avoid; }
p.def { font-size: 8pt; color: #333; }
"""
#: The page's Content-Security-Policy when the hub serves it: nothing but its own style block (by hash, CSP Level
#: 3 "hash-source"), no script, no frames.
CSP: Final = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _episodes(e: EpisodeFigures) -> list[object]:
    return [e.started, e.open, e.mean_time_to_restore_s]


def _figure_cells(f: AvailabilityFigures) -> list[object]:
    cells: list[object] = [f.observed_s, f.online_s, f.degraded_s, f.offline_s, f.unknown_s, f.availability]
    cells += _episodes(f.outages)
    for fault in f.faults:
        cells += [*_episodes(fault), fault.time_s]
    return cells


def to_csv(report: AvailabilityReport) -> str:
    """Rows: ``camera`` for each camera, ``ward`` for each ward, ``total`` last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_COLUMNS)
    for c in report.cameras:
        writer.writerow(map(_cell, ["camera", c.ward, c.site, c.site_name, c.device, 1, *_figure_cells(c)]))
    for w in report.wards:
        writer.writerow(map(_cell, ["ward", w.ward, None, None, None, w.cameras, *_figure_cells(w)]))
    t = report.total
    writer.writerow(map(_cell, ["total", report.ward, None, None, None, t.cameras, *_figure_cells(t)]))
    return out.getvalue()


def _summary_cells(f: AvailabilityFigures, lang: Lang) -> str:
    cells = [
        percent(f.availability, lang),
        duration(f.online_s, lang),
        duration(f.degraded_s, lang),
        duration(f.offline_s, lang),
        duration(f.unknown_s, lang),
        str(f.outages.started),
        str(f.outages.open),
        duration(f.outages.mean_time_to_restore_s, lang),
    ]
    return "".join(f"<td>{escape(c)}</td>" for c in cells)


def _summary_head(lang: Lang) -> str:
    keys = ("availability", "online", "degraded", "offline", "unknown", "outages", "open", "mttr")
    return "".join(f"<th>{escape(label(k, lang))}</th>" for k in keys)


def _kinds_cell(f: AvailabilityFigures, lang: Lang) -> str:
    """The fault kinds that started in the period, with their counts (open ones in brackets)."""
    found = [
        label("fault." + x.kind, lang) + f" {x.started}" + (f" ({x.open})" if x.open else "")
        for x in f.faults
        if x.started
    ]
    return f"<td class=t>{escape(', '.join(found) or label('none', lang))}</td>"


def _faults_table(f: AvailabilityFigures, lang: Lang) -> str:
    head = "".join(
        f"<th{' class=t' if k == 'kind' else ''}>{escape(label(k, lang))}</th>"
        for k in ("kind", "episodes", "open", "mttr", "time_in_fault")
    )
    rows = "".join(
        f"<tr><td class=t>{escape(label('fault.' + x.kind, lang))}</td><td>{x.started}</td><td>{x.open}</td>"
        f"<td>{escape(duration(x.mean_time_to_restore_s, lang))}</td><td>{escape(duration(x.time_s, lang))}</td></tr>"
        for x in f.faults
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _local(iso: str) -> str:
    """``2026-11-01T00:00:00+07:00`` -> ``2026-11-01 00:00``: the time zone is on its own line."""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")


def to_html(report: AvailabilityReport, lang: Lang, generated: str) -> str:
    """The printable page (UTF-8), all in ``lang``."""

    def ward_name(ward: str | None) -> str:
        return escape(ward if ward is not None else label("no_ward", lang))

    meta = [
        (label("month", lang), report.month),
        (label("timezone", lang), report.timezone),
        (
            label("period", lang),
            f"{_local(report.start)} → {_local(report.end)}"
            + ("" if report.complete else f" ({label('under_way', lang)})"),
        ),
        (label("scope_ward", lang), report.ward if report.ward is not None else label("scope_all", lang)),
        (label("generated", lang), generated),
    ]
    parts = [
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">',
        f"<title>{escape(label('title', lang))} {escape(report.month)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(label('title', lang))}</h1>",
        "<table class=meta>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in meta)
        + "</table>",
        f"<p class=def>{escape(label('definitions', lang))}</p>",
        f"<h2>{escape(label('total', lang))}</h2>",
        f"<table><thead><tr><th>{escape(label('cameras', lang))}</th>{_summary_head(lang)}</tr></thead>",
        f"<tbody><tr><td>{report.total.cameras}</td>{_summary_cells(report.total, lang)}</tr></tbody></table>",
        f"<h2>{escape(label('faults_by_kind', lang))}</h2>",
        _faults_table(report.total, lang),
        f"<h2>{escape(label('by_ward', lang))}</h2>",
        (
            f"<table><thead><tr><th class=t>{escape(label('ward', lang))}</th><th>{escape(label('cameras', lang))}</th>"
            f"{_summary_head(lang)}<th class=t>{escape(label('faults_by_kind', lang))}</th></tr></thead><tbody>"
        ),
        *(
            f"<tr><td class=t>{ward_name(w.ward)}</td><td>{w.cameras}</td>{_summary_cells(w, lang)}"
            f"{_kinds_cell(w, lang)}</tr>"
            for w in report.wards
        ),
        "</tbody></table>",
        f"<h2>{escape(label('by_camera', lang))}</h2>",
        (
            f"<table><thead><tr><th class=t>{escape(label('camera', lang))}</th>"
            f"<th class=t>{escape(label('site', lang))}</th><th class=t>{escape(label('ward', lang))}</th>"
            f"{_summary_head(lang)}<th class=t>{escape(label('faults_by_kind', lang))}</th></tr></thead><tbody>"
        ),
        *(
            f"<tr><td class=t>{escape(c.device)}</td><td class=t>{escape(c.site_name or c.site or '')}</td>"
            f"<td class=t>{ward_name(c.ward)}</td>{_summary_cells(c, lang)}{_kinds_cell(c, lang)}</tr>"
            for c in report.cameras
        ),
        "</tbody></table></body></html>\n",
    ]
    return "\n".join(parts)
