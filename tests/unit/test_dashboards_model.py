"""Every generated board against Grafana's dashboard JSON model, and the provisioning files ``build`` writes.

Structural rules checked (Grafana docs, "Dashboard JSON model"): the current ``schemaVersion`` (42 in the current
docs' example), a ``uid`` of at most 40 characters, unique panel ids, panels inside the 24-column grid and not
overlapping, and every datasource reference (panel, target, template variable) resolving to the uid of the
datasource in the provisioning file.
"""

from __future__ import annotations

import argparse
import json
import re
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.boards import METRICS, all_boards
from dashboards.build import build, render_all
from dashboards.cli import add_arguments, main
from dashboards.datasource import DATASOURCE_UID, InfluxTarget, api_payload, provisioning
from dashboards.i18n import LOCALES, MESSAGES, text, unit
from dashboards.model import OWNER_TAG, SCHEMA_VERSION, Panel, layout
from dashboards.registry import RegistryError, Snapshot, load_file, parse
from hub.operations.aqi import BANDS

ROOT = Path(__file__).resolve().parents[2]
PROFILES = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "devices/profiles").glob("*.yaml")}
COORDS = {"ben-thanh": (10.7725, 106.698), "thu-thiem": (10.7769, 106.7220), "tan-dinh": (10.7930, 106.6890)}


#: A small city: (site, ward, ((device, profile), ...)): a junction, a riverside station, a substation.
CITY = (
    ("ben-thanh", "quan-1", (("aq-01", "pm-sensor-rs485"), ("th-01", "xy-md02"))),
    ("thu-thiem", "thu-duc", (("wl-01", "water-level-rs485"), ("aq-02", "pm-sensor-rs485"), ("th-02", "xy-md02"))),
    ("tan-dinh", "quan-3", (("pm-01", "eastron-sdm630"),)),
)


def demo_snapshot(with_coords: bool = True) -> Snapshot:
    """The city as a registry snapshot, wards = districts."""
    sites = [
        {
            "id": site,
            "ward": ward,
            **({"lat": COORDS[site][0], "lon": COORDS[site][1]} if with_coords else {}),
            "devices": [{"id": d, "profile": p, "kind": PROFILES[p]["kind"]} for d, p in devices],
        }
        for site, ward, devices in CITY
    ]
    return parse(sites, [], "test city")


def rendered(locale: str = "en", snap: Snapshot | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    return list(render_all(snap if snap is not None else demo_snapshot(), locale).boards)  # type: ignore[arg-type]


def datasource_refs(board: dict[str, Any]) -> list[Any]:
    refs = [v.get("datasource") for v in board["templating"]["list"]]
    for panel in board["panels"]:
        refs.append(panel.get("datasource"))
        refs += [t.get("datasource") for t in panel["targets"]]
    return refs


@pytest.mark.parametrize("locale", LOCALES)
def test_every_board_follows_the_json_model(locale: str, tmp_path: Path) -> None:
    snap = demo_snapshot()
    build(tmp_path, snap, InfluxTarget(), locale=locale)  # type: ignore[arg-type]
    ds_doc = yaml.safe_load((tmp_path / "provisioning/datasources/ioc-influxdb.yaml").read_text())
    provisioned = {d["uid"] for d in ds_doc["datasources"]}
    boards = [json.loads(p.read_text()) for p in sorted((tmp_path / "dashboards").glob("*/*.json"))]
    assert len(boards) == len(all_boards(snap))
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        where = board["uid"]
        assert board["schemaVersion"] == SCHEMA_VERSION == 42
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]), where
        assert OWNER_TAG in board["tags"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{where}: duplicate panel ids"
        assert board["panels"], f"{where}: no panels"
        for panel in board["panels"]:
            g = panel["gridPos"]
            assert 1 <= g["w"] <= 24, (where, panel["id"])
            assert g["h"] >= 1, (where, panel["id"])
            assert 0 <= g["x"] <= 24 - g["w"], (where, panel["id"])
            assert panel["targets"], (where, panel["title"])
            assert all(t["rawQuery"] and t["query"] and t["refId"] for t in panel["targets"])
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for a, b in combinations(board["panels"], 2):
            ga, gb = a["gridPos"], b["gridPos"]
            apart = (
                ga["x"] + ga["w"] <= gb["x"]
                or gb["x"] + gb["w"] <= ga["x"]
                or ga["y"] + ga["h"] <= gb["y"]
                or gb["y"] + gb["h"] <= ga["y"]
            )
            assert apart, f"{where}: panels {a['id']} and {b['id']} overlap"
        for ref in datasource_refs(board):
            assert ref == {"type": "influxdb", "uid": DATASOURCE_UID}
            assert ref["uid"] in provisioned


def test_layout_wraps_rows_below_the_tallest_panel() -> None:
    panels = [Panel("stat", "panel.pm25", (), width=w, height=h) for w, h in ((12, 4), (12, 9), (8, 3), (30, 2))]
    assert layout(panels) == [
        {"x": 0, "y": 0, "w": 12, "h": 4},
        {"x": 12, "y": 0, "w": 12, "h": 9},
        {"x": 0, "y": 9, "w": 8, "h": 3},
        {"x": 0, "y": 12, "w": 24, "h": 2},
    ]


def test_locales_give_vietnamese_with_diacritics_and_english() -> None:
    en = {b["uid"]: b for _, _, b in rendered("en")}
    vi = {b["uid"]: b for _, _, b in rendered("vi")}
    assert en.keys() == vi.keys()
    assert vi["ioc-lead-city"]["title"] == "Toàn cảnh thành phố"
    assert en["ioc-lead-city"]["title"] == "City at a glance"
    assert vi["ioc-site-ben-thanh"]["title"] == "Điểm ben-thanh"
    for uid, board in vi.items():
        titles = [p["title"] for p in board["panels"]]
        english = [p["title"] for p in en[uid]["panels"]]
        assert titles != english or not titles, uid
    assert unit("devices", "vi") == "suffix: thiết bị"
    assert unit("devices", "en") == "suffix: devices"
    assert unit("ugm3", "vi") == unit("ugm3", "en") == "conμgm3"


def test_catalogue_is_complete_and_vietnamese_is_written_with_diacritics() -> None:
    for key, (en, vi) in MESSAGES.items():
        assert en.strip(), key
        assert vi.strip(), key
    diacritic = re.compile(r"[àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ]", re.IGNORECASE)
    assert all(diacritic.search(MESSAGES[k][1]) for k in MESSAGES if k.startswith(("board.", "folder.")))
    with pytest.raises(KeyError, match="no message"):
        text("panel.nope", "en")


def test_aqi_band_names_are_the_decisions() -> None:
    for band in BANDS:
        assert MESSAGES[f"aqi.band.{band.level}"] == (band.name_en, band.name_vi)


def test_metric_fields_exist_in_the_profiles_that_deliver_them() -> None:
    for metric in METRICS:
        for profile in metric.profiles:
            doc = PROFILES[profile]
            assert doc["kind"] == metric.kind, profile
            assert metric.field in {r["name"] for r in doc.get("registers", [])}, (profile, metric.field)


def test_panels_follow_the_registry() -> None:
    snap = demo_snapshot()
    boards = {b.uid: b for b in all_boards(snap)}
    # a site board per registered site, with only the panels its devices feed
    assert {u for u in boards if u.startswith("ioc-site-")} == {f"ioc-site-{site}" for site, _, _ in CITY}
    tan_dinh = [p.title for p in boards["ioc-site-tan-dinh"].panels]
    assert "panel.power" in tan_dinh
    assert "panel.pm25" not in tan_dinh
    # no rain gauge registered: no rain panel
    assert "panel.rain" not in [p.title for p in boards["ioc-ops-environment"].panels]
    # air quality per ward only for wards with a PM sensor, one query per ward
    city = boards["ioc-lead-city"]
    aqi = next(p for p in city.panels if p.title == "panel.aqi_by_ward")
    assert [q.alias for q in aqi.queries] == ["quan-1", "thu-duc"]
    # coordinates known: the map is there; unknown: it is left out
    assert "panel.devices_map" in [p.title for p in boards["ioc-ops-health"].panels]
    plain = {b.uid: b for b in all_boards(demo_snapshot(with_coords=False))}
    assert "panel.devices_map" not in [p.title for p in plain["ioc-ops-health"].panels]


def test_build_is_idempotent_and_removes_boards_of_removed_sites(tmp_path: Path) -> None:
    snap = demo_snapshot()
    first = build(tmp_path, snap, InfluxTarget(), locale="vi")
    assert first.written
    assert not first.unchanged
    assert not first.removed
    again = build(tmp_path, snap, InfluxTarget(), locale="vi")
    assert again.written == []
    assert again.removed == []
    assert sorted(again.unchanged) == sorted(first.written)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    build(tmp_path, snap, InfluxTarget(), locale="vi")
    assert mtimes == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    fewer = Snapshot(
        tuple(s for s in snap.sites if s.id != "tan-dinh"), tuple(d for d in snap.devices if d.site != "tan-dinh")
    )
    pruned = build(tmp_path, fewer, InfluxTarget(), locale="vi")
    assert "dashboards/operations/ioc-site-tan-dinh.json" in pruned.removed
    assert not (tmp_path / "dashboards/operations/ioc-site-tan-dinh.json").exists()


def test_providers_one_per_folder_with_uid_and_path(tmp_path: Path) -> None:
    build(tmp_path, demo_snapshot(), InfluxTarget(), locale="vi", grafana_dashboards="/srv/grafana/ioc")
    docs = {p.stem: yaml.safe_load(p.read_text()) for p in (tmp_path / "provisioning/dashboards").glob("*.yaml")}
    assert set(docs) == {"ioc-operations", "ioc-leadership"}
    ops = docs["ioc-operations"]["providers"][0]
    assert ops["folderUid"] == "ioc-operations"
    assert ops["folder"] == "Vận hành"
    assert ops["options"]["path"] == "/srv/grafana/ioc/operations"
    assert docs["ioc-leadership"]["providers"][0]["folder"] == "Lãnh đạo"
    geo = json.loads((tmp_path / "gazetteer/ioc-devices.geojson").read_text())
    keys = {f["id"] for f in geo["features"]}
    assert {"ben-thanh", "aq-01", "pm-01"} <= keys


def test_datasource_for_influxdb_1_and_2_3_in_influxql() -> None:
    v1 = provisioning(InfluxTarget("http://influx:8086", "ioc", "v1", "grafana"))["datasources"][0]
    assert v1["uid"] == DATASOURCE_UID
    assert v1["jsonData"] == {"dbName": "ioc", "httpMode": "GET", "version": "InfluxQL"}
    assert v1["user"] == "grafana"
    assert v1["secureJsonData"] == {"password": "$__env{IOC_GRAFANA_INFLUX_PASSWORD}"}
    v2 = provisioning(InfluxTarget("https://influx:8086", "ioc", "v2"))["datasources"][0]
    assert v2["jsonData"]["httpHeaderName1"] == "Authorization"
    assert v2["secureJsonData"] == {"httpHeaderValue1": "Token $__env{IOC_GRAFANA_INFLUX_TOKEN}"}
    assert api_payload(InfluxTarget(flavour="v3"), "s3cret")["secureJsonData"] == {"httpHeaderValue1": "Token s3cret"}
    assert "secureJsonData" not in api_payload(InfluxTarget(flavour="v1", username="u"), "")
    with pytest.raises(ValueError, match="http"):
        InfluxTarget("influx:8086")


def test_registry_errors_name_the_source_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.yaml"
    bad.write_text("sites:\n  - id: ok\n  - id: 'bad site'\n")
    with pytest.raises(RegistryError, match=r"inventory.yaml: site #2: 'id'"):
        load_file(bad)
    bad.write_text("sites: []\ndevices:\n  - {id: d1, site: s1, lat: north}\n")
    with pytest.raises(RegistryError, match="device 'd1': 'lat' must be a number"):
        load_file(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(RegistryError, match="mapping"):
        load_file(bad)
    with pytest.raises(RegistryError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"sites": [{"site": "a", "district": "w1", "devices": ["d1"]}]}))
    snap = load_file(good)
    assert snap.wards() == {"w1": ["a"]}
    assert snap.devices_at("a")[0].id == "d1"
    # the hub's GET /api/v1/sites gives a device count per site; devices without a site are on no site's board
    hub_style = parse(
        {"total": 1, "items": [{"id": "s", "ward": "w", "devices": 3, "states": {"online": 3}}]},
        {"items": [{"id": "d", "site": "s2", "kind": "x"}, {"id": "loose", "site": None}]},
        "hub",
    )
    assert [s.id for s in hub_style.sites] == ["s", "s2"]
    assert [d.id for d in hub_style.devices] == ["d"]


def test_cli_build_writes_and_reports_and_refuses_a_bad_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    inventory = tmp_path / "inventory.yaml"
    sites = [{"id": site, "ward": ward, "devices": [d for d, _ in devices]} for site, ward, devices in CITY]
    inventory.write_text(yaml.safe_dump({"sites": sites}))
    out = tmp_path / "out"
    args = parser.parse_args(["build", "--out", str(out), "--locale", "vi", "--registry", str(inventory)])
    assert main(args) == 0
    assert "written    dashboards/operations/ioc-site-ben-thanh.json" in capsys.readouterr().out
    assert main(args) == 0
    files = len([p for p in out.rglob("*") if p.is_file()])
    assert capsys.readouterr().out.strip().endswith(f"0 written, {files} unchanged, 0 removed")
    inventory.write_text("sites:\n  - {id: 'no spaces allowed'}\n")
    assert main(args) == 2
    assert f"{inventory}: site #1" in capsys.readouterr().err
    # two site ids that make the same board uid
    inventory.write_text("sites:\n  - {id: site.a}\n  - {id: site_a}\n")
    assert main(args) == 2
    assert "share the uid ioc-site-site-a" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(parser.parse_args(["build", "--out", str(blocked / "x")])) == 1
    assert "cannot write under" in capsys.readouterr().err
    bad_url = parser.parse_args(["build", "--out", str(out), "--influx-url", "influx:8086"])
    assert main(bad_url) == 2
    assert "http://" in capsys.readouterr().err


def test_city_board_shows_open_alerts_and_incidents_resolved_in_time_against_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    city = next(b for b in all_boards(demo_snapshot(), in_time_target_pct=80.0) if b.uid == "ioc-lead-city")
    panels = {p.title: p for p in city.panels}
    # The measurements the hub's alert figures job writes (hub/alerts/series.py, docs/storage.md).
    assert '"alerts"' in panels["panel.alerts_open"].queries[0].text
    assert panels["panel.alerts_open"].queries[0].alias == "$tag_severity"
    assert panels["panel.alerts_open_by_ward"].queries[0].alias == "$tag_ward"
    assert "$timeFilter" in panels["panel.alerts_trend"].queries[0].text
    in_time = panels["panel.resolved_in_time"]
    assert '"alert_resolved"' in in_time.queries[0].text
    assert [t.value for t in in_time.thresholds] == [None, 80.0]
    assert [t.value for t in panels["panel.resolved_in_time_by_ward"].thresholds] == [None, 80.0]
    # The CLI passes --in-time-target on, and refuses a share outside 0..100 by the option's name.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    assert main(parser.parse_args(["build", "--out", str(out), "--in-time-target", "85"])) == 0
    board = json.loads((out / "dashboards/leadership/ioc-lead-city.json").read_text())
    gauge = next(p for p in board["panels"] if p["title"] == text("panel.resolved_in_time", "en"))
    assert [s["value"] for s in gauge["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 85.0]
    capsys.readouterr()
    assert main(parser.parse_args(["build", "--out", str(out), "--in-time-target", "120"])) == 2
    assert "--in-time-target must be a percentage 0..100, not 120" in capsys.readouterr().err
