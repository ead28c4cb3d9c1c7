"""The intake: :class:`MqttIntake` subscribes to the v1 topics and hands what arrives over unacknowledged, to the
lanes (:class:`hub.ingest.lanes.FairQueue`) or, on an observer connection, to an :class:`IntakeQueue`; a QoS 1
message is acknowledged only when the pipeline asks (once its lines are stored).

- CONNECT with clean start off, a Session Expiry Interval and a stable client id: while the hub is away the
  broker keeps the subscriptions and every unacknowledged message, and redelivers them on reconnect.
- Back-pressure instead of drops: the CONNECT's Receive Maximum is the hub's capacity (pending cap + queue
  size), so the broker stops sending once that many QoS 1 messages are unacknowledged and keeps the rest in the
  hub's session; and the transport stops reading while the lanes (:class:`hub.ingest.lanes.FairQueue`, or an
  observer's :class:`IntakeQueue`) are full (QoS 0 is outside Receive Maximum). The lanes keep the broker's
  queue short even while one gateway sends more than the hub stores: that gateway's excess goes to its overflow
  file, acknowledged once on disk.
- Every complete packet of a read (up to 4 MiB) is parsed in one pass and handed to the queue at once; the
  pipeline's PUBACKs are collected and written with one ``write`` per turn of the loop. A packet split over many
  reads is buffered in time linear in its size (:class:`~hub.mqtt.codec.PacketReader`).
- Bounded by bytes: the CONNECT's Maximum Packet Size is :data:`~hub.mqtt.codec.MAX_PACKET_BYTES` (the contract's
  largest message, :data:`wire.v1.MAX_MESSAGE_BYTES`, plus MQTT's overhead), so the broker never sends more
  (MQTT 5 section 3.1.2.11.4: it drops such a message for this session); a larger packet anyway is refused as
  soon as its header is read, with a DISCONNECT "packet too large" (section 4.13). The queue to the pipeline is
  bounded in payload bytes (``mqtt.queue_max_bytes``) as well as in messages.
- Acks of a message delivered on an older connection are not sent (counted in ``acks_of_old_connection``): after
  a reconnect the broker resends every unacknowledged message (MQTT 5 section 4.4), and the resent copy gets the
  ack.

Broker side, the session's queue is bounded by Mosquitto's ``max_queued_messages`` (default 1000, beyond which
QoS 1 messages for an offline or saturated hub are dropped): raise it for the hub's broker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from hub.config import MqttSettings
from hub.ingest.messages import InboundMessage, IntakeSink
from hub.mqtt.codec import (
    SUBACK,
    ConnAck,
    MqttProtocolError,
    Packet,
    Publish,
    decode_suback,
    encode_subscribe,
    reason_text,
)
from hub.mqtt.connection import MAX_RECEIVE_MAXIMUM, Client, Connection
from wire.v1 import QOS, Channel, shared, subscription

log = logging.getLogger("hub.mqtt")

#: What the hub receives. ``cmd`` is hub -> edge, so the hub does not subscribe to it.
INTAKE_CHANNELS: Final = (Channel.DATA, Channel.STATE, Channel.EVENT, Channel.CMD_ACK, Channel.SNAPSHOT)
#: Default bound of an :class:`IntakeQueue` in payload bytes (that of ``mqtt.queue_max_bytes``).
MAX_QUEUE_BYTES: Final[int] = MqttSettings.model_fields["queue_max_bytes"].default
#: Bytes one read from the broker takes at most on the intake's connection (:class:`Connection`).
READ_BUFFER_BYTES: Final = 4 * 1024 * 1024
#: The packet identifier of the intake's one SUBSCRIBE per connection.
_SUBSCRIBE_ID: Final = 1


class IntakeQueue:
    """A queue of messages from the intake to the pipeline, both on the event loop, bounded in messages and in
    payload bytes.

    The pipeline's side is the interface of :class:`asyncio.Queue` it uses (:meth:`get_nowait`, :meth:`get`,
    :meth:`qsize`); the intake puts a whole read's messages at once with :meth:`put_many` (allowed past the
    bounds: they are already read) and stops reading while :attr:`full` (``maxsize`` messages or ``max_bytes``
    bytes of payload); :meth:`on_space` tells it when the queue has room again (half empty on both counts).
    """

    def __init__(self, maxsize: int, max_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        #: Payload bytes of the messages in the queue.
        self.bytes = 0
        self._items: deque[InboundMessage] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._space_callback: Callable[[], None] | None = None

    def qsize(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxsize or self.bytes >= self.max_bytes

    def on_space(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once when the queue drops to half of ``maxsize`` (None: forget it)."""
        self._space_callback = callback

    def get_nowait(self) -> InboundMessage:
        try:
            item = self._items.popleft()
        except IndexError:
            raise asyncio.QueueEmpty from None
        self.bytes -= len(item.payload)
        if (
            self._space_callback is not None
            and len(self._items) <= self.maxsize // 2
            and self.bytes <= self.max_bytes // 2
        ):
            callback, self._space_callback = self._space_callback, None
            callback()
        return item

    async def get(self) -> InboundMessage:
        """The next item, waiting for one. Cancelling it never loses an item (items are taken only here)."""
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None
        return self.get_nowait()

    def put_nowait(self, item: InboundMessage) -> None:
        self._items.append(item)
        self.bytes += len(item.payload)
        self._wake()

    def put_many(self, items: list[InboundMessage]) -> None:
        self._items.extend(items)
        self.bytes += sum(len(item.payload) for item in items)
        self._wake()

    def _wake(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)


def topic_filters(shared_group: str | None) -> list[str]:
    """The subscription filters of the intake, as ``$share/{group}/...`` when a group is set, but for ``state``.

    Every hub of a group subscribes to ``state`` on its own: admission needs each gateway's birth on every hub
    that may store its data, and a broker sends no retained message to a shared subscription (MQTT 5 section
    4.8.2), so a hub joining or restarting would otherwise never learn the births already made. States are few
    (a birth per connect); each hub stores their points, the same point for a birth stamped by the agent.
    """
    filters = [subscription(channel) for channel in INTAKE_CHANNELS]
    if shared_group:
        filters = [f if f == subscription(Channel.STATE) else shared(shared_group, f) for f in filters]
    return filters


def observer_client_id(client_id: str) -> str:
    """The client id of a hub's observer connection (``mqtt.observe: all``)."""
    return f"{client_id}-observe"


class MqttIntake(Client):
    """Subscribes to the v1 topics and puts :class:`~hub.ingest.InboundMessage` on ``queue``, unacknowledged.

    ``async with`` starts the connection task (it connects and reconnects by itself with capped backoff, so an
    unreachable broker does not stop the hub); leaving the block disconnects. Call :meth:`stop_accepting` first
    to stop handing over new messages while the pipeline drains.
    """

    def __init__(
        self,
        settings: MqttSettings,
        queue: IntakeSink,
        *,
        receive_maximum: int = MAX_RECEIVE_MAXIMUM,
        stop_timeout_s: float = 10.0,
        observer: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        """``observer``: the operations hub's second connection (``mqtt.observe: all``): client id
        ``{client_id}-observe``, never the shared group, QoS 0, clean start and no session (nothing to acknowledge:
        the storing subscription is what must not lose messages; what this one misses while away is no loss).
        ``rng``: the source of the reconnect backoff's jitter."""
        if observer:
            own_id = observer_client_id(settings.client_id)
            settings = settings.model_copy(update={"client_id": own_id, "shared_group": None, "session_expiry_s": 0})
        super().__init__(
            settings,
            account="observer" if observer else "intake",
            clean_start=observer,
            receive_maximum=max(1, min(receive_maximum, MAX_RECEIVE_MAXIMUM)),
            read_buffer_bytes=READ_BUFFER_BYTES,
            stop_timeout_s=stop_timeout_s,
            logger=log,
            label="",
            task_name="hub-mqtt",
            rng=rng,
        )
        self._observer = observer
        self._queue = queue
        self.filters = topic_filters(settings.shared_group)
        self._accepting = False
        self._subscribed = False
        self._topics: dict[bytes, str] = {}
        self.counters = {
            "received": 0,
            "connects": 0,
            "disconnects": 0,
            "acks_sent": 0,
            "acks_of_old_connection": 0,
            "not_handed_over": 0,
            "refused_packets": 0,
        }

    # ------------------------------------------------------------------------------------------ lifecycle

    def _starting(self) -> None:
        s = self._settings
        if s.plain_tcp_to_remote and not self._observer:
            log.warning(
                "MQTT: plain TCP to the broker %s, which is not on loopback (mqtt.allow_plain_tcp): the hub's "
                "passwords and every gateway's data cross the network in the clear",
                s.host,
            )
        self._accepting = True
        log.info(
            "MQTT %s: broker %s:%d%s as %r (account %s), session expiry %d s, subscribing %s",
            "observer (QoS 0, feeds the operations side)" if self._observer else "intake",
            s.host,
            s.port,
            " (TLS)" if s.tls else "",
            s.client_id,
            s.credentials(self._account)[0] or "none",
            s.session_expiry_s,
            ", ".join(self.filters),
        )

    def stop_accepting(self) -> None:
        """Hand over no more messages (they stay unacknowledged and the broker redelivers them later)."""
        self._accepting = False

    async def close(self) -> None:
        """Send the acks collected so far and a DISCONNECT (the broker keeps the session), then stop."""
        self.stop_accepting()
        await super().close()

    # ------------------------------------------------------------------------------------------ status

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker has answered the subscription."""
        return self._connected and self._subscribed

    async def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until connected and subscribed; return whether that happened."""
        deadline = time.monotonic() + timeout_s
        while not self.subscribed:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # ------------------------------------------------------------------------------------------ acks

    def ack(self, message: InboundMessage) -> bool:
        """Send the PUBACK of ``message`` (QoS 1), with the others of this turn of the loop. False if not sent."""
        if message.qos == 0:
            return True
        conn = self._conn
        if conn is None or message.connection != conn.number or not self._connected or not conn.ack(message.mid):
            # The broker resends it on the new connection (MQTT 5 section 4.4); that copy gets the ack.
            self.counters["acks_of_old_connection"] += 1
            return False
        self.counters["acks_sent"] += 1
        return True

    # ------------------------------------------------------------------------------------------ connection

    def _on_connect(self, conn: Connection, connack: ConnAck) -> None:
        conn.write(encode_subscribe(_SUBSCRIBE_ID, self.filters, 0 if self._observer else QOS))

    def _on_down(self) -> None:
        self._subscribed = False
        self._queue.on_space(None)

    def _packet(self, conn: Connection, packet: Packet) -> None:
        if packet.type == SUBACK:
            if not self._subscribed and not conn.closed.done():
                self._suback(conn, packet)
        else:
            super()._packet(conn, packet)

    def _suback(self, conn: Connection, packet: Packet) -> None:
        try:
            suback = decode_suback(packet.body)
        except MqttProtocolError as exc:
            conn.drop(f"bad SUBACK: {exc}")
            return
        refused = 0
        for topic_filter, code in zip(self.filters, suback.reason_codes, strict=False):
            if code >= 0x80:
                refused += 1
                log.error("the broker refused the subscription to %s: %s", topic_filter, reason_text(code))
        if refused == len(self.filters):
            # Nothing would ever arrive: not subscribed, so the connection is made again (with backoff) rather
            # than passed off as working (health would judge every gateway silent while the hub hears nothing).
            conn.drop("the broker refused every subscription")
            return
        self._subscribed = True

    # ------------------------------------------------------------------------------------------ receiving

    def _received(self, conn: Connection, packets: list[Publish | Packet]) -> None:
        """Called by the connection with every packet of one read, in order."""
        messages: list[InboundMessage] = []
        accepting = self._accepting
        number = conn.number
        now = time.time()
        topics = self._topics
        dropped = 0
        for packet in packets:
            if type(packet) is Publish:
                raw = packet.topic
                topic = topics.get(raw)
                if topic is None:
                    topic = raw.decode("utf-8", errors="replace")
                    if len(topics) >= 10_000:
                        topics.clear()
                    topics[raw] = topic
                if accepting:
                    messages.append(
                        InboundMessage(topic, packet.payload, packet.packet_id, packet.qos, packet.retain, now, number)
                    )
                else:
                    dropped += 1  # left unacknowledged: the broker redelivers it to the next session
            else:
                self._control(conn, packet)  # type: ignore[arg-type]
        if messages:
            self.counters["received"] += len(messages)
            self._queue.put_many(messages)
            if self._queue.full:
                conn.pause()
                self._queue.on_space(conn.resume)
        if dropped:
            self.counters["received"] += dropped
            self.counters["not_handed_over"] += dropped
