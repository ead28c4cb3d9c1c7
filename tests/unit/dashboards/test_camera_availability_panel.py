"""The leadership board's camera availability panel (dashboards/leadership.py) against Grafana's dashboard JSON model
(Grafana docs, "Dashboard JSON model" and the bar gauge panel's options), in both languages: this month's figures
per ward from ``camera_availability`` (hub/reports/series.py), only fresh ones, a bar per ward; no panel when the
registry has no camera. The query runs against the real InfluxDB in tests/integration/hub/test_reports_series.py."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from dashboards.build import build
from dashboards.datasource import DATASOURCE_UID, InfluxTarget
from dashboards.i18n import LOCALES, text
from dashboards.leadership import CAMERA_AVAILABILITY
from dashboards.model import SCHEMA_VERSION
from dashboards.registry import Snapshot, parse
from hub.reports.series import MEASUREMENT

CAMERA = "camera-onvif-generic"
#: Two wards with cameras (one of them over two sites), one ward without any, and a camera site with no ward.
SITES = (
    ("ben-thanh", "quan-1", (("cam-01", CAMERA, "camera"), ("aq-01", "pm-sensor-rs485", "air_quality"))),
    ("nguyen-hue", "quan-1", (("cam-02", "", "camera"),)),
    ("tan-dinh", "quan-3", (("cam-03", CAMERA, "camera"),)),
    ("thu-thiem", "thu-duc", (("wl-01", "water-level-rs485", "water_level"),)),
    ("depot", "", (("cam-04", CAMERA, "camera"),)),
)


def snapshot(sites: tuple[Any, ...] = SITES) -> Snapshot:
    return parse(
        [
            {"id": site, "ward": ward, "devices": [{"id": d, "profile": p, "kind": k} for d, p, k in devices]}
            for site, ward, devices in sites
        ],
        [],
        "test city",
    )


def city_board(tmp_path: Path, snap: Snapshot, locale: str) -> dict[str, Any]:
    build(tmp_path, snap, InfluxTarget(), locale=locale)  # type: ignore[arg-type]
    board: dict[str, Any] = json.loads((tmp_path / "dashboards/leadership/ioc-lead-city.json").read_text())
    return board


def panel_of(board: dict[str, Any], locale: str) -> dict[str, Any] | None:
    title = text("panel.camera_availability_by_ward", locale)  # type: ignore[arg-type]
    found = [p for p in board["panels"] if p["title"] == title]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.parametrize("locale", LOCALES)
def test_a_bar_per_ward_in_grafana_s_model(locale: str, tmp_path: Path) -> None:
    board = city_board(tmp_path, snapshot(), locale)
    assert board["schemaVersion"] == SCHEMA_VERSION
    panel = panel_of(board, locale)
    assert panel is not None
    assert panel["type"] == "bargauge"
    assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
    assert panel["description"] == text("desc.camera_availability", locale)  # type: ignore[arg-type]
    defaults = panel["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"], defaults["decimals"]) == ("percent", 0, 100, 1)
    assert defaults["thresholds"] == {
        "mode": "absolute",
        "steps": [{"color": "red", "value": None}, {"color": "green", "value": 95.0}],
    }
    assert panel["options"]["orientation"] == "horizontal"
    assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]
    [target] = panel["targets"]
    assert target == {
        "refId": "A",
        "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
        "query": CAMERA_AVAILABILITY,
        "rawQuery": True,
        "resultFormat": "time_series",
        "alias": "$tag_ward",
    }
    query = target["query"]
    assert f'FROM "{MEASUREMENT}"' in query
    assert "\"scope\" = 'ward' AND \"ward\" != ''" in query  # wards only: the city and ward-less cameras are not bars
    assert "time > now() - 30m" in query  # a figure the job stopped writing is not shown as current
    assert query.endswith('GROUP BY "ward"')
    # Inside the grid, overlapping no other panel of the board.
    g = panel["gridPos"]
    assert 0 <= g["x"] <= 24 - g["w"]
    for a, b in combinations(board["panels"], 2):
        ga, gb = a["gridPos"], b["gridPos"]
        assert (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        ), (a["title"], b["title"])
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_titles_in_vietnamese_and_english(tmp_path: Path) -> None:
    vi = panel_of(city_board(tmp_path / "vi", snapshot(), "vi"), "vi")
    en = panel_of(city_board(tmp_path / "en", snapshot(), "en"), "en")
    assert vi is not None
    assert en is not None
    assert vi["title"] == "Tỷ lệ camera trực tuyến với hình ảnh tốt trong tháng theo phường"
    assert en["title"] == "Cameras online with a good image this month, by ward"
    assert "hình ảnh tốt" in vi["description"]
    assert vi["targets"] == en["targets"]


def test_no_panel_without_cameras_and_one_without_a_registry(tmp_path: Path) -> None:
    no_cameras = tuple(s for s in SITES if s[0] == "thu-thiem")
    assert panel_of(city_board(tmp_path / "a", snapshot(no_cameras), "en"), "en") is None
    only_profile = (("depot", "quan-5", (("cam-09", CAMERA, ""),)),)  # known by its profile alone
    assert panel_of(city_board(tmp_path / "b", snapshot(only_profile), "en"), "en") is not None
    assert panel_of(city_board(tmp_path / "c", Snapshot(), "en"), "en") is not None
