"""The operations side of the hub, composed: database, registry, health, alerts, webhooks, commands, tokens and
live events, with one lifecycle (``async with Operations(settings, writer)``).

:meth:`Operations.observe` is the ingest observer (hub.ingest): it runs on the event loop for every decoded
state, data, event and command-ack message and touches memory only; databases are written behind by the
components' own tasks. The registry's district per device is pushed to the pipeline's enrichment map
(``on_enrichment``), and each device's owning gateway to the pipeline's admission (``on_owners``), whenever a
birth, an import or a move changes them (:class:`RegistryFeed`: only what changed, so a birth costs its own
devices, not the city's).

:meth:`Operations.on_refusal` is the refusal observer (hub.ingest.admission, and the snapshot intake's): every
refusal is counted per gateway; the reasons of ``hub.alerts.security.SEVERITIES`` (all but ``unannounced_device``
and ``clock_skew``) raise a security alert, ``foreign_device`` is also the registry's owner conflict (the claim the
admission took out of a birth), ``unannounced_device`` asks the gateway for a new birth
(``CommandService.request_rebirth``), ``clock_skew`` gives the gateway a ``clock_skew`` health problem.
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
from typing import Self, TypeVar

from hub.alerts.engine import AlertEngine
from hub.alerts.notify import Notifier
from hub.alerts.rules import DEFAULT_RULES, load_rules
from hub.alerts.security import SecurityAlerts
from hub.alerts.store import AlertStore
from hub.auth import TokenStore
from hub.config import HubSettings
from hub.health.machine import FlapPolicy
from hub.health.monitor import CLOCK_SKEW, HealthMonitor, HealthPolicy
from hub.health.store import LineWriter, TransitionSink
from hub.ingest.admission import Refusal, RefusalReason
from hub.operations.commands import CommandPublisher, CommandService
from hub.registry.db import Database
from hub.registry.inventory import load_file
from hub.registry.registry import Device, Registry
from hub.routes.eventhub import EventHub
from wire.v1 import State

log = logging.getLogger(__name__)

_T = TypeVar("_T")

EnrichmentSink = Callable[[Mapping[str, Mapping[str, str]]], None]
#: Takes device id -> (site, gateway) of its owner (``Pipeline.set_owners``).
OwnersSink = Callable[[Mapping[str, tuple[str, str]]], None]
#: Takes the owners that changed, device id -> (site, gateway) or None (``Pipeline.update_owners``).
OwnerChangesSink = Callable[[Mapping[str, tuple[str, str] | None]], None]


class RegistryFeed:
    """What the ingest side keeps of the registry: each device's owner (the admission's map) and enrichment
    tags (the district of its lines), pushed whole once to each sink, then on every registry change only if
    something of it changed, and for owners as the changes alone (to sinks that take them)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._owners = registry.owners()
        self._enrichment = registry.enrichment()
        self._owner_sinks: list[tuple[OwnersSink, OwnerChangesSink | None]] = []
        self._enrichment_sink: EnrichmentSink | None = None

    def on_owners(self, sink: OwnersSink, update: OwnerChangesSink | None = None) -> None:
        """``sink(device -> (site, gateway))`` now; after a change ``update(changes)`` or, without it, ``sink``
        with the whole map again."""
        self._owner_sinks.append((sink, update))
        _push(sink, dict(self._owners), "the owners map")

    def on_enrichment(self, sink: EnrichmentSink) -> None:
        """``sink(device -> {tag: value})`` now and after every change of it (one sink: a new one replaces it)."""
        self._enrichment_sink = sink
        _push(sink, dict(self._enrichment), "the enrichment map")

    def changed(self, devices: list[Device]) -> None:
        """The registry's listener: ``devices`` changed."""
        owners: dict[str, tuple[str, str] | None] = {}
        enrichment_changed = False
        for device in devices:
            owner = self._registry.owner_of(device)
            if self._owners.get(device.id) != owner:
                owners[device.id] = owner
                if owner is None:
                    del self._owners[device.id]
                else:
                    self._owners[device.id] = owner
            tags = self._registry.enrichment_of(device)
            if self._enrichment.get(device.id, {}) != tags:
                enrichment_changed = True
                if tags:
                    self._enrichment[device.id] = tags
                else:
                    del self._enrichment[device.id]
        if owners:
            for sink, update in self._owner_sinks:
                if update is not None:
                    _push(update, owners, "an owners change")
                else:
                    _push(sink, dict(self._owners), "the owners map")
        if enrichment_changed and self._enrichment_sink is not None:
            _push(self._enrichment_sink, dict(self._enrichment), "the enrichment map")


def _push(sink: Callable[[_T], None], value: _T, what: str) -> None:
    try:
        sink(value)
    except (ValueError, TypeError):
        log.exception("registry: %s was refused", what)


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
    security: SecurityAlerts
    feed: RegistryFeed

    def __init__(self, settings: HubSettings, writer: LineWriter | None = None) -> None:
        self.settings = settings
        self._writer = writer
        self._stack: contextlib.AsyncExitStack | None = None
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
                result = self.registry.apply_inventory(inventory, by=f"inventory file {s.registry.inventory_file}")
                log.info(
                    "inventory %s: %d devices added, %d updated, %d conflicts",
                    s.registry.inventory_file,
                    result.devices_added,
                    result.devices_updated,
                    len(result.conflicts),
                )
            h = s.health
            flap = FlapPolicy(h.flap_window_s, h.flap_changes, h.flap_quiet_s)
            policy = HealthPolicy(h.inactivity_factor, flap, problem_quiet_s=h.problem_quiet_s)
            self.health = HealthMonitor(self.registry, policy)
            self.sink = TransitionSink(self.db, self._writer)
            self.health.subscribe(self.sink.add)
            self.alert_store = AlertStore(self.db)
            self.alerts = AlertEngine(rules, self.alert_store, self.registry, self.health)
            await self.alerts.load()
            self.security = SecurityAlerts(self.alerts, quiet_s=s.alerts.security_quiet_s)
            await self.security.load(self.alert_store)
            self.notifier = Notifier(list(rules.webhooks), self.alert_store)
            self.alerts.subscribe(self.notifier.enqueue)
            self.events = EventHub(self.registry.ward_of_site)
            self.health.subscribe(self.events.transition)
            self.alerts.subscribe(self.events.alert)
            publisher = await stack.enter_async_context(CommandPublisher(s.mqtt))
            self.commands = CommandService(
                publisher,
                self.db,
                self.registry,
                self.health,
                rebirth_interval_s=s.commands.rebirth_interval_s,
                rebirth_timeout_s=s.commands.timeout_s,
            )
            stack.push_async_callback(self.commands.close)
            self.tokens = TokenStore(self.db)
            self.feed = RegistryFeed(self.registry)
            self.registry.subscribe(self.feed.changed)
            stack.push_async_callback(self._stop_tasks)
            for name, coro in (
                ("hub-health-clock", self.health.run()),
                ("hub-health-sink", self.sink.run()),
                ("hub-alerts", self.alerts.run()),
                ("hub-security-alerts", self.security.run()),
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
        """``sink(device -> {tag: value})`` now and after every change of it (the pipeline's enrichment)."""
        self.feed.on_enrichment(sink)

    def on_owners(self, sink: OwnersSink, update: OwnerChangesSink | None = None) -> None:
        """``sink(device -> (site, gateway))`` now, and after a registry change ``update`` with the owners that
        changed (else ``sink`` with the whole map): the pipeline's admission, and the observer feed's on a hub of
        a group."""
        self.feed.on_owners(sink, update)

    def on_refusal(self, refusal: Refusal) -> None:
        """The refusal observer (hub.ingest.admission): cheap, never raises."""
        try:
            self.security.observe(refusal)
            if refusal.reason is RefusalReason.FOREIGN_DEVICE:
                self.registry.note_claim(refusal.site, refusal.gateway, refusal.device)
            elif refusal.reason is RefusalReason.UNANNOUNCED_DEVICE:
                why = f"data for {refusal.device}, which its current birth did not announce"
                self.commands.request_rebirth(refusal.site, refusal.gateway, why)
            elif refusal.reason is RefusalReason.CLOCK_SKEW:
                self.health.report_problem(refusal.site, refusal.gateway, CLOCK_SKEW, refusal.detail)
        except Exception:
            log.exception("operations: handling a refusal failed")

    def observe(self, site: str, gateway: str, payload: object) -> None:
        """The ingest observer."""
        if isinstance(payload, State) and payload.online:
            self.registry.apply_birth(site, gateway, payload)
        self.health.observe(site, gateway, payload)
        self.alerts.observe(site, gateway, payload)
        self.commands.observe(site, gateway, payload)

    async def _publish_last_seen(self, every_s: float = 5.0) -> None:
        """Every ``every_s``, one ``seen`` event per ward with the devices that reported since the last one: the
        page's "last seen" column stays current without an event per reading. It looks at the devices of the
        gateways that sent readings since (``HealthMonitor.take_heard``), not at every device."""
        sent: dict[str, int] = {}
        while True:
            await asyncio.sleep(every_s)
            if not self.events.clients:
                continue  # what was heard meanwhile stays with the monitor, for the next client
            by_ward: dict[str | None, dict[str, int]] = {}
            known = self.health.devices
            for device_id in self.health.take_heard():
                d = known[device_id]
                if d.last_seen_ms is not None and sent.get(device_id) != d.last_seen_ms:
                    sent[device_id] = d.last_seen_ms
                    by_ward.setdefault(self.registry.ward_of_site(d.site), {})[device_id] = d.last_seen_ms
            for ward, devices in by_ward.items():
                self.events.publish("seen", ward, {"devices": devices})

    def failed_task(self) -> asyncio.Task[None] | None:
        """A component task that ended by itself (it should not), if any."""
        return next((t for t in self._tasks if t.done()), None)
