"""Remote commands: publish a :class:`wire.v1.Command` on the gateway's ``cmd`` topic, wait for its
:class:`wire.v1.CommandAck`, record the outcome.

- The hub publishes with QoS 1 on a connection of its own (:class:`CommandPublisher`, the hub's MQTT client of
  :mod:`hub.mqtt`; client id ``{mqtt.client_id}-cmd``, its own account ``mqtt.command_username``, which may write
  ``cmd`` and read ``cmd/ack`` only; see ``ioc/stack/mosquitto.py``), apart from the intake, whose account may
  write nothing and whose reading pauses under back-pressure. A publish counts as sent only once the broker's
  PUBACK says success: a refusal (e.g. ``not authorized (0x87)``, a topic outside the account's ACL) ends the
  command as ``error`` with the broker's reason, as does no PUBACK within
  :data:`~hub.mqtt.publisher.PUBLISH_TIMEOUT_S` or a connection lost before it (the command is not sent twice).
- The ack comes back through the ingest observer (:meth:`CommandService.observe`), matched by command id. A site
  box can be captured, so an ack is the command's outcome only if the command was sent to that very gateway,
  for the ack's device, and the gateway still owns that device (the registry's owner; the gateway id itself for
  the agent's own commands). Any other ack is refused: counted per gateway (:attr:`CommandService.refused_acks`)
  and logged once per gateway. An ack of a command sent to it that is no longer awaited (timed out) is late.
- ``rebirth`` (:meth:`CommandService.request_rebirth`): when a gateway sends data for a device its current
  birth did not announce, the hub asks it for a new birth, at most once per gateway per ``rebirth_interval_s``
  (as Sparkplug B's "Node Control/Rebirth"); recorded like any command.
- Outcomes: ``ok``, ``error``, ``unsupported`` and ``timeout`` as the agent acks them; ``timeout`` also when no
  ack arrives within the command's ``timeout_s`` plus :data:`ACK_GRACE_S` (the agent gives up at ``timeout_s``
  and says so; the grace covers the way back); ``error`` when the gateway is known to be offline or the hub has
  no broker connection (nothing is sent then).
- Every command is a row of the ``commands`` table: who asked, what, when, and how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

from sqlalchemy import DateTime, Float, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hub.config import MqttSettings
from hub.health.machine import Health
from hub.health.monitor import HealthMonitor
from hub.mqtt.publisher import MqttPublisher, PublishError
from hub.registry.db import Base, Database, iso, utcnow
from hub.registry.registry import Registry
from wire.v1 import REBIRTH, Channel, Command, CommandAck, MetricValue, encode, topic

log = logging.getLogger(__name__)

#: Extra wait beyond the command's own timeout for the agent's ack to travel back.
ACK_GRACE_S: Final = 2.0
PENDING: Final = "pending"
#: Commands remembered as sent (id -> site, gateway, device), to tell a late ack from a forged one.
SENT_REMEMBERED: Final = 10_000


class CommandRow(Base):
    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), index=True)
    site: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timeout_s: Mapped[float] = mapped_column(Float)
    requested_by: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    detail: Mapped[str] = mapped_column(String(1024), default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)


def command_dict(row: CommandRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "device": row.device,
        "site": row.site,
        "gateway": row.gateway,
        "action": row.action,
        "params": row.params,
        "timeout_s": row.timeout_s,
        "requested_by": row.requested_by,
        "status": row.status,
        "detail": row.detail,
        "result": row.result,
        "created": iso(row.created),
        "finished": iso(row.finished),
        "duration_ms": row.duration_ms,
    }


class UnknownDevice(LookupError):
    """The device is not in the registry."""


class CommandPublisher:
    """The hub's command connection: a :class:`hub.mqtt.publisher.MqttPublisher` with its own client id
    (``{mqtt.client_id}-cmd``) and account (``mqtt.command_username``), publishing QoS 1 and waiting for the
    broker's PUBACK; its log lines are this module's, prefixed ``commands:``."""

    def __init__(self, settings: MqttSettings) -> None:
        self._mqtt = MqttPublisher(
            settings, client_id=f"{settings.client_id}-cmd", account="command", logger=log, label="commands: "
        )

    @property
    def connected(self) -> bool:
        return self._mqtt.connected

    async def __aenter__(self) -> Self:
        await self._mqtt.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._mqtt.close()

    async def wait_connected(self, timeout_s: float) -> bool:
        return await self._mqtt.wait_connected(timeout_s)

    async def publish(self, topic_name: str, payload: bytes) -> str:
        """Publish; '' once the broker acknowledged it, else why not (a refusal names the broker's reason)."""
        try:
            await self._mqtt.publish(topic_name, payload)
        except PublishError as exc:
            return str(exc)
        return ""


class CommandService:
    """Send commands and wait for their acks; ``observe`` is the ingest hook."""

    def __init__(
        self,
        publisher: CommandPublisher,
        db: Database,
        registry: Registry,
        health: HealthMonitor | None = None,
        *,
        max_pending: int = 1000,
        rebirth_interval_s: float = 60.0,
        rebirth_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._db = db
        self._registry = registry
        self._health = health
        self._max_pending = max_pending
        self._rebirth_interval_s = rebirth_interval_s
        self._rebirth_timeout_s = rebirth_timeout_s
        self._clock = clock
        self._pending: dict[str, asyncio.Future[CommandAck]] = {}
        self._sent: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._rebirths: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.late_acks = 0
        #: Refused acks by ``site/gateway``.
        self.refused_acks: Counter[str] = Counter()
        #: The gateways whose refused acks changed since the API's kept gateway list last took them
        #: (:meth:`take_refused`).
        self.refused_changed: set[str] = set()

    def observe(self, site: str, gateway: str, payload: object) -> None:
        if not isinstance(payload, CommandAck):
            return
        problem = self._ack_problem(site, gateway, payload)
        if problem:
            self._refuse_ack(site, gateway, payload, problem)
            return
        future = self._pending.get(payload.id)
        if future is None:
            self.late_acks += 1
            return
        if not future.done():
            future.set_result(payload)

    def _ack_problem(self, site: str, gateway: str, ack: CommandAck) -> str:
        """Why ``ack`` from ``site``/``gateway`` cannot be a command's outcome ('' when it can)."""
        sent = self._sent.get(ack.id)
        if sent is None or sent[:2] != (site, gateway):
            return f"an ack of command {ack.id}, which the hub did not send to this gateway"
        if ack.device != sent[2]:
            return f"an ack of command {ack.id} about device {ack.device}, but the command was for {sent[2]}"
        if ack.device != gateway and not self._registry.owns(site, gateway, ack.device):
            device = self._registry.devices.get(ack.device)
            owner = device.owner if device is not None else "no gateway"
            return f"an ack about device {ack.device}, which belongs to {owner}"
        return ""

    def _refuse_ack(self, site: str, gateway: str, ack: CommandAck, problem: str) -> None:
        key = f"{site}/{gateway}"
        self.refused_acks[key] += 1
        self.refused_changed.add(key)
        # Once per gateway at WARNING (a captured gateway may send thousands), then DEBUG.
        level = logging.WARNING if self.refused_acks[key] == 1 else logging.DEBUG
        log.log(level, "commands: refused from gateway %s: %s (%s)", key, problem, ack.status.value)

    def take_refused(self) -> set[str]:
        """The gateways with an ack refused since the last call (one reader: ``hub/routes/sites.py``)."""
        changed, self.refused_changed = self.refused_changed, set()
        return changed

    def request_rebirth(self, site: str, gateway: str, why: str) -> bool:
        """Ask ``site``/``gateway`` for a new birth (``rebirth``), unless asked within ``rebirth_interval_s``;
        whether it was sent. Runs in its own task (recorded and awaited like any command)."""
        now = self._clock()
        last = self._rebirths.get((site, gateway))
        if last is not None and now - last < self._rebirth_interval_s:
            return False
        self._rebirths[(site, gateway)] = now
        log.info("commands: asking gateway %s/%s for a new birth: %s", site, gateway, why)
        coro = self.send_to_gateway(
            site, gateway, REBIRTH, {}, timeout_s=self._rebirth_timeout_s, requested_by=f"hub: {why}"[:100]
        )
        task = asyncio.ensure_future(self._quietly(coro))
        task.set_name(f"hub-rebirth-{site}-{gateway}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _quietly(self, coro: Awaitable[dict[str, Any]]) -> None:
        try:
            await coro
        except Exception:
            log.exception("commands: a rebirth request failed")

    async def close(self) -> None:
        """Cancel the rebirth requests still waiting for their ack."""
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def send(
        self,
        device_id: str,
        action: str,
        params: dict[str, MetricValue],
        *,
        timeout_s: float,
        requested_by: str,
    ) -> dict[str, Any]:
        device = self._registry.devices.get(device_id)
        if device is None:
            raise UnknownDevice(device_id)
        return await self._send(
            device_id, device.site, device.gateway, action, params, timeout_s=timeout_s, requested_by=requested_by
        )

    async def send_to_gateway(
        self,
        site: str,
        gateway: str,
        action: str,
        params: dict[str, MetricValue],
        *,
        timeout_s: float,
        requested_by: str,
    ) -> dict[str, Any]:
        """A command for the agent itself (``reload_config``): its ``device`` is the gateway id (docs/protocol.md)."""
        return await self._send(gateway, site, gateway, action, params, timeout_s=timeout_s, requested_by=requested_by)

    async def _send(
        self,
        device_id: str,
        site: str | None,
        gateway: str | None,
        action: str,
        params: dict[str, MetricValue],
        *,
        timeout_s: float,
        requested_by: str,
    ) -> dict[str, Any]:
        command = Command(
            id=f"c-{secrets.token_hex(6)}",
            device=device_id,
            action=action,
            ts=int(time.time() * 1000),
            params=params,
            timeout_s=timeout_s,
        )
        row = CommandRow(
            id=command.id,
            device=device_id,
            site=site or "",
            gateway=gateway or "",
            action=action,
            params=dict(params),
            timeout_s=timeout_s,
            requested_by=requested_by,
        )
        await self._db.write(lambda session: session.add(row))
        started = time.monotonic()
        status, detail, result = await self._deliver(command, site, gateway)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("command %s %s on %s: %s %s", command.id, action, device_id, status, detail)

        def finish(session: Session) -> dict[str, Any]:
            stored = session.get(CommandRow, command.id)
            assert stored is not None
            stored.status, stored.detail, stored.result = status, detail[:1024], result
            stored.finished, stored.duration_ms = utcnow(), duration_ms
            return command_dict(stored)

        return await self._db.write(finish)

    async def _deliver(
        self, command: Command, site: str | None, gateway: str | None
    ) -> tuple[str, str, dict[str, Any]]:
        if not site or not gateway:
            return "error", f"device {command.device} has no known gateway (not announced by any birth yet)", {}
        if self._health is not None:
            gw = self._health.gateway(site, gateway)
            if gw is not None and gw["state"] == Health.OFFLINE:
                return "error", f"gateway {site}/{gateway} is offline: {gw['reason']}", {}
        if len(self._pending) >= self._max_pending:
            return "error", f"too many commands waiting for an ack ({self._max_pending})", {}
        future: asyncio.Future[CommandAck] = asyncio.get_running_loop().create_future()
        self._pending[command.id] = future
        self._sent[command.id] = (site, gateway, command.device)
        while len(self._sent) > SENT_REMEMBERED:
            self._sent.popitem(last=False)
        try:
            problem = await self._publisher.publish(topic(site, gateway, Channel.CMD), encode(command))
            if problem:
                return "error", problem, {}
            try:
                ack = await asyncio.wait_for(future, command.timeout_s + ACK_GRACE_S)
            except TimeoutError:
                return "timeout", f"no ack from {site}/{gateway} within {command.timeout_s + ACK_GRACE_S:g} s", {}
            return ack.status.value, ack.detail, dict(ack.result)
        finally:
            self._pending.pop(command.id, None)

    async def get(self, command_id: str) -> dict[str, Any] | None:
        def get(session: Session) -> dict[str, Any] | None:
            row = session.get(CommandRow, command_id)
            return command_dict(row) if row is not None else None

        return await self._db.read(get)

    async def history(self, device_id: str, limit: int) -> list[dict[str, Any]]:
        def query(session: Session) -> list[dict[str, Any]]:
            rows = session.scalars(
                select(CommandRow)
                .where(CommandRow.device == device_id)
                .order_by(CommandRow.created.desc())
                .limit(limit)
            )
            return [command_dict(r) for r in rows]

        return await self._db.read(query)
