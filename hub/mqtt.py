"""The hub's MQTT: a lean MQTT 5 client on the hub's event loop, in two roles over one connection layer.

- :class:`MqttIntake` subscribes to the v1 topics and acknowledges a QoS 1 message only on request (once its lines
  are stored); the operations hub of a group runs a second one as its QoS 0 observer (``mqtt.observe: all``).
- :class:`MqttPublisher` publishes with QoS 1 and awaits each PUBACK, whose reason code counts: a publish the
  broker refuses (MQTT 5 section 3.4.2.1: 0x80 and above, e.g. 0x87 "not authorized" for a topic outside the
  account's ACL) raises :class:`PublishRefused` naming the reason. The hub's commands go out through one
  (``hub/commands.py``).

Both stand on :class:`_Client` (TCP or TLS connect, CONNECT and CONNACK, keep-alive, the control packets, reconnects)
and :class:`_Connection` (reads, the packet parser, batched writes).

Why our own client: the hub must acknowledge a QoS 1 message only once its lines are stored (aiomqtt has no
manual acknowledgement), and paho-mqtt, which does, cost the hub about a third of its time under load
(profiled with py-spy: one Python call chain per packet in its network thread, MQTT 5 ``Properties`` parsing
alone ~12 %, plus the hand-over between its thread and the loop). This client speaks the part of MQTT 5 the
hub needs (:mod:`hub.mqttcodec`) on an asyncio transport. The intake:

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
- Acks of a message delivered on an older connection are not sent (counted in ``acks_of_old_connection``): after
  a reconnect the broker resends every unacknowledged message (MQTT 5 section 4.4), and the resent copy gets the
  ack.

The publisher: clean start, no session, no subscription; at most the broker's Receive Maximum publishes in flight
(section 4.9: the others wait for a PUBACK); a publish whose connection is lost before its PUBACK fails and is not
sent again (the broker may or may not have it: the caller decides).

Both:

- Keep-alive: a PINGREQ when nothing was written for half the keep-alive; a connection that brought nothing
  (not even a PINGRESP) for 1.5 x keep-alive while we were reading is dropped and made again.
- Reconnects with capped exponential backoff and equal jitter: the n-th failed attempt in a row waits a random
  time in [d/2, d], ``d = min(reconnect_max_s, reconnect_min_s * 2**(n-1))`` (:func:`reconnect_delay`, the rule
  of the agent's ``edge/backoff.py`` and the writer's ``RetryPolicy``), so the hubs of a shared group that lost
  the broker together do not come back in lockstep, and no wait drops below half its nominal value. A refused
  CONNECT or SUBSCRIBE is logged as an error with the broker's reason (once per reason), and retried.
- A PUBREL is answered with PUBCOMP (section 4.3.3): the hub never asks for QoS 2, but a broker that starts that
  flow anyway gets it completed rather than a session stalled on it.

Broker side, the session's queue is bounded by Mosquitto's ``max_queued_messages`` (default 1000, beyond which
QoS 1 messages for an offline or saturated hub are dropped): raise it for the hub's broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self

from hub.config import MqttSettings
from hub.errors import HubError, StartupError
from hub.ingest import InboundMessage
from hub.ingest.messages import IntakeSink
from hub.mqttcodec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAX_PACKET_BYTES,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    PUBREL,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    SUBACK,
    ConnAck,
    MqttProtocolError,
    Packet,
    PacketReader,
    PubAck,
    Publish,
    decode_connack,
    decode_disconnect,
    decode_packet_id,
    decode_puback,
    decode_suback,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_pubcomp,
    encode_publish,
    encode_subscribe,
    reason_text,
)
from wire.v1 import QOS, Channel, shared, subscription

log = logging.getLogger(__name__)

#: What the hub receives. ``cmd`` is hub -> edge, so the hub does not subscribe to it.
INTAKE_CHANNELS: Final = (Channel.DATA, Channel.STATE, Channel.EVENT, Channel.CMD_ACK, Channel.SNAPSHOT)
#: MQTT 5 caps Receive Maximum at 65535 (also its value when a CONNACK or CONNECT leaves it out, section 3.2.2.3.3).
_MAX_RECEIVE_MAXIMUM: Final = 65535
#: Default bound of an :class:`IntakeQueue` in payload bytes (that of ``mqtt.queue_max_bytes``).
MAX_QUEUE_BYTES: Final[int] = MqttSettings.model_fields["queue_max_bytes"].default
#: Bytes one read from the broker takes at most on the intake's connection (:class:`_Connection`).
READ_BUFFER_BYTES: Final = 4 * 1024 * 1024
#: The same on a publisher's connection, to which the broker sends only small control packets.
PUBLISHER_READ_BUFFER_BYTES: Final = 64 * 1024
#: The packet identifier of the intake's one SUBSCRIBE per connection.
_SUBSCRIBE_ID: Final = 1
#: How long :meth:`MqttPublisher.publish` waits for the PUBACK by default (a command's publish: hub/commands.py).
PUBLISH_TIMEOUT_S: Final = 5.0

Account = Literal["intake", "observer", "command"]


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


def reconnect_delay(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """How long to wait before connecting again after ``failures`` (>= 1) failed attempts in a row: a random time
    in ``[d/2, d]`` with ``d = min(max_s, min_s * 2**(failures - 1))`` ("equal jitter")."""
    # Capping the exponent keeps 2**n finite however long the broker stays away.
    ceiling = min(max_s, min_s * 2.0 ** min(max(failures, 1) - 1, 64))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


class PublishError(HubError):
    """A publish that did not reach the broker, or that it did not acknowledge in time (the reason in the message)."""


class PublishRefused(PublishError):
    """The broker answered the publish with a PUBACK reason code of 0x80 or above (MQTT 5 section 3.4.2.1)."""

    def __init__(self, topic: str, puback: PubAck) -> None:
        detail = f" ({puback.reason_string})" if puback.reason_string else ""
        super().__init__(f"the broker refused the publish on {topic}: {reason_text(puback.reason_code)}{detail}")
        self.reason_code = puback.reason_code


class _Refused(Exception):
    """The broker refused the CONNECT (reason in the message)."""


class _Connection(asyncio.BufferedProtocol):
    """One connection to the broker: parses what arrives, hands the packets to its client, writes our packets.

    A buffered protocol, so that one read takes up to ``read_buffer_bytes`` (the intake's: :data:`READ_BUFFER_BYTES`;
    a plain protocol gets at most 256 KiB a turn of the event loop: with the pipeline busy ~10 ms a turn on a big
    message, ~25 MB/s, less than one gateway's fast link, and the rest would wait at the broker in front of every
    other gateway's messages).
    """

    def __init__(self, client: _Client, number: int, read_buffer_bytes: int) -> None:
        self._client = client
        self.number = number
        self._read_buffer = memoryview(bytearray(read_buffer_bytes))
        self.transport: asyncio.Transport | None = None
        self._reader = PacketReader(MAX_PACKET_BYTES)
        self.connack: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_read = time.monotonic()
        self.last_write = time.monotonic()
        self.paused = False
        self.keepalive_s = client._settings.keepalive_s
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
                self._client._received(self, exc.packets)
            self._client.counters["refused_packets"] += 1
            self.drop(f"refused a packet from the broker: {exc}", exc.reason_code)
            return
        if packets:
            self._client._received(self, packets)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(str(exc) if exc else "the broker closed the connection"))
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


class _Client:
    """One connection to the broker kept up: connect (TCP or TLS, CONNECT, CONNACK), keep-alive, the control packets
    every client answers, and reconnects with jittered backoff (the module docstring). :class:`MqttIntake` and
    :class:`MqttPublisher` add what they do on a connection through :meth:`_on_connect`, :meth:`_received`,
    :meth:`_packet` and :meth:`_on_down`.

    ``async with`` starts the connection task (it connects and reconnects by itself, so an unreachable broker
    does not stop the hub); leaving the block disconnects. ``log`` and ``label`` (a prefix of every message) say
    whose connection a log line is about.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        account: Account,
        clean_start: bool,
        receive_maximum: int | None,
        read_buffer_bytes: int,
        stop_timeout_s: float,
        logger: logging.Logger,
        label: str,
        task_name: str,
        rng: random.Random | None,
    ) -> None:
        self._settings = settings
        self._account: Account = account
        self._clean_start = clean_start
        self._receive_maximum = receive_maximum
        self._read_buffer_bytes = read_buffer_bytes
        self._stop_timeout_s = stop_timeout_s
        self._log = logger
        self._label = label
        self._task_name = task_name
        self._rng = rng if rng is not None else random.Random()
        self._ssl: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._connected = False
        self._up = asyncio.Event()
        self._connection = 0
        self._ever_connected = False
        self._refused_reason = ""
        self.counters: dict[str, int] = {"connects": 0, "disconnects": 0, "refused_packets": 0}

    # ------------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        s = self._settings
        if s.tls:
            try:
                self._ssl = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise StartupError(f"{self._label}MQTT TLS setup failed (ca_file {s.ca_file}): {exc}") from exc
        self._starting()
        self._task = asyncio.create_task(self._run(), name=self._task_name)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Send what is collected (the intake's acks) and a DISCONNECT (the broker keeps a session), then stop."""
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
            self._log.info("%sdisconnected from the broker", self._label)
        self._down()

    # ------------------------------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        """The broker accepted the CONNECT of the current connection."""
        return self._connected

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until connected; return whether that happened."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        return self._connected

    # ------------------------------------------------------------------------------------------ connection

    async def _run(self) -> None:
        s = self._settings
        failures = 0
        down_logged = False
        while True:
            reason = ""
            try:
                await self._session()  # returns only by raising why the connection ended
            except _Refused as exc:
                text = str(exc)
                if text != self._refused_reason:
                    self._refused_reason = text
                    self._log.error(
                        "%sthe broker %s:%d refused the connection: %s; retrying", self._label, s.host, s.port, text
                    )
            except (OSError, TimeoutError, ConnectionError, MqttProtocolError, ssl.SSLError) as exc:
                reason = str(exc) or type(exc).__name__
            was_connected = self._connected
            self._down()
            if was_connected:
                self.counters["disconnects"] += 1
                down_logged = True
                failures = 0
                self._log.warning(
                    "%slost the connection to the broker (%s); reconnecting with backoff up to %d s",
                    self._label,
                    reason,
                    s.reconnect_max_s,
                )
            elif reason and not down_logged:
                down_logged = True
                self._log.warning(
                    "%scannot reach the broker %s:%d; retrying with backoff up to %d s",
                    self._label,
                    s.host,
                    s.port,
                    s.reconnect_max_s,
                )
                self._log.debug("%sconnecting to the broker failed: %s", self._label, reason)
            failures += 1
            await asyncio.sleep(reconnect_delay(failures, s.reconnect_min_s, s.reconnect_max_s, self._rng))

    async def _session(self) -> None:
        """Connect and serve one connection until it ends (raises why it ended)."""
        s = self._settings
        loop = asyncio.get_running_loop()
        number = self._connection + 1
        async with asyncio.timeout(s.connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: _Connection(self, number, self._read_buffer_bytes),
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
        username, password = s.credentials(self._account)
        conn.write(
            encode_connect(
                s.client_id,
                keepalive_s=s.keepalive_s,
                clean_start=self._clean_start,
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
        if self._ever_connected and not connack.session_present and not self._clean_start:
            self._log.warning(
                "%sthe broker had no session for %r (expired or broker restarted without persistence): "
                "messages published while the hub was away are lost",
                self._label,
                s.client_id,
            )
        self._ever_connected = True
        self._log.info(
            "%sconnected to the broker %s:%d (session present: %s)",
            self._label,
            s.host,
            s.port,
            connack.session_present,
        )
        self._connected = True
        self._up.set()
        self._on_connect(conn, connack)

    async def _serve(self, conn: _Connection) -> str:
        """Keep the connection alive until it closes; return why it closed."""
        keepalive_s = conn.keepalive_s
        tick = max(0.5, keepalive_s / 4) if keepalive_s else 1.0
        while not conn.closed.done():
            now = time.monotonic()
            if keepalive_s:
                if now - conn.last_write >= keepalive_s / 2:
                    conn.write(PINGREQ_PACKET)
                if not conn.paused and now - conn.last_read > keepalive_s * 1.5:
                    conn.drop(f"nothing from the broker for {keepalive_s * 1.5:.0f} s")
                    break
            await asyncio.wait({conn.closed}, timeout=tick)
        return conn.closed.result() if conn.closed.done() else "closed"

    def _down(self) -> None:
        """The connection is gone (lost, or closed by us)."""
        self._connected = False
        self._up.clear()
        self._on_down()

    # ------------------------------------------------------------------------------------------ receiving

    def _received(self, conn: _Connection, packets: list[Publish | Packet]) -> None:
        """Called by the connection with every packet of one read, in order."""
        for packet in packets:
            if type(packet) is Publish:
                # Only the intake subscribes: a client without a subscription gets no PUBLISH from a broker.
                self._log.debug("%signored a PUBLISH on %r from the broker", self._label, packet.topic)
            else:
                self._control(conn, packet)  # type: ignore[arg-type]

    def _control(self, conn: _Connection, packet: Packet) -> None:
        kind = packet.type
        if kind == CONNACK:
            if not conn.connack.done():
                conn.connack.set_result(packet)
            else:
                conn.drop("a second CONNACK from the broker")
        elif kind == PINGRESP:
            pass
        elif kind == DISCONNECT:
            try:
                code, reason = decode_disconnect(packet.body)
            except MqttProtocolError as exc:
                code, reason = 0x81, str(exc)
            conn.drop(f"the broker disconnected: {reason_text(code)}{f' ({reason})' if reason else ''}")
        elif kind == PUBREL:  # QoS 2 is never asked for; complete the flow anyway rather than stall the session
            with contextlib.suppress(MqttProtocolError):
                conn.write(encode_pubcomp(decode_packet_id(packet.body, "PUBREL")))
        else:
            self._packet(conn, packet)

    # ------------------------------------------------------------------------------------------ what a role adds

    def _starting(self) -> None:
        """Before the first connect (a log line of what this connection is)."""

    def _on_connect(self, conn: _Connection, connack: ConnAck) -> None:
        """The broker accepted the CONNECT of ``conn``."""

    def _packet(self, conn: _Connection, packet: Packet) -> None:
        """A control packet this layer does not handle itself."""
        self._log.debug("%signored an MQTT packet of type %d from the broker", self._label, packet.type)

    def _on_down(self) -> None:
        """The connection is gone."""


class MqttIntake(_Client):
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
            receive_maximum=max(1, min(receive_maximum, _MAX_RECEIVE_MAXIMUM)),
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

    def _on_connect(self, conn: _Connection, connack: ConnAck) -> None:
        conn.write(encode_subscribe(_SUBSCRIBE_ID, self.filters, 0 if self._observer else QOS))

    def _on_down(self) -> None:
        self._subscribed = False
        self._queue.on_space(None)

    def _packet(self, conn: _Connection, packet: Packet) -> None:
        if packet.type == SUBACK:
            if not self._subscribed and not conn.closed.done():
                self._suback(conn, packet)
        else:
            super()._packet(conn, packet)

    def _suback(self, conn: _Connection, packet: Packet) -> None:
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


class MqttPublisher(_Client):
    """A publishing connection: :meth:`publish` sends a QoS 1 PUBLISH and returns once the broker acknowledged it,
    or raises :class:`PublishError` (:class:`PublishRefused` for a PUBACK reason code of 0x80 or above).

    Clean start and no session: nothing is kept for it while it is away, and it subscribes to nothing.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        account: Account,
        logger: logging.Logger = log,
        label: str = "",
        stop_timeout_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        own = settings.model_copy(update={"client_id": client_id[:128], "shared_group": None, "session_expiry_s": 0})
        super().__init__(
            own,
            account=account,
            clean_start=True,
            receive_maximum=None,
            read_buffer_bytes=PUBLISHER_READ_BUFFER_BYTES,
            stop_timeout_s=stop_timeout_s,
            logger=logger,
            label=label,
            task_name=f"hub-mqtt-{client_id}",
            rng=rng,
        )
        self._inflight: dict[int, asyncio.Future[PubAck]] = {}
        self._room: list[asyncio.Future[None]] = []
        #: The broker's Receive Maximum: how many of our QoS 1 publishes may await their PUBACK at once.
        self._send_quota = _MAX_RECEIVE_MAXIMUM
        self._last_id = 0

    def _starting(self) -> None:
        s = self._settings
        self._log.info(
            "%sMQTT publisher: broker %s:%d%s as %r (account %s), QoS 1",
            self._label,
            s.host,
            s.port,
            " (TLS)" if s.tls else "",
            s.client_id,
            s.credentials(self._account)[0] or "none",
        )

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        """Publish ``payload`` on ``topic`` with QoS 1 and wait up to ``timeout_s`` for the broker's PUBACK."""
        if not self._connected:
            raise PublishError("the hub is not connected to the broker")
        loop = asyncio.get_running_loop()
        packet_id = 0
        future: asyncio.Future[PubAck] | None = None
        try:
            async with asyncio.timeout(timeout_s):
                while len(self._inflight) >= self._send_quota:  # MQTT 5 section 4.9: wait for a PUBACK
                    room: asyncio.Future[None] = loop.create_future()
                    self._room.append(room)
                    try:
                        await room
                    finally:
                        with contextlib.suppress(ValueError):
                            self._room.remove(room)
                conn = self._conn
                if conn is None or not self._connected:
                    raise PublishError("the hub is not connected to the broker")
                packet_id = self._new_packet_id()
                future = loop.create_future()
                self._inflight[packet_id] = future
                conn.write(encode_publish(topic, payload, qos=QOS, packet_id=packet_id))
                puback = await future
        except TimeoutError:
            raise PublishError(
                f"the broker did not acknowledge the publish on {topic} within {timeout_s:g} s"
            ) from None
        finally:
            if packet_id and self._inflight.get(packet_id) is future:
                del self._inflight[packet_id]
                self._make_room()
            if future is not None and future.done() and not future.cancelled():
                future.exception()  # retrieved, whatever became of this call
        if puback.reason_code >= 0x80:
            raise PublishRefused(topic, puback)

    def _new_packet_id(self) -> int:
        """The next packet identifier not in flight (1 to 65535; fewer than that are ever in flight)."""
        packet_id = self._last_id
        while True:
            packet_id = packet_id % 0xFFFF + 1
            if packet_id not in self._inflight:
                self._last_id = packet_id
                return packet_id

    def _make_room(self) -> None:
        room, self._room = self._room, []
        for waiter in room:
            if not waiter.done():
                waiter.set_result(None)

    def _on_connect(self, conn: _Connection, connack: ConnAck) -> None:
        quota = connack.properties.get(RECEIVE_MAXIMUM, _MAX_RECEIVE_MAXIMUM)
        self._send_quota = quota if isinstance(quota, int) and quota > 0 else _MAX_RECEIVE_MAXIMUM
        self._make_room()

    def _packet(self, conn: _Connection, packet: Packet) -> None:
        if packet.type != PUBACK:
            super()._packet(conn, packet)
            return
        try:
            puback = decode_puback(packet.body)
        except MqttProtocolError as exc:
            conn.drop(f"bad PUBACK: {exc}", exc.reason_code)
            return
        future = self._inflight.get(puback.packet_id)
        if future is not None and not future.done():
            future.set_result(puback)

    def _on_down(self) -> None:
        # Not sent again on the next connection: the broker may or may not have it, and the caller knows best
        # whether a second copy is worse than none (a command is recorded as failed, not run twice).
        for future in self._inflight.values():
            if not future.done():
                future.set_exception(
                    PublishError("the connection to the broker was lost before it acknowledged the publish")
                )
        self._make_room()
