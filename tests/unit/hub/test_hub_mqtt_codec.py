"""The hub's MQTT 5 codec: what it encodes, what it parses, and the malformed or partial input it refuses."""

from __future__ import annotations

import pytest

from hub.mqtt.codec import (
    CONNACK,
    DISCONNECT,
    PINGRESP,
    SUBACK,
    MqttProtocolError,
    Packet,
    Publish,
    decode_connack,
    decode_disconnect,
    decode_properties,
    decode_puback,
    decode_suback,
    encode_connect,
    encode_puback,
    encode_pubcomp,
    encode_publish,
    encode_subscribe,
    encode_varint,
    parse_packets,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_byte_integers_follow_the_spec_table(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded  # MQTT 5 section 1.5.5, table 1-1


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_out_of_range_variable_byte_integers_are_refused(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_varint(value)


def test_connect_carries_clean_start_off_session_expiry_receive_maximum_and_credentials() -> None:
    packet = encode_connect(
        "hub-1", keepalive_s=60, session_expiry_s=3600, receive_maximum=21000, username="hub", password="pw"
    )
    assert packet == (
        b"\x10\x23"  # CONNECT, remaining length 35
        b"\x00\x04MQTT\x05"  # protocol name, level 5
        b"\xc0"  # user name + password, clean start off
        b"\x00\x3c"  # keep-alive 60
        b"\x08\x11\x00\x00\x0e\x10\x21\x52\x08"  # properties: session expiry 3600, receive maximum 21000
        b"\x00\x05hub-1\x00\x03hub\x00\x02pw"
    )


def test_connect_may_carry_a_maximum_packet_size() -> None:
    packet = encode_connect("c", keepalive_s=5, clean_start=True, maximum_packet_size=64 * 1024 * 1024)
    assert packet == b"\x10\x13\x00\x04MQTT\x05\x02\x00\x05\x05\x27\x04\x00\x00\x00\x00\x01c"
    with pytest.raises(ValueError, match="maximum packet size out of range"):
        encode_connect("c", keepalive_s=5, maximum_packet_size=0)


def test_subscribe_and_puback_bytes() -> None:
    assert encode_subscribe(1, ["a/+", "$share/g/b/#"], 1) == (
        b"\x82\x18\x00\x01\x00\x00\x03a/+\x01\x00\x0c$share/g/b/#\x01"
    )
    assert encode_puback(0x1234) == b"\x40\x02\x12\x34"
    with pytest.raises(ValueError, match="at least one topic filter"):
        encode_subscribe(1, [], 1)


def test_a_read_buffer_is_split_into_every_complete_packet_and_the_partial_one_is_left() -> None:
    big = b"x" * 300  # a two-byte remaining length
    stream = (
        encode_publish("ioc/v1/s/g/data", b'{"a":1}', qos=1, packet_id=7)
        + encode_publish("t", big, qos=0, retain=True)
        + b"\xd0\x00"  # PINGRESP
        + encode_publish("ioc/v1/s/g/state", b"{}", qos=1, packet_id=8)
    )
    packets, used = parse_packets(stream)
    assert used == len(stream)
    assert packets == [
        Publish(b"ioc/v1/s/g/data", b'{"a":1}', 7, 1, False, False),
        Publish(b"t", big, 0, 0, True, False),
        Packet(PINGRESP, 0, b""),
        Publish(b"ioc/v1/s/g/state", b"{}", 8, 1, False, False),
    ]
    # Cut anywhere: the complete packets before the cut come out, the rest stays for the next read.
    ends = []
    pos = 0
    for packet in packets:
        size = len(
            encode_publish(packet.topic.decode(), packet.payload, qos=packet.qos, packet_id=packet.packet_id)
            if isinstance(packet, Publish)
            else b"\xd0\x00"
        )
        pos += size
        ends.append(pos)
    for cut in range(len(stream) + 1):
        got, used = parse_packets(stream[:cut])
        complete = [e for e in ends if e <= cut]
        assert used == (complete[-1] if complete else 0), cut
        assert got == packets[: len(complete)], cut
        rest, used2 = parse_packets(stream[used:])
        assert got + rest == packets
        assert used + used2 == len(stream)


def test_publish_properties_are_skipped_by_their_length_and_dup_is_seen() -> None:
    props = b"\x01\x01\x26\x00\x01k\x00\x01v"  # payload format indicator, a user property
    body = b"\x00\x01t\x00\x09" + bytes((len(props),)) + props + b"payload"
    packet = bytes((0x3A, len(body))) + body  # PUBLISH, DUP, QoS 1
    assert parse_packets(packet) == ([Publish(b"t", b"payload", 9, 1, False, True)], len(packet))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "more than four bytes"),
        (b"\x36\x05\x00\x01t\x00\x01", "QoS 3"),
        (b"\x30\x01\x00", "too short for its topic length"),
        (b"\x30\x03\x00\x05a", "too short for its topic"),
        (b"\x32\x04\x00\x01t\x00", "packet identifier"),
        (b"\x32\x06\x00\x01t\x00\x00\x00", "packet identifier 0"),
        (b"\x30\x03\x00\x01t", "without its properties length"),
        (b"\x30\x05\x00\x01t\x05x", "properties run past the end"),
        (b"\x30\x04\x00\x01t\x80", "truncated properties length"),
        (b"\x10\x00", "not one a server sends"),
        (b"\x00\x00", "not one a server sends"),
    ],
)
def test_malformed_packets_are_refused_naming_the_problem(data: bytes, error: str) -> None:
    with pytest.raises(MqttProtocolError, match=error):
        parse_packets(data)


def test_a_packet_over_the_limit_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(MqttProtocolError, match="larger than the limit"):
        parse_packets(b"\x30\x80\x80\x04", max_packet=1024)


def test_connack_suback_and_disconnect_are_decoded() -> None:
    packets, _ = parse_packets(b"\x20\x06\x01\x00\x03\x13\x00\x1e" + b"\x90\x06\x00\x01\x00\x01\x00\x87" + b"\xe0\x00")
    control = [p for p in packets if isinstance(p, Packet)]
    assert [p.type for p in control] == [CONNACK, SUBACK, DISCONNECT]
    connack = decode_connack(control[0].body)
    assert connack.session_present
    assert connack.reason_code == 0
    assert connack.properties == {0x13: 30}  # server keep alive
    suback = decode_suback(control[1].body)
    assert (suback.packet_id, suback.reason_codes) == (1, (0x01, 0x00, 0x87))
    assert decode_disconnect(control[2].body) == (0, "")
    reason = b"\x8e\x07\x1f\x00\x04gone"
    assert decode_disconnect(reason) == (0x8E, "gone")
    assert decode_connack(b"\x00\x86").reason_code == 0x86


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x00", "at least 2"),
        (b"\x02\x00", "reserved acknowledge flags"),
        (b"\x00\x00\x05\x13\x00", "run past the end"),
        (b"\x00\x00\x02\x7f\x00", "unknown property identifier 0x7F"),
        (b"\x00\x00\x02\x13\x00", "truncated property 0x13"),
        (b"\x00\x00\x04\x1f\x00\x02\xff", "truncated property 0x1F"),
        (b"\x00\x00\x05\x1f\x00\x02\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_connacks_are_refused(body: bytes, error: str) -> None:
    with pytest.raises(MqttProtocolError, match=error):
        decode_connack(body)


def test_user_properties_may_repeat() -> None:
    data = b"\x0e\x26\x00\x01a\x00\x01b\x26\x00\x01c\x00\x01d"
    props, end = decode_properties(data, 0)
    assert props == {0x26: [("a", "b"), ("c", "d")]}
    assert end == len(data)


def test_suback_without_codes_is_refused() -> None:
    with pytest.raises(MqttProtocolError, match="without reason codes"):
        decode_suback(b"\x00\x01\x00")


@pytest.mark.parametrize(
    ("body", "packet_id", "code", "reason"),
    [
        (b"\x00\x07", 7, 0x00, ""),  # Remaining Length 2: success, no properties (section 3.4.2.1)
        (b"\x00\x07\x10", 7, 0x10, ""),  # no matching subscribers: a success; property length left out
        (b"\x01\x00\x87\x00", 256, 0x87, ""),
        (b"\xff\xff\x87\x07\x1f\x00\x04deny", 0xFFFF, 0x87, "deny"),
    ],
)
def test_pubacks_are_decoded(body: bytes, packet_id: int, code: int, reason: str) -> None:
    puback = decode_puback(body)
    assert (puback.packet_id, puback.reason_code, puback.reason_string) == (packet_id, code, reason)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\x00", "PUBACK of 1 bytes"),
        (b"\x00\x01\x87\x05\x1f\x00", "run past the end"),
        (b"\x00\x01\x87\x00\x00", "bytes after its properties"),
    ],
)
def test_malformed_pubacks_are_refused(body: bytes, error: str) -> None:
    with pytest.raises(MqttProtocolError, match=error):
        decode_puback(body)


def test_pubcomp_bytes() -> None:
    assert encode_pubcomp(0x1234) == b"\x70\x02\x12\x34"  # section 3.7: reason success left out
