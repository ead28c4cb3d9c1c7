"""A data message never exceeds the contract's byte limit (``wire.v1.MAX_MESSAGE_BYTES``): the publisher cuts a
batch where the bytes run out, and the pieces carry every reading, in order."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from edge.publisher import ReadingTooLarge, encode_batch
from wire.v1 import MAX_MESSAGE_BYTES, MAX_READINGS_PER_BATCH, DataBatch, Reading, decode, encode

SESSION = "session-0001"
TS = 1_733_000_000_000


def meter(i: int) -> Reading:
    """A 24-metric power meter reading (~750 bytes)."""
    return Reading(
        device=f"pm-{i % 50}",
        kind="power_meter",
        ts=TS + i,
        metrics={f"metric_{m:02d}_w": 230.12345886230469 + m for m in range(24)},
    )


def split_all(readings: list[Reading], max_bytes: int) -> list[bytes]:
    out, rest, seq = [], readings, 1
    while rest:
        payload, count = encode_batch(SESSION, seq, rest, replay=True, max_bytes=max_bytes)
        out.append(payload)
        rest, seq = rest[count:], seq + 1
    return out


def test_a_batch_within_the_limit_is_one_message_as_before() -> None:
    readings = [meter(i) for i in range(10)]
    payload, count = encode_batch(SESSION, 7, readings, replay=False)
    assert count == 10
    assert payload == encode(DataBatch(session=SESSION, seq=7, readings=readings))


@pytest.mark.parametrize("max_bytes", [5_000, 9_999, 20_000, 100_003])
def test_a_batch_is_cut_at_the_longest_prefix_that_fits(max_bytes: int) -> None:
    readings = [meter(i) for i in range(200)]
    payloads = split_all(readings, max_bytes)
    assert all(len(p) <= max_bytes for p in payloads)
    decoded = [decode(p, DataBatch) for p in payloads]
    assert [r for b in decoded for r in b.readings] == readings
    assert [b.seq for b in decoded] == list(range(1, len(payloads) + 1))
    assert all(b.replay for b in decoded)
    # Longest prefix: one more reading would not have fit.
    for batch, nxt in itertools.pairwise(decoded):
        longer = DataBatch(session=SESSION, seq=batch.seq, readings=[*batch.readings, nxt.readings[0]], replay=True)
        assert len(encode(longer)) > max_bytes


def test_a_full_replay_batch_of_power_meters_goes_as_several_messages_under_the_contract_limit() -> None:
    readings = [meter(i) for i in range(MAX_READINGS_PER_BATCH)]
    whole = len(encode(DataBatch(session=SESSION, seq=1, readings=readings, replay=True)))
    assert whole > MAX_MESSAGE_BYTES
    payloads = split_all(readings, MAX_MESSAGE_BYTES)
    assert len(payloads) == -(-whole // MAX_MESSAGE_BYTES)  # as few as the bytes allow
    assert all(len(p) <= MAX_MESSAGE_BYTES for p in payloads)
    assert sum(len(msgspec.json.decode(p)["readings"]) for p in payloads) == MAX_READINGS_PER_BATCH


def test_a_reading_larger_than_any_message_is_named() -> None:
    big = Reading(device="sign-1", kind="sign", ts=TS, metrics={"text": "x" * 2000})
    with pytest.raises(ReadingTooLarge, match="device 'sign-1' encodes to 2"):
        encode_batch(SESSION, 1, [big, meter(1)], replay=False, max_bytes=1000)
