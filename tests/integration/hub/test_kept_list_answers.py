"""``GET /api/v1/sites`` and ``GET /api/v1/gateways`` answer from kept answers (hub/routes/sites.py): each site's
and gateway's row kept encoded and encoded again only when the registry, the health monitor, the refusal counts or
the refused acks mark it changed, every ward set's answer joined again only when one of its rows changed. Over
random registries and health states (births, readings, device events, deaths, problems, refusals, refused acks,
moves, new sites and inventory imports changing wards), every answer, for an unlimited and two ward-limited
tokens, equals a straightforward full computation from the hub's state at that moment (the routes' code before the
answers were kept), and a change shows in the next answer. A real hub against the real broker; the inputs go through the
operations' own ingest observer (``Operations.observe``, ``on_refusal``), as the intake delivers them."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import auth, ops_settings, running_hub, tokens

from hub.auth import Principal
from hub.config import HealthSettings
from hub.health.monitor import Transition
from hub.ingest.admission import Refusal, RefusalReason
from hub.operations.operations import Operations
from hub.registry.inventory import parse_mapping
from hub.routes.models import Gateway, GatewaysPage, Site, SitesPage
from hub.routes.sites import kept_answers
from ioc.stack import StackEndpoints
from wire.v1 import AckStatus, CommandAck, DataBatch, DeviceInfo, Event, EventType, Reading, State

pytestmark = pytest.mark.integration

WARDS = ("quan-1", "quan-3", "quan-5")
TOKENS = {"viewer": None, "viewer-quan-1": frozenset({"quan-1"}), "operator-quan-3": frozenset({"quan-3"})}


def _principal(wards: frozenset[str] | None) -> Principal:
    return Principal("0", "t", "viewer", wards)


def full_sites(ops: Operations, principal: Principal) -> dict[str, Any]:
    """The sites answer computed in full (the route as it was before its answers were kept)."""
    registry, health = ops.registry, ops.health
    counts: dict[str, Counter[str]] = {}
    for device in registry.devices.values():
        if device.site is not None:
            counts.setdefault(device.site, Counter())[health.device_state(device.id).value] += 1
    items = [
        Site(
            **asdict(site),
            devices=sum(counts.get(site.id, Counter()).values()),
            states=dict(counts.get(site.id, {})),
        )
        for site in sorted(registry.sites.values(), key=lambda s: s.id)
        if principal.sees(site.ward)
    ]
    return SitesPage(total=len(items), items=items).model_dump(mode="json")


def full_gateways(ops: Operations, principal: Principal) -> dict[str, Any]:
    """The gateways answer computed in full (the route as it was before its answers were kept)."""
    items = []
    for key, gw in sorted(ops.health.gateways.items()):
        if not principal.sees(ops.registry.ward_of_site(gw.site)):
            continue
        items.append(
            Gateway.model_validate(
                {
                    "key": key,
                    "site": gw.site,
                    "gateway": gw.gateway,
                    "state": gw.machine.state.value,
                    "reason": gw.machine.reason,
                    "flapping": gw.machine.flapping,
                    "devices": len(gw.devices),
                    "problems": ops.health.problems(gw.site, gw.gateway),
                    "refusals": ops.security.counts(gw.site, gw.gateway),
                    "refused_acks": ops.commands.refused_acks.get(key, 0),
                }
            )
        )
    return GatewaysPage(total=len(items), items=items).model_dump(mode="json")


class City:
    """Random inputs to one hub's operations, each as the intake would deliver it."""

    def __init__(self, ops: Operations, rng: random.Random) -> None:
        self.ops, self.rng = ops, rng
        self.sites = [f"site-{i}" for i in range(6)]
        self.gateways = [(site, f"gw-{j}") for site in self.sites for j in range(2)]
        self.sessions: dict[tuple[str, str], str] = {}
        self.announced: dict[tuple[str, str], list[str]] = {}
        self.seq = 0

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def import_inventory(self) -> str:
        rng = self.rng
        sites = [{"id": s, "name": s.upper(), "ward": rng.choice((*WARDS, None))} for s in self.sites]
        # Some sites leave the ward out (no ward: only unlimited tokens see them); drop the key when None.
        doc = {
            "sites": [{k: v for k, v in s.items() if v is not None} for s in sites],
            "devices": [
                {"id": f"inv-{i}", "kind": "weather", "site": rng.choice(self.sites)}
                for i in range(rng.randrange(0, 4))
            ],
        }
        self.ops.registry.apply_inventory(parse_mapping(doc, "test"), by="test")
        return "inventory"

    def birth(self) -> str:
        key = self.rng.choice(self.gateways)
        session = f"s{secrets.token_hex(4)}"
        self.sessions[key] = session
        site, gateway = key
        devices = [f"{site}-{gateway}-d{i}" for i in range(self.rng.randrange(0, 4))]
        self.announced[key] = devices
        infos = [DeviceInfo(d, "weather", "test-profile", 60.0) for d in devices]
        self.ops.observe(site, gateway, State(online=True, session=session, ts=self.now_ms(), devices=infos))
        return f"birth {site}/{gateway} {devices}"

    def _live(self) -> tuple[tuple[str, str], str] | None:
        if not self.sessions:
            return None
        key = self.rng.choice(sorted(self.sessions))
        return key, self.sessions[key]

    def data(self) -> str:
        live = self._live()
        if live is None or not self.announced[live[0]]:
            return "no data"
        (site, gateway), session = live
        announced = self.announced[(site, gateway)]
        devices = self.rng.sample(announced, self.rng.randrange(1, len(announced) + 1))
        self.seq += 1
        readings = [Reading(d, "weather", self.now_ms(), {"t": 20.0}) for d in devices]
        self.ops.observe(site, gateway, DataBatch(session=session, seq=self.seq, readings=readings))
        return f"data {site}/{gateway} {devices}"

    def event(self) -> str:
        live = self._live()
        if live is None or not self.announced[live[0]]:
            return "no event"
        (site, gateway), session = live
        device = self.rng.choice(self.announced[(site, gateway)])
        kind = self.rng.choice(list(EventType))
        self.ops.observe(site, gateway, Event(session, device, kind, self.now_ms(), reason="test"))
        return f"event {device} {kind.value}"

    def death(self) -> str:
        live = self._live()
        if live is None:
            return "no death"
        (site, gateway), session = live
        self.ops.observe(site, gateway, State(online=False, session=session, reason="connection lost"))
        return f"death {site}/{gateway}"

    def problem(self) -> str:
        site, gateway = self.rng.choice(self.gateways)
        detail = f"skew {self.rng.randrange(99)}"
        if self.rng.random() < 0.5:
            self.ops.on_refusal(Refusal(site, gateway, RefusalReason.CLOCK_SKEW, "", detail))
        else:  # the monitor's own input alone (no refusal counted with it)
            self.ops.health.report_problem(site, gateway, "clock_skew", detail)
        return f"clock skew {site}/{gateway}"

    def refusal(self) -> str:
        site, gateway = self.rng.choice(self.gateways)
        self.ops.on_refusal(Refusal(site, gateway, RefusalReason.FIELD_TYPE, "x", "a string for a number"))
        return f"refusal {site}/{gateway}"

    def refused_ack(self) -> str:
        live = self._live()
        if live is None:
            return "no ack"
        (site, gateway), _ = live
        ack = CommandAck(f"c{secrets.token_hex(4)}", gateway, AckStatus.OK, self.now_ms())
        self.ops.observe(site, gateway, ack)  # of a command the hub never sent: refused, counted
        return f"refused ack {site}/{gateway}"

    def move(self) -> str:
        owned = [d for d in self.ops.registry.devices.values() if d.gateway is not None]
        if not owned or not self.sessions:
            return "no move"
        device = self.rng.choice(owned)
        site, gateway = self.rng.choice(sorted(self.sessions))  # a gateway whose birth came: one the registry knows
        self.ops.registry.move(device.id, site, gateway, by="test")
        return f"move {device.id} to {site}/{gateway}"

    async def pause(self) -> str:
        """Long enough for the hub's clock to end flapping and clear problems (both quiet for 0.2 s)."""
        await asyncio.sleep(0.3)
        return "pause"

    async def step(self) -> str:
        actions = [self.birth, self.birth, self.data, self.data, self.event, self.death, self.problem]
        actions += [self.refusal, self.refused_ack, self.move, self.import_inventory]
        if self.rng.random() < 0.05:
            return await self.pause()
        return self.rng.choice(actions)()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kept_answers_equal_a_full_computation_after_every_change(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, seed: int
) -> None:
    # Flapping after 2 changes, ended and problems cleared after 0.2 s quiet: the hub's own clock changes what
    # the lists show between the test's steps too (reasons that change without a transition among it).
    health = HealthSettings(flap_changes=2, flap_quiet_s=0.2, problem_quiet_s=0.2)
    settings = ops_settings(stack, influx_db, tmp_path, health=health)
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http:
        ops = hub.operations
        tok = await tokens(hub)
        city = City(ops, random.Random(seed))
        city.import_inventory()
        kept = kept_answers(ops)
        transitions: list[Transition] = []
        ops.health.subscribe(transitions.append)
        history: list[str] = []
        for _ in range(120):
            history.append(await city.step())
            for name, wards in TOKENS.items():
                principal = _principal(wards)
                for path, full in (("/api/v1/sites", full_sites), ("/api/v1/gateways", full_gateways)):
                    # The hub's clock may act while the request is served: the answer is the state before or
                    # after it (it ticks every 0.25 s, never twice in one request).
                    before = full(ops, principal)
                    answer = await http.get(path, headers=auth(tok[name]))
                    assert answer.status_code == 200, answer.text
                    assert answer.json() in (before, full(ops, principal)), (path, name, history[-5:])

        # The answers were kept between changes: asked again with nothing changed, none is joined (builds) and no
        # row is encoded (rows_built). The hub's own
        # clock may still change something (a flap ending, a problem clearing, a device's inactivity) during a
        # round: such a round proves nothing and is asked again; a round in which nothing changed must build none.
        async def ask_every_list() -> None:
            for name in TOKENS:
                await http.get("/api/v1/sites", headers=auth(tok[name]))
                await http.get("/api/v1/gateways", headers=auth(tok[name]))

        await asyncio.sleep(1.0)  # a flap still on ends by the clock (0.2 s quiet, a tick every 0.25 s)
        for _ in range(20):
            await ask_every_list()  # every kept answer brought up to date
            stamp, builds = (ops.registry.version, ops.health.version), (kept.builds, kept.rows_built)
            await ask_every_list()
            if (ops.registry.version, ops.health.version) == stamp:
                break
            await asyncio.sleep(0.3)
        assert (ops.registry.version, ops.health.version) == stamp, "the hub's state kept changing for 20 rounds"
        assert (kept.builds, kept.rows_built) == builds
        # Every kind of input happened at least once in the 120 steps.
        kinds = {h.split(" ")[0] for h in history}
        assert {"birth", "data", "event", "death", "clock", "refusal", "refused", "move", "inventory"} <= kinds
        # ...and flapping, and its end by the clock.
        reasons = {t.reason.split(" ")[0] for t in transitions}
        assert {"flapping:", "stable"} <= reasons, reasons


@pytest.mark.timeout(60)
async def test_a_birth_a_transition_a_move_and_a_new_site_show_in_the_next_answer(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with (
        running_hub(ops_settings(stack, influx_db, tmp_path)) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=10) as http,
    ):
        ops = hub.operations
        tok = await tokens(hub)
        viewer, quan1 = auth(tok["viewer"]), auth(tok["viewer-quan-1"])

        async def sites(headers: dict[str, str]) -> dict[str, tuple[int, dict[str, int]]]:
            items = (await http.get("/api/v1/sites", headers=headers)).json()["items"]
            return {s["id"]: (s["devices"], s["states"]) for s in items}

        async def gateways() -> dict[str, tuple[str, int]]:
            items = (await http.get("/api/v1/gateways", headers=viewer)).json()["items"]
            return {g["key"]: (g["state"], g["devices"]) for g in items}

        assert await sites(viewer) == {}
        infos = [DeviceInfo(d, "weather", "test-profile", 60.0) for d in ("d-1", "d-2")]
        ops.observe("site-a", "gw-1", State(online=True, session="s1", ts=int(time.time() * 1000), devices=infos))
        assert await sites(viewer) == {"site-a": (2, {"unknown": 2})}  # a birth: its site and devices
        assert await gateways() == {"site-a/gw-1": ("online", 2)}
        ops.observe("site-a", "gw-1", DataBatch("s1", 1, [Reading("d-1", "weather", int(time.time() * 1000), {})]))
        assert await sites(viewer) == {"site-a": (2, {"online": 1, "unknown": 1})}  # a transition
        ops.observe("site-b", "gw-2", State(online=True, session="s2", ts=int(time.time() * 1000), devices=[]))
        assert await sites(viewer) == {"site-a": (2, {"online": 1, "unknown": 1}), "site-b": (0, {})}
        ops.registry.move("d-2", "site-b", "gw-2", by="test")
        assert await sites(viewer) == {"site-a": (1, {"online": 1}), "site-b": (1, {"unknown": 1})}  # a move
        assert await gateways() == {"site-a/gw-1": ("online", 1), "site-b/gw-2": ("online", 1)}
        assert await sites(quan1) == {}  # no site has a ward yet
        doc = {"sites": [{"id": "site-b", "ward": "quan-1"}, {"id": "site-c", "ward": "quan-1"}]}
        ops.registry.apply_inventory(parse_mapping(doc, "test"), by="test")
        assert await sites(quan1) == {"site-b": (1, {"unknown": 1}), "site-c": (0, {})}  # a new site, a ward
