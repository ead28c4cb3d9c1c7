"""Security alerts: what the ingest admission refused of a gateway's input, as alerts operators and webhooks see.

A site box can be captured; a gateway that writes about another gateway's devices (``foreign_device``), into a
measurement the hub owns (``hub_owned_kind``), with kinds the hub does not know (``unknown_kind``), values of
another type than a field holds (``field_type``), new device ids faster than allowed (``device_rate``) or under
its own id (``reserved_id``) is one to look at. So is one whose camera snapshots (hub/snapshots/intake.py) come
from a device it announced as no camera (``not_a_camera``), are not a sane JPEG (``bad_image``) or come faster
than a camera's rate (``snapshot_rate``): garbage pictures or a flood of them. :meth:`SecurityAlerts.observe` is a
refusal observer (hub.ingest.admission):

- **one open alert per (gateway, reason)**: rule ``security-<reason>`` (``security-foreign-device``...), subject
  ``site/gateway``, opened at the first refusal; repeats are counted in memory and the alert's ``value`` and
  message are refreshed at most every ``update_s`` (a flood of refusals is never a flood of database writes,
  alerts or webhook calls);
- it **resolves** after ``quiet_s`` without such a refusal, with the total in its resolution; an operator may
  resolve it by hand, and the next refusal opens a new one;
- every refusal, of any reason, is **counted per gateway** (:meth:`SecurityAlerts.counts`, shown with the
  gateway in ``GET /api/v1/gateways``).

Open security alerts left by a previous run are taken over at start and resolve after ``quiet_s`` like the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hub.alerts.engine import AlertEngine
from hub.alerts.store import AlertStore
from hub.ingest.admission import Refusal, RefusalReason

log = logging.getLogger(__name__)

#: The refusals that raise an alert, and its severity. (``unannounced_device`` asks for a rebirth and
#: ``clock_skew`` is a health problem of the gateway: both happen to honest gateways too.)
#:
#: The snapshot refusals: our agent sends only the JPEGs ffmpeg wrote for a camera driver's image check, so
#: ``bad_image`` (bytes that are no JPEG of a sane size: crafted bytes probing the picture readers behind the
#: hub, or a broken agent) and ``not_a_camera`` (pictures credited to a device the gateway itself
#: announced as something else; a city's camera kind missing from ``snapshots.kinds`` looks the same, as a kind
#: missing from ``admission.kinds`` does for ``unknown_kind``) are ``major``, like the other refusals of what no
#: honest agent writes. ``snapshot_rate`` is a ``warning``: the refusal itself bounds what a flood costs (nothing
#: is written), and an honest agent trips it too when a camera's image checks are set closer than the hub's rate
#: (an agent sends at most one snapshot per check; the default ``snapshots.max_per_minute`` 1 is the ceiling of
#: checks at least ``image_confirm_s`` 60 s apart); it is still raised, so a flood is seen.
SEVERITIES: Final[dict[RefusalReason, str]] = {
    RefusalReason.FOREIGN_DEVICE: "critical",
    RefusalReason.HUB_OWNED_KIND: "critical",
    RefusalReason.UNKNOWN_KIND: "major",
    RefusalReason.FIELD_TYPE: "major",
    RefusalReason.DEVICE_RATE: "major",
    RefusalReason.RESERVED_ID: "major",
    RefusalReason.NOT_A_CAMERA: "major",
    RefusalReason.BAD_IMAGE: "major",
    RefusalReason.SNAPSHOT_RATE: "warning",
}
RULE_PREFIX: Final = "security-"
#: How often the clock looks for quiet alerts and counts to refresh.
TICK_S: Final = 1.0
#: The open alert's count and message are written at most this often.
UPDATE_S: Final = 10.0

_WHAT: Final[dict[RefusalReason, str]] = {
    RefusalReason.FOREIGN_DEVICE: "wrote about devices of another gateway",
    RefusalReason.HUB_OWNED_KIND: "wrote into a measurement the hub owns",
    RefusalReason.UNKNOWN_KIND: "wrote readings of a kind the hub does not know",
    RefusalReason.FIELD_TYPE: "wrote values of another type than their fields hold",
    RefusalReason.DEVICE_RATE: "announced new device ids faster than allowed",
    RefusalReason.RESERVED_ID: "announced a device under the gateway's own id",
    RefusalReason.NOT_A_CAMERA: "sent snapshots of a device it announced as no camera",
    RefusalReason.BAD_IMAGE: "sent snapshots that are not a JPEG of a sane picture size",
    RefusalReason.SNAPSHOT_RATE: "sent snapshots of a camera faster than allowed",
}


def rule_id(reason: RefusalReason) -> str:
    """``security-foreign-device`` for ``foreign_device`` (rule ids are IDs: no ``_``)."""
    return RULE_PREFIX + reason.value.replace("_", "-")


_REASON_OF_RULE: Final = {rule_id(reason): reason for reason in SEVERITIES}


@dataclass(slots=True)
class _Open:
    site: str
    gateway: str
    reason: RefusalReason
    count: int
    last: float
    """Monotonic time of the last refusal."""
    detail: str
    written: int
    """The count the alert row holds."""
    written_at: float


class SecurityAlerts:
    """``observe`` is the refusal observer; ``run`` the clock that refreshes counts and resolves quiet alerts."""

    def __init__(
        self,
        engine: AlertEngine,
        *,
        quiet_s: float,
        update_s: float = UPDATE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._quiet_s = quiet_s
        self._update_s = update_s
        self._clock = clock
        self._open: dict[tuple[str, RefusalReason], _Open] = {}
        self._counts: dict[str, Counter[str]] = {}
        #: The gateways (``site/gateway``) whose counts changed since the API's kept gateway list last took them
        #: (:meth:`take_changed`).
        self.changed: set[str] = set()

    def counts(self, site: str, gateway: str) -> dict[str, int]:
        """Refusals of the gateway since the hub started, by reason."""
        return dict(self._counts.get(f"{site}/{gateway}", {}))

    def take_changed(self) -> set[str]:
        """The gateways whose counts changed since the last call (one reader: ``hub/routes/sites.py``)."""
        changed, self.changed = self.changed, set()
        return changed

    def observe(self, refusal: Refusal) -> None:
        """The refusal observer: count it; raise or count into the (gateway, reason) alert."""
        subject = f"{refusal.site}/{refusal.gateway}"
        counts = self._counts.get(subject)
        if counts is None:
            counts = self._counts[subject] = Counter()
        counts[refusal.reason.value] += 1
        self.changed.add(subject)
        severity = SEVERITIES.get(refusal.reason)
        if severity is None:
            return
        now = self._clock()
        key = (subject, refusal.reason)
        found = self._open.get(key)
        if found is not None and self._engine.is_open(subject, rule_id(refusal.reason)):
            found.count += 1
            found.last, found.detail = now, refusal.detail
            return
        # The first refusal, or the first after an operator resolved the alert by hand: a new alert.
        self._open[key] = _Open(refusal.site, refusal.gateway, refusal.reason, 1, now, refusal.detail, 1, now)
        self._engine.raise_alert(
            subject,
            rule_id(refusal.reason),
            subject_type="gateway",
            site=refusal.site,
            gateway=refusal.gateway,
            severity=severity,
            message=_message(refusal.reason, subject, 1, refusal.detail),
            value=1.0,
        )

    def tick(self) -> None:
        now = self._clock()
        for key, found in list(self._open.items()):
            subject, rule = key[0], rule_id(found.reason)
            if not self._engine.is_open(subject, rule):
                continue  # resolved by an operator; the next refusal opens a new alert
            if now - found.last >= self._quiet_s:
                del self._open[key]
                why = f"no {found.reason.value} refusal for {self._quiet_s:g} s ({found.count} in all)"
                log.info("security alert %s %s resolved: %s", rule, subject, why)
                self._engine.resolve_alert(subject, rule, why)
            elif found.count != found.written and now - found.written_at >= self._update_s:
                found.written, found.written_at = found.count, now
                message = _message(found.reason, subject, found.count, found.detail)
                self._engine.update_alert(subject, rule, value=float(found.count), message=message)

    async def load(self, store: AlertStore) -> None:
        """Take over the security alerts a previous run left open: they resolve after ``quiet_s`` from now."""
        now = self._clock()
        for alert in await store.open_alerts():
            reason = _REASON_OF_RULE.get(alert["rule"])
            if reason is None:
                continue
            count = int(alert["value"] or 1)
            found = _Open(alert["site"], alert["gateway"], reason, count, now, "", count, now)
            self._open[(alert["subject"], reason)] = found

    async def run(self) -> None:
        """The clock, until cancelled."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:
                log.exception("security alerts: the clock failed; continuing")


def _message(reason: RefusalReason, subject: str, count: int, detail: str) -> str:
    times = "once" if count == 1 else f"{count} times"
    return f"gateway {subject} {_WHAT[reason]} ({reason.value}, refused {times}); last: {detail}"
