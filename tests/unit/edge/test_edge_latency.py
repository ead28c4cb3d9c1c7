"""Publish latency figures (:mod:`edge.latency`) and the keep-alive heartbeat's timing (:func:`heartbeat_after`)."""

from __future__ import annotations

import random

import pytest

from edge.latency import LatencyWindow
from edge.publisher import heartbeat_after


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ([], {"publish_latency_readings": 0}),
        ([40], {"publish_latency_readings": 1, "publish_latency_p50_ms": 40, "publish_latency_max_ms": 40}),
        ([30, 10, 20], {"publish_latency_readings": 3, "publish_latency_p50_ms": 20, "publish_latency_max_ms": 30}),
        (
            [10, 20, 30, 1000],
            {"publish_latency_readings": 4, "publish_latency_p50_ms": 25, "publish_latency_max_ms": 1000},
        ),
        # A wall clock stepped back between sampling and PUBACK: counted as 0, not negative.
        ([-5, 7], {"publish_latency_readings": 2, "publish_latency_p50_ms": 3.5, "publish_latency_max_ms": 7}),
    ],
)
def test_figures_of_one_interval(latencies: list[int], expected: dict[str, float]) -> None:
    window = LatencyWindow()
    window.add(latencies)
    assert window.take() == expected


def test_each_take_starts_a_new_interval() -> None:
    window = LatencyWindow()
    window.add([500, 600])
    window.take()
    window.add([5])
    assert window.take() == {"publish_latency_readings": 1, "publish_latency_p50_ms": 5, "publish_latency_max_ms": 5}
    assert window.take() == {"publish_latency_readings": 0}


def test_a_long_interval_keeps_a_bounded_sample_with_an_exact_max_and_count() -> None:
    window = LatencyWindow(sample_size=100, rng=random.Random(1))
    window.add(range(100_000))
    assert len(window._sample) == 100
    figures = window.take()
    assert figures["publish_latency_readings"] == 100_000
    assert figures["publish_latency_max_ms"] == 99_999
    # A uniform sample of 0..99999: its median lies near the true one (50,000), far from the first values.
    assert 30_000 <= float(figures["publish_latency_p50_ms"]) <= 70_000


@pytest.mark.parametrize(
    ("keepalive_s", "after_s"),
    [(5, 4.0), (10, 8.0), (30, 24.0), (60, 48.0), (1, 0.5), (2, 1.0)],
)
def test_the_heartbeat_comes_before_the_keepalive_with_a_margin(keepalive_s: int, after_s: float) -> None:
    assert heartbeat_after(keepalive_s) == after_s
    assert heartbeat_after(keepalive_s) < keepalive_s
