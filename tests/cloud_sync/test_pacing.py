"""Retry-After under a rush: the gateways turned away come back spread over the time the
process needs to serve them, and the span shrinks as they are served."""

import random

from cloud_sync.pacing import Pacing
from cloud_sync.uploader import paced_delay


def test_a_rush_is_spread_over_the_time_needed_to_serve_it():
    now = [0.0]
    pacing = Pacing(max_inflight=8, floor_s=1.0, clock=lambda: now[0], rng=random.Random(1))
    for _ in range(50):
        pacing.served("warm-up", 0.08)  # 8 at a time, 80 ms each: 100 batches a second
    assert 90 < pacing.rate() < 110
    answers = [int(pacing.retry_after(f"gw-{g}")) for g in range(1000)]
    assert min(answers) == 1  # the first ones turned away come back at once
    assert 8 <= max(answers) <= 12  # 1000 waiting at 100 a second: about 10 s for the last
    late = answers[500:]
    assert sum(a > 3 for a in late) > 0.6 * len(late)  # spread, not back together
    for g in range(900):  # served: no longer waiting, the span shrinks with them
        pacing.served(f"gw-{g}", 0.08)
    assert int(pacing.retry_after("gw-new")) <= 3


def test_a_gateway_asked_again_is_counted_once_and_forgotten_when_it_never_returns():
    now = [0.0]
    pacing = Pacing(max_inflight=1, floor_s=1.0, clock=lambda: now[0], rng=random.Random(2))
    for _ in range(5):
        pacing.retry_after("gw")
    assert list(pacing.waiting) == ["gw"]
    for g in range(10):
        pacing.retry_after(f"other-{g}")
    now[0] = 10_000.0
    pacing.retry_after("late")
    assert list(pacing.waiting) == ["late"]


def test_the_agent_waits_what_it_is_told_and_at_least_a_second():
    assert paced_delay(0.0) == 1.0 and paced_delay(0.3) == 1.0 and paced_delay(37.0) == 37.0
