"""Page-Hinkley change detection, two-sided, for a stream of numbers (scores, feature means).

The stream is first measured for `min_samples` values (its mean and standard deviation); after
that, each value is taken in units of that standard deviation, and the test accumulates its
deviations from the running mean beyond a tolerance `delta`. Drift is declared when the
accumulated deviation rises more than `threshold` above its lowest point (an upward change) or
falls that far below its highest (downward); then the test starts afresh. In those units the
defaults (delta 0.5, threshold 50) ignore noise for practical purposes (the expected run between
false alarms is of the order of e^50 values) and catch a shift of two standard deviations
within about 35 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class PageHinkley:
    delta: float = 0.5
    threshold: float = 50.0
    min_samples: int = 60
    n: int = 0
    warm_mean: float = 0.0
    warm_m2: float = 0.0
    scale: float = 0.0
    k: int = 0
    mean: float = 0.0
    up: float = 0.0
    up_min: float = 0.0
    down: float = 0.0
    down_max: float = 0.0

    def reset(self) -> None:
        self.n = self.k = 0
        self.warm_mean = self.warm_m2 = self.scale = self.mean = 0.0
        self.up = self.up_min = self.down = self.down_max = 0.0

    def level(self) -> float | None:
        """How far the test has come towards declaring drift (1.0 declares it), or None while
        it is still measuring the stream."""
        if self.n < self.min_samples:
            return None
        return max(self.up - self.up_min, self.down_max - self.down) / self.threshold

    def update(self, x: float) -> str | None:
        """Feed one value; returns "up" or "down" when a change is detected, else None."""
        if not math.isfinite(x):
            return None
        self.n += 1
        if self.n <= self.min_samples:  # measuring the stream's spread first
            d = x - self.warm_mean
            self.warm_mean += d / self.n
            self.warm_m2 += d * (x - self.warm_mean)
            if self.n == self.min_samples:
                self.scale = math.sqrt(self.warm_m2 / self.n) or 1e-12
            return None
        z = x / self.scale
        self.k += 1
        self.mean += (z - self.mean) / self.k
        self.up += z - self.mean - self.delta
        self.up_min = min(self.up_min, self.up)
        self.down += z - self.mean + self.delta
        self.down_max = max(self.down_max, self.down)
        if self.up - self.up_min > self.threshold:
            self.reset()
            return "up"
        if self.down_max - self.down > self.threshold:
            self.reset()
            return "down"
        return None
