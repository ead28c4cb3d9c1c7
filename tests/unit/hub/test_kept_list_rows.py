"""The API's site and gateway lists kept row by row (hub/routes/sites.py): an answer is the JSON its page's model
gives, byte for byte; over random histories (births, readings, events, deaths, problems and their clearing,
refusals, refused acks, moves, inventory imports changing wards, the clock ending flaps) every answer, for an
unlimited and two ward-limited tokens, equals a full computation from the state at that moment; nothing is built
when nothing changed; and a birth in a city of 2,000 gateways re-encodes its own rows alone. Driven in process
with a fake clock (tests/integration/hub/test_kept_list_answers.py does the same through a real hub)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from typing import Any

import pytest

from hub.alerts.security import SecurityAlerts
from hub.health.machine import FlapPolicy
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.ingest.admission import Refusal, RefusalReason
from hub.operations.commands import CommandService
from hub.registry.inventory import parse_mapping
from hub.registry.registry import Registry
from hub.routes.models import Gateway, GatewaysPage, Site, SitesPage
from hub.routes.sites import KeptAnswers, RowList
from wire.v1 import AckStatus, CommandAck, DataBatch, DeviceInfo, Event, EventType, Reading, State

WARDS = ("quan-1", "quan-3", "quan-5")
WARD_SETS: tuple[frozenset[str] | None, ...] = (None, frozenset({"quan-1"}), frozenset({"quan-3", "quan-5"}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Engine:
    """The alert engine as the security alerts use it: no alert ever open."""

    def is_open(self, subject: str, rule: str) -> bool:
        return False

    def raise_alert(self, *args: Any, **kwargs: Any) -> None:
        pass


class Ops:
    """The parts of the operations the lists read."""

    def __init__(self, clock: Clock) -> None:
        self.registry = Registry()
        policy = HealthPolicy(flap=FlapPolicy(flap_changes=2, flap_quiet_s=2.0), problem_quiet_s=3.0)
        self.health = HealthMonitor(self.registry, policy, clock=clock, wall=lambda: clock.now)
        self.security = SecurityAlerts(Engine(), quiet_s=60.0, clock=clock)  # type: ignore[arg-type]
        self.commands = CommandService(None, None, self.registry, self.health, clock=clock)  # type: ignore[arg-type]

    def observe(self, site: str, gateway: str, payload: object) -> None:
        if isinstance(payload, State) and payload.online:
            self.registry.apply_birth(site, gateway, payload)
        self.health.observe(site, gateway, payload)
        self.commands.observe(site, gateway, payload)


def _visible(ward: str | None, wards: frozenset[str] | None) -> bool:
    return wards is None or (ward is not None and ward in wards)


def full_sites(ops: Ops, wards: frozenset[str] | None) -> dict[str, Any]:
    registry, health = ops.registry, ops.health
    counts: dict[str, Counter[str]] = {}
    for device in registry.devices.values():
        if device.site is not None:
            counts.setdefault(device.site, Counter())[health.device_state(device.id).value] += 1
    items = [
        Site(**asdict(s), devices=sum(counts.get(s.id, Counter()).values()), states=dict(counts.get(s.id, {})))
        for s in sorted(registry.sites.values(), key=lambda s: s.id)
        if _visible(s.ward, wards)
    ]
    return SitesPage(total=len(items), items=items).model_dump(mode="json")


def full_gateways(ops: Ops, wards: frozenset[str] | None) -> dict[str, Any]:
    items = [
        Gateway(
            key=key,
            site=gw.site,
            gateway=gw.gateway,
            state=gw.machine.state.value,
            reason=gw.machine.reason,
            flapping=gw.machine.flapping,
            devices=len(gw.devices),
            problems=ops.health.problems(gw.site, gw.gateway),
            refusals=ops.security.counts(gw.site, gw.gateway),
            refused_acks=ops.commands.refused_acks.get(key, 0),
        )
        for key, gw in sorted(ops.health.gateways.items())
        if _visible(ops.registry.ward_of_site(gw.site), wards)
    ]
    return GatewaysPage(total=len(items), items=items).model_dump(mode="json")


def answers(ops: Ops, kept: KeptAnswers, wards: frozenset[str] | None) -> tuple[bytes, bytes]:
    kept.sync(ops)  # type: ignore[arg-type]
    return kept.sites.answer(wards), kept.gateways.answer(wards)


def _gateway_row(i: int, ward: str | None) -> tuple[str, bytes, str | None]:
    key = f"site-{i}/gw-{i}"
    item = Gateway(
        key=key,
        site=f"site-{i}",
        gateway=f"gw-{i}",
        state="online",
        reason='birth "x"',
        flapping=False,
        devices=i,
        problems=[],
        refusals={"field_type": i} if i % 2 else {},
        refused_acks=0,
    )
    return key, item.model_dump_json().encode(), ward


def test_an_answer_is_the_page_models_json_byte_for_byte() -> None:
    rows = RowList()
    put: dict[str, tuple[bytes, str | None]] = {}
    rng = random.Random(7)
    assert rows.answer(None) == GatewaysPage(total=0, items=[]).model_dump_json().encode()
    for step in range(200):
        i = rng.randrange(40)
        if rng.random() < 0.1 and put:
            key = rng.choice(sorted(put))
            rows.remove(key)
            del put[key]
        else:
            key, row, ward = _gateway_row(i, rng.choice((*WARDS, None)))
            rows.put(key, row, ward)
            put[key] = (row, ward)
        for wards in WARD_SETS:
            items = [
                Gateway.model_validate_json(row) for key, (row, ward) in sorted(put.items()) if _visible(ward, wards)
            ]
            expected = GatewaysPage(total=len(items), items=items).model_dump_json().encode()
            assert rows.answer(wards) == expected, step


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kept_rows_equal_a_full_computation_after_every_change(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    ops = Ops(clock)
    kept = KeptAnswers()
    sites = [f"site-{i}" for i in range(6)]
    gateways = [(s, f"gw-{j}") for s in sites for j in range(2)]
    sessions: dict[tuple[str, str], str] = {}
    announced: dict[tuple[str, str], list[str]] = {}
    history: list[str] = []

    def inventory() -> None:
        doc = {
            "sites": [{"id": s, **({"ward": w} if (w := rng.choice((*WARDS, None))) else {})} for s in sites],
            "devices": [{"id": f"inv-{i}", "kind": "weather", "site": rng.choice(sites)} for i in range(3)],
        }
        ops.registry.apply_inventory(parse_mapping(doc, "test"), by="test")

    inventory()
    for step in range(300):
        action = rng.choice(
            ["birth", "birth", "data", "data", "event", "death", "problem", "refusal", "ack", "move", "inventory"]
            + ["tick"] * 2
        )
        live = sorted(sessions)
        key = rng.choice(live) if live else None
        if action == "birth":
            key = rng.choice(gateways)
            sessions[key] = f"s{step}"
            devices = [f"{key[0]}-{key[1]}-d{i}" for i in range(rng.randrange(0, 4))]
            announced[key] = devices
            infos = [DeviceInfo(d, "weather", "p", 60.0) for d in devices]
            ops.observe(*key, State(online=True, session=sessions[key], ts=1, devices=infos))
        elif action == "data" and key is not None and announced[key]:
            readings = [Reading(d, "weather", 1, {"t": 1.0}) for d in rng.sample(announced[key], 1)]
            ops.observe(*key, DataBatch(session=sessions[key], seq=step, readings=readings))
        elif action == "event" and key is not None and announced[key]:
            kind = rng.choice(list(EventType))
            ops.observe(*key, Event(sessions[key], rng.choice(announced[key]), kind, 1, reason="r"))
        elif action == "death" and key is not None:
            ops.observe(*key, State(online=False, session=sessions[key], reason="lost"))
        elif action == "problem":
            ops.health.report_problem(*rng.choice(gateways), "clock_skew", f"skew {rng.randrange(9)}")
        elif action == "refusal":
            ops.security.observe(Refusal(*rng.choice(gateways), RefusalReason.FIELD_TYPE, "x", "a string"))
        elif action == "ack" and key is not None:
            ops.observe(*key, CommandAck(f"c{step}", key[1], AckStatus.OK, 1))
        elif action == "move" and key is not None:
            owned = sorted(d for d, x in ops.registry.devices.items() if x.gateway is not None)
            if owned:
                ops.registry.move(rng.choice(owned), *key, by="test")
        elif action == "inventory":
            inventory()
        elif action == "tick":
            clock.now += rng.choice((0.5, 2.5))
            ops.health.tick()
        history.append(action)
        for wards in WARD_SETS:
            got_sites, got_gateways = answers(ops, kept, wards)
            assert json.loads(got_sites) == full_sites(ops, wards), (wards, history[-5:])
            assert json.loads(got_gateways) == full_gateways(ops, wards), (wards, history[-5:])
        # Asked again with nothing changed: nothing built, nothing joined.
        builds, rows = kept.builds, kept.rows_built
        for wards in WARD_SETS:
            answers(ops, kept, wards)
        assert (kept.builds, kept.rows_built) == (builds, rows)
    assert {"birth", "data", "event", "death", "problem", "refusal", "ack", "move", "inventory", "tick"} <= set(history)


def test_a_birth_in_a_big_city_re_encodes_its_own_rows_alone() -> None:
    clock = Clock()
    ops = Ops(clock)
    kept = KeptAnswers()

    def birth(i: int) -> None:
        infos = [DeviceInfo(f"d-{i}-{j}", "weather", "p", 10.0) for j in range(4)]
        ops.observe(f"site-{i:04d}", f"gw-{i:04d}", State(online=True, session=f"s{i}", ts=1, devices=infos))

    for i in range(2000):
        birth(i)
    answers(ops, kept, None)
    assert kept.rows_built == 4000  # every site and gateway, once
    before = kept.rows_built
    birth(2000)
    sites, gateways = answers(ops, kept, None)
    assert kept.rows_built - before == 2  # the new site's row and the new gateway's
    assert json.loads(gateways)["total"] == 2001
    assert json.loads(sites)["total"] == 2001
    before = kept.rows_built
    readings = [Reading(f"d-7-{j}", "weather", 1, {"t": 1.0}) for j in range(4)]
    ops.observe("site-0007", "gw-0007", DataBatch(session="s7", seq=1, readings=readings))  # 4 devices online
    answers(ops, kept, None)
    assert kept.rows_built - before == 1  # its site's counts (the gateway's row shows no device state)
    assert json.loads(kept.sites.answer(None))["items"][7]["states"] == {"online": 4}
