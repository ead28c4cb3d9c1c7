"""A birth costs its own devices, not the city's: the registry tells its listeners only the devices it changed,
the feed to the ingest side (hub.operations.operations.RegistryFeed) pushes only the owners that changed, and the
admission applies them (``Admission.update_owners``) with exactly the outcome of a whole new owners map."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from hub.auth import Principal
from hub.health.monitor import HealthMonitor
from hub.ingest.admission import Admission, AdmissionRules, Refusal
from hub.operations.operations import RegistryFeed
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Device, Registry
from hub.routes.devices import list_devices
from wire.v1 import DataBatch, DeviceInfo, Reading, State

NOW_S = 2_000_000_000.0  # the clock every admission here reads (2033-05-18)
NOW_MS = int(NOW_S * 1000)
Owner = tuple[str, str]


def admission() -> Admission:
    return Admission(AdmissionRules(), clock=lambda: NOW_S)


def birth(*devices: str, session: str = "sess-0001") -> State:
    infos = [DeviceInfo(d, "air_quality", "pm-sensor-rs485", 10.0) for d in devices]
    return State(online=True, session=session, ts=NOW_MS, devices=infos)


def probe(adm: Admission, site: str, gateway: str, device: str) -> tuple[bool, list[Refusal]]:
    """Whether ``site``/``gateway`` may write a reading of ``device`` now, and the refusals."""
    kept, refusals = adm.data(
        site,
        gateway,
        DataBatch(
            session="sess-0001",
            seq=1,
            readings=[Reading(device=device, kind="air_quality", ts=NOW_MS, metrics={"pm25": 1.0})],
        ),
    )
    return kept is not None, refusals


# ------------------------------------------------------------------------------------------ admission


GATEWAYS: list[Owner] = [(f"s{i}", f"gw-{i}") for i in range(4)]
#: "gw-1" is also a gateway's own id: another gateway may announce a device by that id, its own agent may not.
DEVICES = [f"d-{i}" for i in range(8)] + ["gw-1"]


@pytest.mark.parametrize("seed", range(30))
def test_owner_changes_applied_one_by_one_give_what_the_whole_map_gives(seed: int) -> None:
    """Births (the registry gives a device of no owner to the gateway that announced it), technicians' moves, a
    device left without owner and data from every gateway, in a random order: the admission fed the changes alone
    and the one given the registry's whole map after every step admit and refuse exactly the same."""
    rnd = random.Random(seed)
    changes_only, whole_map = admission(), admission()
    registry: dict[str, Owner] = {}
    for step in range(120):
        changes: dict[str, Owner | None] = {}
        action = rnd.random()
        if action < 0.5:
            site, gateway = rnd.choice(GATEWAYS)
            state = birth(*rnd.sample(DEVICES, rnd.randint(0, 5)), session=f"sess-{step:04d}")
            kept, refusals = changes_only.state(site, gateway, state)
            assert (kept, refusals) == whole_map.state(site, gateway, state)
            for info in kept.devices:
                if info.id not in registry:
                    registry[info.id] = changes[info.id] = (site, gateway)
        elif action < 0.7:
            device, owner = rnd.choice(DEVICES), rnd.choice(GATEWAYS)
            registry[device] = changes[device] = owner
        elif action < 0.8:
            device = rnd.choice(DEVICES)
            registry.pop(device, None)
            changes[device] = None
        else:
            site, gateway = rnd.choice(GATEWAYS)
            device = rnd.choice(DEVICES)
            assert probe(changes_only, site, gateway, device) == probe(whole_map, site, gateway, device)
        if changes:
            changes_only.update_owners(changes)
        whole_map.set_owners(registry)
        for site, gateway in GATEWAYS:
            for device in DEVICES:
                assert probe(changes_only, site, gateway, device) == probe(whole_map, site, gateway, device), (
                    f"step {step}: {site}/{gateway} writing {device}"
                )
        assert {d: changes_only.owner(d) for d in DEVICES} == {d: whole_map.owner(d) for d in DEVICES}


def test_a_gateway_that_held_a_device_of_no_owner_loses_it_when_another_gets_it() -> None:
    adm = admission()
    adm.state("s1", "gw-1", birth("aq-01"))
    adm.update_owners({"aq-01": None})  # e.g. the registry took it back: no owner, gw-1's birth still lists it
    assert probe(adm, "s1", "gw-1", "aq-01") == (True, [])

    adm.update_owners({"aq-01": ("s2", "gw-2")})

    ok, refusals = probe(adm, "s1", "gw-1", "aq-01")
    assert (ok, [(r.reason.value, r.device, r.detail) for r in refusals]) == (
        False,
        [("foreign_device", "aq-01", "device 'aq-01' belongs to s2/gw-2")],
    )
    assert adm.owner("aq-01") == ("s2", "gw-2")


# ------------------------------------------------------------------------------------------ a city of 20,000


CITY = 5000
PER_GATEWAY = 4


def place(i: int) -> Owner:
    return f"site-{i:04d}", f"gw-{i:04d}"


def ids(i: int) -> list[str]:
    return [f"gw-{i:04d}-d{n}" for n in range(PER_GATEWAY)]


class City:
    """5,000 gateways of 4 devices born into a registry, the feed to an admission that takes changes, and what
    every listener heard."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.admission = admission()
        #: Fed the same births, and the registry's whole owners map when a test compares (as the hub did before).
        self.whole = admission()
        self.heard: list[list[str]] = []
        self.owner_changes: list[dict[str, Owner | None]] = []
        self.whole_maps: list[dict[str, Owner]] = []
        self.enrichments: list[dict[str, dict[str, str]]] = []
        self.feed = RegistryFeed(self.registry)
        self.registry.subscribe(self.feed.changed)
        self.registry.subscribe(lambda devices: self.heard.append([d.id for d in devices]))
        self.feed.on_owners(self.admission.set_owners, self._changed)
        self.feed.on_owners(self._whole)  # a sink that takes no changes gets the whole map every time
        self.feed.on_enrichment(lambda m: self.enrichments.append({k: dict(v) for k, v in m.items()}))
        for i in range(1, CITY + 1):
            self.born(i, *ids(i))
        # Half the gateways sent data before anything else happened in this test (their admission is built).
        for i in range(1, CITY + 1, 2):
            assert probe(self.admission, *place(i), ids(i)[0]) == probe(self.whole, *place(i), ids(i)[0]) == (True, [])
        self.clear()

    def _changed(self, changes: Mapping[str, Owner | None]) -> None:
        self.owner_changes.append(dict(changes))
        self.admission.update_owners(changes)

    def _whole(self, owners: Mapping[str, Owner]) -> None:
        self.whole_maps.append(dict(owners))

    def born(self, i: int, *devices: str, session: str = "sess-0001", faster: str = "") -> None:
        """The birth as the hub takes it: the admission first, then the registry with what it kept. Every device
        is polled every 10 s, but ``faster``, every 5 s."""
        infos = [DeviceInfo(d, "air_quality", "pm-sensor-rs485", 5.0 if d == faster else 10.0) for d in devices]
        state = State(online=True, session=session, ts=NOW_MS, devices=infos)
        kept, refusals = self.admission.state(*place(i), state)
        assert (kept, refusals) == self.whole.state(*place(i), state)
        self.registry.apply_birth(*place(i), kept)

    def clear(self) -> None:
        self.heard.clear()
        self.owner_changes.clear()
        self.whole_maps.clear()
        self.enrichments.clear()

    def allowed_maps(self) -> dict[Owner, object]:
        """Each gateway's map of what it may write, as the admission holds it now (the object itself)."""
        return {key: gate.allowed for key, gate in self.admission._gateways.items()}

    def rebuilt(self) -> Admission:
        """The admission given every birth and now the registry's whole owners map, as the hub did before."""
        self.whole.set_owners(self.registry.owners())
        return self.whole


@pytest.fixture(scope="module")
def city() -> City:
    return City()


def test_a_birth_changing_one_device_of_20000_tells_every_listener_of_that_device_alone(city: City) -> None:
    assert len(city.registry.devices) == CITY * PER_GATEWAY
    before = city.allowed_maps()
    snapshot = {key: dict(allowed) for key, allowed in before.items() if isinstance(allowed, dict)}

    # gw-0007 now polls its first device every 5 s: one device changed, no owner.
    city.born(7, *ids(7), session="sess-0002", faster=ids(7)[0])
    assert city.heard == [ids(7)[:1]]
    assert city.registry.devices[ids(7)[0]].interval_s == 5.0
    assert (city.owner_changes, city.whole_maps, city.enrichments) == ([], [], [])
    city.clear()

    # gw-0007 announces a fifth device: it is gw-0007's, pushed as that one change, and no other gateway's map of
    # what it may write is rebuilt or touched.
    new = "gw-0007-d4"
    city.born(7, *ids(7), new, session="sess-0003", faster=ids(7)[0])
    assert city.heard == [[new]]
    assert city.owner_changes == [{new: place(7)}]
    assert city.whole_maps == [city.registry.owners()]
    assert city.enrichments == []  # no ward anywhere: the lines' tags do not change
    after = city.allowed_maps()
    assert after.keys() == before.keys()
    untouched = [key for key in before if key != place(7)]
    assert all(after[key] is before[key] for key in untouched)
    assert all(after[key] == snapshot[key] for key in untouched if key in snapshot)
    assert probe(city.admission, *place(7), new) == (True, [])
    assert {d: city.admission.owner(d) for d in city.registry.devices} == city.registry.owners()
    rebuilt = city.rebuilt()
    assert {d: rebuilt.owner(d) for d in city.registry.devices} == city.registry.owners()
    city.clear()


def test_after_a_move_and_a_death_the_owners_are_what_a_whole_rebuild_gives(city: City) -> None:
    moved = ids(11)[2]
    city.clear()

    city.registry.move(moved, *place(12), by="technician", reason="cabinet replaced")
    assert city.heard == [[moved]]
    assert city.owner_changes == [{moved: place(12)}]

    death = State(online=False, session="sess-0001", ts=NOW_MS, reason="lost")
    state, _ = city.admission.state(*place(11), death)
    city.whole.state(*place(11), death)
    city.registry.apply_birth(*place(11), state)
    assert city.owner_changes == [{moved: place(12)}]  # a death changes no owner

    rebuilt = city.rebuilt()
    assert {d: city.admission.owner(d) for d in city.registry.devices} == city.registry.owners()
    for i in range(1, CITY + 1):
        for device in [*ids(i), moved]:
            assert probe(city.admission, *place(i), device) == probe(rebuilt, *place(i), device)
    # gw-0011's current birth still lists the device: it may not write it any more; gw-0012 may once its next
    # birth announces it.
    assert [r.reason.value for r in probe(city.admission, *place(11), moved)[1]] == ["foreign_device"]
    assert [r.reason.value for r in probe(city.admission, *place(12), moved)[1]] == ["unannounced_device"]
    city.born(12, *ids(12), moved, session="sess-0002")
    assert probe(city.admission, *place(12), moved) == (True, [])
    assert city.whole_maps[-1] == city.registry.owners()


def test_a_new_site_births_listeners_hear_of_its_devices_only_and_a_ward_reaches_the_enrichment() -> None:
    registry = Registry()
    registry.apply_inventory(
        parse_mapping({"sites": [{"id": "ben-thanh", "name": "Ben Thanh", "ward": "quan-1"}]}, "inventory.yaml")
    )
    feed = RegistryFeed(registry)
    registry.subscribe(feed.changed)
    heard: list[list[Device]] = []
    registry.subscribe(heard.append)
    pushed: list[dict[str, dict[str, str]]] = []
    feed.on_enrichment(lambda m: pushed.append({k: dict(v) for k, v in m.items()}))
    assert pushed == [{}]

    registry.apply_birth("ben-thanh", "gw-1", birth("aq-01"))
    registry.apply_birth("cho-lon", "gw-2", birth("aq-02"))  # a new site, no ward
    registry.apply_birth("ben-thanh", "gw-1", birth("aq-01", session="sess-0002"))  # nothing changed

    assert [[d.id for d in devices] for devices in heard] == [["aq-01"], ["aq-02"]]
    assert pushed == [{}, {"aq-01": {"district": "quan-1"}}]
    assert pushed[-1] == registry.enrichment()

    # An import giving the new site a ward reaches its devices' tags.
    registry.apply_inventory(
        parse_mapping(
            {
                "sites": [
                    {"id": "ben-thanh", "name": "Ben Thanh", "ward": "quan-1"},
                    {"id": "cho-lon", "name": "Cho Lon", "ward": "quan-5"},
                ]
            },
            "inventory.yaml",
        )
    )
    assert pushed[-1] == registry.enrichment() == {"aq-01": {"district": "quan-1"}, "aq-02": {"district": "quan-5"}}


# ------------------------------------------------------------------------------------------ the API's device pages


def test_sorted_devices_merges_new_devices_in_and_is_kept_between_calls() -> None:
    registry = Registry()
    registry.apply_birth("s1", "gw-1", birth("c-3", "a-1"))
    first = registry.sorted_devices()
    assert [d.id for d in first] == ["a-1", "c-3"]
    assert registry.sorted_devices() is first
    registry.apply_birth("s2", "gw-2", birth("b-2", "d-4", "a-0"))
    assert [d.id for d in registry.sorted_devices()] == ["a-0", "a-1", "b-2", "c-3", "d-4"]
    assert registry.sorted_devices() is first  # the same list, merged into


def reference_page(ops: Any, principal: Principal, **filters: Any) -> dict[str, Any]:
    """What GET /api/v1/devices answered before it kept a sorted list: every device visited, then sorted."""
    registry, health = ops.registry, ops.health
    matches = [
        d
        for d in registry.devices.values()
        if (filters.get("site") is None or d.site == filters["site"])
        and (filters.get("kind") is None or d.kind == filters["kind"])
        and (filters.get("ward") is None or registry.ward_of(d) == filters["ward"])
        and principal.sees(registry.ward_of(d))
        and (filters.get("state") is None or health.device_state(d.id).value == filters["state"])
    ]
    matches.sort(key=lambda d: d.id)
    offset, limit = filters.get("offset", 0), filters.get("limit", 100)
    return {"total": len(matches), "ids": [d.id for d in matches[offset : offset + limit]]}


def test_device_pages_with_every_filter_are_what_a_visit_of_every_device_gives() -> None:
    registry = Registry()
    registry.apply_inventory(
        parse_mapping(
            {"sites": [{"id": f"s{i}", "name": f"S{i}", "ward": f"w{i % 2}"} for i in range(3)]}, "inventory.yaml"
        )
    )
    health = HealthMonitor(registry, clock=lambda: 100.0, wall=lambda: NOW_S)
    for i in range(3):
        infos = [DeviceInfo(f"d{i}-{n:02d}", ("air_quality", "camera")[n % 2], "p", 10.0) for n in range(12)]
        state = State(online=True, session="sess-0001", ts=NOW_MS, devices=infos)
        registry.apply_birth(f"s{i}", f"gw-{i}", state)
        if i < 2:  # gw-2's devices are announced only: unknown
            health.observe(f"s{i}", f"gw-{i}", state)
            readings = [Reading(device=d.id, kind=d.kind, ts=NOW_MS, metrics={"x": 1.0}) for d in infos[::2]]
            health.observe(f"s{i}", f"gw-{i}", DataBatch(session="sess-0001", seq=1, readings=readings))
    registry.devices["lost-1"] = Device("lost-1")  # no site, no owner, never seen: unknown, visible to all-ward tokens
    ops = SimpleNamespace(registry=registry, health=health)
    everyone = Principal("t1", "admin", "viewer", None)
    ward0 = Principal("t2", "w0", "viewer", frozenset({"w0"}))
    cases = 0
    for principal in (everyone, ward0):
        for site in (None, "s0", "s1", "s9"):
            for kind in (None, "camera"):
                for health_state in (None, "online", "unknown", "offline"):
                    for ward in (None, "w0", "w1"):
                        for offset, limit in ((0, 100), (3, 5)):
                            filters = {"site": site, "kind": kind, "state": health_state, "ward": ward}
                            got = asyncio.run(
                                list_devices(principal, ops, **filters, limit=limit, offset=offset)  # type: ignore[arg-type]
                            )
                            want = reference_page(ops, principal, **filters, offset=offset, limit=limit)
                            assert ({"total": got["total"], "ids": [i["id"] for i in got["items"]]}) == want, filters
                            cases += 1
    assert cases == 384
    page = asyncio.run(list_devices(everyone, ops, state="online", limit=100, offset=0))  # type: ignore[arg-type]
    assert page["total"] == 12  # 6 read from each of gw-0 and gw-1
