"""Alarm levels from a device's own data at a stated false-alarm budget.

Training holds back the latest part of its windows (time order, never shuffled) as a
calibration set: the models are fitted on the earlier part and score the held-back part as
they will score the future, out of sample and a little later in time. Each score's
distribution there gives its alarm level:

- the body by its quantiles: `typical` is the median, `tail_start` the 90th percentile;
- the tail beyond as exponential (peaks over threshold, the shape-zero case of the
  generalized Pareto tail that SPOT fits; Siffer et al., KDD 2017): `tail_scale` is the mean
  excess over `tail_start`. A budget of `alpha` (the chance that a normal window exceeds the
  level) puts the level at `tail_start + tail_scale * ln(0.1 / alpha)`.

The level never goes below the `floor`: the score that windows of the training stretch itself
reach when scored by a model that did not see them. The latest part of a short stretch may
not hold every state the device went through in it (a pump's speeds in a few minutes of a
cycle longer than the held-back part); the whole stretch is cut into FLOOR_BLOCKS blocks in
time order, each block scored by a model fitted on the others, and the floor is the
FLOOR_QUANTILE of those scores (a quantile, not the maximum, so that a few odd windows in the
stretch do not blind the detector). A state the device was in while it was learning is normal.

The exponential tail rather than a fitted shape: a few hundred windows, strongly correlated
from one to the next, hold a few dozen excesses, from which a shape estimate swings from
bounded tails (a level that stops moving as the budget shrinks) to heavy ones; the
exponential tail grows with the budget by a fixed step per factor of ten, which the
validation in bench/detection_validation.py measures. The budget an operator sets is in false
alarms per day; each window is counted as one, which makes the level conservative (alarms
come in runs, and an incident needs several alarming windows in a row).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

TAIL_QUANTILE = 0.9
CALIBRATION_SHARE = 0.25  # the latest quarter of the training windows
MIN_CALIBRATION = 16  # windows; fewer and the tail is a guess
MIN_FIT = 24
ALPHA_RANGE = (1e-12, 0.1)
FLOOR_BLOCKS = 4
FLOOR_QUANTILE = 0.99
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Tail:
    """One score's distribution on the calibration windows."""

    typical: float
    tail_start: float
    tail_scale: float
    windows: int
    floor: float | None = None  # the level never goes below this (module docstring)

    @classmethod
    def fit(cls, scores: np.ndarray) -> Tail:
        s = np.asarray(scores, dtype=np.float64)
        s = s[np.isfinite(s)]
        if len(s) == 0:
            raise ValueError("no finite calibration scores")
        typical = float(np.median(s))
        start = float(np.quantile(s, TAIL_QUANTILE))
        excess = s[s > start] - start
        # A score that hardly moves on the calibration windows still needs a tail of some width:
        # a tenth of its spread there, or a millionth of its level.
        spread = float(np.quantile(s, 0.75) - np.quantile(s, 0.25))
        floor = max(0.1 * spread, 1e-6 * max(abs(typical), abs(start)), 1e-12)
        scale = max(float(excess.mean()) if len(excess) else 0.0, floor)
        return cls(typical, start, scale, len(s))

    def level(self, alpha: float) -> float:
        """The score a normal window exceeds with probability `alpha`."""
        a = min(max(alpha, ALPHA_RANGE[0]), ALPHA_RANGE[1])
        level = self.tail_start + self.tail_scale * math.log(ALPHA_RANGE[1] / a)
        return level if self.floor is None else max(level, self.floor)

    def with_floor(self, floor: float) -> Tail:
        return dataclasses.replace(self, floor=floor)

    def to_dict(self) -> dict:
        return {
            "typical": self.typical,
            "tail_start": self.tail_start,
            "tail_scale": self.tail_scale,
            "windows": self.windows,
            **({} if self.floor is None else {"floor": self.floor}),
        }


def window_alpha(false_alarms_per_day: float, hop_s: float) -> float:
    """The per-window exceedance probability of a budget in false alarms per day."""
    return false_alarms_per_day * hop_s / SECONDS_PER_DAY


def floor_of(scores: np.ndarray) -> float:
    """The floor from the out-of-sample scores of every block of the training stretch."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    return float(np.quantile(s, FLOOR_QUANTILE)) if len(s) else 0.0


def blocks(n: int, count: int = FLOOR_BLOCKS) -> list[tuple[int, int]]:
    """`count` consecutive blocks [start, end) of `n` windows in time order; none when the
    windows left to fit on without a block would be fewer than MIN_FIT."""
    edges = [round(n * i / count) for i in range(count + 1)]
    spans = [(edges[i], edges[i + 1]) for i in range(count)]
    return spans if all(n - (b - a) >= MIN_FIT and b > a for a, b in spans) else []


def split(n: int, share: float = CALIBRATION_SHARE) -> int:
    """Index of the first calibration window among `n` in time order; 0 when there are too
    few to hold any back (the tail is then taken from the fitted windows themselves)."""
    held = max(MIN_CALIBRATION, int(round(n * share)))
    return n - held if n - held >= MIN_FIT else 0
