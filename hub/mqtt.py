"""The MQTT intake: a lean MQTT 5 subscriber on the hub's event loop, acking only on request.

Why our own client: the hub must acknowledge a QoS 1 message only once its lines are stored (aiomqtt has no
manual acknowledgement), and paho-mqtt, which does, cost the hub about a third of its time under load
(profiled with py-spy: one Python call chain per packet in its network thread, MQTT 5 ``Properties`` parsing
alone ~12 %, plus the hand-over between its thread and the loop). This client speaks the part of MQTT 5 the
intake needs (:mod:`hub.mqttcodec`) on an asyncio transport:

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
  reads is buffered in time linear in its size (:class:`~hub.mqttcodec.PacketReader`).
- Bounded by bytes: the CONNECT's Maximum Packet Size is :data:`~hub.mqttcodec.MAX_PACKET_BYTES` (the contract's
  largest message, :data:`wire.v1.MAX_MESSAGE_BYTES`, plus MQTT's overhead), so the broker never sends more
  (MQTT 5 section 3.1.2.11.4: it drops such a message for this session); a larger packet anyway is refused as
  soon as its header is read, with a DISCONNECT "packet too large" (section 4.13). The queue to the pipeline is
  bounded in payload bytes (``mqtt.queue_max_bytes``) as well as in messages.
- Acks of a message delivered on an older connection are not sent: after a reconnect the broker resends every
  unacknowledged message (MQTT 5 section 4.4), and the resent copy gets the ack.
- Keep-alive: a PINGREQ when nothing was written for half the keep-alive; a connection that brought nothing
  (not even a PINGRESP) for 1.5 x keep-alive while we were reading is dropped and made again.
- Reconnects with backoff doubling from ``reconnect_min_s`` to ``reconnect_max_s``; a refused CONNECT or
  SUBSCRIBE is logged as an error with the broker's reason (once per reason), and retried.

Broker side, the session's queue is bounded by Mosquitto's ``max_queued_messages`` (default 1000, beyond which
QoS 1 messages for an offline or saturated hub are dropped): raise it for the hub's broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

from hub.config import MqttSettings
from hub.errors import StartupError
from hub.ingest import InboundMessage
from hub.ingest.messages import IntakeSink
from hub.mqttcodec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAX_PACKET_BYTES,
    PINGREQ_PACKET,
    PINGRESP,
    PUBREL,
    SERVER_KEEP_ALIVE,
    SUBACK,
    MqttProtocolError,
    Packet,
    PacketReader,
    Publish,
    decode_connack,
    decode_disconnect,
    decode_packet_id,
    decode_suback,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_subscribe,
    reason_text,
)
from wire.v1 import QOS, Channel, shared, subscription

log = logging.getLogger(__name__)

#: What the hub receives. ``cmd`` is hub -> edge, so the hub does not subscribe to it.
INTAKE_CHANNELS: Final = (Channel.DATA, Channel.STATE, Channel.EVENT, Channel.CMD_ACK)
#: MQTT 5 caps Receive Maximum at 65535.
_MAX_RECEIVE_MAXIMUM: Final = 65535
#: Default bound of an :class:`IntakeQueue` in payload bytes (that of ``mqtt.queue_max_bytes``).
MAX_QUEUE_BYTES: Final[int] = MqttSettings.model_fields["queue_max_bytes"].default
#: Bytes one read from the broker takes at most (:class:`_Connection`).
READ_BUFFER_BYTES: Final = 4 * 1024 * 1024
#: The packet identifier of our one SUBSCRIBE per connection.
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


class _Refused(Exception):
    """The broker refused the CONNECT (reason in the message)."""


class _Connection(asyncio.BufferedProtocol):
    """One connection to the broker: parses what arrives, hands PUBLISHes to the intake, writes its packets.

    A buffered protocol, so that one read takes up to :data:`READ_BUFFER_BYTES` (a plain protocol gets at most
    256 KiB a turn of the event loop: with the pipeline busy ~10 ms a turn on a big message, ~25 MB/s, less than
    one gateway's fast link, and the rest would wait at the broker in front of every other gateway's messages).
    """

    def __init__(self, intake: MqttIntake, number: int) -> None:
        self._intake = intake
        self.number = number
        self._read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self.transport: asyncio.Transport | None = None
        self._reader = PacketReader(MAX_PACKET_BYTES)
        self.connack: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_read = time.monotonic()
        self.last_write = time.monotonic()
        self.paused = False
        self.keepalive_s = intake._settings.keepalive_s
        self._acks: list[bytes] = []
        self._flush_scheduled = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._read_buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        try:
            packets = self._reader.feed(data)
        except MqttProtocolError as exc:
            if exc.packets:  # those before it in the same read are good
                self._intake._received(self, exc.packets)
            self._intake.counters["refused_packets"] += 1
            self.drop(f"refused a packet from the broker: {exc}", exc.reason_code)
            return
        if packets:
            self._intake._received(self, packets)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(ConnectionError(str(exc) if exc else "the broker closed the connection"))
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else "the broker closed the connection")

    # our side
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_write = time.monotonic()

    def ack(self, packet_id: int) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self._acks.append(encode_puback(packet_id))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_acks)
        return True

    def flush_acks(self) -> None:
        self._flush_scheduled = False
        if self._acks:
            acks, self._acks = self._acks, []
            self.write(b"".join(acks))

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_read = time.monotonic()
            self.transport.resume_reading()

    def drop(self, why: str, reason_code: int | None = None) -> None:
        """Close the connection; with ``reason_code``, after a DISCONNECT saying why (MQTT 5 section 4.13)."""
        if not self.closed.done():
            self.closed.set_result(why)
        if self.transport is not None:
            if reason_code is not None and not self.transport.is_closing():
                self.transport.pause_reading()
                self.transport.write(encode_disconnect(reason_code))
                self.transport.close()  # sends what is buffered, the DISCONNECT last
            else:
                self.transport.abort()


class MqttIntake:
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
        receive_maximum: int = _MAX_RECEIVE_MAXIMUM,
        stop_timeout_s: float = 10.0,
        observer: bool = False,
    ) -> None:
        """``observer``: the operations hub's second connection (``mqtt.observe: all``): client id
        ``{client_id}-observe``, never the shared group, QoS 0, clean start and no session (nothing to acknowledge:
        the storing subscription is what must not lose messages; what this one misses while away is no loss)."""
        if observer:
            own_id = observer_client_id(settings.client_id)
            settings = settings.model_copy(update={"client_id": own_id, "shared_group": None, "session_expiry_s": 0})
        self._observer = observer
        self._settings = settings
        self._queue = queue
        self._receive_maximum = max(1, min(receive_maximum, _MAX_RECEIVE_MAXIMUM))
        self._stop_timeout_s = stop_timeout_s
        self.filters = topic_filters(settings.shared_group)
        self._ssl: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._accepting = False
        self._connected = False
        self._subscribed = False
        self._connection = 0
        self._ever_connected = False
        self._refused_reason = ""
        self._topics: dict[bytes, str] = {}
        self.counters: dict[str, int] = {
            "received": 0,
            "connects": 0,
            "disconnects": 0,
            "acks_sent": 0,
            "acks_of_old_connection": 0,
            "not_handed_over": 0,
            "refused_packets": 0,
        }

    # ------------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        s = self._settings
        if s.tls:
            try:
                self._ssl = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise StartupError(f"MQTT TLS setup failed (ca_file {s.ca_file}): {exc}") from exc
        if s.plain_tcp_to_remote and not self._observer:
            log.warning(
                "MQTT: plain TCP to the broker %s, which is not on loopback (mqtt.allow_plain_tcp): the hub's "
                "passwords and every gateway's data cross the network in the clear",
                s.host,
            )
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="hub-mqtt")
        log.info(
            "MQTT %s: broker %s:%d%s as %r (account %s), session expiry %d s, subscribing %s",
            "observer (QoS 0, feeds the operations side)" if self._observer else "intake",
            s.host,
            s.port,
            " (TLS)" if s.tls else "",
            s.client_id,
            s.credentials("observer" if self._observer else "intake")[0] or "none",
            s.session_expiry_s,
            ", ".join(self.filters),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def stop_accepting(self) -> None:
        """Hand over no more messages (they stay unacknowledged and the broker redelivers them later)."""
        self._accepting = False

    async def close(self) -> None:
        """Send the acks collected so far and a DISCONNECT (the broker keeps the session), then stop."""
        self.stop_accepting()
        task, self._task = self._task, None
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.flush_acks()
            if self._connected:
                conn.write(DISCONNECT_PACKET)
            conn.transport.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), self._stop_timeout_s)
        if self._connected:
            log.info("disconnected from the broker")
        self._connected = self._subscribed = False
        self._queue.on_space(None)

    # ------------------------------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        return self._connected

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

    async def _run(self) -> None:
        s = self._settings
        delay = float(s.reconnect_min_s)
        down_logged = False
        while True:
            reason = ""
            try:
                await self._session()  # returns only by raising why the connection ended
            except _Refused as exc:
                text = str(exc)
                if text != self._refused_reason:
                    self._refused_reason = text
                    log.error(  # noqa: TRY400 - the reason is the broker's answer, no traceback to show
                        "the broker %s:%d refused the connection: %s; retrying", s.host, s.port, text
                    )
            except (OSError, TimeoutError, ConnectionError, MqttProtocolError, ssl.SSLError) as exc:
                reason = str(exc) or type(exc).__name__
            was_connected = self._connected
            self._connected = self._subscribed = False
            self._queue.on_space(None)
            if was_connected:
                self.counters["disconnects"] += 1
                down_logged = True
                delay = float(s.reconnect_min_s)
                log.warning(
                    "lost the connection to the broker (%s); reconnecting with backoff up to %d s",
                    reason,
                    s.reconnect_max_s,
                )
            elif reason and not down_logged:
                down_logged = True
                log.warning(
                    "cannot reach the broker %s:%d; retrying with backoff up to %d s", s.host, s.port, s.reconnect_max_s
                )
                log.debug("connecting to the broker failed: %s", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, float(s.reconnect_max_s))

    async def _session(self) -> None:
        """Connect, subscribe, and serve one connection until it ends (raises why it ended)."""
        s = self._settings
        loop = asyncio.get_running_loop()
        number = self._connection + 1
        async with asyncio.timeout(s.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: _Connection(self, number),
                s.host,
                s.port,
                ssl=self._ssl,
                server_hostname=s.host if self._ssl else None,
            )
        try:
            await self._handshake(conn, number)
            why = await self._serve(conn)
        finally:
            # A transport already closing was closed by close() (acks and DISCONNECT still buffered: let them go
            # out) or aborted by drop(); any other is aborted here.
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.abort()
            if self._conn is conn:
                self._conn = None
        raise ConnectionError(why)

    async def _handshake(self, conn: _Connection, number: int) -> None:
        s = self._settings
        username, password = s.credentials("observer" if self._observer else "intake")
        conn.write(
            encode_connect(
                s.client_id,
                keepalive_s=s.keepalive_s,
                clean_start=self._observer,
                session_expiry_s=s.session_expiry_s,
                receive_maximum=self._receive_maximum,
                # The broker must not send us more (MQTT 5 section 3.1.2.11.4: it drops such a message for this
                # session instead); without it, one oversized message would be refused by the parser, the
                # connection dropped, and the message redelivered forever.
                maximum_packet_size=MAX_PACKET_BYTES,
                username=username,
                password=password,
            )
        )
        async with asyncio.timeout(s.connect_timeout_s):
            connack = decode_connack((await conn.connack).body)
        if connack.reason_code >= 0x80:
            detail = f" ({connack.reason_string})" if connack.reason_string else ""
            raise _Refused(reason_text(connack.reason_code) + detail)
        self._refused_reason = ""
        self._connection = number
        self._conn = conn
        self.counters["connects"] += 1
        keepalive = connack.properties.get(SERVER_KEEP_ALIVE, s.keepalive_s)
        conn.keepalive_s = int(keepalive) if isinstance(keepalive, int) else s.keepalive_s
        if self._ever_connected and not connack.session_present and not self._observer:
            log.warning(
                "the broker had no session for %r (expired or broker restarted without persistence): "
                "messages published while the hub was away are lost",
                s.client_id,
            )
        self._ever_connected = True
        log.info("connected to the broker %s:%d (session present: %s)", s.host, s.port, connack.session_present)
        self._connected = True
        conn.write(encode_subscribe(_SUBSCRIBE_ID, self.filters, 0 if self._observer else QOS))

    async def _serve(self, conn: _Connection) -> str:
        """Wait for the SUBACK, then keep the connection alive until it closes; return why it closed."""
        keepalive_s = conn.keepalive_s
        tick = max(0.5, keepalive_s / 4) if keepalive_s else 1.0
        while not conn.closed.done():
            if not self._subscribed and conn.suback.done():
                self._suback(conn)
            now = time.monotonic()
            if keepalive_s:
                if now - conn.last_write >= keepalive_s / 2:
                    conn.write(PINGREQ_PACKET)
                if not conn.paused and now - conn.last_read > keepalive_s * 1.5:
                    conn.drop(f"nothing from the broker for {keepalive_s * 1.5:.0f} s")
                    break
            waiting: set[asyncio.Future[object]] = {conn.closed}  # type: ignore[arg-type]
            if not conn.suback.done():
                waiting.add(conn.suback)  # type: ignore[arg-type]
            await asyncio.wait(waiting, timeout=tick, return_when=asyncio.FIRST_COMPLETED)
        return conn.closed.result() if conn.closed.done() else "closed"

    def _suback(self, conn: _Connection) -> None:
        try:
            suback = decode_suback(conn.suback.result().body)
        except (MqttProtocolError, ConnectionError) as exc:
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

    def _received(self, conn: _Connection, packets: list[Publish | Packet]) -> None:
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

    def _control(self, conn: _Connection, packet: Packet) -> None:
        kind = packet.type
        if kind == CONNACK:
            if not conn.connack.done():
                conn.connack.set_result(packet)
            else:
                conn.drop("a second CONNACK from the broker")
        elif kind == SUBACK:
            if not conn.suback.done():
                conn.suback.set_result(packet)
        elif kind == PINGRESP:
            pass
        elif kind == DISCONNECT:
            try:
                code, reason = decode_disconnect(packet.body)
            except MqttProtocolError as exc:
                code, reason = 0x81, str(exc)
            conn.drop(f"the broker disconnected: {reason_text(code)}{f' ({reason})' if reason else ''}")
        elif kind == PUBREL:  # QoS 2 is never subscribed; complete the flow anyway rather than stall the session
            with contextlib.suppress(MqttProtocolError):
                conn.write(bytes((0x70, 2)) + decode_packet_id(packet.body, "PUBREL").to_bytes(2, "big"))
        else:
            log.debug("ignored an MQTT packet of type %d from the broker", kind)
