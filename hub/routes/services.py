"""The operations side of the hub, composed: database, registry, health, alerts, webhooks, commands, tokens and
live events, with one lifecycle (``async with Operations(settings, writer)``).

:meth:`Operations.observe` is the ingest observer (hub.ingest): it runs on the event loop for every decoded
state, data, event and command-ack message and touches memory only; databases are written behind by the
components' own tasks. The registry's district per device is pushed to the pipeline's enrichment map
(``on_enrichment``) whenever a birth or an import changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from hub.alerts.engine import AlertEngine
from hub.alerts.notify import Notifier
from hub.alerts.rules import DEFAULT_RULES, load_rules
from hub.alerts.store import AlertStore
from hub.auth import TokenStore
from hub.commands import CommandPublisher, CommandService
from hub.config import HubSettings
from hub.health.machine import FlapPolicy
from hub.health.monitor import HealthMonitor, HealthPolicy
from hub.health.store import LineWriter, TransitionSink
from hub.registry.db import Database
from hub.registry.inventory import load_file
from hub.registry.registry import Device, Registry
from hub.routes.eventhub import EventHub
from wire.v1 import State

log = logging.getLogger(__name__)

EnrichmentSink = Callable[[Mapping[str, Mapping[str, str]]], None]


class Operations:
    """Everything the operations API uses. Attributes are set once started."""

    db: Database
    registry: Registry
    health: HealthMonitor
    alerts: AlertEngine
    alert_store: AlertStore
    notifier: Notifier
    commands: CommandService
    tokens: TokenStore
    events: EventHub
    sink: TransitionSink

    def __init__(self, settings: HubSettings, writer: LineWriter | None = None) -> None:
        self.settings = settings
        self._writer = writer
        self._stack: contextlib.AsyncExitStack | None = None
        self._enrichment: EnrichmentSink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._tmp: Path | None = None

    async def __aenter__(self) -> Self:
        s = self.settings
        rules = load_rules(s.alerts.rules_file) if s.alerts.rules_file is not None else DEFAULT_RULES
        inventory = load_file(s.registry.inventory_file) if s.registry.inventory_file is not None else None
        url = s.registry.url
        if url is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ioc-hub-"))
            url = f"sqlite:///{self._tmp / 'hub.db'}"
            log.warning("registry.url is not set: using a temporary database (%s), removed at stop", url)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._remove_tmp)
            self.db = Database(url)
            stack.callback(self.db.close)
            await asyncio.to_thread(self.db.create_schema)
            self.registry = Registry(self.db)
            await asyncio.to_thread(self.registry.load)
            if inventory is not None:
                result = self.registry.apply_inventory(inventory)
                log.info(
                    "inventory %s: %d devices added, %d updated, %d conflicts",
                    s.registry.inventory_file,
                    result.devices_added,
                    result.devices_updated,
                    len(result.conflicts),
                )
            h = s.health
            policy = HealthPolicy(h.inactivity_factor, FlapPolicy(h.flap_window_s, h.flap_changes, h.flap_quiet_s))
            self.health = HealthMonitor(self.registry, policy)
            self.sink = TransitionSink(self.db, self._writer)
            self.health.subscribe(self.sink.add)
            self.alert_store = AlertStore(self.db)
            self.alerts = AlertEngine(rules, self.alert_store, self.registry, self.health)
            await self.alerts.load()
            self.notifier = Notifier(list(rules.webhooks), self.alert_store)
            self.alerts.subscribe(self.notifier.enqueue)
            self.events = EventHub(self.registry.ward_of_site)
            self.health.subscribe(self.events.transition)
            self.alerts.subscribe(self.events.alert)
            publisher = await stack.enter_async_context(CommandPublisher(s.mqtt))
            self.commands = CommandService(publisher, self.db, self.registry, self.health)
            self.tokens = TokenStore(self.db)
            self.registry.subscribe(self._registry_changed)
            stack.push_async_callback(self._stop_tasks)
            for name, coro in (
                ("hub-health-clock", self.health.run()),
                ("hub-health-sink", self.sink.run()),
                ("hub-alerts", self.alerts.run()),
                ("hub-webhooks", self.notifier.run()),
                ("hub-last-seen", self._publish_last_seen()),
            ):
                self._tasks.append(asyncio.create_task(coro, name=name))
            log.info(
                "operations: %d sites, %d devices, %d alert rules, %d webhooks",
                len(self.registry.sites),
                len(self.registry.devices),
                len(rules.rules),
                len(rules.webhooks),
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.alerts.drain(), 5)
        await self.registry.flush()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ wiring

    def on_enrichment(self, sink: EnrichmentSink) -> None:
        """``sink(device -> {tag: value})`` now and after every registry change (the pipeline's enrichment)."""
        self._enrichment = sink
        self._push_enrichment()

    def _push_enrichment(self) -> None:
        if self._enrichment is None:
            return
        try:
            self._enrichment(self.registry.enrichment())
        except (ValueError, TypeError):
            log.exception("registry: the enrichment map was refused")

    def _registry_changed(self, devices: list[Device]) -> None:
        self._push_enrichment()

    def observe(self, site: str, gateway: str, payload: object) -> None:
        """The ingest observer."""
        if isinstance(payload, State) and payload.online:
            self.registry.apply_birth(site, gateway, payload)
        self.health.observe(site, gateway, payload)
        self.alerts.observe(site, gateway, payload)
        self.commands.observe(site, gateway, payload)

    async def _publish_last_seen(self, every_s: float = 5.0) -> None:
        """Every ``every_s``, one ``seen`` event per ward with the devices that reported since the last one: the
        page's "last seen" column stays current without an event per reading."""
        sent: dict[str, int] = {}
        while True:
            await asyncio.sleep(every_s)
            if not self.events.clients:
                continue
            by_ward: dict[str | None, dict[str, int]] = {}
            for device_id, d in self.health.devices.items():
                if d.last_seen_ms is not None and sent.get(device_id) != d.last_seen_ms:
                    sent[device_id] = d.last_seen_ms
                    by_ward.setdefault(self.registry.ward_of_site(d.site), {})[device_id] = d.last_seen_ms
            for ward, devices in by_ward.items():
                self.events.publish("seen", ward, {"devices": devices})

    def failed_task(self) -> asyncio.Task[None] | None:
        """A component task that ended by itself (it should not), if any."""
        return next((t for t in self._tasks if t.done()), None)
