"""The one retry rule: doubling from the first delay, capped, jittered downwards only."""

import random

import pytest

from gatewayd.backoff import retry_delay


def test_it_doubles_per_failure_up_to_the_cap_without_jitter():
    delays = [retry_delay(f, first_s=0.5, max_s=10.0, jitter=0.0) for f in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry_delay(0, first_s=0.5, max_s=10.0) == 0.0
    assert retry_delay(10**6, first_s=1.0, max_s=60.0, jitter=0.0) == 60.0  # no overflow after a long outage


def test_jitter_spreads_delays_below_the_nominal_one():
    rng = random.Random(7)
    draws = [retry_delay(3, first_s=1.0, max_s=60.0, jitter=0.5, rng=rng) for _ in range(2000)]
    assert min(draws) >= 2.0 and max(draws) <= 4.0
    assert max(draws) - min(draws) > 1.5  # spread over the range, not one value
    assert sum(draws) / len(draws) == pytest.approx(3.0, abs=0.1)
