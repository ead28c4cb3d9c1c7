"""A device belongs to one gateway, on the real hub (Mosquitto, InfluxDB, SQLite, the API) with gateways under
their own broker accounts: another gateway's birth does not move a device, only a technician does (API, within
the token's wards), acks that are not the command's gateway's own are refused, and the refusals the ingest
admission reports raise one security alert per (gateway, reason), ask for a rebirth and show ``clock_skew``.

The refusals come from the ingest pipeline's admission (hub.ingest.admission) of the gateways' real messages."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from ops_support import Gateway, auth, now_ms, ops_settings, running_hub, tokens, wait_until
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.publisher import client_id
from hub.config import CommandSettings
from ioc.stack import StackEndpoints
from wire.v1 import REBIRTH, AckStatus, Command, CommandAck, DataBatch, Reading, State, decode, encode

# The alert tests' webhook receiver, imported top-level as they import it (its folder on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "hub"))

from webhook_support import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.integration]

INVENTORY: dict[str, Any] = {
    "sites": [{"id": "site-a", "ward": "quan-1"}, {"id": "site-b", "ward": "quan-3"}],
    "devices": [{"id": "aq-01", "kind": "air_quality", "site": "site-a", "gateway": "gw-1"}],
}
GW1_DEVICES = [("aq-01", "air_quality", 5.0), ("wl-01", "water_level", 5.0)]


class CommandedGateway(Gateway):
    """A gateway that also reads its own ``cmd`` topic (its account may), connected with the gateway's own client
    id (the agent's: a broker may bind a gateway's account to it)."""

    def __init__(self, stack: StackEndpoints, site: str, gateway: str) -> None:
        self.site, self.gateway, self.keepalive_s = site, gateway, 60
        self.root = f"ioc/v1/{site}/{gateway}"
        self.session = f"s{secrets.token_hex(6)}"
        self.seq = 0
        self.commands: list[Command] = []
        user, password = stack.credentials(f"{site}.{gateway}")
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id(site, gateway), protocol=MQTTProtocolVersion.MQTTv5
        )
        client.username_pw_set(user, password)
        will = State(online=False, session=self.session, reason="connection lost")
        client.will_set(f"{self.root}/state", encode(will), qos=1, retain=True)
        client.on_message = self._on_message
        client.connect(stack.mqtt_host, stack.mqtt_port, keepalive=60)
        client.subscribe(f"{self.root}/cmd", qos=1)
        client.loop_start()
        self.client = client

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.commands.append(decode(bytes(message.payload), Command))

    def ack(self, command_id: str, device: str, detail: str) -> None:
        self.raw("cmd/ack", encode(CommandAck(command_id, device, AckStatus.OK, now_ms(), detail=detail)))


@pytest.fixture
def gateways(stack: StackEndpoints) -> Iterator[tuple[CommandedGateway, CommandedGateway]]:
    gw1, gw2 = CommandedGateway(stack, "site-a", "gw-1"), CommandedGateway(stack, "site-b", "gw-2")
    yield gw1, gw2
    gw1.close()
    gw2.close()


@pytest.mark.timeout(60)
async def test_another_gateways_birth_does_not_move_a_device_and_a_technician_does(
    stack: StackEndpoints, influx_db: str, tmp_path: Path, gateways: tuple[CommandedGateway, CommandedGateway]
) -> None:
    gw1, gw2 = gateways
    async with (
        running_hub(ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http,
    ):
        tok = await tokens(hub)
        ops, registry = hub.operations, hub.operations.registry
        pushed: list[Mapping[str, tuple[str, str]]] = []
        ops.on_owners(pushed.append)
        assert pushed == [{"aq-01": ("site-a", "gw-1")}]  # the inventory's gateway, before any birth

        gw1.birth(GW1_DEVICES)
        await wait_until(lambda: registry.owners().get("wl-01") == ("site-a", "gw-1"))
        gw2.birth([("aq-01", "air_quality", 5.0), ("wl-01", "water_level", 5.0), ("cam-02", "camera", 10.0)])
        await wait_until(lambda: "cam-02" in registry.owners())

        assert registry.owners() == {
            "aq-01": ("site-a", "gw-1"),
            "wl-01": ("site-a", "gw-1"),
            "cam-02": ("site-b", "gw-2"),
        }
        assert pushed[-1] == registry.owners()
        r = await http.get("/api/v1/registry/conflicts", headers=auth(tok["viewer"]))
        claims = {(c["device"], c["announced"], c["inventory"]) for c in r.json()["items"] if c["source"] == "owner"}
        assert claims == {("aq-01", "site-b/gw-2", "site-a/gw-1"), ("wl-01", "site-b/gw-2", "site-a/gw-1")}
        r = await http.get("/api/v1/devices/wl-01", headers=auth(tok["viewer"]))
        assert (r.json()["site"], r.json()["gateway"], r.json()["ward"]) == ("site-a", "gw-1", "quan-1")

        # Moving is a technician's act, and a ward-limited one moves only within its wards.
        move = {"site": "site-b", "gateway": "gw-2", "reason": "cabinet replaced"}
        r = await http.post("/api/v1/devices/wl-01/move", json=move, headers=auth(tok["operator"]))
        assert r.status_code == 403
        r = await http.post("/api/v1/devices/wl-01/move", json=move, headers=auth(tok["technician-quan-1"]))
        assert (r.status_code, r.json()["detail"]) == (
            403,
            "site 'site-b' is not in this token's wards: it cannot move devices there",
        )
        r = await http.post("/api/v1/devices/cam-02/move", json=move, headers=auth(tok["technician-quan-1"]))
        assert r.status_code == 404  # a device outside its wards does not exist for it
        assert registry.owners()["wl-01"] == ("site-a", "gw-1")

        for bad in ({"site": "site-b"}, {**move, "gateway": "GW 2"}, {**move, "colour": "red"}):
            r = await http.post("/api/v1/devices/wl-01/move", json=bad, headers=auth(tok["technician"]))
            assert r.status_code == 422, bad
        r = await http.post("/api/v1/devices/nope-01/move", json=move, headers=auth(tok["technician"]))
        assert r.status_code == 404
        # A target the registry does not know (a typo) is refused, naming what is wrong, and changes nothing.
        unknown_gateway = (
            "gateway {!r} of site {!r} is not in the registry: no birth since the hub started, inventory entry or "
            "device names it"
        )
        for target, detail in (
            (
                {**move, "site": "site-z"},
                "site 'site-z' is not in the registry: neither the inventory nor a birth names it",
            ),
            ({**move, "gateway": "gw-9"}, unknown_gateway.format("gw-9", "site-b")),
            ({**move, "site": "site-a"}, unknown_gateway.format("gw-2", "site-a")),  # gw-2 is site-b's
        ):
            r = await http.post("/api/v1/devices/wl-01/move", json=target, headers=auth(tok["technician"]))
            assert (r.status_code, r.json()) == (422, {"detail": detail}), target
        # A ward-limited token learns nothing about sites outside its wards, known or not.
        r = await http.post(
            "/api/v1/devices/wl-01/move", json={**move, "site": "site-z"}, headers=auth(tok["technician-quan-1"])
        )
        assert (r.status_code, r.json()["detail"]) == (
            403,
            "site 'site-z' is not in this token's wards: it cannot move devices there",
        )
        assert registry.owners()["wl-01"] == ("site-a", "gw-1")
        r = await http.get("/api/v1/sites", headers=auth(tok["viewer"]))
        assert [s["id"] for s in r.json()["items"]] == ["site-a", "site-b"]
        r = await http.get("/api/v1/devices/wl-01/moves", headers=auth(tok["viewer"]))
        assert r.json() == {"total": 0, "items": []}
        r = await http.post("/api/v1/devices/wl-01/move", json=move, headers=auth(tok["technician"]))
        assert r.status_code == 200, r.text
        answer = r.json()
        assert (answer["moved"], answer["site"], answer["gateway"]) == (True, "site-b", "gw-2")
        recorded = answer["move"]
        assert (recorded["from_site"], recorded["from_gateway"], recorded["source"], recorded["reason"]) == (
            "site-a",
            "gw-1",
            "api",
            "cabinet replaced",
        )
        assert recorded["by"].startswith("test-technician (")
        assert pushed[-1]["wl-01"] == ("site-b", "gw-2")  # the admission's map follows at once
        r = await http.post("/api/v1/devices/wl-01/move", json=move, headers=auth(tok["technician"]))
        assert (r.json()["moved"], r.json()["move"]) == (False, None)
        r = await http.get("/api/v1/devices/wl-01/moves", headers=auth(tok["viewer"]))
        assert [(m["to_gateway"], m["by"]) for m in r.json()["items"]] == [("gw-2", recorded["by"])]
        r = await http.get("/api/v1/devices/wl-01", headers=auth(tok["viewer"]))
        assert (r.json()["gateway"], r.json()["ward"]) == ("gw-2", "quan-3")
        assert hub.operations.health.devices["wl-01"].gateway == "gw-2"

        # The inventory is the other way to move a device, recorded with the token that imported it.
        body = {"devices": [{"id": "cam-02", "site": "site-a", "gateway": "gw-1"}]}
        r = await http.post("/api/v1/inventory", json=body, headers=auth(tok["technician"]))
        assert r.status_code == 200, r.text
        assert pushed[-1]["cam-02"] == ("site-a", "gw-1")
        r = await http.get("/api/v1/devices/cam-02/moves", headers=auth(tok["viewer"]))
        [imported] = r.json()["items"]
        assert (imported["from_gateway"], imported["to_gateway"], imported["source"]) == ("gw-2", "gw-1", "inventory")
        assert imported["by"].startswith("inventory import by test-technician (")


@pytest.mark.timeout(60)
async def test_an_ack_counts_only_from_the_commands_gateway_for_its_device_while_it_owns_it(
    stack: StackEndpoints,
    influx_db: str,
    tmp_path: Path,
    gateways: tuple[CommandedGateway, CommandedGateway],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw1, gw2 = gateways
    async with (
        running_hub(ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http,
    ):
        tech = auth((await tokens(hub))["technician"])
        commands = hub.operations.commands
        gw1.birth(GW1_DEVICES)
        gw2.birth([("cam-02", "camera", 10.0)])
        await wait_until(lambda: len(hub.operations.registry.owners()) == 3)

        async def command(device: str) -> tuple[asyncio.Task[httpx.Response], Command]:
            body = {"action": "read_now", "timeout_s": 3}
            task = asyncio.create_task(http.post(f"/api/v1/devices/{device}/commands", json=body, headers=tech))
            seen = len(gw1.commands)
            await wait_until(lambda: len(gw1.commands) > seen)
            return task, gw1.commands[-1]

        with caplog.at_level(logging.DEBUG, logger="hub.operations.commands"):
            task, sent = await command("aq-01")
            gw2.ack(sent.id, "aq-01", "forged by gw-2")  # the command was not sent to gw-2
            gw1.ack(sent.id, "wl-01", "about another device")  # the command was for aq-01
            gw1.ack("c-never-sent", "aq-01", "no such command")
            gw2.ack("c-never-sent", "cam-02", "no such command")
            await wait_until(lambda: commands.refused_acks == {"site-b/gw-2": 2, "site-a/gw-1": 2})
            gw1.ack(sent.id, "aq-01", "the real answer")
            r = await task
            assert (r.json()["status"], r.json()["detail"]) == ("ok", "the real answer")

            # A device moved while its command waits: its former gateway's ack is no longer an outcome.
            task, sent = await command("wl-01")
            hub.operations.registry.move("wl-01", "site-b", "gw-2", by="tech")
            gw1.ack(sent.id, "wl-01", "too late: moved")
            await wait_until(lambda: commands.refused_acks["site-a/gw-1"] == 3)
            r = await task
            assert r.json()["status"] == "timeout"

        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "hub.operations.commands" and r.levelno == logging.WARNING
        ]
        first = gw1.commands[0].id
        own = f"an ack of command {first} about device wl-01, but the command was for aq-01 (ok)"
        other = f"an ack of command {first}, which the hub did not send to this gateway (ok)"
        assert sorted(warnings) == [  # once per gateway
            f"commands: refused from gateway site-a/gw-1: {own}",
            f"commands: refused from gateway site-b/gw-2: {other}",
        ]
        r = await http.get("/api/v1/gateways", headers=tech)
        refused = {g["key"]: g["refused_acks"] for g in r.json()["items"]}
        assert refused == {"site-a/gw-1": 3, "site-b/gw-2": 2}


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with webhook_receiver("/ioc") as found:
        yield found


@pytest.mark.timeout(60)
async def test_refusals_raise_one_alert_per_gateway_and_reason_ask_for_a_rebirth_and_show_clock_skew(
    stack: StackEndpoints,
    influx_db: str,
    tmp_path: Path,
    gateways: tuple[CommandedGateway, CommandedGateway],
    webhook: WebhookReceiver,
) -> None:
    """A captured gw-1 writes about gw-2's camera, about devices its birth did not announce, and with its clock an
    hour ahead: all through the real intake and its admission."""
    gw1, gw2 = gateways
    settings = ops_settings(
        stack, influx_db, tmp_path, inventory=INVENTORY, rules={"webhooks": [{"url": webhook.url, "name": "ops"}]}
    ).model_copy(update={"commands": CommandSettings(rebirth_interval_s=2.0)})
    async with (
        running_hub(settings) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http,
    ):
        viewer = auth((await tokens(hub))["viewer"])
        ops = hub.operations
        gw1.birth(GW1_DEVICES)
        gw2.birth([("cam-02", "camera", 10.0)])
        await wait_until(lambda: len(ops.registry.owners()) == 3)

        for i in range(20):
            gw1.data(("cam-02", "camera", {"fps": float(i)}))
        gw1.birth([*GW1_DEVICES, ("cam-02", "camera", 10.0)])  # claims it in a birth too
        for device in ("th-01", "th-02", "th-03"):
            gw1.data((device, "weather", {"temperature_c": 31.0}))
        gw1.seq += 1
        ahead = Reading("aq-01", "air_quality", now_ms() + 3_600_000, {"pm25": 12.0})
        gw1.raw("data", encode(DataBatch(session=gw1.session, seq=gw1.seq, readings=[ahead])))

        # One rebirth request however many unannounced devices; the agent's ack is its outcome.
        await wait_until(lambda: gw1.commands)
        [rebirth] = gw1.commands
        assert (rebirth.action, rebirth.device, dict(rebirth.params)) == (REBIRTH, "gw-1", {})
        gw1.ack(rebirth.id, "gw-1", "birth 3 of session s published (2 devices)")
        recorded = await wait_until(lambda: _finished(ops.commands.history("gw-1", 10)))
        assert [(c["action"], c["status"], c["requested_by"]) for c in recorded] == [
            ("rebirth", "ok", "hub: data for th-01, which its current birth did not announce")
        ]

        async def open_alerts() -> list[dict[str, Any]]:
            r = await http.get("/api/v1/alerts", params={"state": "open"}, headers=viewer)
            items: list[dict[str, Any]] = r.json()["items"]
            return items

        await wait_until(open_alerts)
        [alert] = await open_alerts()  # one alert for 21 foreign_device refusals
        assert (alert["rule"], alert["subject"], alert["severity"], alert["ward"]) == (
            "security-foreign-device",
            "site-a/gw-1",
            "critical",
            "quan-1",
        )

        async def gateway() -> dict[str, Any]:
            r = await http.get("/api/v1/gateways", headers=viewer)
            [found] = [g for g in r.json()["items"] if g["key"] == "site-a/gw-1"]
            return found if found["refusals"].get("clock_skew") else {}

        answer = await wait_until(gateway)
        assert answer["refusals"] == {"foreign_device": 21, "unannounced_device": 3, "clock_skew": 1}
        assert [p["problem"] for p in answer["problems"]] == ["clock_skew"]
        assert answer["problems"][0]["detail"].endswith("s beyond the allowed clock skew")
        assert answer["state"] == "online"
        r = await http.get("/api/v1/devices/aq-01", headers=viewer)
        assert [p["problem"] for p in r.json()["problems"]] == ["clock_skew"]
        # The claim in gw-1's birth is the registry's owner conflict; the camera stays gw-2's.
        r = await http.get("/api/v1/registry/conflicts", headers=viewer)
        assert [(c["device"], c["announced"], c["source"]) for c in r.json()["items"]] == [
            ("cam-02", "site-a/gw-1", "owner")
        ]
        assert ops.registry.owners()["cam-02"] == ("site-b", "gw-2")
        # The security alert went to the webhook like any alert, once.
        await wait_until(lambda: webhook.received)
        assert [(w["event"], w["alert"]["rule"]) for w in webhook.received] == [("fired", "security-foreign-device")]

        # At most one rebirth per commands.rebirth_interval_s (2 s here): then another.
        gw1.data(("th-04", "weather", {"temperature_c": 31.0}))
        await asyncio.sleep(0.5)
        assert len(gw1.commands) == 1
        await asyncio.sleep(2.0)
        gw1.data(("th-05", "weather", {"temperature_c": 31.0}))
        await wait_until(lambda: len(gw1.commands) == 2)
        assert gw1.commands[1].action == REBIRTH


async def _finished(history: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = await history
    return items if items and all(c["status"] != "pending" for c in items) else []
