"""Backoff bounds: the n-th delay lies in [d/2, d], d = min(cap, base * 2**(n-1)); the device policy's cap."""

from __future__ import annotations

import random

import pytest

from edge.backoff import Backoff
from edge.scheduler import backoff_for


@pytest.mark.parametrize("seed", range(20))
def test_delays_stay_within_their_bounds(seed: int) -> None:
    backoff = Backoff(2.0, 20.0, random.Random(seed))
    expected_ceilings = [2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]
    for ceiling in expected_ceilings:
        delay = backoff.next()
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert 1.0 <= backoff.next() <= 2.0


def test_jitter_spreads_the_delays() -> None:
    delays = set()
    for seed in range(50):
        backoff = Backoff(1.0, 10.0, random.Random(seed))
        delays.add(round(backoff.next(), 6))
    assert len(delays) > 40


def test_a_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    delays = [backoff.next() for _ in range(2000)]
    assert max(delays) <= 30.0
    assert min(delays[-100:]) >= 15.0


@pytest.mark.parametrize(
    ("interval", "cap"),
    [(0.5, 5.0), (5.0, 50.0), (30.0, 300.0), (60.0, 300.0), (600.0, 600.0)],
)
def test_device_policy(interval: float, cap: float) -> None:
    backoff = backoff_for(interval)
    assert (backoff.base_s, backoff.cap_s) == (interval, cap)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="cap_s"):
        Backoff(2, 1)
