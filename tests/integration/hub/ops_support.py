"""Shared by the operations tests (test_hub_api_live, test_hub_health_live, test_hub_alerts_live,
test_hub_commands_live, test_operator_page): a hub with its database in the test's folder, tokens of every role,
and a gateway simulated with a plain paho client under the gateway's own broker account (birth with a Last
Will, data, events, and a silent death: the client stops talking but keeps its socket, so the broker publishes
the will after 1.5 x keep-alive, as for a gateway whose power or link was cut). Also the tests that run the real
edge agent in-process (these and tests/integration/edge/test_edge_agent.py, tests/integration/devices/
test_camera_health_events.py): :func:`running_agent`, :func:`modbus_devices` and the link :class:`Relay`.

:func:`birth_payload` is the birth for tests that publish by other means (test_hub_live, test_hub_selfhealth):
the hub's admission (hub/ingest/admission.py) stores a gateway's data only for the devices its current birth
announced, stamped within [now - 30 days, now + 300 s], so a test publishes a birth first and times relative to
now."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.agent import run_agent
from edge.config import DeviceConfig, EdgeConfig
from hub.auth import create_token_in
from hub.config import (
    AlertSettings,
    AqiSettings,
    BatchSettings,
    HealthSettings,
    HttpSettings,
    HubSettings,
    InfluxSettings,
    MetricsSettings,
    MqttSettings,
    RegistrySettings,
)
from hub.service import Hub
from ioc.stack import StackEndpoints
from wire.v1 import DataBatch, DeviceInfo, Event, EventType, Reading, State, encode


def now_ms() -> int:
    return int(time.time() * 1000)


def birth_payload(session: str, devices: Iterable[tuple[str, str]], *, ts: int | None = None) -> bytes:
    """A birth (``online: true``) of ``session`` announcing ``devices`` as (id, kind), stamped ``ts`` (default now):
    publish it retained on the gateway's ``state`` topic before its data."""
    state = State(
        online=True,
        session=session,
        ts=now_ms() if ts is None else ts,
        devices=[DeviceInfo(device, kind, "test-profile", 60.0) for device, kind in devices],
    )
    return encode(state)


def ops_settings(
    stack: StackEndpoints,
    database: str,
    tmp_path: Path,
    *,
    rules: dict[str, Any] | None = None,
    health: HealthSettings | None = None,
    inventory: dict[str, Any] | None = None,
    metrics_need_token: bool = False,
) -> HubSettings:
    rules_file = None
    if rules is not None:
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    inventory_file = None
    if inventory is not None:
        inventory_file = tmp_path / "inventory.yaml"
        inventory_file.write_text(yaml.safe_dump(inventory), encoding="utf-8")
    return HubSettings(
        mqtt=MqttSettings(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            **stack.hub_accounts(),  # intake, observer, commands: each its own account
            client_id=f"hub-ops-{secrets.token_hex(4)}",
            session_expiry_s=0,
        ),
        influx=InfluxSettings(url=stack.influx_url, database=database, retry_initial_s=0.05, retry_max_s=0.2),
        batch=BatchSettings(max_delay_ms=50, drain_timeout_s=5),
        http=HttpSettings(port=0, metrics_need_token=metrics_need_token),
        metrics=MetricsSettings(interval_s=0),
        aqi=AqiSettings(enabled=False),
        registry=RegistrySettings(url=f"sqlite:///{tmp_path / 'hub.db'}", inventory_file=inventory_file),
        alerts=AlertSettings(rules_file=rules_file),
        health=health or HealthSettings(),
    )


@contextlib.asynccontextmanager
async def running_hub(settings: HubSettings) -> AsyncIterator[Hub]:
    async with Hub(settings) as hub:
        assert await hub.intake.wait_subscribed(10), "the hub did not subscribe within 10 s"
        assert await hub.operations.commands._publisher.wait_connected(10)
        yield hub


async def tokens(hub: Hub) -> dict[str, str]:
    """A token per role, plus ``viewer-quan-1``, ``operator-quan-3`` and ``technician-quan-1`` limited to one
    ward."""
    db = hub.operations.db
    out: dict[str, str] = {}
    for role in ("viewer", "operator", "technician", "admin"):
        out[role], _ = await db.write(lambda s, r=role: create_token_in(s, r, name=f"test-{r}"))  # type: ignore[misc]
    out["viewer-quan-1"], _ = await db.write(lambda s: create_token_in(s, "viewer", wards=["quan-1"], name="w1"))
    out["operator-quan-3"], _ = await db.write(lambda s: create_token_in(s, "operator", wards=["quan-3"], name="w3"))
    out["technician-quan-1"], _ = await db.write(
        lambda s: create_token_in(s, "technician", wards=["quan-1"], name="t1")
    )
    return out


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, every_s: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy (returns its value) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)


class Gateway:
    """A gateway speaking the v1 contract with a paho client under its own account and the client id that account
    is bound to (the agent's): one at a time per gateway, as on the real broker, where a second connection with
    it would take over the first."""

    def __init__(self, stack: StackEndpoints, site: str, gateway: str, *, keepalive_s: int = 60) -> None:
        self.site, self.gateway = site, gateway
        self.keepalive_s = keepalive_s
        self.root = f"ioc/v1/{site}/{gateway}"
        self.session = f"s{secrets.token_hex(6)}"
        self.seq = 0
        account = f"{site}.{gateway}"
        user, password = stack.credentials(account)
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=stack.client_id(account, f"gw-{secrets.token_hex(4)}"),
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(user, password)
        will = State(online=False, session=self.session, reason="connection lost")
        client.will_set(f"{self.root}/state", encode(will), qos=1, retain=True)
        client.connect(stack.mqtt_host, stack.mqtt_port, keepalive=keepalive_s)
        client.loop_start()
        self.client = client

    def _publish(self, channel: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(f"{self.root}/{channel}", payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"{channel} not published"

    def birth(self, devices: list[tuple[str, str, float]], *, promise_keepalive: bool = False) -> None:
        """Birth; with ``promise_keepalive`` it carries ``keepalive_s`` (the test then publishes as promised)."""
        state = State(
            online=True,
            session=self.session,
            ts=now_ms(),
            keepalive_s=self.keepalive_s if promise_keepalive else None,
            devices=[DeviceInfo(d, kind, "test-profile", interval) for d, kind, interval in devices],
        )
        self._publish("state", encode(state), retain=True)

    def raw(self, channel: str, payload: bytes) -> None:
        """Publish ``payload`` as is (a malformed message, for instance)."""
        self._publish(channel, payload)

    def data(self, *readings: tuple[str, str, dict[str, Any]]) -> None:
        self.seq += 1
        batch = DataBatch(
            session=self.session,
            seq=self.seq,
            readings=[Reading(d, kind, now_ms(), metrics) for d, kind, metrics in readings],
        )
        self._publish("data", encode(batch))

    def event(self, device: str, kind: EventType, reason: str = "") -> None:
        self._publish("event", encode(Event(self.session, device, kind, now_ms(), reason=reason)))

    def die_silently(self) -> None:
        """Stop talking (no PINGREQ, no DISCONNECT), keep the TCP connection: the broker's keep-alive check
        fires after 1.5 x keepalive and it publishes the will."""
        self.client.loop_stop()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.loop_stop()
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if sock is not None:
            sock.close()


@contextlib.asynccontextmanager
async def running_agent(config: EdgeConfig) -> AsyncIterator[asyncio.Event]:
    """The real edge agent in this process, stopped (the event set) and awaited on leaving; yields its stop
    event."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop))
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def modbus_devices(sim_port: int, interval_s: float) -> list[DeviceConfig]:
    """The weather sensor "weather-1" (unit 1) and the air-quality sensor "aq-1" (unit 2) of a
    ``ModbusSimulator(["xy-md02", "pm-sensor-rs485"])`` listening on ``sim_port``, polled every ``interval_s``."""
    options = {"host": "127.0.0.1", "port": sim_port, "timeout_s": 0.3}
    return [
        DeviceConfig(
            id="weather-1",
            driver="modbus_tcp",
            profile="xy-md02",
            interval_s=interval_s,
            timeout_s=0.4,
            options={**options, "unit_id": 1},
        ),
        DeviceConfig(
            id="aq-1",
            driver="modbus_tcp",
            profile="pm-sensor-rs485",
            interval_s=interval_s,
            timeout_s=0.4,
            options={**options, "unit_id": 2},
        ),
    ]


class Relay:
    """A TCP relay to the broker that the test cuts abruptly (both sockets aborted, no MQTT DISCONNECT): the
    gateway's uplink failing. New connections are relayed again afterwards (the link comes back), unless
    ``accepting`` is False."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True
        """False: new connections are dropped at once (the link stays down)."""

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update({writer, up_writer})
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


__all__ = [
    "Gateway",
    "Relay",
    "auth",
    "birth_payload",
    "modbus_devices",
    "now_ms",
    "ops_settings",
    "running_agent",
    "running_hub",
    "tokens",
    "wait_until",
]
