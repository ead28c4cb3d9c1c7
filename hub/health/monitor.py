"""The health monitor: feeds each gateway's and device's :class:`~hub.health.machine.HealthMachine`.

Inputs, all from the ingest observer (no database on this path: dictionaries only):

- ``state`` birth: gateway online; its devices get their poll intervals; the inactivity clock starts.
- ``state`` death (clean or the Last Will the broker publishes 1.5 x keep-alive after the gateway went silent):
  gateway offline; its devices **unknown**, with the reason (the hub cannot tell whether they are fine). A death
  of another session than the current one is a late will and is ignored (docs/protocol.md).
- ``data``: each device with a reading is online (not ``replay`` batches: those readings are old).
- ``event``: the agent's driver view: ``device_down`` offline, ``device_up`` online, ``device_degraded`` degraded.
- the clock (:meth:`tick`): a device with no reading for its inactivity timeout (default 3 x its poll interval,
  overridable per device by the inventory's ``inactivity_s``) is offline, while its gateway is online.
- the gateway's promise: a birth with ``keepalive_s`` promises a ``data`` message at least once per keep-alive
  (docs/protocol.md). Every message of a gateway stamps when it was last heard; a gateway silent for
  ``1.5 x keepalive_s`` is offline at the next tick ("silent for ..."), its devices unknown, without waiting for
  the broker's keep-alive check, which runs every 5 s and so delivers the will up to ~6 s later (not while the
  hub itself cannot hear: :meth:`HealthMonitor.watch_intake`). The will that
  follows for the same session changes nothing; a data or event message of the same session arriving after the
  silence brings the gateway back (through the flap damping like any change). Without ``keepalive_s`` only the
  will says the gateway is gone.

Effective changes go to the listeners as :class:`Transition` records (persisted, written to InfluxDB, alerts).

A device belongs to one gateway (its owner in the registry): a birth, reading or event about a device the
registry gives to another gateway never re-homes it here either (the ingest admission refuses those first).

**Problems** are what a gateway does wrong while it is up, shown beside its state (``gateway()``, and ``device()``
for each device behind it) without changing it: ``clock_skew`` (readings stamped outside the accepted window,
reported by the ingest admission through :meth:`HealthMonitor.report_problem`). A problem is logged once when it
starts and once when it clears, which it does after ``problem_quiet_s`` without a new report.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from hub.health.machine import FlapPolicy, Health, HealthMachine
from hub.health.translog import TransitionLog
from hub.registry.registry import Device, Registry
from wire.v1 import DataBatch, Event, EventType, State

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    #: A device is offline after this many poll intervals without a reading.
    inactivity_factor: float = 3.0
    flap: FlapPolicy = field(default_factory=FlapPolicy)
    #: How often the clock checks inactivity and the end of flapping.
    tick_s: float = 0.25
    #: A gateway's problem (``clock_skew``...) clears after this long without a new report.
    problem_quiet_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Transition:
    """One effective state change of a gateway (``device`` empty) or a device."""

    entity: str
    key: str
    site: str
    gateway: str
    device: str
    kind: str
    old: str
    new: str
    reason: str
    ts_ms: int


#: A gateway that promised ``keepalive_s`` is offline after this many keep-alives without a message (the broker
#: gives up on a silent client after 1.5 x keep-alive too: MQTT 5.0, 3.1.2.10).
SILENCE_FACTOR: Final = 1.5

#: The gateway stamps readings outside [now - max replay age, now + max skew] (the ingest admission refused them).
CLOCK_SKEW: Final = "clock_skew"

_ONLINE: Final = Health.ONLINE
_DEGRADED: Final = Health.DEGRADED
_OFFLINE: Final = Health.OFFLINE


@dataclass(slots=True)
class _Problem:
    detail: str
    since_ms: int
    last: float
    """Monotonic time of the last report."""
    count: int = 1


@dataclass(slots=True)
class _Gateway:
    site: str
    gateway: str
    machine: HealthMachine
    key: str = ""
    """``site/gateway``."""
    session: str = ""
    keepalive_s: float | None = None
    """The keep-alive its current session's birth promised, if any."""
    heard: float = 0.0
    """Monotonic time of its last message of any kind."""
    silent: bool = False
    """Offline because it broke its keep-alive promise: its session may still speak again."""
    devices: set[str] = field(default_factory=set)
    """Every device seen behind it (announced or with readings)."""
    announced: set[str] = field(default_factory=set)
    """The devices of its last birth."""
    problems: dict[str, _Problem] = field(default_factory=dict)
    """By name: what it does wrong while up (``clock_skew``), until quiet for ``problem_quiet_s``."""
    order: int = 0
    """When the monitor first knew it: the clock takes gateways due together in this order."""
    due: float | None = None
    """When the clock looks at its silence next (its entry in the monitor's heap), if it does."""


@dataclass(slots=True)
class _Device:
    id: str
    machine: HealthMachine
    site: str = ""
    gateway: str = ""
    owner: _Gateway | None = None
    """The gateway it is behind (``site``/``gateway``), if known."""
    kind: str = ""
    interval_s: float | None = None
    inactivity_s: float | None = None
    last_seen: float | None = None
    """Monotonic time of the last reading (or of the birth that started the clock)."""
    last_seen_ms: int | None = None
    """Wall time of the last reading, for people."""
    order: int = 0
    """When the monitor first knew it: the clock takes devices due together in this order."""
    due: float | None = None
    """When the clock looks at its inactivity next (its entry in the monitor's heap), if it does."""


Listener = Callable[[Transition], None]


class HealthMonitor:
    """Gateways and devices by key; ``observe`` is the ingest hook, ``run`` the clock."""

    def __init__(
        self,
        registry: Registry | None = None,
        policy: HealthPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or HealthPolicy()
        self._registry = registry
        self._clock = clock
        self._wall = wall
        self._translog = TransitionLog(log, clock)
        self.gateways: dict[str, _Gateway] = {}
        """By ``site/gateway``."""
        self._pairs: dict[tuple[str, str], _Gateway] = {}
        """The same by ``(site, gateway)``: no string to build per message."""
        self.devices: dict[str, _Device] = {}
        self._listeners: list[Listener] = []
        self._intake_ok: Callable[[], bool] | None = None
        self._blind_at = float("-inf")
        #: The earliest moment a promised gateway may turn silent, as of the last tick (``run`` wakes up then,
        #: so the verdict comes at 1.5 x keep-alive rather than up to a tick later).
        self._next_silence = float("inf")
        """Monotonic time the hub last could not hear the gateways (see :meth:`watch_intake`)."""
        self._intake_failing = False
        #: The clock's work is what is due, not every entity: (when, order, key) of the devices whose inactivity
        #: and the gateways whose silence it must look at, the flapping ones (whose flapping may end), and the
        #: gateways with problems. An entry is checked against the entity's ``due`` (later ones are stale).
        self._order = itertools.count()
        self._devices_due: list[tuple[float, int, str]] = []
        self._gateways_due: list[tuple[float, int, tuple[str, str]]] = []
        self._flapping_devices: set[str] = set()
        self._flapping_gateways: set[tuple[str, str]] = set()
        self._with_problems: set[tuple[str, str]] = set()
        #: Changes whenever something the API's gateway and site lists show changes (a gateway's state, reason,
        #: flapping, devices or problems; a device's state; a new gateway): their answers are kept until it does.
        #: A gateway's reason and flapping change only with a transition: it is proposed online or offline, never
        #: degraded, so flapping starts and ends with a change of state.
        self.version = 0
        #: What changed, by row of those lists, since their kept answers last took it (:meth:`take_changes`): the
        #: gateways (by key) whose state, reason, flapping, devices or problems changed or that are new, and the
        #: devices whose state changed (their sites' counts). Marked wherever :attr:`version` changes.
        self.changed_gateways: set[str] = set()
        self.changed_devices: set[str] = set()
        #: The gateways with a reading since :meth:`take_heard` (the live "seen" events visit their devices alone).
        self._heard: set[tuple[str, str]] = set()
        if registry is not None:
            registry.subscribe(self._registry_changed)
            for device in registry.devices.values():
                self._device(device.id, device.site or "", device.gateway or "").kind = device.kind
                self._registry_changed([device])

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def watch_intake(self, intake_ok: Callable[[], bool]) -> None:
        """``intake_ok()`` says whether the hub is receiving (MQTT connected, not holding back messages under
        back-pressure). While it is not, a gateway's silence proves nothing (the broker holds or drops its
        messages, not the gateway), and after it, each gateway gets a full 1.5 x keep-alive again."""
        self._intake_ok = intake_ok

    # ------------------------------------------------------------------------------------------ queries

    def device(self, device_id: str) -> dict[str, Any] | None:
        """Its health; ``problems`` are its gateway's (the device's readings are what they concern)."""
        d = self.devices.get(device_id)
        if d is None:
            return None
        return {
            "state": d.machine.state.value,
            "reason": d.machine.reason,
            "flapping": d.machine.flapping,
            "last_seen_ms": d.last_seen_ms,
            "problems": _problems(d.owner) if d.owner is not None else [],
        }

    def device_state(self, device_id: str) -> Health:
        d = self.devices.get(device_id)
        return d.machine.state if d is not None else Health.UNKNOWN

    def gateway(self, site: str, gateway: str) -> dict[str, Any] | None:
        g = self.gateways.get(f"{site}/{gateway}")
        if g is None:
            return None
        return {
            "state": g.machine.state.value,
            "reason": g.machine.reason,
            "flapping": g.machine.flapping,
            "problems": _problems(g),
        }

    def problems(self, site: str, gateway: str) -> list[dict[str, Any]]:
        """The gateway's current problems, by name."""
        g = self._pairs.get((site, gateway))
        return _problems(g) if g is not None and g.problems else []  # most have none: no list or sort built

    def take_changes(self) -> tuple[set[str], set[str]]:
        """The keys of the gateways and the ids of the devices changed (as :attr:`changed_gateways` says) since the
        last call; one reader: the API's kept list answers (``hub/routes/sites.py``)."""
        gateways, devices = self.changed_gateways, self.changed_devices
        self.changed_gateways, self.changed_devices = set(), set()
        return gateways, devices

    def take_heard(self) -> list[str]:
        """The devices behind the gateways with a reading (not a replay) since the last call, by gateway and id:
        those whose ``last_seen_ms`` may have changed."""
        heard, self._heard = self._heard, set()
        return [device_id for key in sorted(heard) for device_id in sorted(self._pairs[key].devices)]

    def report_problem(self, site: str, gateway: str, name: str, detail: str) -> None:
        """The gateway does ``name`` wrong (``clock_skew``); it shows until ``problem_quiet_s`` without a report."""
        g = self._gateway(site, gateway)
        now = self._clock()
        self.version += 1
        self.changed_gateways.add(g.key)
        problem = g.problems.get(name)
        if problem is None:
            g.problems[name] = _Problem(detail, int(self._wall() * 1000), now)
            self._with_problems.add((site, gateway))
            log.warning("gateway %s/%s: problem %s: %s", site, gateway, name, detail)
            return
        problem.detail, problem.last = detail, now
        problem.count += 1

    # ------------------------------------------------------------------------------------------ inputs

    def observe(self, site: str, gateway: str, payload: object) -> None:
        """The ingest hook: called on the loop with every decoded state, data, event and command-ack message.

        On the hot path: a clock read, a dictionary lookup and a few attribute updates per message, plus one
        lookup per reading of a data batch."""
        now = self._clock()
        g = self._pairs.get((site, gateway))
        if g is None:
            g = self._gateway(site, gateway)
        elif g.silent:
            self._heard_again(g, payload, now)
        if not g.silent:  # while silent, the time it was last heard is what the reasons quote
            g.heard = now
        if isinstance(payload, DataBatch):
            self._data(g, payload, now)
        elif isinstance(payload, State):
            self._state(g, payload, now)
        elif isinstance(payload, Event):
            self._event(g, payload, now)

    def _gateway(self, site: str, gateway: str) -> _Gateway:
        g = self._pairs.get((site, gateway))
        if g is None:
            key = f"{site}/{gateway}"
            g = _Gateway(site, gateway, HealthMachine(self.policy.flap), key, order=next(self._order))
            self._pairs[(site, gateway)] = self.gateways[key] = g
            self.version += 1
            self.changed_gateways.add(key)
        return g

    def _elsewhere(self, device_id: str, g: _Gateway) -> bool:
        """Whether the registry gives ``device_id`` to another gateway than ``g`` (then ``g`` cannot re-home it)."""
        registry = self._registry
        return registry is not None and registry.owned_elsewhere(g.site, g.gateway, device_id)

    def _device(self, device_id: str, site: str, gateway: str) -> _Device:
        d = self.devices.get(device_id)
        if d is None:
            machine = HealthMachine(self.policy.flap)
            d = self.devices[device_id] = _Device(device_id, machine, site, gateway, order=next(self._order))
        elif site and (d.site, d.gateway) != (site, gateway):
            if d.owner is not None:
                d.owner.devices.discard(device_id)
                self.changed_gateways.add(d.owner.key)
            d.site, d.gateway = site, gateway
            self.version += 1
        if site:
            d.owner = self._gateway(site, gateway)
            if device_id not in d.owner.devices:
                d.owner.devices.add(device_id)
                self.version += 1
                self.changed_gateways.add(d.owner.key)
        return d

    def _heard_again(self, g: _Gateway, payload: object, now: float) -> None:
        """A message from a gateway marked offline for its silence: the same session speaking again is back."""
        if isinstance(payload, DataBatch | Event) and payload.session == g.session:
            g.silent = False
            self._propose_gateway(
                g, Health.ONLINE, f"heard again after {now - g.heard:.1f} s of silence (session {g.session})", now
            )

    def _state(self, g: _Gateway, state: State, now: float) -> None:
        site, gateway = g.site, g.gateway
        if state.online:
            g.session = state.session
            g.keepalive_s = state.keepalive_s
            g.silent = False
            g.heard = now
            announced = {info.id for info in state.devices}
            for gone in sorted((g.announced - announced) & g.devices):
                # Taken out of the agent's config: no verdict any more, and no inactivity clock.
                d = self.devices[gone]
                d.last_seen = None
                self._propose_device(d, Health.UNKNOWN, f"no longer announced by gateway {site}/{gateway}", now)
                g.devices.discard(gone)
                d.owner = None
                self.version += 1
                self.changed_gateways.add(g.key)
            g.announced = announced
            for info in state.devices:
                if self._elsewhere(info.id, g):
                    continue
                d = self._device(info.id, site, gateway)
                d.kind, d.interval_s = info.kind, info.interval_s
                d.last_seen = now  # the inactivity clock starts at the birth
                self._schedule(d)
            self._propose_gateway(g, Health.ONLINE, f"birth (session {state.session})", now)
            return
        if g.session and state.session != g.session:
            return  # a late will of an older connection
        # After a silence (the hub already said offline), the will of that session only confirms it: no change.
        g.silent = False
        why = state.reason or "offline"
        self._propose_gateway(g, Health.OFFLINE, f"gateway death: {why}", now)

    def _data(self, g: _Gateway, batch: DataBatch, now: float) -> None:
        if batch.replay:
            return
        raw = g.machine.raw
        if raw is _OFFLINE:
            return  # data of a session the hub already saw die: late, proves nothing about now
        if raw is not _ONLINE:
            self._propose_gateway(g, Health.ONLINE, "data received (no birth seen)", now)
        wall_ms = int(self._wall() * 1000)
        devices = self.devices
        self._heard.add((g.site, g.gateway))
        for reading in batch.readings:
            d = devices.get(reading.device)
            if d is None or d.owner is not g:
                if self._elsewhere(reading.device, g):
                    continue
                d = self._device(reading.device, g.site, g.gateway)
                d.kind = reading.kind
            d.last_seen = now
            d.last_seen_ms = wall_ms
            if d.due is None:  # else its entry comes first, and finds it was heard since
                self._schedule(d)
            raw = d.machine.raw
            if raw is not _ONLINE and raw is not _DEGRADED:
                self._propose_device(d, Health.ONLINE, "reading received", now)

    def _event(self, g: _Gateway, event: Event, now: float) -> None:
        if self._elsewhere(event.device, g):
            return
        d = self._device(event.device, g.site, g.gateway)
        raw = {
            EventType.DEVICE_DOWN: Health.OFFLINE,
            EventType.DEVICE_UP: Health.ONLINE,
            EventType.DEVICE_DEGRADED: Health.DEGRADED,
        }[event.type]
        if raw is Health.ONLINE:
            d.last_seen = now
        self._propose_device(d, raw, f"{event.type.value}: {event.reason}" if event.reason else event.type.value, now)
        self._schedule(d)

    def _registry_changed(self, devices: list[Device]) -> None:
        for device in devices:
            d = self.devices.get(device.id)
            if d is None:
                if not device.site or not device.gateway:
                    continue
                d = self._device(device.id, device.site, device.gateway)
            elif device.site and device.gateway and (d.site, d.gateway) != (device.site, device.gateway):
                d = self._device(device.id, device.site, device.gateway)  # moved by a technician
            d.inactivity_s = device.inactivity_s
            d.kind = d.kind or device.kind
            if d.interval_s is None:
                d.interval_s = device.interval_s
            self._schedule(d)  # its timeout may be shorter now

    # ------------------------------------------------------------------------------------------ clock

    def inactivity_s(self, d: _Device) -> float | None:
        if d.inactivity_s is not None:
            return d.inactivity_s
        if d.interval_s is None:
            return None
        return d.interval_s * self.policy.inactivity_factor

    def _schedule(self, d: _Device) -> None:
        """Make sure the clock looks at ``d`` when its inactivity timeout runs out (if it has one running)."""
        timeout = self.inactivity_s(d)
        if d.last_seen is None or timeout is None:
            return
        at = d.last_seen + timeout
        if d.due is None or at < d.due:
            d.due = at
            heapq.heappush(self._devices_due, (at, d.order, d.id))

    def _schedule_gateway(self, g: _Gateway, at: float) -> None:
        if g.due is None or at < g.due:
            g.due = at
            heapq.heappush(self._gateways_due, (at, g.order, (g.site, g.gateway)))

    def tick(self) -> None:
        """Inactivity timeouts and the end of flapping.

        The work is what is due (entries of a heap by time, the flapping entities), not every device: the same
        outcomes as a visit of every one, in the order the monitor came to know them."""
        now = self._clock()
        if self._intake_ok is not None:
            try:
                blind = not self._intake_ok()
                self._intake_failing = False
            except Exception:
                if not self._intake_failing:  # once, not 4 times a second
                    self._intake_failing = True
                    log.exception("health: the intake check failed; taking the hub as not hearing until it works")
                blind = True
            if blind:
                self._blind_at = now
        self._next_silence = self._tick_gateways(now)
        self._clear_problems(now)
        self._tick_devices(now)
        self._translog.flush(now)

    def _tick_devices(self, now: float) -> None:
        """Flap ends and inactivity verdicts of the devices due."""
        due: dict[str, _Device] = {}
        heap = self._devices_due
        while heap and heap[0][0] <= now:
            at, _, device_id = heapq.heappop(heap)
            d = self.devices.get(device_id)
            if d is not None and d.due == at:
                d.due = None
                due[device_id] = d
        for device_id in self._flapping_devices:
            due[device_id] = self.devices[device_id]
        for d in sorted(due.values(), key=_order):
            change = d.machine.tick(now)
            if change is not None:
                self._emit_device(d, change.old, change.new, change.reason)
            if not d.machine.flapping:
                self._flapping_devices.discard(d.id)
            if d.last_seen is None or d.machine.raw is Health.OFFLINE or d.machine.raw is Health.UNKNOWN:
                continue  # its clock starts again with its next reading, event or birth
            timeout = self.inactivity_s(d)
            if timeout is None:
                continue
            if now - d.last_seen < timeout:
                self._schedule(d)
                continue
            owner = d.owner
            if owner is not None and owner.machine.raw is not Health.ONLINE:
                d.due = now  # looked at again at the next tick, until its gateway is online or it is not due
                heapq.heappush(heap, (now, d.order, d.id))
                continue
            self._propose_device(
                d, Health.OFFLINE, f"no reading for {now - d.last_seen:.1f} s (timeout {timeout:g} s)", now
            )

    def _tick_gateways(self, now: float) -> float:
        """Flap ends and silence verdicts of the gateways due; the earliest moment one may turn silent next."""
        due: dict[tuple[str, str], _Gateway] = {}
        heap = self._gateways_due
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            g = self._pairs[key]
            if g.due == at:
                g.due = None
                due[key] = g
        for key in self._flapping_gateways:
            due[key] = self._pairs[key]
        for g in sorted(due.values(), key=_order):
            change = g.machine.tick(now)
            if change is not None:
                self._emit_gateway(g, change.old, change.new, change.reason)
            if not g.machine.flapping:
                self._flapping_gateways.discard((g.site, g.gateway))
            promised = g.keepalive_s
            if promised is None or g.machine.raw is not _ONLINE:
                continue  # looked at again when it is online (a birth, or heard again)
            silent_at = max(g.heard, self._blind_at) + SILENCE_FACTOR * promised
            if now < silent_at:
                self._schedule_gateway(g, silent_at)
            else:
                g.silent = True
                self._propose_gateway(
                    g,
                    Health.OFFLINE,
                    f"silent for {now - g.heard:.1f} s: nothing within {SILENCE_FACTOR:g} x the keep-alive of "
                    f"{promised:g} s its birth promised (session {g.session})",
                    now,
                )
        return heap[0][0] if heap else float("inf")

    def _clear_problems(self, now: float) -> None:
        quiet = self.policy.problem_quiet_s
        for key in list(self._with_problems):
            g = self._pairs[key]
            for name, problem in list(g.problems.items()):
                if now - problem.last >= quiet:
                    del g.problems[name]
                    self.version += 1
                    self.changed_gateways.add(g.key)
                    log.info(
                        "gateway %s/%s: problem %s cleared (%d reports, none for %g s)",
                        g.site,
                        g.gateway,
                        name,
                        problem.count,
                        quiet,
                    )
            if not g.problems:
                self._with_problems.discard(key)

    async def run(self) -> None:
        """The clock, until cancelled: every ``tick_s``, and at the earliest moment a gateway may turn silent."""
        while True:
            wait = min(self.policy.tick_s, self._next_silence - self._clock())
            await asyncio.sleep(max(wait, 0.001))
            try:
                self.tick()
            except Exception:
                log.exception("health: the clock failed; continuing")

    # ------------------------------------------------------------------------------------------ output

    def _propose_gateway(self, g: _Gateway, raw: Health, reason: str, now: float) -> None:
        change = g.machine.propose(raw, reason, now)
        if g.machine.flapping:
            self._flapping_gateways.add((g.site, g.gateway))
        if raw is _ONLINE and g.keepalive_s is not None:
            self._schedule_gateway(g, max(g.heard, self._blind_at) + SILENCE_FACTOR * g.keepalive_s)
        if change is not None:
            self._emit_gateway(g, change.old, change.new, change.reason)
        if raw is Health.OFFLINE and change is not None and change.new is Health.OFFLINE:
            for device_id in sorted(g.devices):
                d = self.devices[device_id]
                self._propose_device(d, Health.UNKNOWN, f"gateway {g.site}/{g.gateway} offline: {reason}", now)

    def _propose_device(self, d: _Device, raw: Health, reason: str, now: float) -> None:
        change = d.machine.propose(raw, reason, now)
        if d.machine.flapping:
            self._flapping_devices.add(d.id)
        if change is not None:
            self._emit_device(d, change.old, change.new, change.reason)

    def _emit_gateway(self, g: _Gateway, old: Health, new: Health, reason: str) -> None:
        self._translog.record("gateway", g.key, old.value, new.value, reason)
        self.changed_gateways.add(g.key)
        self._emit(Transition("gateway", f"{g.site}/{g.gateway}", g.site, g.gateway, "", "", old, new, reason, 0))

    def _emit_device(self, d: _Device, old: Health, new: Health, reason: str) -> None:
        self._translog.record("device", d.id, old.value, new.value, reason)
        self.changed_devices.add(d.id)
        self._emit(Transition("device", d.id, d.site, d.gateway, d.id, d.kind, old, new, reason, 0))

    def _emit(self, transition: Transition) -> None:
        self.version += 1
        stamped = Transition(
            transition.entity,
            transition.key,
            transition.site,
            transition.gateway,
            transition.device,
            transition.kind,
            Health(transition.old).value,
            Health(transition.new).value,
            transition.reason,
            int(self._wall() * 1000),
        )
        for listener in self._listeners:
            try:
                listener(stamped)
            except Exception:
                log.exception("health: a transition listener failed")


def _order(entity: _Device | _Gateway) -> int:
    return entity.order


def _problems(g: _Gateway) -> list[dict[str, Any]]:
    return [
        {"problem": name, "detail": p.detail, "since_ms": p.since_ms, "count": p.count}
        for name, p in sorted(g.problems.items())
    ]
