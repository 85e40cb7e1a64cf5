"""Gaps in a series drawn as gaps: where no data came for longer than a few poll intervals (the
daemon was stopped, the device did not answer), a missing point (NaN) is put between the two
readings around it, so the chart breaks its line there instead of bridging the gap."""

from __future__ import annotations

import numpy as np

GAP_POLLS = 5  # missed polls that make a gap: fewer are jitter and skipped ticks
# Neighbouring points of an envelope (envelope.py) lie at most two buckets apart: at 2.5 buckets
# the cut-down series is not broken where the data runs on.
ENVELOPE_BUCKETS = 2.5
# Minute points sit at their buckets' starts, one bucket apart: 1.5 breaks at the first missing one.
MINUTE_BUCKETS = 1.5


def gap_after(interval_ms: float, bucket_ms: float, buckets: float) -> int:
    """The step between two drawn points beyond which they are not joined."""
    return int(max(GAP_POLLS * interval_ms, buckets * bucket_ms))


def broken_at_gaps(ts_ms: np.ndarray, columns: dict[str, np.ndarray], gap_ms: int) -> tuple[np.ndarray, dict]:
    """`ts_ms` and each column with a NaN point halfway across every step longer than `gap_ms`."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    at = np.flatnonzero(np.diff(ts_ms) > gap_ms) + 1
    if not len(at):
        return ts_ms, columns
    middles = (ts_ms[at - 1] + ts_ms[at]) // 2
    broken = {name: np.insert(np.asarray(v, dtype=np.float64), at, np.nan) for name, v in columns.items()}
    return np.insert(ts_ms, at, middles), broken
