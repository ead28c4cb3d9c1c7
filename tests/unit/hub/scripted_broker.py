"""A scripted MQTT 5 broker for the hub's client tests: a real socket server whose side of the protocol is a few
bytes written here (tests/unit/hub/test_hub_mqtt_*.py). It records every packet the client sends, per
connection, and answers CONNECT, SUBSCRIBE, PINGREQ and PUBLISH as the test sets it up."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from hub.mqtt.codec import REASON_STRING, encode_varint

CONNECT, PUBLISH, PUBACK, PUBREL, PUBCOMP, SUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 4, 6, 7, 8, 12, 14
PINGRESP = b"\xd0\x00"


def connack(properties: bytes = b"") -> bytes:
    """CONNACK: no session present, reason success, ``properties`` (encoded, without their length)."""
    body = b"\x00\x00" + encode_varint(len(properties)) + properties
    return b"\x20" + encode_varint(len(body)) + body


def suback(codes: bytes) -> bytes:
    """SUBACK for packet id 1, no properties, one reason code per filter."""
    body = b"\x00\x01\x00" + codes
    return b"\x90" + encode_varint(len(body)) + body


def puback(packet_id: int, reason: int | None, reason_string: str = "") -> bytes:
    """PUBACK of ``packet_id``: reason left out (success) when None, else with a reason string property if given."""
    body = packet_id.to_bytes(2, "big")
    if reason is not None:
        props = b""
        if reason_string:
            props = bytes((REASON_STRING,)) + len(reason_string).to_bytes(2, "big") + reason_string.encode()
        body += bytes((reason,)) + encode_varint(len(props)) + props
    return bytes((PUBACK << 4,)) + encode_varint(len(body)) + body


CONNACK_OK = connack()
SUBACK_OK = suback(b"\x01\x01\x01\x01")  # QoS 1 granted to each of the intake's four filters


def publish_id(body: bytes) -> int:
    """The packet identifier of a QoS 1 PUBLISH body."""
    topic_len = int.from_bytes(body[:2], "big")
    return int.from_bytes(body[2 + topic_len : 4 + topic_len], "big")


class ScriptedBroker:
    """Answers CONNECT with ``connack_packet``, SUBSCRIBE with ``suback_packet`` followed by ``after_suback``,
    PINGREQ with PINGRESP, and a client's PUBLISH with ``answer(packet_id)`` (bytes, or None: no answer); over TLS
    with ``tls`` (a server context).

    ``connections`` holds every packet each connection sent as (type, flags, body); :meth:`send` writes to the
    newest connection and :meth:`drop` closes it. ``async with`` gives the port it listens on.
    """

    def __init__(
        self,
        *,
        connack_packet: bytes = CONNACK_OK,
        suback_packet: bytes = SUBACK_OK,
        after_suback: bytes = b"",
        answer: Callable[[int], bytes | None] = lambda packet_id: puback(packet_id, None),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = tls
        self.connack_packet = connack_packet
        self.suback_packet = suback_packet
        self.after_suback = after_suback
        self.answer = answer
        self.connections: list[list[tuple[int, int, bytes]]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()

    def send(self, data: bytes) -> None:
        self._writers[-1].write(data)

    def drop(self) -> None:
        self._writers[-1].close()

    def sent(self, kind: int, connection: int = -1) -> list[bytes]:
        """Bodies of the packets of ``kind`` the client sent on a connection (default the newest; none yet: [])."""
        if not self.connections:
            return []
        return [body for k, _, body in self.connections[connection] if k == kind]

    @staticmethod
    async def wait(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Until ``predicate()`` (what it reads changes on the broker's side or the client's: polled)."""
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - the client's state and the broker's: no event to wait on
                await asyncio.sleep(0.02)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        packets: list[tuple[int, int, bytes]] = []
        self.connections.append(packets)
        self._writers.append(writer)
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:  # the remaining length, a variable byte integer
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                packets.append((kind, first & 0x0F, body))
                if kind == CONNECT:
                    writer.write(self.connack_packet)
                elif kind == SUBSCRIBE:
                    writer.write(self.suback_packet + self.after_suback)
                elif kind == PINGREQ:
                    writer.write(PINGRESP)
                elif kind == PUBLISH:
                    answer = self.answer(publish_id(body))
                    if answer is not None:
                        writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
