"""The intake bounded by bytes: the read buffer (linear in a packet's size, a packet over the limit refused on its
header), the queue to the pipeline (bytes as well as messages), and the limit told to and enforced on a broker
(a scripted one on a real socket: a real Mosquitto never sends more than the Maximum Packet Size we announce)."""

from __future__ import annotations

import time

import pytest
from scripted_broker import CONNECT, DISCONNECT, ScriptedBroker

from hub.config import MqttSettings
from hub.ingest import InboundMessage
from hub.mqtt.codec import (
    MAX_PACKET_BYTES,
    MAXIMUM_PACKET_SIZE,
    PUBLISH_OVERHEAD_BYTES,
    PacketReader,
    PacketTooLarge,
    Publish,
    decode_properties,
    encode_publish,
    encode_varint,
    parse_packets,
)
from hub.mqtt.intake import IntakeQueue, MqttIntake
from wire.v1 import MAX_MESSAGE_BYTES

TOPIC = "ioc/v1/site-a/gw-1/data"


def publish_of_size(total: int, packet_id: int = 1) -> bytes:
    """A QoS 1 PUBLISH on TOPIC of exactly ``total`` bytes."""
    empty = len(encode_publish(TOPIC, b"", qos=1, packet_id=packet_id))
    payload_len = total - empty
    packet = encode_publish(TOPIC, b"x" * payload_len, qos=1, packet_id=packet_id)
    while len(packet) > total:  # the Remaining Length grew by a byte or more
        payload_len -= len(packet) - total
        packet = encode_publish(TOPIC, b"x" * payload_len, qos=1, packet_id=packet_id)
    assert len(packet) == total
    return packet


# ------------------------------------------------------------------------------------------------ reader


def test_the_limit_is_the_contracts_largest_message_plus_mqtt_overhead() -> None:
    assert MAX_PACKET_BYTES == MAX_MESSAGE_BYTES + PUBLISH_OVERHEAD_BYTES
    # The overhead covers the longest v1 topic (64-character site and gateway, cmd/ack) with room to spare.
    longest = f"ioc/v1/{'s' * 64}/{'g' * 64}/cmd/ack"
    assert len(encode_publish(longest, b"x" * MAX_MESSAGE_BYTES, qos=1, packet_id=1)) < MAX_PACKET_BYTES


@pytest.mark.timeout(60)
def test_a_large_packet_in_small_reads_is_parsed_once_complete_in_linear_time() -> None:
    size = 32 * 1024 * 1024
    packet = publish_of_size(size)
    reader = PacketReader(max_packet=size)
    chunk = 2048  # 16,384 reads: re-joining the buffer on each read would copy ~256 GB
    started = time.perf_counter()
    got: list[object] = []
    for start in range(0, size, chunk):
        got += reader.feed(packet[start : start + chunk])
    elapsed = time.perf_counter() - started
    assert reader.parses == 2  # the first read (header: size known), the last (complete)
    assert reader.buffered == 0
    assert len(got) == 1
    assert isinstance(got[0], Publish)
    assert got[0].payload == packet[-len(got[0].payload) :]
    assert len(got[0].payload) > size - 64
    assert elapsed < 5.0, f"{elapsed:.1f} s for a {size >> 20} MiB packet"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100, 4096])
def test_a_stream_split_at_any_boundary_gives_the_same_packets(chunk: int) -> None:
    # Remaining Lengths of one, two and three bytes, and a control packet after them.
    packets = [publish_of_size(n, packet_id=i + 1) for i, n in enumerate((40, 129, 131, 20_000, 64))] + [b"\xd0\x00"]
    whole, used = parse_packets(b"".join(packets))
    assert len(whole) == 6
    assert used == sum(map(len, packets))
    stream = b"".join(packets)
    reader = PacketReader(max_packet=1 << 20)
    got: list[object] = []
    for start in range(0, len(stream), chunk):
        got += reader.feed(stream[start : start + chunk])
    assert got == whole
    assert reader.buffered == 0


def test_a_packet_over_the_limit_is_refused_on_its_header_and_one_at_the_limit_is_taken() -> None:
    header_over = b"\x32" + encode_varint(MAX_PACKET_BYTES - 4)  # 1 + 4 + (limit - 4) = limit + 1 bytes
    with pytest.raises(PacketTooLarge, match=f"packet of {MAX_PACKET_BYTES + 1} bytes is larger than the limit"):
        PacketReader().feed(header_over)
    at_limit = publish_of_size(MAX_PACKET_BYTES)
    reader = PacketReader()
    assert reader.feed(at_limit[:100]) == []
    (packet,) = reader.feed(at_limit[100:])
    assert isinstance(packet, Publish)
    assert len(packet.payload) > MAX_MESSAGE_BYTES


# ------------------------------------------------------------------------------------------------ queue


def message(n: int, size: int) -> InboundMessage:
    return InboundMessage(topic=TOPIC, payload=b"x" * size, mid=n, qos=1)


def test_the_queue_is_full_at_its_byte_bound_and_has_space_again_at_half() -> None:
    queue = IntakeQueue(maxsize=1000, max_bytes=10_000)
    calls: list[int] = []
    queue.put_many([message(n, 3000) for n in range(3)])
    assert (queue.full, queue.bytes) == (False, 9000)
    queue.put_nowait(message(3, 3000))
    assert (queue.full, queue.bytes) == (True, 12_000)  # 4 messages of 1000 allowed, but 10,000 bytes
    queue.on_space(lambda: calls.append(queue.bytes))
    queue.get_nowait()
    assert calls == []  # 9000 bytes: still over half
    queue.get_nowait()
    assert calls == []  # 6000
    queue.get_nowait()
    assert calls == [3000]
    assert not queue.full


def test_the_byte_bound_is_a_setting_of_at_least_one_largest_message() -> None:
    assert MqttSettings().queue_max_bytes == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="queue_max_bytes"):
        MqttSettings(queue_max_bytes=MAX_MESSAGE_BYTES - 1)


# ------------------------------------------------------------------------------------------------ live


def connect_properties(body: bytes) -> dict[int, object]:
    """The properties of a CONNECT body (after protocol name, version, flags and keep-alive)."""
    props, _ = decode_properties(body, 2 + 4 + 1 + 1 + 2)
    return props


@pytest.mark.timeout(60)
async def test_the_intake_announces_the_limit_and_refuses_a_larger_packet_with_disconnect_packet_too_large() -> None:
    # Of the packet over the limit only its first bytes: the header is what gets it refused, and a broker still
    # writing after the client closed would make the client's host reset the connection, which may discard the
    # DISCONNECT before the broker reads it.
    publishes = publish_of_size(MAX_PACKET_BYTES, packet_id=1) + publish_of_size(MAX_PACKET_BYTES + 1, 2)[:64]
    broker = ScriptedBroker(after_suback=publishes)
    queue = IntakeQueue(10)
    async with broker as port:
        # No second connection during the test (the first wait is 30 to 60 s): it would be handed the packet again.
        settings = MqttSettings(
            host="127.0.0.1", port=port, client_id="hub-bytes-test", reconnect_min_s=60, reconnect_max_s=60
        )
        async with MqttIntake(settings, queue) as intake:
            await broker.wait(lambda: bool(broker.sent(DISCONNECT, 0)), 30)
            assert connect_properties(broker.sent(CONNECT, 0)[0])[MAXIMUM_PACKET_SIZE] == MAX_PACKET_BYTES
            assert broker.sent(DISCONNECT, 0)[0] == b"\x95"  # reason: packet too large (MQTT 5 section 3.14.2.1)
            assert intake.counters["refused_packets"] == 1
            # The packet at the limit was handed over; the one above it never was.
            assert queue.qsize() == 1
            assert queue.get_nowait().mid == 1
            assert queue.bytes == 0
