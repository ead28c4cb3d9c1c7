"""What a gateway may write: the hub's checks on a decoded message before anything of it is stored or observed.

A site box can be captured, so whatever its account publishes is hostile until checked. The contract
(:mod:`wire.v1`) has already checked shapes, sizes and patterns; admission checks what only the hub knows:

- a device belongs to one gateway (the registry's owner, else the first gateway that announced it); births,
  data and events about a device owned by another gateway are refused (``foreign_device``);
- data for a device the gateway's current birth did not announce is refused (``unannounced_device``), and the
  hub asks that gateway for a new birth;
- measurements the hub writes itself cannot be a reading's kind (``hub_owned_kind``), and kinds outside the
  configured set are refused (``unknown_kind``);
- the type of each (kind, metric) is fixed by its first stored value; a value of another type is refused on its
  own (``field_type``), so InfluxDB never refuses a whole batch of other gateways' data for a type conflict;
- timestamps outside [now - max replay age, now + max skew] are refused (``clock_skew``);
- new device ids per gateway are rate-limited (``device_rate``);
- a gateway's own id is its agent's, kind ``agent``: a birth cannot announce a device by that id (``reserved_id``).

Each refusal is reported to the refusal observers (the security alert, the rebirth request, the gateway's
``clock_skew`` health problem) and counted per gateway; the message is dead-lettered with the refusals named,
and what was admitted is stored and observed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import msgspec

from hub.ingest.points import HUB_MEASUREMENTS
from hub.ingest.profile_fields import BOOLEAN, NUMBER, PROFILE_FIELD_TYPES
from wire.v1 import DataBatch, DeviceInfo, Event, MetricValue, Payload, Reading, State


class RefusalReason(StrEnum):
    """Why part of a gateway's message was refused."""

    FOREIGN_DEVICE = "foreign_device"
    UNANNOUNCED_DEVICE = "unannounced_device"
    HUB_OWNED_KIND = "hub_owned_kind"
    UNKNOWN_KIND = "unknown_kind"
    FIELD_TYPE = "field_type"
    CLOCK_SKEW = "clock_skew"
    DEVICE_RATE = "device_rate"
    RESERVED_ID = "reserved_id"
    #: Snapshots (hub/snapshots/intake.py): a device announced with a kind that is not a camera's, bytes that are
    #: not a JPEG of a sane size, more snapshots than a camera's rate.
    NOT_A_CAMERA = "not_a_camera"
    BAD_IMAGE = "bad_image"
    SNAPSHOT_RATE = "snapshot_rate"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused part of a message from ``site``/``gateway``: about ``device`` (``""`` for the gateway)."""

    site: str
    gateway: str
    reason: RefusalReason
    device: str
    detail: str


RefusalObserver = Callable[[Refusal], None]
"""Called once per refusal, in the event loop; must be cheap and must not raise."""


#: The kinds of the device profiles the project ships (devices/profiles/*.yaml; a unit test keeps them equal)
#: and ``agent``, the agent's own figures. A city with custom profiles adds their kinds (``admission.kinds``).
DEFAULT_KINDS: Final = (
    "agent",
    "air_quality",
    "camera",
    "gateway_host",
    "power_meter",
    "sign",
    "water_level",
    "weather",
)
#: The kind of the agent's own readings, published for the gateway's own id (edge/selfmetrics.py).
AGENT_KIND: Final = "agent"
#: (kind, metric) pairs whose type is remembered; past it a new pair is refused (memory stays bounded).
MAX_FIELD_TYPES: Final = 100_000

#: The field type a value is written as (hub.ingest.points writes every number as a float).
STRING: Final = "string"
_TYPE_OF: Final[dict[type, str]] = {float: NUMBER, int: NUMBER, bool: BOOLEAN, str: STRING}
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    """The bounds admission enforces (``admission`` settings)."""

    kinds: frozenset[str] = frozenset(DEFAULT_KINDS)
    #: Oldest timestamp accepted: the longest an agent may hold readings and replay them late.
    max_replay_age_s: float = 30 * 86_400
    #: Newest timestamp accepted, ahead of the hub's clock.
    max_clock_skew_s: float = 300
    #: New device ids a gateway may announce at once, and how many more a minute after that.
    new_devices_burst: int = 4096
    new_devices_per_minute: float = 6.0
    #: Field types already fixed, ``(measurement, field) -> "float" | "boolean" | "string"`` (InfluxDB's own words,
    #: as ``SHOW FIELD KEYS`` gives them; an ``integer`` field is taken as a float one's rival and refused): the
    #: shipped profiles' by default, and at start those InfluxDB already holds (the profiles' win).
    field_types: Mapping[tuple[str, str], str] = field(default_factory=lambda: PROFILE_FIELD_TYPES)

    def __post_init__(self) -> None:
        owned = sorted(self.kinds & HUB_MEASUREMENTS)
        if owned:
            raise ValueError(
                f"kinds {', '.join(owned)} are measurements the hub writes itself; a gateway cannot own them"
            )


@dataclass(slots=True)
class _Gateway:
    """What one gateway may write now."""

    #: device -> the kind its birth announced; None: no birth seen since the hub started, the registry's
    #: owned devices stand in for it (any allowed kind).
    allowed: dict[str, str | None] | None = None
    birth_seen: bool = False
    tokens: float = 0.0
    refilled: float = 0.0


class _Refusals:
    """The refusals of one message, one per (reason, device), with the first detail and a count."""

    __slots__ = ("found", "gateway", "site")

    def __init__(self, site: str, gateway: str) -> None:
        self.site = site
        self.gateway = gateway
        self.found: dict[tuple[RefusalReason, str], tuple[str, int]] = {}

    def add(self, reason: RefusalReason, device: str, detail: str) -> None:
        key = (reason, device)
        known = self.found.get(key)
        self.found[key] = (detail, 1) if known is None else (known[0], known[1] + 1)

    def done(self) -> list[Refusal]:
        return [
            Refusal(self.site, self.gateway, reason, device, detail if n == 1 else f"{detail} (and {n - 1} more)")
            for (reason, device), (detail, n) in self.found.items()
        ]


def describe(refusals: Collection[Refusal]) -> str:
    """One line for a dead letter: every refusal of a message, by reason."""
    return "; ".join(f"{r.reason.value} {r.device or r.gateway}: {r.detail}" for r in refusals)


class Admission:
    """The checks of the module doc, for every gateway, in the event loop (no locking).

    ``data``, ``state`` and ``event`` return what may be stored and observed (None or the same object when nothing
    or everything is admitted) and the refusals. A gateway's usual traffic takes one dictionary lookup per reading
    and one per metric; everything else goes through a slower path that names what it refuses.
    """

    def __init__(self, rules: AdmissionRules | None = None, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules or AdmissionRules()
        self._clock = clock
        self._kinds = self.rules.kinds
        self._owners: dict[str, tuple[str, str]] = {}
        self._owned_by: dict[tuple[str, str], set[str]] = {}
        self._gateways: dict[tuple[str, str], _Gateway] = {}
        #: device -> the gateways with a birth seen whose ``allowed`` holds it: those an owner change may concern.
        self._holders: dict[str, set[tuple[str, str]]] = {}
        #: kind -> metric -> field type
        self._types: dict[str, dict[str, str]] = {}
        self._type_count = 0
        for (kind, metric), kind_of_field in self.rules.field_types.items():
            self._learn_type(kind, metric, NUMBER if kind_of_field == "integer" else kind_of_field)
        self._max_replay_ms = int(self.rules.max_replay_age_s * 1000)
        self._max_skew_ms = int(self.rules.max_clock_skew_s * 1000)
        self._refill_per_s = self.rules.new_devices_per_minute / 60
        #: (site, gateway, reason) -> refusals since the hub started
        self.refused: Counter[tuple[str, str, str]] = Counter()

    # ------------------------------------------------------------------------------------------ owners

    def set_owners(self, owners: Mapping[str, tuple[str, str]]) -> None:
        """Replace the map ``device -> (site, gateway)`` of the registry (its owners, inventory first).

        A device a gateway's birth announced but another gateway owns now is no longer that gateway's to write.
        Its cost grows with every device and gateway: at start; :meth:`update_owners` for a change.
        """
        self._owners = dict(owners)
        owned_by: dict[tuple[str, str], set[str]] = {}
        for device, owner in self._owners.items():
            owned_by.setdefault(owner, set()).add(device)
        self._owned_by = owned_by
        for key, gate in self._gateways.items():
            if not gate.birth_seen:
                gate.allowed = None  # rebuilt from the new owners on first use
            elif gate.allowed is not None:
                for device in [d for d in gate.allowed if self._owners.get(d, key) != key and d != key[1]]:
                    self._disallow(key, gate.allowed, device)

    def update_owners(self, changes: Mapping[str, tuple[str, str] | None]) -> None:
        """Apply the registry's owner changes ``device -> (site, gateway)`` (None: it has no owner any more).

        The same outcome as :meth:`set_owners` with the whole map changed so, at a cost that grows with the
        changes alone: a birth or a move touches its few devices, not the city's (a birth storm of thousands of
        gateways would otherwise cost the square of their devices)."""
        for device, owner in changes.items():
            before = self._owners.get(device)
            if owner != before:
                self._move_owner(device, before, owner)
            if owner is None:
                continue  # no owner: no gateway loses it
            for key in [k for k in self._holders.get(device, ()) if k != owner and device != k[1]]:
                allowed = self._gateways[key].allowed
                assert allowed is not None
                self._disallow(key, allowed, device)

    def _move_owner(self, device: str, before: tuple[str, str] | None, owner: tuple[str, str] | None) -> None:
        if before is not None:
            left = self._owned_by.get(before)
            if left is not None:
                left.discard(device)
                if not left:
                    del self._owned_by[before]
        if owner is None:
            del self._owners[device]
        else:
            self._owners[device] = owner
            self._owned_by.setdefault(owner, set()).add(device)
        for key in (before, owner):
            gate = self._gateways.get(key) if key is not None else None
            if gate is not None and not gate.birth_seen:
                gate.allowed = None  # rebuilt from the new owners on first use

    def _disallow(self, key: tuple[str, str], allowed: dict[str, str | None], device: str) -> None:
        del allowed[device]
        holders = self._holders.get(device)
        if holders is not None:
            holders.discard(key)
            if not holders:
                del self._holders[device]

    def owner(self, device: str) -> tuple[str, str] | None:
        return self._owners.get(device)

    def birth_seen(self, site: str, gateway: str) -> bool:
        """Whether a birth of ``site``/``gateway`` was seen since the hub started."""
        gate = self._gateways.get((site, gateway))
        return gate is not None and gate.birth_seen

    def announced_kind(self, site: str, gateway: str, device: str) -> str | None:
        """The kind ``device`` has in ``site``/``gateway``'s current birth; None when that birth did not announce
        it, when no birth of that gateway was seen since the hub started, or for the gateway's own id."""
        gate = self._gateways.get((site, gateway))
        if gate is None or not gate.birth_seen or gate.allowed is None or device == gateway:
            return None
        return gate.allowed.get(device)

    def _gate(self, site: str, gateway: str) -> _Gateway:
        key = (site, gateway)
        gate = self._gateways.get(key)
        if gate is None:
            gate = self._gateways[key] = _Gateway(tokens=float(self.rules.new_devices_burst), refilled=self._clock())
        if gate.allowed is None:
            allowed: dict[str, str | None] = dict.fromkeys(self._owned_by.get(key, ()))
            allowed[gateway] = AGENT_KIND
            gate.allowed = allowed
        return gate

    def _claim(self, site: str, gateway: str, device: str) -> None:
        """The first gateway to announce a device no one owns owns it (the registry records it next)."""
        self._owners[device] = (site, gateway)
        self._owned_by.setdefault((site, gateway), set()).add(device)

    def _take_new_device(self, gate: _Gateway) -> bool:
        now = self._clock()
        gate.tokens = min(float(self.rules.new_devices_burst), gate.tokens + (now - gate.refilled) * self._refill_per_s)
        gate.refilled = now
        if gate.tokens < 1:
            return False
        gate.tokens -= 1
        return True

    # ------------------------------------------------------------------------------------------ payloads

    def admit(self, site: str, gateway: str, payload: Payload) -> tuple[Payload | None, list[Refusal]]:
        """What of a decoded message the gateway may write (None: nothing), and the refusals: births, data and
        events are checked; other channels pass as they are."""
        if isinstance(payload, DataBatch):
            return self.data(site, gateway, payload)
        if isinstance(payload, State):
            return self.state(site, gateway, payload)
        if isinstance(payload, Event):
            refusals = self.event(site, gateway, payload)
            return (None if refusals else payload), refusals
        return payload, []

    def data(self, site: str, gateway: str, batch: DataBatch) -> tuple[DataBatch | None, list[Refusal]]:
        """The readings ``site``/``gateway`` may write (``batch`` itself when all), and the refusals."""
        gate = self._gate(site, gateway)
        allowed = gate.allowed
        assert allowed is not None
        now_ms = int(self._clock() * 1000)
        oldest, newest = now_ms - self._max_replay_ms, now_ms + self._max_skew_ms
        types = self._types
        type_of = _TYPE_OF
        for reading in batch.readings:
            announced = allowed.get(reading.device, _MISSING)
            if announced is _MISSING or (announced is not None and announced != reading.kind):
                break
            if not oldest <= reading.ts <= newest:
                break
            known = types.get(reading.kind)
            if known is None:
                break
            for name, value in reading.metrics.items():
                if known.get(name) != type_of.get(value.__class__):
                    break
            else:
                continue
            break
        else:
            return batch, []
        return self._data_slow(_Refusals(site, gateway), gate, batch, (oldest, newest))

    def _data_slow(
        self, refusals: _Refusals, gate: _Gateway, batch: DataBatch, window: tuple[int, int]
    ) -> tuple[DataBatch | None, list[Refusal]]:
        oldest, newest = window
        kept: list[Reading] = []
        for reading in batch.readings:
            if not self._device_may_write(refusals, gate, reading.device, reading.kind):
                continue
            if not oldest <= reading.ts <= newest:
                refusals.add(RefusalReason.CLOCK_SKEW, reading.device, _skew_detail(reading.ts, oldest, newest))
                continue
            metrics = self._typed_metrics(reading, refusals)
            if len(metrics) == len(reading.metrics):
                kept.append(reading)
            elif metrics:
                kept.append(msgspec.structs.replace(reading, metrics=metrics))
        found = self._report(refusals)
        if not kept:
            return None, found
        return msgspec.structs.replace(batch, readings=kept), found

    def _device_may_write(self, refusals: _Refusals, gate: _Gateway, device: str, kind: str) -> bool:
        site, gateway = refusals.site, refusals.gateway
        if kind in HUB_MEASUREMENTS:
            refusals.add(RefusalReason.HUB_OWNED_KIND, device, f"kind {kind!r} is a measurement the hub writes")
            return False
        if kind not in self._kinds:
            refusals.add(RefusalReason.UNKNOWN_KIND, device, f"kind {kind!r} is not one of admission.kinds")
            return False
        owner = self._owners.get(device)
        if owner is not None and owner != (site, gateway) and not (device == gateway and kind == AGENT_KIND):
            refusals.add(RefusalReason.FOREIGN_DEVICE, device, f"device {device!r} belongs to {owner[0]}/{owner[1]}")
            return False
        assert gate.allowed is not None
        announced = gate.allowed.get(device, _MISSING)
        if announced is _MISSING:
            what = "the gateway's birth" if gate.birth_seen else "the gateway's devices (no birth yet)"
            refusals.add(RefusalReason.UNANNOUNCED_DEVICE, device, f"device {device!r} is not in {what}")
            return False
        if announced is not None and announced != kind:
            refusals.add(
                RefusalReason.UNANNOUNCED_DEVICE, device, f"kind {kind!r}, but the birth announced {announced!r}"
            )
            return False
        return True

    def _typed_metrics(self, reading: Reading, refusals: _Refusals) -> dict[str, MetricValue]:
        known = self._types.get(reading.kind)
        metrics: dict[str, MetricValue] = {}
        for name, value in reading.metrics.items():
            kind_of_value = _TYPE_OF[value.__class__]
            fixed = known.get(name) if known is not None else None
            if fixed is None:
                if not self._learn_type(reading.kind, name, kind_of_value):
                    refusals.add(
                        RefusalReason.FIELD_TYPE, reading.device, f"{MAX_FIELD_TYPES} fields known: {name!r} refused"
                    )
                    continue
                known = self._types[reading.kind]
            elif fixed != kind_of_value:
                refusals.add(
                    RefusalReason.FIELD_TYPE,
                    reading.device,
                    f"{reading.kind}.{name} is a {fixed} field, got a {kind_of_value}",
                )
                continue
            metrics[name] = value
        return metrics

    def _learn_type(self, kind: str, metric: str, kind_of_value: str) -> bool:
        if self._type_count >= MAX_FIELD_TYPES:
            return False
        self._types.setdefault(kind, {})[metric] = kind_of_value
        self._type_count += 1
        return True

    def state(self, site: str, gateway: str, state: State) -> tuple[State, list[Refusal]]:
        """The birth with only the devices the gateway may announce (its new announced set), or the death."""
        refusals = _Refusals(site, gateway)
        if state.ts is not None:
            # Only a time ahead is a skew: a retained birth replayed to a hub that subscribes is as old as the
            # gateway's session, which may be months.
            newest = int(self._clock() * 1000) + self._max_skew_ms
            if state.ts > newest:
                refusals.add(RefusalReason.CLOCK_SKEW, "", _skew_detail(state.ts, 0, newest))
                state = msgspec.structs.replace(state, ts=None)  # stored at its arrival instead
        if not state.online:
            return state, self._report(refusals)
        gate = self._gate(site, gateway)
        previous = gate.allowed or {}
        kept: list[DeviceInfo] = []
        allowed: dict[str, str | None] = {gateway: AGENT_KIND}
        for info in state.devices:
            if info.id == gateway:
                refusals.add(RefusalReason.RESERVED_ID, info.id, f"{info.id!r} is the gateway's own id, its agent's")
                continue
            if info.id in allowed:
                continue  # announced twice in one birth: the first stands
            if info.kind in HUB_MEASUREMENTS or info.kind not in self._kinds:
                reason = RefusalReason.HUB_OWNED_KIND if info.kind in HUB_MEASUREMENTS else RefusalReason.UNKNOWN_KIND
                refusals.add(reason, info.id, f"kind {info.kind!r} may not be announced")
                continue
            owner = self._owners.get(info.id)
            if owner is not None and owner != (site, gateway):
                refusals.add(
                    RefusalReason.FOREIGN_DEVICE, info.id, f"device {info.id!r} belongs to {owner[0]}/{owner[1]}"
                )
                continue
            if owner is None and info.id not in previous:
                if not self._take_new_device(gate):
                    refusals.add(
                        RefusalReason.DEVICE_RATE,
                        info.id,
                        f"more than {self.rules.new_devices_burst} new devices, "
                        f"then {self.rules.new_devices_per_minute:g} a minute (admission.new_devices_*)",
                    )
                    continue
                self._claim(site, gateway, info.id)
            allowed[info.id] = info.kind
            kept.append(info)
        self._hold((site, gateway), previous if gate.birth_seen else {}, allowed)
        gate.allowed = allowed
        gate.birth_seen = True
        found = self._report(refusals)
        if len(kept) != len(state.devices):
            state = msgspec.structs.replace(state, devices=kept)
        return state, found

    def _hold(self, key: tuple[str, str], before: Mapping[str, object], after: Mapping[str, object]) -> None:
        """Keep :attr:`_holders` true for a gateway whose allowed devices go from ``before`` to ``after``."""
        for device in before.keys() - after.keys():
            holders = self._holders.get(device)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self._holders[device]
        for device in after.keys() - before.keys():
            self._holders.setdefault(device, set()).add(key)

    def event(self, site: str, gateway: str, event: Event) -> list[Refusal]:
        """Why ``event`` may not be stored or observed (empty: it may)."""
        gate = self._gate(site, gateway)
        assert gate.allowed is not None
        refusals = _Refusals(site, gateway)
        owner = self._owners.get(event.device)
        if owner is not None and owner != (site, gateway):
            refusals.add(
                RefusalReason.FOREIGN_DEVICE, event.device, f"device {event.device!r} belongs to {owner[0]}/{owner[1]}"
            )
        elif event.device not in gate.allowed:
            refusals.add(RefusalReason.UNANNOUNCED_DEVICE, event.device, f"device {event.device!r} is not announced")
        else:
            now_ms = int(self._clock() * 1000)
            oldest, newest = now_ms - self._max_replay_ms, now_ms + self._max_skew_ms
            if not oldest <= event.ts <= newest:
                refusals.add(RefusalReason.CLOCK_SKEW, event.device, _skew_detail(event.ts, oldest, newest))
        return self._report(refusals)

    def _report(self, refusals: _Refusals) -> list[Refusal]:
        found = refusals.done()
        for refusal in found:
            self.refused[(refusal.site, refusal.gateway, refusal.reason.value)] += 1
        return found

    def refusals_by_gateway(self) -> dict[str, dict[str, int]]:
        """``{"site/gateway": {reason: count}}`` since the hub started."""
        result: dict[str, dict[str, int]] = {}
        for (site, gateway, reason), count in sorted(self.refused.items()):
            result.setdefault(f"{site}/{gateway}", {})[reason] = count
        return result


def _skew_detail(ts: int, oldest: int, newest: int) -> str:
    if ts > newest:
        return f"timestamp {ts} is {(ts - newest + 1) // 1000 + 1} s beyond the allowed clock skew"
    return f"timestamp {ts} is older than the longest replay allowed (admission.max_replay_age_s)"
