"""One connection to the broker kept up, the layer under the intake (:mod:`hub.mqtt.intake`) and the publisher
(:mod:`hub.mqtt.publisher`): :class:`Client` connects (TCP or TLS, CONNECT, CONNACK), answers the control packets
and reconnects; :class:`Connection` reads (the packet parser), hands the packets to its client and writes.

What both roles get from here:

- Keep-alive: a PINGREQ when nothing was written for half the keep-alive; a connection that brought nothing
  (not even a PINGRESP) for 1.5 x keep-alive while we were reading is dropped and made again.
- Reconnects with capped exponential backoff and equal jitter: the n-th failed attempt in a row waits a random
  time in [d/2, d], ``d = min(reconnect_max_s, reconnect_min_s * 2**(n-1))`` (:func:`reconnect_delay`, the rule
  of the agent's ``edge/backoff.py`` and the writer's ``RetryPolicy``), so the hubs of a shared group that lost
  the broker together do not come back in lockstep, and no wait drops below half its nominal value. A refused
  CONNECT or SUBSCRIBE is logged as an error with the broker's reason (once per reason), and retried.
- A PUBREL is answered with PUBCOMP (section 4.3.3): the hub never asks for QoS 2, but a broker that starts that
  flow anyway gets it completed rather than a session stalled on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from types import TracebackType
from typing import Final, Literal, Self

from common.tasks import cancel_and_wait
from hub.config import MqttSettings
from hub.errors import StartupError
from hub.mqtt.codec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAX_PACKET_BYTES,
    PINGREQ_PACKET,
    PINGRESP,
    PUBREL,
    SERVER_KEEP_ALIVE,
    ConnAck,
    MqttProtocolError,
    Packet,
    PacketReader,
    Publish,
    decode_connack,
    decode_disconnect,
    decode_packet_id,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_pubcomp,
    reason_text,
)

log = logging.getLogger("hub.mqtt")

#: MQTT 5 caps Receive Maximum at 65535 (also its value when a CONNACK or CONNECT leaves it out, section 3.2.2.3.3).
MAX_RECEIVE_MAXIMUM: Final = 65535

Account = Literal["intake", "observer", "command"]


def reconnect_delay(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """How long to wait before connecting again after ``failures`` (>= 1) failed attempts in a row: a random time
    in ``[d/2, d]`` with ``d = min(max_s, min_s * 2**(failures - 1))`` ("equal jitter")."""
    # Capping the exponent keeps 2**n finite however long the broker stays away.
    ceiling = min(max_s, min_s * 2.0 ** min(max(failures, 1) - 1, 64))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


class _Refused(Exception):
    """The broker refused the CONNECT (reason in the message)."""


class Connection(asyncio.BufferedProtocol):
    """One connection to the broker: parses what arrives, hands the packets to its client, writes our packets.

    A buffered protocol, so that one read takes up to ``read_buffer_bytes`` (the intake's: :data:`READ_BUFFER_BYTES`;
    a plain protocol gets at most 256 KiB a turn of the event loop: with the pipeline busy ~10 ms a turn on a big
    message, ~25 MB/s, less than one gateway's fast link, and the rest would wait at the broker in front of every
    other gateway's messages).
    """

    def __init__(self, client: Client, number: int, read_buffer_bytes: int) -> None:
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


class Client:
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
        self._conn: Connection | None = None
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
            await cancel_and_wait([task], self._stop_timeout_s)
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
                lambda: Connection(self, number, self._read_buffer_bytes),
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

    async def _handshake(self, conn: Connection, number: int) -> None:
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

    async def _serve(self, conn: Connection) -> str:
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

    def _received(self, conn: Connection, packets: list[Publish | Packet]) -> None:
        """Called by the connection with every packet of one read, in order."""
        for packet in packets:
            if type(packet) is Publish:
                # Only the intake subscribes: a client without a subscription gets no PUBLISH from a broker.
                self._log.debug("%signored a PUBLISH on %r from the broker", self._label, packet.topic)
            else:
                self._control(conn, packet)  # type: ignore[arg-type]

    def _control(self, conn: Connection, packet: Packet) -> None:
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

    def _on_connect(self, conn: Connection, connack: ConnAck) -> None:
        """The broker accepted the CONNECT of ``conn``."""

    def _packet(self, conn: Connection, packet: Packet) -> None:
        """A control packet this layer does not handle itself."""
        self._log.debug("%signored an MQTT packet of type %d from the broker", self._label, packet.type)

    def _on_down(self) -> None:
        """The connection is gone."""
