"""What a gateway may send as a snapshot, checked before anything is written (the pipeline's snapshot hook).

A site box can be captured, so a snapshot is hostile until checked. The contract has bounded its size
(``wire.v1.MAX_SNAPSHOT_BYTES``), its ids and its time range; here, in this order:

- the camera belongs to another gateway: ``foreign_device``;
- the gateway's current birth did not announce it: ``unannounced_device`` (the hub asks that gateway for a new
  birth, as for data). Until the hub has seen a birth of the gateway since it started, a camera the registry
  gives that gateway is judged by the kind the registry recorded (its last birth or the inventory), as data is
  admitted for the devices the registry gives it: after a hub restart the broker delivers what the hub's session
  queued while it was away before the retained births (they come with the subscription), and a city's
  snapshots of that time would otherwise all be refused and raise security alerts;
- it was announced (or, before a birth, recorded) with a kind that is not a camera's (``snapshots.kinds``):
  ``not_a_camera``;
- ``ts`` outside the window readings are held to (``admission.max_replay_age_s`` back,
  ``admission.max_clock_skew_s`` ahead): ``clock_skew``;
- the bytes are not a JPEG whose frame header gives a sane picture size (hub/snapshots/jpeg.py): ``bad_image``;
- more than the camera's rate (a token bucket: ``snapshots.burst`` at once, then ``snapshots.max_per_minute``):
  ``snapshot_rate``. Only snapshots that passed every other check take a token.

A refusal is counted per gateway and reason with admission's own refusals (``refusals_by_gateway`` in the
hub's status), reported to the refusal observers and dead-lettered with its reason, like a refused reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hub.ingest.admission import Admission, Refusal, RefusalReason
from hub.snapshots.jpeg import MAX_SIDE, MIN_SIDE, JpegInfo, NotAJpeg, jpeg_info
from hub.snapshots.store import SnapshotStore, StoredSnapshot
from wire.v1 import Snapshot

#: Cameras whose rate is remembered; past it the bucket of the longest-idle half is forgotten (it refills anyway).
_MAX_BUCKETS: Final = 100_000


@dataclass(frozen=True, slots=True)
class SnapshotRules:
    """The bounds of the snapshot intake (``snapshots`` settings)."""

    kinds: frozenset[str] = frozenset({"camera"})
    burst: int = 10
    max_per_minute: float = 1.0
    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE


class _Refused(Exception):
    """Why a snapshot is refused, raised by the checks below and caught in :meth:`SnapshotIntake.take`."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled: float


class SnapshotIntake:
    """:meth:`take` checks one decoded snapshot and queues it for the store; on the event loop, no locking."""

    def __init__(
        self,
        admission: Admission,
        store: SnapshotStore,
        rules: SnapshotRules | None = None,
        clock: Callable[[], float] = time.time,
        registry_kind: Callable[[str], str | None] = lambda _device: None,
    ) -> None:
        """``registry_kind``: the kind the registry recorded for a device (None: unknown), for gateways without a
        birth since the hub started (the module docstring)."""
        self.admission = admission
        self._registry_kind = registry_kind
        self.store = store
        self.rules = rules or SnapshotRules()
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._refill_per_s = self.rules.max_per_minute / 60

    def take(self, site: str, gateway: str, snap: Snapshot) -> list[Refusal]:
        """Queue ``snap`` to be stored, or say why not (the refusals are counted here)."""
        try:
            self._check_sender(site, gateway, snap.device)
            now = self._clock()
            self._check_time(snap.ts, now)
            info = self._check_image(snap.jpeg)
            self._check_rate(snap.device, now)
        except _Refused as refused:
            self.admission.refused[(site, gateway, refused.reason.value)] += 1
            return [Refusal(site, gateway, refused.reason, snap.device, refused.detail)]
        problems = tuple(sorted(set(snap.problems)))
        stored = StoredSnapshot(
            snap.device, snap.ts, snap.trigger.value, info.width, info.height, len(snap.jpeg), problems
        )
        self.store.put(site, gateway, stored, snap.jpeg)
        return []

    def _check_sender(self, site: str, gateway: str, device: str) -> None:
        admission = self.admission
        owner = admission.owner(device)
        if owner is not None and owner != (site, gateway):
            raise _Refused(RefusalReason.FOREIGN_DEVICE, f"device {device!r} belongs to {owner[0]}/{owner[1]}")
        if admission.birth_seen(site, gateway):
            kind, how = admission.announced_kind(site, gateway, device), "announced"
            if kind is None:
                detail = f"device {device!r} is not in the gateway's current birth"
                raise _Refused(RefusalReason.UNANNOUNCED_DEVICE, detail)
        else:
            kind, how = (self._registry_kind(device) if owner == (site, gateway) else None), "recorded"
            if kind is None:
                detail = f"device {device!r} is not in the gateway's current birth (none seen yet) nor its registry's"
                raise _Refused(RefusalReason.UNANNOUNCED_DEVICE, detail)
        if kind not in self.rules.kinds:
            raise _Refused(RefusalReason.NOT_A_CAMERA, f"device {device!r} was {how} as {kind!r}, not a camera kind")

    def _check_time(self, ts: int, now: float) -> None:
        rules = self.admission.rules
        now_ms = int(now * 1000)
        newest = now_ms + int(rules.max_clock_skew_s * 1000)
        if ts > newest:
            raise _Refused(
                RefusalReason.CLOCK_SKEW,
                f"timestamp {ts} is {(ts - newest) // 1000 + 1} s beyond the allowed clock skew",
            )
        if ts < now_ms - int(rules.max_replay_age_s * 1000):
            raise _Refused(
                RefusalReason.CLOCK_SKEW,
                f"timestamp {ts} is older than the longest replay allowed (admission.max_replay_age_s)",
            )

    def _check_image(self, data: bytes) -> JpegInfo:
        try:
            return jpeg_info(data, self.rules.min_side, self.rules.max_side)
        except NotAJpeg as exc:
            raise _Refused(RefusalReason.BAD_IMAGE, f"{len(data)} bytes: {exc}") from None

    def _check_rate(self, device: str, now: float) -> None:
        if not self._take_token(device, now):
            rules = self.rules
            raise _Refused(
                RefusalReason.SNAPSHOT_RATE,
                f"more than {rules.burst} snapshots at once, then {rules.max_per_minute:g} a minute "
                "(snapshots.burst, snapshots.max_per_minute)",
            )

    def _take_token(self, device: str, now: float) -> bool:
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                idle = sorted(self._buckets, key=lambda d: self._buckets[d].refilled)[: _MAX_BUCKETS // 2]
                for d in idle:
                    del self._buckets[d]
            bucket = self._buckets[device] = _Bucket(float(self.rules.burst), now)
        bucket.tokens = min(
            float(self.rules.burst), bucket.tokens + max(0.0, now - bucket.refilled) * self._refill_per_s
        )
        bucket.refilled = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
