"""What the publisher sends next: live first, the backlog under the token bucket (table-driven)."""

from __future__ import annotations

import math

import pytest

from edge.outbox import Lane
from edge.outbox_replay import ReplayLimiter, Step, burst, next_step


@pytest.mark.parametrize(
    ("rate", "max_batch", "expected"),
    [
        (0, 500, 500),  # unlimited: a whole batch at a time
        (2000, 500, 500),  # a quarter second of 2000/s, capped at one batch
        (1000, 500, 250),
        (10, 500, 2),
        (1, 500, 1),  # at least one
        (0.1, 500, 1),
    ],
)
def test_burst(rate: float, max_batch: int, expected: int) -> None:
    assert burst(rate, max_batch) == expected


def test_the_bucket_starts_full_and_refills_at_the_rate() -> None:
    limiter = ReplayLimiter(100, 500, now=0.0)
    assert limiter.capacity == 25
    assert limiter.available(0.0) == 25
    limiter.take(25, 0.0)
    assert limiter.available(0.0) == 0
    assert limiter.available(0.1) == pytest.approx(10)
    assert limiter.wait_s(25, 0.1) == pytest.approx(0.15)
    assert limiter.available(10.0) == 25  # never more than the capacity


def test_unlimited_has_always_tokens() -> None:
    limiter = ReplayLimiter(0, 500, now=0.0)
    limiter.take(10**9, 0.0)
    assert limiter.available(0.0) == math.inf
    assert limiter.wait_s(500, 0.0) == 0.0


def test_over_a_long_replay_the_rate_is_kept() -> None:
    """Simulate the publisher's loop with instant publishes: readings sent over 10 s stay within the rate."""
    limiter = ReplayLimiter(300, 100, now=0.0)
    now, sent, backlog = 0.0, 0, 10_000
    while now < 10.0:
        step = next_step(
            live=0, live_waited_s=0, backlog=backlog, limiter=limiter, max_batch=100, max_delay_s=1, now=now
        )
        if step.lane is Lane.BACKLOG:
            limiter.take(step.limit, now)
            sent += step.limit
            backlog -= step.limit
        else:
            assert step.wait_s is not None
            assert step.wait_s > 0
            now += step.wait_s
    assert 300 * 10 <= sent <= 300 * 10 + limiter.capacity + 100


LIMITLESS = ReplayLimiter(0, 100, now=0.0)


@pytest.mark.parametrize(
    ("live", "waited", "backlog", "expected"),
    [
        (0, 0.0, 0, Step(None, wait_s=None)),  # nothing: wait for a put
        (100, 0.0, 500, Step(Lane.LIVE, 100)),  # a full live batch goes first
        (3, 0.5, 500, Step(Lane.LIVE, 100)),  # a live reading has waited max_delay: it goes first
        (3, 0.1, 500, Step(Lane.BACKLOG, 100)),  # live not due: the backlog meanwhile
        (3, 0.1, 0, Step(None, wait_s=0.4)),  # live not due, no backlog: wait for the delay
        (0, 0.0, 42, Step(Lane.BACKLOG, 42)),
    ],
)
def test_next_step(live: int, waited: float, backlog: int, expected: Step) -> None:
    step = next_step(
        live=live, live_waited_s=waited, backlog=backlog, limiter=LIMITLESS, max_batch=100, max_delay_s=0.5, now=0.0
    )
    assert step.lane == expected.lane
    assert step.limit == expected.limit
    if expected.wait_s is None:
        assert step.wait_s is None
    else:
        assert step.wait_s == pytest.approx(expected.wait_s)


def test_an_empty_bucket_waits_for_the_sooner_of_tokens_and_the_live_delay() -> None:
    limiter = ReplayLimiter(100, 100, now=0.0)  # 25 tokens at most
    limiter.take(25, 0.0)
    step = next_step(live=0, live_waited_s=0, backlog=1000, limiter=limiter, max_batch=100, max_delay_s=0.5, now=0.0)
    assert step.lane is None
    assert step.wait_s == pytest.approx(0.25)
    step = next_step(live=2, live_waited_s=0.4, backlog=1000, limiter=limiter, max_batch=100, max_delay_s=0.5, now=0.0)
    assert step.lane is None
    assert step.wait_s == pytest.approx(0.1)
    step = next_step(live=0, live_waited_s=0, backlog=1000, limiter=limiter, max_batch=100, max_delay_s=0.5, now=0.25)
    assert step == Step(Lane.BACKLOG, 25)
    # A small backlog does not wait for a full bucket.
    limiter.take(25, 0.25)
    step = next_step(live=0, live_waited_s=0, backlog=3, limiter=limiter, max_batch=100, max_delay_s=0.5, now=0.28)
    assert step == Step(Lane.BACKLOG, 3)
