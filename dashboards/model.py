"""Boards as plain data, rendered to Grafana's dashboard JSON model (the classic model, ``schemaVersion`` 42).

A :class:`Board` is a list of :class:`Panel` (each with InfluxQL :class:`Query` targets) and template
:class:`Variable`; :func:`render` lays the panels out left to right on Grafana's 24-column grid, numbers them,
points every query at one datasource uid and puts in the words of one locale. Nothing here knows Grafana's HTTP
API or files; ``build.py`` and ``push.py`` do.

Grafana's JSON model: https://grafana.com/docs/grafana/latest/visualizations/dashboards/build-dashboards/
view-dashboard-json-model/ (panels, ``gridPos`` with ``w`` 1-24, ``templating``, ``schemaVersion``; the current
docs' example is at schemaVersion 42). An older Grafana migrates nothing backwards, so 42 needs Grafana 12.x or
later; a newer one migrates it forwards when it loads the board.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from dashboards.i18n import Locale, text, unit

SCHEMA_VERSION: Final = 42
GRID_COLUMNS: Final = 24
#: Every board we generate carries this tag, so ``push --prune`` removes only boards it owns.
OWNER_TAG: Final = "ioc-generated"
DATASOURCE_TYPE: Final = "influxdb"

PanelKind = Literal["timeseries", "stat", "table", "bargauge", "state-timeline", "geomap", "gauge", "piechart"]


@dataclass(frozen=True)
class Query:
    """One InfluxQL target. ``text`` may use Grafana's ``$timeFilter``, ``$__interval`` and the board's variables."""

    text: str
    alias: str = ""
    table: bool = False


@dataclass(frozen=True)
class Threshold:
    """A colour from ``value`` up (``None``: the base colour)."""

    value: float | None
    colour: str


@dataclass(frozen=True)
class Panel:
    """One panel: what it shows (``title`` is a message key), its queries, unit key, size and display options."""

    kind: PanelKind
    title: str
    queries: tuple[Query, ...]
    unit: str = "none"
    width: int = 12
    height: int = 8
    thresholds: tuple[Threshold, ...] = ()
    #: value -> (message key, colour): Grafana value mappings.
    mappings: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    decimals: int | None = None
    #: ``fieldConfig.defaults.custom`` (draw style, thresholds style...).
    custom: Mapping[str, Any] = field(default_factory=dict)
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Variable:
    """A query variable filled by ``SHOW TAG VALUES``; ``query`` may use earlier variables."""

    name: str
    label: str
    query: str


@dataclass(frozen=True)
class Board:
    """One dashboard. ``uid`` is fixed (never derived from the title), so a rename never makes a second board."""

    uid: str
    title: str
    folder: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = ()
    title_values: Mapping[str, str] = field(default_factory=dict)
    time_from: str = "now-6h"
    refresh: str = "30s"


def _title(key: str, locale: Locale, values: Mapping[str, str] | None = None) -> str:
    return text(key, locale, **(values or {}))


def layout(panels: Sequence[Panel]) -> list[dict[str, int]]:
    """Grid positions: left to right, wrapping to a new row below the tallest panel of the row."""
    positions: list[dict[str, int]] = []
    x = y = row_height = 0
    for panel in panels:
        w = max(1, min(GRID_COLUMNS, panel.width))
        if x + w > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"x": x, "y": y, "w": w, "h": panel.height})
        x += w
        row_height = max(row_height, panel.height)
    return positions


def _target(query: Query, ref: str, ds: dict[str, str]) -> dict[str, Any]:
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": ds,
        "query": query.text,
        "rawQuery": True,
        "resultFormat": "table" if query.table else "time_series",
    }
    if query.alias:
        target["alias"] = query.alias
    return target


def render_panel(panel: Panel, panel_id: int, pos: dict[str, int], locale: Locale, ds_uid: str) -> dict[str, Any]:
    """One panel of the JSON model."""
    ds = {"type": DATASOURCE_TYPE, "uid": ds_uid}
    defaults: dict[str, Any] = {"unit": unit(panel.unit, locale)}
    if panel.custom:
        defaults["custom"] = dict(panel.custom)
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"value": t.value, "color": t.colour} for t in panel.thresholds],
        }
        defaults["color"] = {"mode": "thresholds"}
    if panel.mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    value: {"text": text(key, locale), "color": colour, "index": i}
                    for i, (value, (key, colour)) in enumerate(panel.mappings.items())
                },
            }
        ]
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    data: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": _title(panel.title, locale),
        "gridPos": pos,
        "datasource": ds,
        "targets": [_target(q, refs[i], ds) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": dict(panel.options),
    }
    if panel.description:
        data["description"] = _title(panel.description, locale)
    return data


def render_variable(variable: Variable, locale: Locale, ds_uid: str) -> dict[str, Any]:
    """One ``templating.list`` entry: a query variable, refreshed when the board loads, sorted, one value."""
    return {
        "name": variable.name,
        "label": text(variable.label, locale),
        "type": "query",
        "datasource": {"type": DATASOURCE_TYPE, "uid": ds_uid},
        "query": variable.query,
        "definition": variable.query,
        "refresh": 1,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
        "hide": 0,
    }


def render(board: Board, locale: Locale, ds_uid: str) -> dict[str, Any]:
    """The whole dashboard JSON of ``board`` in ``locale`` with every query on datasource ``ds_uid``."""
    positions = layout(board.panels)
    return {
        "uid": board.uid,
        "title": _title(board.title, locale, board.title_values),
        "tags": sorted({OWNER_TAG, f"folder:{board.folder}", *board.tags}),
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": board.refresh,
        "time": {"from": board.time_from, "to": "now"},
        "timepicker": {},
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [render_variable(v, locale, ds_uid) for v in board.variables]},
        "panels": [
            render_panel(p, i + 1, pos, locale, ds_uid)
            for i, (p, pos) in enumerate(zip(board.panels, positions, strict=True))
        ],
    }
