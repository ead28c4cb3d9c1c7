"""The MQTT intake: paho-mqtt 2.x in its own network thread, handing messages to asyncio, acking on request.

Why paho directly: aiomqtt has no manual acknowledgement, and the hub must acknowledge a QoS 1 message only
once its lines are stored. So:

- MQTT 5, ``clean_start=False`` with a Session Expiry Interval and a stable client id: while the hub is away the
  broker keeps the subscriptions and every unacknowledged message, and redelivers them on reconnect.
- ``manual_ack``: paho sends no PUBACK by itself; :meth:`MqttIntake.ack` sends it when the pipeline says so.
- Back-pressure instead of drops, twice: the CONNECT's Receive Maximum is the hub's capacity (pending cap +
  queue size), so the broker itself stops sending once that many messages are unacknowledged and keeps the rest
  queued in our session (Mosquitto honours it for MQTT 5 clients in place of its ``max_inflight_messages``);
  and the network thread hands messages over through a bounded :class:`Handover`, blocking while it is full
  (QoS 0 messages are outside Receive Maximum).
- The hand-over costs no round trip between the threads per message (profiled: waiting for a
  ``run_coroutine_threadsafe`` per message was the hub's bottleneck): the network thread appends to a deque
  and wakes the event loop only when the pipeline is waiting for a message.
- Acks of a message delivered on an older connection are not sent: after a reconnect the broker resends every
  unacknowledged message (MQTT 5 section 4.4), and the resent copy gets the ack.

Caveat: while the network thread is blocked it sends no PINGREQ either; blocked for longer than 1.5 x keepalive,
the broker drops the connection. Nothing is lost: the thread reconnects once unblocked and the broker
redelivers. Broker side, the session's queue is bounded by Mosquitto's ``max_queued_messages`` (default 1000,
beyond which QoS 1 messages for an offline or saturated hub are dropped): raise it for the hub's broker.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.config import MqttSettings
from hub.errors import StartupError
from hub.ingest import InboundMessage
from wire.v1 import QOS, Channel, shared, subscription

log = logging.getLogger(__name__)

#: What the hub receives. ``cmd`` is hub -> edge, so the hub does not subscribe to it.
INTAKE_CHANNELS: Final = (Channel.DATA, Channel.STATE, Channel.EVENT, Channel.CMD_ACK)
#: How often a blocked hand-over re-checks whether the intake is stopping.
_HANDOVER_POLL_S: Final = 0.25
#: MQTT 5 caps Receive Maximum at 65535.
_MAX_RECEIVE_MAXIMUM: Final = 65535
#: How much :class:`_BufferedClient` asks the socket for at once.
_READ_CHUNK: Final = 256 * 1024


class _BufferedClient(paho.Client):
    """paho's client, reading the socket in large chunks instead of three ``recv`` calls per packet.

    Why: paho-mqtt 2.2 reads every packet with ``recv(1)`` for the command byte, ``recv(1)`` per byte of the
    remaining length and one more for the body, and goes back to ``select`` after each packet. Profiled under
    load (single-reading messages) the network thread spent over half of its time there. This overrides two
    private methods whose contract is stable across paho-mqtt 2.x (``_sock_recv(bufsize) -> bytes``, raising
    ``BlockingIOError`` when nothing is there, ``b""`` at end of stream; ``loop_read``); the buffer belongs to
    one socket and is dropped when paho reconnects. It also skips paho's per-topic callback matching (no
    ``message_callback_add`` here). The integration tests run the intake through it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object | None = None

    def _buffered(self) -> bool:
        return self._rpos < len(self._rbuf) and self._rsock is self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffered():
            data = super()._sock_recv(max(bufsize, _READ_CHUNK))
            if len(data) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos, self._rsock = data, 0, self._sock
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        # paho matches every message against its per-topic callbacks first (a recursive generator per
        # message: a tenth of the hub's time in the profile); the intake registers none, so call on_message.
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # Packets already in the buffer do not make the socket readable: handle them before select() again.
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
            rc = super().loop_read(1)
        return rc


class _QuietWhenStopping(logging.Filter):
    """Drop paho's ERROR "Client is not connected" that it logs when stopped before ever connecting.

    paho-mqtt 2.2 ``loop_forever`` runs one ``_loop`` after the first-connection retry loop is told to stop,
    with no socket; that is our own stop, not an error.
    """

    def __init__(self, stopping: threading.Event) -> None:
        super().__init__()
        self._stopping = stopping

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._stopping.is_set() and str(record.msg).startswith("Client is not connected"))


class Handover:
    """A bounded queue from one producer thread (paho's) to the event loop, without a round trip per item.

    Loop side, the interface of :class:`asyncio.Queue` the pipeline uses: :meth:`get_nowait`, :meth:`get`,
    :meth:`qsize` (and :meth:`put_nowait` for tests). Thread side, :meth:`put_blocking`: appends, waiting while
    ``maxsize`` items are held, and schedules a wake-up of the loop only if a :meth:`get` is waiting.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[InboundMessage] = deque()
        self._space = threading.Condition(threading.Lock())
        self._space_waiters = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._getter: asyncio.Future[None] | None = None
        self._wake_pending = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def qsize(self) -> int:
        return len(self._items)

    def get_nowait(self) -> InboundMessage:
        try:
            item = self._items.popleft()
        except IndexError:
            raise asyncio.QueueEmpty from None
        if self._space_waiters:
            with self._space:
                self._space.notify()
        return item

    async def get(self) -> InboundMessage:
        """The next item, waiting for one. Cancelling it never loses an item (items are taken only here)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._items:
                return self.get_nowait()
            getter: asyncio.Future[None] = loop.create_future()
            self._getter = getter
            try:
                # The producer appends before it looks at _getter: look again now that _getter is set.
                if not self._items:
                    await getter
            finally:
                self._getter = None

    def put_nowait(self, item: InboundMessage) -> None:
        """Loop side (tests): append without waiting."""
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def put_blocking(self, item: InboundMessage, timeout_s: float) -> bool:
        """Thread side: append ``item``; False if no room came within ``timeout_s`` (nothing was appended)."""
        if len(self._items) >= self.maxsize:
            with self._space:
                self._space_waiters += 1
                try:
                    while len(self._items) >= self.maxsize:
                        if not self._space.wait(timeout_s):
                            return False
                finally:
                    self._space_waiters -= 1
        self._items.append(item)
        if self._getter is not None and not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed; the item stays unacknowledged
                return True
        return True

    def _wake(self) -> None:
        self._wake_pending = False
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)


def topic_filters(shared_group: str | None) -> list[str]:
    """The subscription filters of the intake, as ``$share/{group}/...`` when a group is set."""
    filters = [subscription(channel) for channel in INTAKE_CHANNELS]
    if shared_group:
        filters = [shared(shared_group, f) for f in filters]
    return filters


class MqttIntake:
    """Subscribes to the v1 topics and puts :class:`~hub.ingest.InboundMessage` on ``queue``, unacknowledged.

    ``async with`` starts the network thread (it connects and reconnects by itself with capped backoff, so an
    unreachable broker does not stop the hub); leaving the block disconnects and joins the thread. Call
    :meth:`stop_accepting` first to stop handing over new messages while the pipeline drains.
    """

    def __init__(
        self,
        settings: MqttSettings,
        queue: Handover,
        *,
        receive_maximum: int = _MAX_RECEIVE_MAXIMUM,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._receive_maximum = max(1, min(receive_maximum, _MAX_RECEIVE_MAXIMUM))
        self._stop_timeout_s = stop_timeout_s
        self.filters = topic_filters(settings.shared_group)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._accepting = threading.Event()
        self._stopping = threading.Event()
        self._quiet = _QuietWhenStopping(self._stopping)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connection = 0  # written by the network thread only
        self._ever_connected = False
        self._down_logged = False
        self._refused_reason = ""
        self._subscribe_mid: int | None = None
        self.counters: dict[str, int] = {
            "received": 0,
            "connects": 0,
            "disconnects": 0,
            "acks_sent": 0,
            "acks_of_old_connection": 0,
            "not_handed_over": 0,
        }

    # ------------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        s = self._settings
        self._loop = asyncio.get_running_loop()
        self._queue.bind(self._loop)
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        client.manual_ack_set(True)
        paho_log = logging.getLogger(f"{__name__}.paho")
        paho_log.addFilter(self._quiet)
        client.enable_logger(paho_log)
        if s.username is not None:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls:
            try:
                client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise StartupError(f"MQTT TLS setup failed (ca_file {s.ca_file}): {exc}") from exc
        client.connect_timeout = s.connect_timeout_s
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_s
        # How many unacknowledged messages the broker may send us. Mosquitto honours it for MQTT 5 clients
        # instead of its max_inflight_messages (default 20), which would cap a batch at 20 messages.
        properties.ReceiveMaximum = self._receive_maximum
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=properties)
        self._client = client
        self._accepting.set()
        if client.loop_start() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise StartupError("could not start the MQTT network thread")
        log.info(
            "MQTT intake: broker %s:%d%s as %r, session expiry %d s, subscribing %s",
            s.host,
            s.port,
            " (TLS)" if s.tls else "",
            s.client_id,
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
        self._accepting.clear()

    async def close(self) -> None:
        """Disconnect (after the acks queued so far: paho writes its packets in order) and join the thread."""
        self.stop_accepting()
        self._subscribed.clear()
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping.set()
        client.disconnect()
        stopped = asyncio.to_thread(client.loop_stop)
        try:
            await asyncio.wait_for(stopped, self._stop_timeout_s)
        except TimeoutError:
            log.warning("the MQTT network thread did not stop within %.0f s", self._stop_timeout_s)
        self._connected.clear()
        logging.getLogger(f"{__name__}.paho").removeFilter(self._quiet)

    # ------------------------------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker has answered the subscription."""
        return self._connected.is_set() and self._subscribed.is_set()

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
        """Send the PUBACK of ``message`` (QoS 1). Never raises; False if it was not sent."""
        if message.qos == 0:
            return True
        client = self._client
        if client is None or message.connection != self._connection or not self._connected.is_set():
            # The broker resends it on the new connection (MQTT 5 section 4.4); that copy gets the ack.
            self.counters["acks_of_old_connection"] += 1
            return False
        try:
            rc = client.ack(message.mid, message.qos)
        except (OSError, ValueError) as exc:  # paho raises little here; never let an ack break the pipeline
            log.warning("could not send the ack of message %d: %s", message.mid, exc)
            return False
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self.counters["acks_sent"] += 1
        return True

    # ------------------------------------------------------------------------------------------ callbacks
    # Everything below runs in paho's network thread.

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            text = str(reason_code)
            if text != self._refused_reason:
                self._refused_reason = text
                log.error(
                    "the broker %s:%d refused the connection: %s; retrying",
                    self._settings.host,
                    self._settings.port,
                    text,
                )
            return
        self._refused_reason = ""
        self._down_logged = False
        self._connection += 1
        self.counters["connects"] += 1
        if self._ever_connected and not flags.session_present:
            log.warning(
                "the broker had no session for %r (expired or broker restarted without persistence): "
                "messages published while the hub was away are lost",
                self._settings.client_id,
            )
        self._ever_connected = True
        log.info(
            "connected to the broker %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        options = SubscribeOptions(qos=QOS)
        result, mid = client.subscribe([(f, options) for f in self.filters])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("could not send the subscription: %s", paho.error_string(result))
        self._subscribe_mid = mid
        self._connected.set()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: Sequence[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        for topic_filter, code in zip(self.filters, reason_codes, strict=False):
            if code.is_failure:
                log.error("the broker refused the subscription to %s: %s", topic_filter, code)
        self._subscribed.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self._down_logged:
            self._down_logged = True
            log.warning(
                "cannot reach the broker %s:%d; retrying with backoff up to %d s",
                self._settings.host,
                self._settings.port,
                self._settings.reconnect_max_s,
            )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        if not was_connected:
            return
        self.counters["disconnects"] += 1
        if self._client is None:
            log.info("disconnected from the broker")
        else:
            self._down_logged = True
            log.warning(
                "lost the connection to the broker (%s); reconnecting with backoff up to %d s",
                reason_code,
                self._settings.reconnect_max_s,
            )

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.counters["received"] += 1
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            raw: bytes = getattr(msg, "_topic", b"")
            topic = raw.decode("utf-8", errors="replace")
        message = InboundMessage(
            topic=topic,
            payload=bytes(msg.payload),
            mid=msg.mid,
            qos=msg.qos,
            retain=bool(msg.retain),
            received=time.time(),
            connection=self._connection,
        )
        if not self._hand_over(message):
            self.counters["not_handed_over"] += 1

    def _hand_over(self, message: InboundMessage) -> bool:
        """Put ``message`` on the queue, blocking this thread while the queue is full (back-pressure)."""
        loop = self._loop
        while True:
            if loop is None or loop.is_closed() or not self._accepting.is_set():
                # Left unacknowledged: the broker redelivers it to the next session.
                return False
            if self._queue.put_blocking(message, _HANDOVER_POLL_S):
                return True
