"""Registry: inventory parsing errors, birth/inventory merge and conflicts, persistence through SQLite (WAL)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from hub.registry.db import Database
from hub.registry.inventory import InventoryError, load_file, parse_csv, parse_mapping, parse_text, parse_yaml
from hub.registry.registry import Registry
from wire.v1 import DeviceInfo, State

INVENTORY_YAML = """
sites:
  - {id: ben-thanh, name: "Chợ Bến Thành", ward: quan-1, lat: 10.7725, lon: 106.698}
devices:
  - {id: aq-01, kind: air_quality, profile: pm-sensor-rs485, site: ben-thanh, gateway: gw-1,
     installed: 2025-03-01, inactivity_s: 30, tags: {owner: doe}}
  - {id: cam-01, kind: camera, site: ben-thanh, gateway: gw-1}
"""


def birth(*devices: DeviceInfo) -> State:
    return State(online=True, session="sess-0001", ts=1_764_331_200_000, devices=list(devices))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("devices: [{id: aq-01, kind: Air}]", "i.yaml: devices[0] (aq-01): kind: String should match"),
        ("devices: [{id: aq-01, colour: red}]", "i.yaml: devices[0] (aq-01): colour: unknown key"),
        ("sites: [{id: s1, lat: 91}]", "i.yaml: sites[0] (s1): lat: Input should be less than or equal to 90"),
        ("devices: [{id: a}, {id: a}]", "'a' is listed twice"),
        ("- 1\n- 2", "i.yaml: the top level must be a mapping"),
        ("devices: [{id: Bad_ID}]", "devices[0] (Bad_ID): id: String should match"),
        ("devices: [{id: a, installed: yesterday}]", "devices[0] (a): installed:"),
        ("a: [", "i.yaml: not valid YAML"),
    ],
)
def test_bad_yaml_inventory_names_entry_and_field(text: str, expected: str) -> None:
    with pytest.raises(InventoryError) as err:
        parse_yaml(text, "i.yaml")
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id,kind,colour\na,b,c\n", "unknown column(s) colour"),
        ("kind\nx\n", "must have an 'id' column"),
        ("id,kind\naq-01,Air\n", "x.csv: row 2 (aq-01): kind:"),
        ("id,lat\naq-01,north\n", "x.csv: row 2 (aq-01): lat: Input should be a valid number"),
        ("id,tags\naq-01,owner\n", "x.csv: row 2: tags: 'owner' is not key=value"),
        ("id,kind\naq-01,air,extra\n", "row 2: more values than columns"),
    ],
)
def test_bad_csv_inventory_names_row_and_field(text: str, expected: str) -> None:
    with pytest.raises(InventoryError) as err:
        parse_csv(text, "x.csv")
    assert expected in str(err.value)


def test_csv_site_columns_define_the_site(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_text(
        "id,kind,site,gateway,site_name,ward,site_lat,site_lon,installed,tags\n"
        "aq-01,air_quality,tan-dinh,gw-1,Tân Định,quan-3,10.79,106.69,2025-01-02,owner=doe;zone=n\n",
        encoding="utf-8",
    )
    inv = load_file(path)
    assert inv.sites[0].ward == "quan-3"
    assert inv.sites[0].name == "Tân Định"
    assert inv.devices[0].installed == date(2025, 1, 2)
    assert inv.devices[0].tags == {"owner": "doe", "zone": "n"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"devices": [', "body: not valid JSON"),
        (
            '{"devices": [{"id": "aq-01", "lat": "north"}]}',
            "body: devices[0] (aq-01): lat: Input should be a valid number",
        ),
        ("[]", "body: the top level must be a mapping"),
    ],
)
def test_bad_json_inventory(text: str, expected: str) -> None:
    with pytest.raises(InventoryError) as err:
        parse_text(text, "json", "body")
    assert expected in str(err.value)


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inv.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InventoryError, match="unknown inventory file type"):
        load_file(path)


def test_birth_and_inventory_merge_and_conflicts_are_reported() -> None:
    registry = Registry()
    result = registry.apply_inventory(parse_yaml(INVENTORY_YAML, "inv.yaml"))
    assert (result.sites_added, result.devices_added, result.conflicts) == (1, 2, [])
    conflicts = registry.apply_birth(
        "ben-thanh",
        "gw-1",
        birth(
            DeviceInfo("aq-01", "air_quality", "pm-sensor-rs485", 5.0, "modbus_tcp"),
            DeviceInfo("cam-01", "display", "vms", 10.0),
            DeviceInfo("th-01", "weather", "xy-md02", 2.0),
        ),
    )
    assert [(c.device, c.field, c.announced, c.inventory) for c in conflicts] == [
        ("cam-01", "kind", "display", "camera")
    ]
    aq = registry.devices["aq-01"]
    # The birth gives what runs, the inventory what only it knows.
    assert (aq.interval_s, aq.driver, aq.inactivity_s, aq.tags, aq.installed) == (
        5.0,
        "modbus_tcp",
        30.0,
        {"owner": "doe"},
        date(2025, 3, 1),
    )
    assert registry.devices["cam-01"].kind == "display"  # the birth wins, the conflict stays visible
    assert registry.devices["th-01"].site == "ben-thanh"
    assert registry.enrichment()["aq-01"] == {"district": "quan-1"}
    # Correcting the inventory clears the conflict.
    fixed = parse_mapping({"devices": [{"id": "cam-01", "kind": "display"}]}, "api")
    assert registry.apply_inventory(fixed).conflicts == []


def test_birth_from_another_gateway_than_the_inventory_says_is_a_conflict_and_does_not_move_it() -> None:
    registry = Registry()
    registry.apply_inventory(parse_mapping({"devices": [{"id": "aq-01", "site": "s1", "gateway": "gw-1"}]}, "x"))
    conflicts = registry.apply_birth("s2", "gw-9", birth(DeviceInfo("aq-01", "air_quality", "p", 5.0)))
    found = {(c.field, c.announced, c.inventory, c.source) for c in conflicts}
    assert found == {("gateway", "s2/gw-9", "s1/gw-1", "owner")}
    assert (registry.devices["aq-01"].site, registry.devices["aq-01"].gateway) == ("s1", "gw-1")


async def test_registry_persists_and_reloads(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.create_schema()
    try:
        registry = Registry(db)
        registry.apply_inventory(parse_yaml(INVENTORY_YAML, "inv.yaml"))
        registry.apply_birth("ben-thanh", "gw-1", birth(DeviceInfo("cam-01", "display", "vms", 10.0)))
        await registry.flush()
        journal = db.run_sync(lambda s: s.connection().exec_driver_sql("PRAGMA journal_mode").scalar())
        assert journal == "wal"
        again = Registry(db)
        again.load()
        assert again.sites["ben-thanh"].ward == "quan-1"
        assert again.devices["cam-01"].kind == "display"
        assert [c.field for c in again.devices["cam-01"].conflicts] == ["kind"]
        assert again.devices["aq-01"].installed == date(2025, 3, 1)
    finally:
        db.close()
