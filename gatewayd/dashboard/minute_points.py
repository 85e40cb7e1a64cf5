"""One-minute summaries merged into a chart's points of whole minutes: each point is its
minutes' mean (weighted by their readings), lowest and highest reading, stamped with the start
of its first minute. Pure numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gatewayd.store.summaries import Minutes


@dataclass
class MinutePoints:
    ts_ms: np.ndarray  # int64, each point's start
    mean: np.ndarray  # float64, NaN for minutes without a number
    low: np.ndarray
    high: np.ndarray
    readings: int


def merged(minutes: Minutes | None, start_ms: int, point_ms: int) -> MinutePoints:
    """A channel's minutes (in time order; None: it has none) merged into points of `point_ms`
    from `start_ms` on."""
    if minutes is None or not len(minutes):
        empty = np.zeros(0)
        return MinutePoints(np.zeros(0, dtype=np.int64), empty, empty, empty, 0)
    bucket = (minutes.minute_ms - start_ms) // point_ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    weight = np.where(np.isnan(minutes.mean), 0, minutes.count).astype(np.float64)
    total = np.add.reduceat(weight, starts)
    sums = np.add.reduceat(np.where(weight > 0, minutes.mean, 0.0) * weight, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(total > 0, sums / total, np.nan)
    return MinutePoints(
        ts_ms=start_ms + bucket[starts] * point_ms,
        mean=means,
        low=np.fmin.reduceat(minutes.min, starts),
        high=np.fmax.reduceat(minutes.max, starts),
        readings=int(minutes.count.sum()),
    )
