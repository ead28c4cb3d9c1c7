"""The part of MQTT 5 the hub speaks, as bytes: encoders for what it sends, a bulk parser for what it gets.

Written for speed on the hot path (profiled: paho-mqtt's per-packet Python work, MQTT 5 ``Properties`` parsing
above all, was the largest single cost of the hub): :func:`parse_packets` splits every complete packet out of a
read buffer in one pass and decodes PUBLISH packets right there, skipping their properties by length (the hub
uses none of them: it sets no Topic Alias Maximum, so the broker sends no topic aliases). Everything else the
broker may send (CONNACK, SUBACK, PUBACK of the hub's own QoS 1 publishes, PINGRESP, DISCONNECT, PUBREL for a QoS 2
publish, which the hub never asks for) comes out as a :class:`Packet` with its raw body, decoded by
:func:`decode_connack`, :func:`decode_suback`, :func:`decode_puback` and :func:`decode_disconnect` (MQTT 5.0,
OASIS standard, sections 2 and 3).

A malformed packet raises :class:`MqttProtocolError` naming what is wrong; the intake then drops the connection
(the broker redelivers every unacknowledged message to the next one). A packet larger than the intake's limit
(:data:`MAX_PACKET_BYTES`: the contract's largest message plus MQTT's overhead) raises :class:`PacketTooLarge` as
soon as its fixed header is read, before its body is buffered. :class:`PacketReader` keeps what a read left
over, in time and memory linear in the packet's size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from wire.v1 import MAX_MESSAGE_BYTES

# Packet types (upper nibble of the first byte).
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"  # reason 0x00 (normal): the broker keeps the session for its expiry

#: Largest Remaining Length (four bytes of variable byte integer).
MAX_REMAINING_LENGTH: Final = 268_435_455
#: What MQTT adds around a PUBLISH payload: the fixed header (1 byte and a Remaining Length of up to 4), the topic
#: (2 bytes of length and, for a v1 topic, at most ~150), the packet identifier (2) and the properties (a length
#: byte; neither the agents nor the broker put others on our messages). 1 KiB is ample.
PUBLISH_OVERHEAD_BYTES: Final = 1024
#: The largest packet of the contract, as MQTT 5 counts a packet's size (section 3.1.2.11.4: every byte of it,
#: fixed header included): the hub's Maximum Packet Size, and the broker's ``max_packet_size``.
MAX_PACKET_BYTES: Final = MAX_MESSAGE_BYTES + PUBLISH_OVERHEAD_BYTES

_CLIENT_ONLY: Final = frozenset({0, CONNECT, SUBSCRIBE, PINGREQ})
_PUBACK: Final = struct.Struct(">BBH")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")

#: Reason codes the broker may answer with (MQTT 5 section 2.4), for error messages.
REASONS: Final = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x92: "packet identifier not found",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}

# Property identifiers -> how their value is encoded (MQTT 5 section 2.2.2.2).
_BYTE, _U16_T, _U32_T, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: _BYTE,  # payload format indicator
    0x02: _U32_T,  # message expiry interval
    0x03: _UTF8,  # content type
    0x08: _UTF8,  # response topic
    0x09: _BINARY,  # correlation data
    0x0B: _VARINT,  # subscription identifier
    0x11: _U32_T,  # session expiry interval
    0x12: _UTF8,  # assigned client identifier
    0x13: _U16_T,  # server keep alive
    0x15: _UTF8,  # authentication method
    0x16: _BINARY,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _U32_T,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _UTF8,  # response information
    0x1C: _UTF8,  # server reference
    0x1F: _UTF8,  # reason string
    0x21: _U16_T,  # receive maximum
    0x22: _U16_T,  # topic alias maximum
    0x23: _U16_T,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _U32_T,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifier available
    0x2A: _BYTE,  # shared subscription available
}
SESSION_EXPIRY_INTERVAL: Final = 0x11
SERVER_KEEP_ALIVE: Final = 0x13
REASON_STRING: Final = 0x1F
RECEIVE_MAXIMUM: Final = 0x21
MAXIMUM_PACKET_SIZE: Final = 0x27


class MqttProtocolError(ValueError):
    """Bytes that are not a valid MQTT 5 packet (what is wrong is in the message)."""

    #: The reason code of the DISCONNECT that refuses it (MQTT 5 section 4.13: malformed packet).
    reason_code: int = 0x81
    #: The complete packets before the refused one in the same buffer (set by :func:`parse_packets`).
    packets: list[Publish | Packet] = []  # noqa: RUF012 - replaced per instance, never mutated


class PacketTooLarge(MqttProtocolError):
    """A packet larger than the Maximum Packet Size we announced (MQTT 5 section 3.1.2.11.4)."""

    reason_code = 0x95


def reason_text(code: int) -> str:
    name = REASONS.get(code)
    return f"{name} (0x{code:02X})" if name else f"reason code 0x{code:02X}"


def reason_string(properties: dict[int, object]) -> str:
    """The Reason String property of a packet's properties ('' when none; section 3.2.2.3.9)."""
    value = properties.get(REASON_STRING)
    return value if isinstance(value, str) else ""


class Publish(NamedTuple):
    """A PUBLISH as received: the topic still as bytes (decoded by the caller), ``packet_id`` 0 for QoS 0."""

    topic: bytes
    payload: bytes
    packet_id: int
    qos: int
    retain: bool
    dup: bool


class Packet(NamedTuple):
    """Any other packet: its type, the flags nibble and the body after the fixed header."""

    type: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    properties: dict[int, object] = field(default_factory=dict)

    @property
    def reason_string(self) -> str:
        return reason_string(self.properties)


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    #: 0x00 success, 0x10 no matching subscribers (also a success); 0x80 and above: the broker refused it.
    reason_code: int
    properties: dict[int, object] = field(default_factory=dict)

    @property
    def reason_string(self) -> str:
        return reason_string(self.properties)


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: dict[int, object] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ encoding


def encode_varint(value: int) -> bytes:
    """MQTT's variable byte integer (1-4 bytes)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"string longer than 65535 bytes ({len(data)})")
    return _U16.pack(len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool = False,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
    maximum_packet_size: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """A CONNECT packet (MQTT 5, no will)."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError(f"keep-alive out of range: {keepalive_s}")
    flags = 0x02 if clean_start else 0
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    props = b""
    if session_expiry_s is not None:
        props += bytes((SESSION_EXPIRY_INTERVAL,)) + _U32.pack(session_expiry_s)
    if receive_maximum is not None:
        if not 1 <= receive_maximum <= 0xFFFF:
            raise ValueError(f"receive maximum out of range: {receive_maximum}")
        props += bytes((RECEIVE_MAXIMUM,)) + _U16.pack(receive_maximum)
    if maximum_packet_size is not None:
        if not 1 <= maximum_packet_size <= 0xFFFFFFFF:
            raise ValueError(f"maximum packet size out of range: {maximum_packet_size}")
        props += bytes((MAXIMUM_PACKET_SIZE,)) + _U32.pack(maximum_packet_size)
    body = _string("MQTT") + bytes((5, flags)) + _U16.pack(keepalive_s) + encode_varint(len(props)) + props
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password.encode())
    return _packet(CONNECT << 4, body)


def encode_subscribe(packet_id: int, filters: list[str], qos: int) -> bytes:
    """A SUBSCRIBE of ``filters``, each with maximum QoS ``qos`` (no local, retain handling 0)."""
    if not filters:
        raise ValueError("a SUBSCRIBE needs at least one topic filter")
    body = _U16.pack(packet_id) + b"\x00" + b"".join(_string(f) + bytes((qos,)) for f in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def encode_publish(topic: str, payload: bytes, *, qos: int, packet_id: int = 0, retain: bool = False) -> bytes:
    """A PUBLISH without properties."""
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos} is not supported here")
    head = _string(topic) + (_U16.pack(packet_id) if qos else b"") + b"\x00"
    return _packet((PUBLISH << 4) | (qos << 1) | int(retain), head + payload)


def encode_disconnect(reason_code: int) -> bytes:
    """A DISCONNECT with a reason code and no properties (section 3.14.2)."""
    return bytes((DISCONNECT << 4, 1, reason_code))


def encode_puback(packet_id: int) -> bytes:
    """PUBACK with reason success (its reason code and properties left out, section 3.4.2.1)."""
    return _PUBACK.pack(0x40, 2, packet_id)


def encode_pubcomp(packet_id: int) -> bytes:
    """PUBCOMP with reason success, the answer to a PUBREL (section 3.7)."""
    return _PUBACK.pack(PUBCOMP << 4, 2, packet_id)


# ------------------------------------------------------------------------------------------------ decoding


def parse_packets(data: bytes, max_packet: int = MAX_REMAINING_LENGTH) -> tuple[list[Publish | Packet], int]:
    """Every complete packet at the start of ``data`` and how many bytes they took; a partial packet stays.

    Raise :class:`MqttProtocolError` for a malformed packet, :class:`PacketTooLarge` for one of more than
    ``max_packet`` bytes in all (fixed header included, as MQTT 5 counts Maximum Packet Size) as soon as its
    header is there.
    """
    out: list[Publish | Packet] = []
    try:
        return _parse(data, max_packet, out)
    except MqttProtocolError as exc:
        exc.packets = out
        raise


def _parse(data: bytes, max_packet: int, out: list[Publish | Packet]) -> tuple[list[Publish | Packet], int]:
    pos = 0
    end = len(data)
    while end - pos >= 2:
        first = data[pos]
        # Remaining Length: a variable byte integer, almost always one or two bytes.
        length = data[pos + 1]
        i = pos + 2
        if length & 0x80:
            length &= 0x7F
            shift = 7
            while True:
                if i >= end:
                    return out, pos  # the length itself is not complete yet
                byte = data[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise MqttProtocolError("malformed remaining length (more than four bytes)")
        stop = i + length
        if stop - pos > max_packet:
            raise PacketTooLarge(f"packet of {stop - pos} bytes is larger than the limit of {max_packet}")
        if stop > end:
            return out, pos
        kind = first >> 4
        if kind == PUBLISH:
            out.append(_publish(data, first, i, stop))
        else:
            if kind in _CLIENT_ONLY:
                raise MqttProtocolError(f"packet type {kind} is not one a server sends")
            out.append(Packet(kind, first & 0x0F, data[i:stop]))
        pos = stop
    return out, pos


def packet_size(data: bytes | bytearray | memoryview) -> int:
    """The size in all of the packet starting at ``data[0]``, or 0 while its Remaining Length is incomplete."""
    length = 0
    for n in range(1, min(len(data), 5)):
        byte = data[n]
        length |= (byte & 0x7F) << (7 * (n - 1))
        if not byte & 0x80:
            return 1 + n + length
    return 0


class PacketReader:
    """The packets of a byte stream as it arrives in reads of any size, in time and memory linear in its length.

    A packet split over many reads is appended to one ``bytearray`` (amortised O(1) a byte) and parsed once
    complete: once its header is in, its size is known (:func:`packet_size`) and it is not looked at again before
    that many bytes are there. (Joining the leftover and each new read into a new ``bytes`` copies everything
    buffered on every read: quadratic in a packet's size.) A packet over ``max_packet`` raises
    :class:`PacketTooLarge` when its header arrives, before its body is buffered.
    """

    def __init__(self, max_packet: int = MAX_PACKET_BYTES) -> None:
        self.max_packet = max_packet
        self._buf = bytearray()
        #: Size of the partial packet in ``_buf`` (0: its header is not complete yet).
        self._need = 0
        #: Times the parser ran (a partial packet whose size is known is not parsed again until complete).
        self.parses = 0

    @property
    def buffered(self) -> int:
        """Bytes of a partial packet held."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Publish | Packet]:
        """Every packet completed by ``data``, in order (raises :class:`MqttProtocolError` on a malformed one)."""
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        self.parses += 1
        packets, used = parse_packets(data, self.max_packet)
        if used < len(data):
            rest = memoryview(data)[used:]
            buf += rest
            self._need = packet_size(rest)
        else:
            self._need = 0
        return packets


def _publish(data: bytes, first: int, i: int, stop: int) -> Publish:  # noqa: PLR0912 - one pass, inlined
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3")
    if i + 2 > stop:
        raise MqttProtocolError("PUBLISH too short for its topic length")
    topic_end = i + 2 + ((data[i] << 8) | data[i + 1])
    topic = data[i + 2 : topic_end]
    j = topic_end
    packet_id = 0
    if qos:
        j += 2
        if j > stop:
            raise MqttProtocolError("PUBLISH too short for its topic and packet identifier")
        packet_id = (data[topic_end] << 8) | data[topic_end + 1]
        if packet_id == 0:
            raise MqttProtocolError("PUBLISH with QoS > 0 and packet identifier 0")
    elif j > stop:
        raise MqttProtocolError("PUBLISH too short for its topic")
    # Properties: skipped by their length (a variable byte integer).
    if j >= stop:
        raise MqttProtocolError("PUBLISH without its properties length")
    plen = data[j]
    j += 1
    if plen & 0x80:
        plen &= 0x7F
        shift = 7
        while True:
            if j >= stop:
                raise MqttProtocolError("PUBLISH with a truncated properties length")
            byte = data[j]
            j += 1
            plen |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttProtocolError("PUBLISH with a malformed properties length")
    j += plen
    if j > stop:
        raise MqttProtocolError("PUBLISH properties run past the end of the packet")
    return Publish(topic, data[j:stop], packet_id, qos, bool(first & 0x01), bool(first & 0x08))


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if i >= len(data):
            raise MqttProtocolError("truncated variable byte integer")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise MqttProtocolError("malformed variable byte integer (more than four bytes)")


def _read_bytes(data: bytes, i: int, what: str) -> tuple[bytes, int]:
    if i + 2 > len(data):
        raise MqttProtocolError(f"truncated {what} length")
    n = _U16.unpack_from(data, i)[0]
    i += 2
    if i + n > len(data):
        raise MqttProtocolError(f"truncated {what}")
    return data[i : i + n], i + n


def _read_text(data: bytes, i: int, what: str) -> tuple[str, int]:
    raw, i = _read_bytes(data, i, what)
    try:
        return raw.decode("utf-8"), i
    except UnicodeDecodeError as exc:
        raise MqttProtocolError(f"{what} is not UTF-8") from exc


def decode_properties(data: bytes, i: int) -> tuple[dict[int, object], int]:  # noqa: PLR0912 - one branch a type
    """The properties starting at ``data[i]`` (length first) as ``{identifier: value}``, and where they end.

    User properties (which may repeat) are collected as a list of pairs.
    """
    length, i = _read_varint(data, i)
    end = i + length
    if end > len(data):
        raise MqttProtocolError("properties run past the end of the packet")
    props: dict[int, object] = {}
    chunk = data[:end]
    while i < end:
        ident = chunk[i]
        i += 1
        kind = _PROPERTY_TYPES.get(ident)
        value: object
        if kind is None:
            raise MqttProtocolError(f"unknown property identifier 0x{ident:02X}")
        if kind == _BYTE:
            if i + 1 > end:
                raise MqttProtocolError(f"truncated property 0x{ident:02X}")
            value, i = chunk[i], i + 1
        elif kind == _U16_T:
            if i + 2 > end:
                raise MqttProtocolError(f"truncated property 0x{ident:02X}")
            value, i = _U16.unpack_from(chunk, i)[0], i + 2
        elif kind == _U32_T:
            if i + 4 > end:
                raise MqttProtocolError(f"truncated property 0x{ident:02X}")
            value, i = _U32.unpack_from(chunk, i)[0], i + 4
        elif kind == _VARINT:
            value, i = _read_varint(chunk, i)
        elif kind == _UTF8:
            value, i = _read_text(chunk, i, f"property 0x{ident:02X}")
        elif kind == _BINARY:
            value, i = _read_bytes(chunk, i, f"property 0x{ident:02X}")
        else:
            key, i = _read_text(chunk, i, "user property name")
            text, i = _read_text(chunk, i, "user property value")
            pairs = props.setdefault(ident, [])
            assert isinstance(pairs, list)
            pairs.append((key, text))
            continue
        props[ident] = value
    return props, end


def decode_connack(body: bytes) -> ConnAck:
    if len(body) < 2:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes (at least 2)")
    if body[0] & 0xFE:
        raise MqttProtocolError("CONNACK with reserved acknowledge flags set")
    props: dict[int, object] = {}
    if len(body) > 2:
        props, end = decode_properties(body, 2)
        if end != len(body):
            raise MqttProtocolError("CONNACK with bytes after its properties")
    return ConnAck(bool(body[0] & 0x01), body[1], props)


def decode_suback(body: bytes) -> SubAck:
    if len(body) < 3:
        raise MqttProtocolError(f"SUBACK of {len(body)} bytes (at least 3)")
    packet_id = _U16.unpack_from(body, 0)[0]
    props, end = decode_properties(body, 2)
    codes = tuple(body[end:])
    if not codes:
        raise MqttProtocolError("SUBACK without reason codes")
    return SubAck(packet_id, codes, props)


def decode_puback(body: bytes) -> PubAck:
    """A PUBACK: a Remaining Length of 2 means reason success and no properties (section 3.4.2.1)."""
    packet_id = decode_packet_id(body, "PUBACK")
    if len(body) == 2:
        return PubAck(packet_id, 0x00)
    props: dict[int, object] = {}
    if len(body) > 3:
        props, end = decode_properties(body, 3)
        if end != len(body):
            raise MqttProtocolError("PUBACK with bytes after its properties")
    return PubAck(packet_id, body[2], props)


def decode_disconnect(body: bytes) -> tuple[int, str]:
    """A server's DISCONNECT: its reason code and reason string ('' when none)."""
    if not body:
        return 0, ""
    code = body[0]
    reason = ""
    if len(body) > 1:
        props, _ = decode_properties(body, 1)
        reason = reason_string(props)
    return code, reason


def decode_packet_id(body: bytes, what: str) -> int:
    if len(body) < 2:
        raise MqttProtocolError(f"{what} of {len(body)} bytes (at least 2)")
    return int(_U16.unpack_from(body, 0)[0])
