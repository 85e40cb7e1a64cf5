"""Page-Hinkley change detection, two-sided, for a stream of numbers (scores, feature means).

The test accumulates deviations of each value from the running mean beyond a tolerance
`delta`; drift is declared when the accumulated deviation rises more than `threshold` above
its lowest point (upward change) or falls that far below its highest (downward change). After
a detection the test starts afresh. `min_samples` keeps it quiet while the mean settles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class PageHinkley:
    delta: float = 0.05
    threshold: float = 20.0
    min_samples: int = 30
    n: int = 0
    mean: float = 0.0
    up: float = 0.0
    up_min: float = 0.0
    down: float = 0.0
    down_max: float = 0.0

    def reset(self) -> None:
        self.n = 0
        self.mean = self.up = self.up_min = self.down = self.down_max = 0.0

    def update(self, x: float) -> str | None:
        """Feed one value; returns "up" or "down" when a change is detected, else None."""
        if not math.isfinite(x):
            return None
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.up += x - self.mean - self.delta
        self.up_min = min(self.up_min, self.up)
        self.down += x - self.mean + self.delta
        self.down_max = max(self.down_max, self.down)
        if self.n < self.min_samples:
            return None
        if self.up - self.up_min > self.threshold:
            self.reset()
            return "up"
        if self.down_max - self.down > self.threshold:
            self.reset()
            return "down"
        return None
