"""A device belongs to one gateway: the inventory's, else the first that announced it. A birth never re-homes it;
only a technician's act (an inventory import stating another gateway, or a move through the API) does, recorded
with who and when. The owners map the ingest admission checks against follows every change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.registry.db import Database
from hub.registry.inventory import parse_mapping
from hub.registry.models import DeviceMoveRow
from hub.registry.registry import Device, Registry, UnknownPlace
from wire.v1 import DeviceInfo, State

AQ = DeviceInfo("aq-01", "air_quality", "pm-sensor-rs485", 5.0)


def birth(*devices: DeviceInfo, session: str = "sess-0001") -> State:
    return State(online=True, session=session, ts=1_764_331_200_000, devices=list(devices))


def test_the_first_gateway_to_announce_a_device_owns_it_and_another_birth_does_not_move_it() -> None:
    registry = Registry()
    changes: list[list[str]] = []
    registry.subscribe(lambda devices: changes.append([d.id for d in devices]))
    registry.apply_birth("s1", "gw-1", birth(AQ))
    assert registry.owners() == {"aq-01": ("s1", "gw-1")}

    conflicts = registry.apply_birth("s2", "gw-9", birth(DeviceInfo("aq-01", "display", "vms", 1.0)))

    assert [(c.source, c.announced, c.inventory) for c in conflicts] == [("owner", "s2/gw-9", "s1/gw-1")]
    aq = registry.devices["aq-01"]
    # Left where it is, described by its own gateway's birth, not by the claimant's.
    assert (aq.site, aq.gateway, aq.kind, aq.interval_s) == ("s1", "gw-1", "air_quality", 5.0)
    assert registry.owners() == {"aq-01": ("s1", "gw-1")}
    assert registry.owned_elsewhere("s2", "gw-9", "aq-01")
    assert not registry.owned_elsewhere("s1", "gw-1", "aq-01")
    # The claim stays a conflict while the claimant's birth lists the device, and goes with its next birth.
    assert [c.source for c in registry.conflicts()] == ["owner"]
    registry.apply_birth("s2", "gw-9", birth(session="sess-0002"))
    assert registry.conflicts() == []
    assert changes == [["aq-01"], ["aq-01"], ["aq-01"]]


def test_the_inventory_gateway_owns_a_device_before_any_birth_and_wins_over_the_first_announcer() -> None:
    registry = Registry()
    registry.apply_inventory(parse_mapping({"devices": [{"id": "cam-01", "site": "s1", "gateway": "gw-1"}]}, "x"))
    registry.apply_birth("s2", "gw-9", birth(DeviceInfo("cam-01", "camera", "onvif", 10.0)))
    assert registry.owners() == {"cam-01": ("s1", "gw-1")}

    # A device first announced by gw-9, then put under gw-1 by the technicians' inventory: moved, recorded.
    registry.apply_birth("s2", "gw-9", birth(DeviceInfo("cam-01", "camera", "onvif", 10.0), AQ, session="sess-2"))
    assert registry.owners()["aq-01"] == ("s2", "gw-9")
    result = registry.apply_inventory(
        parse_mapping({"devices": [{"id": "aq-01", "site": "s1", "gateway": "gw-1"}]}, "inv.yaml"), by="inv.yaml"
    )
    assert registry.owners()["aq-01"] == ("s1", "gw-1")
    # gw-9 still lists it in its current birth: that is now a claim on another gateway's device.
    assert {(c.device, c.announced, c.source) for c in result.conflicts} == {
        ("cam-01", "s2/gw-9", "owner"),
        ("aq-01", "s2/gw-9", "owner"),
    }
    assert registry.devices["aq-01"].announced is None  # gw-9's description no longer applies


def test_an_inventory_naming_only_the_gateway_takes_the_site_from_that_gateways_birth() -> None:
    registry = Registry()
    registry.apply_inventory(parse_mapping({"devices": [{"id": "aq-01", "gateway": "gw-1"}]}, "x"))
    assert registry.owners() == {}
    registry.apply_birth("s2", "gw-9", birth(AQ))
    assert registry.devices["aq-01"].gateway == "gw-1"
    registry.apply_birth("s1", "gw-1", birth(AQ))
    assert registry.owners() == {"aq-01": ("s1", "gw-1")}


async def test_a_move_is_recorded_persisted_and_survives_reimporting_the_same_inventory(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.create_schema()
    try:
        registry = Registry(db)
        inventory = parse_mapping(
            {"sites": [{"id": "s1", "ward": "quan-1"}], "devices": [{"id": "aq-01", "site": "s1", "gateway": "gw-1"}]},
            "inv.yaml",
        )
        registry.apply_inventory(inventory)
        registry.apply_birth("s1", "gw-1", birth(AQ))
        registry.apply_birth("s3", "gw-3", birth())  # the new cabinet's gateway, announcing nothing yet
        seen: list[Device] = []
        registry.subscribe(seen.extend)

        move = registry.move("aq-01", "s3", "gw-3", by="tech (t-1)", reason="cabinet replaced")

        assert move is not None
        assert (move.from_site, move.from_gateway, move.to_site, move.to_gateway) == ("s1", "gw-1", "s3", "gw-3")
        assert (move.source, move.by, move.reason) == ("api", "tech (t-1)", "cabinet replaced")
        assert registry.owners() == {"aq-01": ("s3", "gw-3")}
        assert [d.id for d in seen] == ["aq-01"]  # the listeners (owners map, health) hear it at once
        assert registry.move("aq-01", "s3", "gw-3", by="tech (t-1)") is None
        await registry.flush()
        stored = db.run_sync(lambda s: [(r.device, r.to_gateway, r.by) for r in s.scalars(select(DeviceMoveRow))])
        assert stored == [("aq-01", "gw-3", "tech (t-1)")]
        assert [m["to_gateway"] for m in await registry.moves("aq-01")] == ["gw-3"]

        # The same inventory again (the hub re-imports its file at every start) does not undo the move...
        again = Registry(db)
        again.load()
        again.apply_inventory(inventory)
        assert again.owners() == {"aq-01": ("s3", "gw-3")}
        # ...an inventory that states another place does.
        again.apply_inventory(
            parse_mapping({"devices": [{"id": "aq-01", "site": "s1", "gateway": "gw-2"}]}, "inv.yaml"), by="inv.yaml"
        )
        assert again.owners() == {"aq-01": ("s1", "gw-2")}
        await again.flush()
        assert [(m["source"], m["by"]) for m in await again.moves("aq-01")] == [
            ("inventory", "inv.yaml"),
            ("api", "tech (t-1)"),
        ]
    finally:
        db.close()


def test_a_move_goes_only_to_a_site_and_gateway_the_registry_knows_and_a_refused_one_changes_nothing() -> None:
    registry = Registry()
    inventory = {
        "sites": [{"id": "s1", "ward": "quan-1"}, {"id": "s2", "ward": "quan-3"}],
        "devices": [
            {"id": "aq-01", "site": "s1", "gateway": "gw-1"},
            {"id": "cam-01", "site": "s2", "gateway": "gw-4"},
        ],
    }
    registry.apply_inventory(parse_mapping(inventory, "inv.yaml"))
    registry.apply_birth("s2", "gw-2", birth())  # known by its birth alone
    registry.note_claim("s2", "gw-3", "aq-01")  # known by its claim alone (data about aq-01, no birth)
    changes: list[str] = []
    registry.subscribe(lambda devices: changes.extend(d.id for d in devices))
    refused = {
        ("s9", "gw-1"): "site 's9' is not in the registry: neither the inventory nor a birth names it",
        ("s1", "gw-9"): (
            "gateway 'gw-9' of site 's1' is not in the registry: no birth since the hub started, inventory entry or "
            "device names it"
        ),
        ("s1", "gw-2"): (  # gw-2 is known at s2, not at s1
            "gateway 'gw-2' of site 's1' is not in the registry: no birth since the hub started, inventory entry or "
            "device names it"
        ),
    }
    for (site, gateway), message in refused.items():
        with pytest.raises(UnknownPlace) as caught:
            registry.move("aq-01", site, gateway, by="tech")
        assert str(caught.value) == message
    assert (registry.owners(), sorted(registry.sites), changes) == (
        {"aq-01": ("s1", "gw-1"), "cam-01": ("s2", "gw-4")},
        ["s1", "s2"],
        [],
    )

    # Each way the registry knows a gateway makes it a target: a birth, a claim, owning a device, and the inventory
    # naming it for a device that has since moved away (s1/gw-1 for aq-01).
    for place in (("s2", "gw-2"), ("s2", "gw-3"), ("s2", "gw-4"), ("s1", "gw-1")):
        assert registry.move("aq-01", *place, by="tech") is not None
        assert registry.owners()["aq-01"] == place


async def test_a_technician_giving_a_device_of_no_gateway_its_first_is_a_move_recorded_and_persisted(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.create_schema()
    try:
        registry = Registry(db)
        registry.apply_inventory(parse_mapping({"devices": [{"id": "cam-01", "kind": "camera", "site": "s1"}]}, "x"))
        registry.apply_birth("s1", "gw-1", birth())
        pushed: list[dict[str, tuple[str, str]]] = []
        registry.subscribe(lambda _devices: pushed.append(registry.owners()))

        move = registry.move("cam-01", "s1", "gw-1", by="tech (t-1)", reason="wired to the new gateway")

        assert move is not None
        assert (
            move.describe()
            == "device cam-01 moved from no gateway to s1/gw-1 by tech (t-1) (api): wired to the new gateway"
        )
        assert pushed == [{"cam-01": ("s1", "gw-1")}]  # the admission's owners map and health hear it
        await registry.flush()
        again = Registry(db)
        again.load()
        assert again.owners() == {"cam-01": ("s1", "gw-1")}
        assert [(m["from_site"], m["from_gateway"], m["to_gateway"]) for m in await again.moves("cam-01")] == [
            ("s1", None, "gw-1")
        ]
    finally:
        db.close()


#: The registry tables as the hub made them before devices had owners (SQLite, as ``create_schema`` wrote them).
SCHEMA_BEFORE_OWNERS = """
CREATE TABLE sites (id VARCHAR(64) NOT NULL, name VARCHAR(200) NOT NULL, ward VARCHAR(64), lat FLOAT, lon FLOAT,
    updated DATETIME NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_sites_ward ON sites (ward);
CREATE TABLE devices (id VARCHAR(64) NOT NULL, kind VARCHAR(32) NOT NULL, profile VARCHAR(128) NOT NULL,
    driver VARCHAR(64) NOT NULL, site VARCHAR(64), gateway VARCHAR(64), lat FLOAT, lon FLOAT, installed DATE,
    interval_s FLOAT, inactivity_s FLOAT, tags JSON NOT NULL, announced JSON, inventory JSON, conflicts JSON NOT NULL,
    first_seen DATETIME NOT NULL, updated DATETIME NOT NULL, PRIMARY KEY (id), FOREIGN KEY(site) REFERENCES sites (id));
CREATE INDEX ix_devices_site ON devices (site);
CREATE INDEX ix_devices_kind ON devices (kind);
INSERT INTO sites VALUES ('s1', 's1', 'quan-1', NULL, NULL, '2026-01-01 00:00:00');
INSERT INTO sites VALUES ('s2', 's2', NULL, NULL, NULL, '2026-01-01 00:00:00');
-- Re-homed by a birth of s2/gw-9 although the inventory says s1/gw-1 (what the hub did before owners).
INSERT INTO devices VALUES ('aq-01', 'air_quality', 'pm', '', 's2', 'gw-9', NULL, NULL, NULL, 5.0, NULL, '{}',
    '{"kind": "air_quality", "profile": "pm", "driver": "", "interval_s": 5.0, "site": "s2", "gateway": "gw-9"}',
    '{"site": "s1", "gateway": "gw-1"}', '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00');
INSERT INTO devices VALUES ('th-01', 'weather', 'xy', '', 's2', 'gw-9', NULL, NULL, NULL, 2.0, NULL, '{}',
    '{"kind": "weather", "profile": "xy", "driver": "", "interval_s": 2.0, "site": "s2", "gateway": "gw-9"}',
    NULL, '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00');
"""


async def test_a_database_made_before_owners_opens_with_the_inventory_gateway_as_owner(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_BEFORE_OWNERS)
    db = Database(f"sqlite:///{path}")
    db.create_schema()  # adds device_moves; the existing tables are left as they are
    try:
        registry = Registry(db)
        registry.load()
        assert registry.owners() == {"aq-01": ("s1", "gw-1"), "th-01": ("s2", "gw-9")}
        registry.move("th-01", "s1", "gw-1", by="tech")
        await registry.flush()
        again = Registry(db)
        again.load()
        assert again.owners() == {"aq-01": ("s1", "gw-1"), "th-01": ("s1", "gw-1")}
        assert [m["from_gateway"] for m in await again.moves("th-01")] == ["gw-9"]
    finally:
        db.close()


def test_a_claim_the_admission_took_out_of_a_birth_is_a_conflict_until_a_birth_comes_without_one() -> None:
    registry = Registry()
    registry.apply_birth("s1", "gw-1", birth(AQ))
    # The ingest admission refuses gw-9's claim (foreign_device) and hands the registry the birth without it.
    registry.note_claim("s2", "gw-9", "aq-01")
    registry.apply_birth("s2", "gw-9", birth(session="sess-0009"))
    assert [(c.device, c.announced, c.source) for c in registry.conflicts()] == [("aq-01", "s2/gw-9", "owner")]
    assert registry.conflicts()[0].describe().startswith("device aq-01: claimed by gateway s2/gw-9, but it belongs")
    registry.note_claim("s1", "gw-1", "aq-01")  # its owner: no claim
    registry.note_claim("s2", "gw-9", "nope-01")  # unknown to the registry: nothing to claim
    assert len(registry.conflicts()) == 1
    registry.apply_birth("s2", "gw-9", birth(session="sess-0010"))  # no refusal came with this one
    assert registry.conflicts() == []
    assert registry.owners() == {"aq-01": ("s1", "gw-1")}
