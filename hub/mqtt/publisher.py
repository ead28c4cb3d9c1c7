"""The publisher: :class:`MqttPublisher` publishes with QoS 1 and awaits each PUBACK, whose reason code counts: a
publish the broker refuses (MQTT 5 section 3.4.2.1: 0x80 and above, e.g. 0x87 "not authorized" for a topic outside
the account's ACL) raises :class:`PublishRefused` naming the reason. The hub's commands go out through one
(``hub/operations/commands.py``).

Clean start, no session, no subscription; at most the broker's Receive Maximum publishes in flight
(section 4.9: the others wait for a PUBACK); a publish whose connection is lost before its PUBACK fails and is not
sent again (the broker may or may not have it: the caller decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Final

from hub.config import MqttSettings
from hub.errors import HubError
from hub.mqtt.codec import (
    PUBACK,
    RECEIVE_MAXIMUM,
    ConnAck,
    MqttProtocolError,
    Packet,
    PubAck,
    decode_puback,
    encode_publish,
    reason_text,
)
from hub.mqtt.connection import MAX_RECEIVE_MAXIMUM, Account, Client, Connection
from wire.v1 import QOS

log = logging.getLogger("hub.mqtt")

#: Bytes one read from the broker takes at most on a publisher's connection (the broker sends it only small control
#: packets).
PUBLISHER_READ_BUFFER_BYTES: Final = 64 * 1024
#: How long :meth:`MqttPublisher.publish` waits for the PUBACK by default (a command's publish:
#: hub/operations/commands.py).
PUBLISH_TIMEOUT_S: Final = 5.0


class PublishError(HubError):
    """A publish that did not reach the broker, or that it did not acknowledge in time (the reason in the message)."""


class PublishRefused(PublishError):
    """The broker answered the publish with a PUBACK reason code of 0x80 or above (MQTT 5 section 3.4.2.1)."""

    def __init__(self, topic: str, puback: PubAck) -> None:
        detail = f" ({puback.reason_string})" if puback.reason_string else ""
        super().__init__(f"the broker refused the publish on {topic}: {reason_text(puback.reason_code)}{detail}")
        self.reason_code = puback.reason_code


class MqttPublisher(Client):
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
        self._send_quota = MAX_RECEIVE_MAXIMUM
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

    def _on_connect(self, conn: Connection, connack: ConnAck) -> None:
        quota = connack.properties.get(RECEIVE_MAXIMUM, MAX_RECEIVE_MAXIMUM)
        self._send_quota = quota if isinstance(quota, int) and quota > 0 else MAX_RECEIVE_MAXIMUM
        self._make_room()

    def _packet(self, conn: Connection, packet: Packet) -> None:
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
