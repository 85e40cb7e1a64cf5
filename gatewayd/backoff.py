"""Retry delays for every retry loop (a device's polls, the MQTT broker, the cloud upload):
exponential backoff with jitter, so that a link that stays down is not hammered and devices or
gateways that failed together do not retry in step."""

from __future__ import annotations

import random


def retry_delay(
    failures: int, *, first_s: float, max_s: float, jitter: float = 0.5, rng: random.Random | None = None
) -> float:
    """The wait after `failures` failures in a row (1 for the first): `first_s`, doubled for
    every further failure, at most `max_s`, then scaled by a uniform draw in [1 - jitter, 1]."""
    if failures < 1:
        return 0.0
    delay = min(max_s, first_s * 2.0 ** min(failures - 1, 60))
    return delay * (rng or random).uniform(1.0 - jitter, 1.0)
