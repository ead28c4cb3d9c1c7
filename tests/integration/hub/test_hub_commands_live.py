"""Commands end to end: ``POST /api/v1/devices/{id}/commands`` on a running hub -> the real broker -> a real edge
agent -> an NTCIP 1203 sign simulator (its current message changes) or a Modbus simulator, and the ack back;
outcomes ok, error, unsupported, timeout (the agent's and the hub's own), and refused while the gateway is
offline; every command recorded with who asked. A command the broker refuses (its PUBACK says "not authorized":
the command account may not write that topic) is recorded as failed with the broker's reason, not as sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import auth, ops_settings, running_agent, running_hub, tokens, wait_until

from devices.sim.modbus import ModbusSimulator
from devices.sim.ntcip import NtcipSimulator
from edge.config import BrokerConfig, DeviceConfig, EdgeConfig, PublishConfig
from ioc.stack import StackEndpoints

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-a", "gw-1"
INVENTORY: dict[str, Any] = {
    "sites": [{"id": SITE, "ward": "quan-1"}, {"id": "site-b", "ward": "quan-3"}],
    # A sign registered by the technicians behind a gateway that is not running: nobody will answer.
    "devices": [{"id": "vms-09", "kind": "display", "site": "site-b", "gateway": "gw-2"}],
}


def agent_config(stack: StackEndpoints, sign_port: int, modbus_port: int) -> EdgeConfig:
    user, password = stack.credentials(f"{SITE}.{GATEWAY}")
    return EdgeConfig(
        site=SITE,
        gateway=GATEWAY,
        broker=BrokerConfig(host=stack.mqtt_host, port=stack.mqtt_port, username=user, password=password),
        publish=PublishConfig(max_batch=50, max_delay_ms=100, drain_timeout_s=3),
        devices=[
            DeviceConfig(
                id="vms-01",
                driver="ntcip",
                profile="ntcip-dms-full-matrix",
                interval_s=5,
                options={"host": "127.0.0.1", "port": sign_port, "write_community": "administrator", "timeout_s": 2},
            ),
            DeviceConfig(
                id="weather-1",
                driver="modbus_tcp",
                profile="xy-md02",
                interval_s=5,
                options={"host": "127.0.0.1", "port": modbus_port, "unit_id": 1, "timeout_s": 0.5},
            ),
        ],
    )


@pytest.mark.timeout(120)
async def test_commands_round_trip_to_a_sign_and_a_sensor(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    async with (
        NtcipSimulator(update_interval_s=3600) as sign,
        ModbusSimulator(["xy-md02"], update_interval_s=3600) as modbus,
        running_hub(ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http,
    ):
        tok = await tokens(hub)
        tech = auth(tok["technician"])
        health = hub.operations.health

        async def command(device: str, action: str, **body: Any) -> dict[str, Any]:
            r = await http.post(f"/api/v1/devices/{device}/commands", json={"action": action, **body}, headers=tech)
            assert r.status_code == 200, r.text
            result: dict[str, Any] = r.json()
            return result

        async with running_agent(agent_config(stack, sign.port, modbus.port)) as stop:
            await wait_until(lambda: health.device_state("vms-01").value == "online", 20)
            await wait_until(lambda: health.device_state("weather-1").value == "online", 20)

            text = "TRAFFIC JAM[nl]SLOW DOWN"
            done = await command("vms-01", "display_message", params={"text": text})
            assert done["status"] == "ok", done
            assert done["detail"].startswith("changeable message 1 shown")
            assert sign.current_message() == text.encode()  # the sign shows it
            assert done["requested_by"] == f"test-technician ({tok['technician'].split('_')[1]})"

            done = await command("weather-1", "read_now")
            assert done["status"] == "ok"
            assert set(done["result"]) == {"temperature_c", "humidity_pct"}

            done = await command("vms-01", "display_message", params={"text": "[xx]BAD"})
            assert done["status"] == "error"
            assert sign.current_message() == text.encode()  # unchanged

            done = await command("weather-1", "restart")
            assert done["status"] == "unsupported"

            # The sign stops answering: the agent gives up after the command's timeout and says so.
            sign.set_silent(True)
            done = await command("vms-01", "display_message", params={"text": "LATE"}, timeout_s=1)
            assert done["status"] == "timeout"
            sign.set_silent(False)

            # Nobody runs gateway site-b/gw-2: the hub itself gives up after timeout_s + 2 s of grace.
            done = await command("vms-09", "display_message", params={"text": "X"}, timeout_s=0.5)
            assert (done["status"], done["detail"]) == ("timeout", "no ack from site-b/gw-2 within 2.5 s")

            history = (await http.get("/api/v1/devices/vms-01/commands", headers=auth(tok["viewer"]))).json()
            assert [c["status"] for c in history["items"]] == ["timeout", "error", "ok"]
            one = await http.get(f"/api/v1/commands/{history['items'][-1]['id']}", headers=auth(tok["viewer"]))
            assert one.json()["params"] == {"text": text}
            # A command for the agent itself: this one runs without a config file, so it cannot reload.
            r = await http.post(
                f"/api/v1/gateways/{SITE}/{GATEWAY}/commands", json={"action": "reload_config"}, headers=tech
            )
            assert r.status_code == 200, r.text
            assert (r.json()["status"], r.json()["device"]) == ("unsupported", GATEWAY)
            r = await http.post("/api/v1/gateways/site-z/gw-9/commands", json={"action": "reload_config"}, headers=tech)
            assert r.status_code == 404
            stop.set()
            await wait_until(lambda: (hub.operations.health.gateway(SITE, GATEWAY) or {}).get("state") == "offline")

        # The gateway is offline: refused at once, nothing is sent.
        done = await command("vms-01", "display_message", params={"text": "X"})
        assert done["status"] == "error"
        assert done["detail"].startswith(f"gateway {SITE}/{GATEWAY} is offline")
        assert (await http.post("/api/v1/devices/nope/commands", json={"action": "x"}, headers=tech)).status_code == 404


@pytest.mark.timeout(60)
async def test_a_command_the_broker_refuses_is_recorded_as_failed_with_the_brokers_reason(
    stack: StackEndpoints, influx_db: str, tmp_path: Path
) -> None:
    settings = ops_settings(stack, influx_db, tmp_path, inventory=INVENTORY)
    # The command connection logs in with the intake's account, which may read every gateway's topics and write
    # none (ioc/stack/mosquitto.py): Mosquitto answers the publish on cmd with PUBACK 0x87.
    intake_account = {"command_username": settings.mqtt.username, "command_password": settings.mqtt.password}
    refused = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update=intake_account)})
    async with (
        running_hub(refused) as hub,
        httpx.AsyncClient(base_url=hub.api_url, timeout=30) as http,
    ):
        tok = await tokens(hub)
        r = await http.post(
            "/api/v1/devices/vms-09/commands",
            json={"action": "display_message", "params": {"text": "X"}, "timeout_s": 10},
            headers=auth(tok["technician"]),
        )
        assert r.status_code == 200, r.text
        done = r.json()
        expected = "the broker refused the publish on ioc/v1/site-b/gw-2/cmd: not authorized (0x87)"
        assert (done["status"], done["detail"]) == ("error", expected)
        assert done["duration_ms"] < 5000  # the broker's answer, not a wait for an ack that cannot come
        stored = await http.get(f"/api/v1/commands/{done['id']}", headers=auth(tok["viewer"]))
        assert (stored.json()["status"], stored.json()["detail"]) == ("error", expected)
