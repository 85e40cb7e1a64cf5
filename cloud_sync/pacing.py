"""How long a turned-away gateway is told to wait (Retry-After), so that a fleet arriving at
once comes back at about the rate this process serves it, not all together again.

The process knows which gateways it turned away and has not served since (`waiting`), and how
fast it serves batches when busy (`max_inflight` over the mean time an accepted batch takes).
A gateway turned away is told a delay drawn uniformly over [floor, floor + waiting / rate]:
the waiting gateways come back spread over the time the process needs to serve them. The
agent honours the answer as given (no backoff of its own on top).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

FORGET_AFTER_S = 30.0  # a gateway told to come back and not seen this long after: gone


class Pacing:
    def __init__(
        self,
        max_inflight: int,
        floor_s: float = 1.0,
        ceiling_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.max_inflight = max_inflight
        self.floor_s, self.ceiling_s = floor_s, ceiling_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.waiting: dict[str, float] = {}  # gateway -> when to forget it
        self.batch_s = 0.05  # mean time of an accepted batch, moving average

    def served(self, gateway: str, took_s: float) -> None:
        self.waiting.pop(gateway, None)
        self.batch_s += 0.05 * (took_s - self.batch_s)

    def rate(self) -> float:
        """Batches a second this process serves when busy."""
        return self.max_inflight / max(self.batch_s, 1e-3)

    def retry_after(self, gateway: str, at_least_s: float = 0.0) -> str:
        """The Retry-After for a gateway turned away now, in whole seconds."""
        now = self.clock()
        if len(self.waiting) > 4 * self.max_inflight and next(iter(self.waiting.values())) < now:
            self.waiting = {g: t for g, t in self.waiting.items() if t >= now}
        span = len(self.waiting) / self.rate()
        delay = min(self.ceiling_s, max(at_least_s, self.floor_s + self.rng.uniform(0.0, span)))
        if gateway:  # (none when the database is away: everybody waits the same)
            self.waiting.pop(gateway, None)  # re-inserted last: roughly ordered by expiry
            self.waiting[gateway] = now + delay + FORGET_AFTER_S
        return str(math.ceil(delay))
