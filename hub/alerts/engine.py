"""Alert evaluation: conditions in memory, alerts in the database.

The engine keeps one small condition record per (subject, rule) in memory and touches the database only when an
alert opens or resolves (never per message). Those writes go through one queue, in order, so an open is always
stored before the resolve that follows it. The database's unique constraint on open alerts
(:mod:`hub.alerts.store`) is what guarantees one open alert per (subject, rule), also across hub processes.

An offline alert resolves only once its entity has stayed back (online or degraded) for its rule's
``clear_after_s``: offline again within that hold keeps the same alert open and counts the times offline in its
value and message, so a flapping link opens one alert, not one per drop (the recovery delay alerting systems use
against storms: Zabbix's recovery expression, Nagios' flap detection). Only the resolution waits: health states
are taken at once. An entity that turns ``unknown`` (its gateway went) during the hold is not back: the hold
starts again at its next return.

After a manual resolve, the condition starts afresh: if it still holds (or comes back), the alert fires again
after the rule's ``for_s`` (a peer's known failure is an alarm cleared by hand that never fires again).

Components may raise alerts of their own that no rule file describes (:meth:`AlertEngine.raise_alert`, e.g. the
security alerts of :mod:`hub.alerts.security`): same table, same one-open-alert guarantee, same listeners
(webhooks, live events), resolved by the component (:meth:`AlertEngine.resolve_alert`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.alerts.rules import BitsRule, OfflineRule, RulesFile, StaleRule, ThresholdRule
from hub.alerts.store import AlertRow, AlertStore, alert_dict
from hub.health.machine import Health
from hub.health.monitor import HealthMonitor, Transition
from hub.registry.registry import Registry
from wire.v1 import DataBatch

log = logging.getLogger(__name__)

#: ``listener(event, alert)``: event is ``fired``, ``acknowledged`` or ``resolved``.
AlertListener = Callable[[str, dict[str, Any]], None]
#: Open/resolve operations waiting for the database; beyond this, new ones are dropped and logged.
MAX_QUEUED_ACTIONS = 10_000


@dataclass(slots=True)
class _Cond:
    site: str = ""
    gateway: str = ""
    kind: str = ""
    subject_type: str = "device"
    breaching: bool = False
    since: float = 0.0
    value: float | None = None
    message: str = ""
    open: bool = False
    #: Offline rules: when the entity came back while the alert was open (the hold runs), and how.
    back_since: float | None = None
    back_why: str = ""
    #: When the engine first knew it: the clock takes conditions due together in this order.
    order: int = 0


class AlertEngine:
    """Feed it with :meth:`observe` (ingest hook) and :meth:`on_transition` (health); run :meth:`run`."""

    def __init__(
        self,
        rules: RulesFile,
        store: AlertStore,
        registry: Registry | None = None,
        health: HealthMonitor | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.5,
    ) -> None:
        self.rules = rules
        self._store = store
        self._registry = registry
        self._health = health
        self._clock = clock
        self._tick_s = tick_s
        self._conds: dict[tuple[str, str], _Cond] = {}
        self._by_metric: dict[str, list[ThresholdRule | BitsRule]] = {}
        for rule in rules.rules:
            if isinstance(rule, ThresholdRule | BitsRule):
                self._by_metric.setdefault(rule.metric, []).append(rule)
        self._offline = [r for r in rules.rules if isinstance(r, OfflineRule)]
        self._stale = [r for r in rules.rules if isinstance(r, StaleRule)]
        self._rules = {r.id: r for r in rules.rules}
        self._last_reading: dict[str, tuple[float, str, str, str]] = {}
        #: The clock's work is what may be due, not every condition and device: the conditions touched since the
        #: clock last found them settled (neither waiting to fire nor holding), and per stale rule a heap of
        #: (when, device) with each device's entry time in ``_stale_at`` (an entry of another time is stale).
        self._touched: dict[tuple[str, str], None] = {}
        self._stale_heaps: list[list[tuple[float, int, str]]] = [[] for _ in self._stale]
        self._stale_at: list[dict[str, float]] = [{} for _ in self._stale]
        self._device_order: dict[str, int] = {}
        self._actions: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(MAX_QUEUED_ACTIONS)
        self._listeners: list[AlertListener] = []
        self.dropped_actions = 0
        if health is not None:
            health.subscribe(self.on_transition)

    def subscribe(self, listener: AlertListener) -> None:
        self._listeners.append(listener)

    def notify(self, event: str, alert: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(event, alert)
            except Exception:
                log.exception("alerts: a listener failed")

    async def load(self) -> None:
        """Take over the alerts left open by a previous run."""
        for alert in await self._store.open_alerts():
            cond = self._cond(alert["subject"], alert["rule"])
            cond.open = True
            cond.site, cond.gateway, cond.kind = alert["site"], alert["gateway"], alert["kind"]
            if isinstance(self._rules.get(alert["rule"]), OfflineRule):
                cond.value = alert["value"]  # the times offline, counted on

    # ------------------------------------------------------------------------------------------ inputs

    def _cond(self, subject: str, rule: str) -> _Cond:
        key = (subject, rule)
        cond = self._conds.get(key)
        if cond is None:
            cond = self._conds[key] = _Cond(order=len(self._conds))
        self._touched[key] = None
        return cond

    def observe(self, site: str, gateway: str, payload: object) -> None:
        if not isinstance(payload, DataBatch) or payload.replay:
            return
        # On the ingest hot path: only the work the loaded rules need (no stale rule: no last-reading table; no
        # threshold or bits rule: no look at the values).
        stale_rules, by_metric = self._stale, self._by_metric
        if not stale_rules and not by_metric:
            return
        now = self._clock()
        for reading in payload.readings:
            if stale_rules:
                self._last_reading[reading.device] = (now, site, gateway, reading.kind)
                for index, stale in enumerate(stale_rules):
                    if reading.device not in self._stale_at[index]:  # else its entry comes first, finds it heard
                        self._schedule_stale(index, reading.device, now + stale.max_age_s)
                    cond = self._conds.get((reading.device, stale.id))
                    if cond is not None and (cond.breaching or cond.open):  # open: also one taken over at start
                        self._clear(reading.device, stale.id, cond, "data arrives again")
            if not by_metric:
                continue
            for metric, value in reading.metrics.items():
                rules = by_metric.get(metric)
                if not rules or isinstance(value, str):
                    continue
                number = float(value)
                for rule in rules:
                    if rule.applies_to(reading.device, reading.kind):
                        self._evaluate(
                            rule, reading.device, site=site, gateway=gateway, kind=reading.kind, value=number, now=now
                        )

    def _evaluate(
        self,
        rule: ThresholdRule | BitsRule,
        device: str,
        *,
        site: str,
        gateway: str,
        kind: str,
        value: float,
        now: float,
    ) -> None:
        if isinstance(rule, ThresholdRule):
            breach, clear = rule.breaches(value), rule.clears(value)
            level = rule.above if rule.above is not None else rule.below
            side = "above" if rule.above is not None else "below"
            message = f"{rule.metric} = {value:g}, {side} {level:g}"
        else:
            bits = int(value) & rule.mask
            breach, clear = bits != 0, bits == 0
            message = f"{rule.metric} has error bits set: {bits:#x}"
        cond = self._cond(device, rule.id)
        cond.site, cond.gateway, cond.kind, cond.value = site, gateway, kind, value
        if breach:
            if not cond.breaching:
                cond.breaching, cond.since = True, now
            cond.message = message
            self._maybe_fire(device, rule.id, cond, now)
        elif (clear or not cond.open) and (cond.breaching or cond.open):
            # Before firing, any value that no longer breaches resets the duration; once open, only the
            # clear level resolves it (hysteresis).
            self._clear(device, rule.id, cond, f"{rule.metric} = {value:g}")

    def on_transition(self, t: Transition) -> None:
        now = self._clock()
        for rule in self._offline:
            if rule.target != t.entity or (t.entity == "device" and not rule.applies_to(t.device, t.kind)):
                continue
            cond = self._cond(t.key, rule.id)
            cond.site, cond.gateway, cond.kind, cond.subject_type = t.site, t.gateway, t.kind, t.entity
            if t.new == Health.OFFLINE:
                cond.breaching, cond.since, cond.message = True, now, f"{t.entity} {t.key} offline: {t.reason}"
                if not cond.open:
                    cond.value = 1.0
                    self._maybe_fire(t.key, rule.id, cond, now)
                elif cond.back_since is not None:
                    # Offline again within the hold: the same alert, one more time offline.
                    cond.back_since = None
                    times = (cond.value or 1.0) + 1
                    message = (
                        f"{cond.message} (offline {times:g} times, back for less than {rule.clear_after_s:g} s "
                        "in between)"
                    )
                    self.update_alert(t.key, rule.id, value=times, message=message)
            elif t.new in (Health.ONLINE, Health.DEGRADED):
                why = f"{t.entity} {t.new}: {t.reason}"
                if cond.open and rule.clear_after_s > 0:
                    cond.breaching = False
                    if cond.back_since is None:  # online then degraded is still back: the hold runs on
                        cond.back_since, cond.back_why = now, why
                else:
                    self._clear(t.key, rule.id, cond, why)
            else:
                # unknown (its gateway is offline): no verdict on the device; a pending alert waits, and so does
                # a pending resolve (the device is not known to be back)
                cond.breaching, cond.back_since = False, None

    def _schedule_stale(self, index: int, device: str, at: float) -> None:
        """Stale rule ``index`` looks at ``device`` at ``at`` (its last reading's max age, or the next tick)."""
        order = self._device_order.setdefault(device, len(self._device_order))
        self._stale_at[index][device] = at
        heapq.heappush(self._stale_heaps[index], (at, order, device))

    def _stale_due(self, index: int, now: float) -> list[str]:
        """The devices whose entry for stale rule ``index`` is due, in the order the engine first knew them."""
        heap, at_of = self._stale_heaps[index], self._stale_at[index]
        due: list[tuple[int, str]] = []
        while heap and heap[0][0] <= now:
            at, order, device = heapq.heappop(heap)
            if at_of.get(device) == at:
                del at_of[device]
                due.append((order, device))
        return [device for _, device in sorted(due)]

    def tick(self) -> None:
        """Fire what waited long enough, resolve what was back long enough, and judge stale data: the work is the
        conditions touched since they last settled and the devices due, in the order of a visit of every one."""
        now = self._clock()
        touched = sorted(self._touched, key=lambda key: self._conds[key].order)
        self._touched = {}
        for subject, rule_id in touched:
            cond = self._conds[(subject, rule_id)]
            if cond.breaching and not cond.open:
                self._maybe_fire(subject, rule_id, cond, now)
            elif cond.back_since is not None and now - cond.back_since >= self._clear_after_s(rule_id):
                self._clear(subject, rule_id, cond, f"{cond.back_why}; back for {now - cond.back_since:.0f} s")
            if (cond.breaching and not cond.open) or cond.back_since is not None:
                self._touched[(subject, rule_id)] = None  # still waiting: looked at again
        for index, rule in enumerate(self._stale):
            for device in self._stale_due(index, now):
                seen, site, gateway, kind = self._last_reading[device]
                if now - seen < rule.max_age_s:
                    self._schedule_stale(index, device, seen + rule.max_age_s)
                    continue
                if not rule.applies_to(device, kind):
                    continue
                if self._health is not None:
                    gw = self._health.gateway(site, gateway)
                    if gw is None or gw["state"] != Health.ONLINE:
                        self._schedule_stale(index, device, now)  # looked at again at the next tick
                        continue
                cond = self._cond(device, rule.id)
                if not cond.breaching:
                    cond.site, cond.gateway, cond.kind = site, gateway, kind
                    cond.breaching, cond.since = True, now
                    cond.message = f"no data from {device} for {now - seen:.0f} s"
                    self._maybe_fire(device, rule.id, cond, now)

    def manual_resolved(self, subject: str, rule: str) -> None:
        """An operator resolved the alert: if the condition still holds, it fires again after ``for_s``."""
        cond = self._conds.get((subject, rule))
        if cond is None:
            return
        self._touched[(subject, rule)] = None
        cond.open, cond.back_since = False, None
        cond.since = self._clock()
        found = self._rules.get(rule)
        if isinstance(found, ThresholdRule) and cond.value is not None:
            # Inside the hysteresis band the condition is not "back": it must breach again.
            cond.breaching = found.breaches(cond.value)
        elif isinstance(found, OfflineRule):
            cond.value = 1.0  # an alert fired again counts its times offline afresh

    # ------------------------------------------------------------------------------------------ raised by components

    def is_open(self, subject: str, rule_id: str) -> bool:
        cond = self._conds.get((subject, rule_id))
        return cond is not None and cond.open

    def raise_alert(
        self,
        subject: str,
        rule_id: str,
        *,
        subject_type: str,
        site: str,
        gateway: str,
        severity: str,
        message: str,
        value: float | None = None,
        kind: str = "",
    ) -> bool:
        """Open an alert no rule file describes, at once; False if one is open for (subject, rule) already."""
        cond = self._cond(subject, rule_id)
        if cond.open:
            return False
        cond.open, cond.breaching = True, False
        cond.site, cond.gateway, cond.kind, cond.subject_type = site, gateway, kind, subject_type
        cond.message, cond.value = message, value
        ward = self._registry.ward_of_site(site) if self._registry is not None else None
        values = {
            "rule": rule_id,
            "subject": subject,
            "subject_type": subject_type,
            "site": site,
            "gateway": gateway,
            "ward": ward,
            "kind": kind,
            "severity": severity,
            "message": message[:600],
            "value": value,
        }
        self._enqueue(lambda: self._open(values))
        return True

    def update_alert(self, subject: str, rule_id: str, *, value: float, message: str) -> None:
        """Refresh the value and message of the open alert of (subject, rule) (a count of repeats)."""
        cond = self._conds.get((subject, rule_id))
        if cond is None or not cond.open:
            return
        cond.value, cond.message = value, message
        self._enqueue(lambda: self._update(subject, rule_id, value, message[:600]))

    def resolve_alert(self, subject: str, rule_id: str, why: str) -> None:
        """Resolve the open alert of (subject, rule) that a component raised (its condition is over)."""
        cond = self._conds.get((subject, rule_id))
        if cond is not None:
            self._clear(subject, rule_id, cond, why)

    async def _update(self, subject: str, rule_id: str, value: float, message: str) -> None:
        key = f"{subject}|{rule_id}"

        def update(session: Session) -> dict[str, Any] | None:
            row = session.scalars(select(AlertRow).where(AlertRow.open_key == key)).first()
            if row is None:
                return None
            row.value, row.message = value, message
            return alert_dict(row)

        await self._store.db.write(update)

    # ------------------------------------------------------------------------------------------ actions

    def _for_s(self, rule_id: str) -> float:
        rule = self._rules[rule_id]
        return 0.0 if isinstance(rule, StaleRule) else rule.for_s

    def _clear_after_s(self, rule_id: str) -> float:
        rule = self._rules.get(rule_id)
        return rule.clear_after_s if isinstance(rule, OfflineRule) else 0.0

    def _maybe_fire(self, subject: str, rule_id: str, cond: _Cond, now: float) -> None:
        if cond.open or now - cond.since < self._for_s(rule_id):
            return
        cond.open = True
        rule = self._rules[rule_id]
        ward = self._registry.ward_of_site(cond.site) if self._registry is not None else None
        values = {
            "rule": rule_id,
            "subject": subject,
            "subject_type": cond.subject_type,
            "site": cond.site,
            "gateway": cond.gateway,
            "ward": ward,
            "kind": cond.kind,
            "severity": rule.severity,
            "message": cond.message[:600],
            "value": cond.value,
        }
        self._enqueue(lambda: self._open(values))

    def _clear(self, subject: str, rule_id: str, cond: _Cond, why: str) -> None:
        cond.breaching, cond.back_since = False, None
        if cond.open:
            cond.open = False
            self._enqueue(lambda: self._resolve(subject, rule_id, why))

    def _enqueue(self, action: Callable[[], Awaitable[None]]) -> None:
        try:
            self._actions.put_nowait(action)
        except asyncio.QueueFull:
            self.dropped_actions += 1
            log.error("alerts: %d database operations queued; dropping one", MAX_QUEUED_ACTIONS)  # noqa: TRY400

    async def _open(self, values: dict[str, Any]) -> None:
        alert, created = await self._store.open(values)
        if created:
            log.warning("alert %s fired: %s %s: %s", alert["id"], alert["rule"], alert["subject"], alert["message"])
            self.notify("fired", alert)

    async def _resolve(self, subject: str, rule_id: str, why: str) -> None:
        alert = await self._store.resolve_open(subject, rule_id, "system", f"condition cleared: {why}")
        if alert is not None:
            log.info("alert %s resolved: %s %s (%s)", alert["id"], rule_id, subject, why)
            self.notify("resolved", alert)

    async def drain(self) -> None:
        """Run every queued database operation (tests, shutdown)."""
        while not self._actions.empty():
            await self._run_one(self._actions.get_nowait())

    async def _run_one(self, action: Callable[[], Awaitable[None]]) -> None:
        try:
            await action()
        except Exception:
            log.exception("alerts: a database operation failed")

    async def run(self) -> None:
        """Process the queued operations and the clock until cancelled."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick_s
        while True:
            timeout = max(0.0, next_tick - loop.time())
            action = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    action = await self._actions.get()
            if action is not None:
                await self._run_one(action)
            if loop.time() >= next_tick:
                next_tick = loop.time() + self._tick_s
                try:
                    self.tick()
                except Exception:
                    log.exception("alerts: the clock failed; continuing")
