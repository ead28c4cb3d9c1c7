"""The dead-letter ring and the once-per-kind log."""

from __future__ import annotations

import logging

import pytest

from hub.storage.deadletter import DeadLetterKind, DeadLetterRing, OncePerKindLog


def test_ring_keeps_the_newest_and_truncates_payloads() -> None:
    ring = DeadLetterRing(keep=3, payload_bytes=4)
    for i in range(5):
        ring.add(f"t/{i}", b"abcdefgh", DeadLetterKind.MALFORMED, f"error {i}", 1000 + i)
    assert ring.total == 5
    assert len(ring) == 3
    latest = ring.latest(10)
    assert [d.topic for d in latest] == ["t/4", "t/3", "t/2"]
    assert latest[0].payload == "abcd"
    assert latest[0].payload_size == 8
    assert [d.topic for d in ring.latest(1)] == ["t/4"]
    assert ring.latest(0) == []


def test_payload_cut_inside_a_utf8_character_and_binary_payloads_stay_readable() -> None:
    ring = DeadLetterRing(keep=2, payload_bytes=2)
    letter = ring.add("t", "ẸX".encode(), DeadLetterKind.MALFORMED, "e", 1)
    assert letter.payload == "\ufffd"
    assert ring.add("t", b"\xff\xfe", DeadLetterKind.MALFORMED, "e", 1).payload == "\ufffd\ufffd"


def test_error_text_is_bounded() -> None:
    ring = DeadLetterRing(keep=1, payload_bytes=10)
    assert len(ring.add("t", b"", DeadLetterKind.CONTRACT, "x" * 5000, 1).error) == 1024


def test_once_per_kind_log_then_a_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    logger = logging.getLogger("test.deadletter")
    kinds = OncePerKindLog(logger, interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.deadletter"):
        kinds.record("malformed", "first")
        for i in range(50):
            kinds.record("malformed", f"repeat {i}")
        kinds.record("contract", "other kind")
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [
            "dead letter (malformed)",
            "dead letter (contract)",
        ]
        now[0] += 61
        kinds.flush()
        assert caplog.records[-1].getMessage() == "50 more dead letters (malformed) in the last 61 s; last: repeat 49"
        kinds.flush()  # nothing new: no new summary
        assert len(caplog.records) == 3
