"""The observer feed: every gateway's messages, decoded, to the operations side, without storing them.

With several hubs on one shared subscription each stores a part, so no hub's share shows the whole city. The
one hub configured ``mqtt.observe: all`` opens a second, unshared MQTT connection (QoS 0, no session:
:class:`~hub.mqtt.intake.MqttIntake` with ``observer=True``) and :class:`ObserverFeed` turns what it brings into the
same ``(site, gateway, payload)`` calls the pipeline makes in the single-hub case. Nothing here is acknowledged
or stored: a message this feed misses (the hub restarting, a QoS 0 drop by the broker under load) is not lost,
since the storing subscription has it; health and alerts judge on the next one, and births are retained.

A payload that does not decode is counted and skipped here: the hub whose share brings it quarantines it.
What a gateway may not write (:mod:`hub.ingest.admission`) is left out of what the observers see, exactly as
the pipeline leaves it out, and the refusals go to this feed's refusal observers (the operations side's security
alerts, rebirth requests and clock problems; the storing hubs only count theirs).
"""

from __future__ import annotations

import asyncio
import logging

from hub.ingest.admission import Admission, RefusalObserver
from hub.ingest.decode import DataDecoder
from hub.ingest.messages import InboundMessage, MessageSource, Observer
from wire.v1 import Channel, ContractError, Payload, Topic, decode_for, parse_topic

log = logging.getLogger("hub.ingest.observe")

#: Parsed topics kept (cleared when full; a few per gateway).
_TOPIC_CACHE_SIZE = 10_000


class ObserverFeed:
    """``await run()``: take messages from ``queue`` until cancelled, decode them, call every observer."""

    def __init__(
        self, queue: MessageSource, observers: list[Observer] | None = None, admission: Admission | None = None
    ) -> None:
        self._queue = queue
        self._observers: tuple[Observer, ...] = tuple(observers or ())
        self.admission = admission
        self._refusal_observers: tuple[RefusalObserver, ...] = ()
        self._decoder = DataDecoder()
        self._topics: dict[str, Topic] = {}
        self._failures: set[tuple[int, type[BaseException]]] = set()
        self.counters: dict[str, int] = {
            "received": 0,
            "observed": 0,
            "undecodable": 0,
            "refused": 0,
            "observer_errors": 0,
        }

    def add_observer(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)

    def add_refusal_observer(self, observer: RefusalObserver) -> None:
        self._refusal_observers = (*self._refusal_observers, observer)

    async def run(self) -> None:
        queue = self._queue
        handle = self.handle
        while True:
            handle(await queue.get())
            # Everything already handed over, without a trip through the loop per message.
            while True:
                try:
                    message = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                handle(message)

    def handle(self, message: InboundMessage) -> None:
        """Decode one message and call the observers with it; never raises."""
        self.counters["received"] += 1
        payload, topic = self._decode(message)
        if payload is None or topic is None:
            self.counters["undecodable"] += 1
            return
        if self.admission is not None:
            payload = self._admit(topic, payload)
            if payload is None:
                self.counters["refused"] += 1
                return
        self.counters["observed"] += 1
        for observer in self._observers:
            try:
                observer(topic.site, topic.gateway, payload)
            except Exception as exc:
                self.counters["observer_errors"] += 1
                key = (id(observer), type(exc))
                if key not in self._failures:
                    self._failures.add(key)
                    log.exception(
                        "observer %r failed on a message of %s/%s (logged once per observer and error type)",
                        observer,
                        topic.site,
                        topic.gateway,
                    )

    def _admit(self, topic: Topic, payload: Payload) -> Payload | None:
        admission = self.admission
        assert admission is not None
        admitted, refusals = admission.admit(topic.site, topic.gateway, payload)
        for observer in self._refusal_observers:
            for refusal in refusals:
                try:
                    observer(refusal)
                except Exception as exc:
                    self.counters["observer_errors"] += 1
                    key = (id(observer), type(exc))
                    if key not in self._failures:
                        self._failures.add(key)
                        log.exception("refusal observer %r failed (logged once per observer and error type)", observer)
        return admitted

    def _decode(self, message: InboundMessage) -> tuple[Payload | None, Topic | None]:
        topic = self._topics.get(message.topic)
        try:
            if topic is None:
                topic = parse_topic(message.topic)
                if len(self._topics) >= _TOPIC_CACHE_SIZE:
                    self._topics.clear()
                self._topics[message.topic] = topic
            if topic.channel is Channel.DATA:
                return self._decoder.decode(message.payload), topic
            return decode_for(topic.channel, message.payload), topic
        except ContractError:
            return None, topic
