"""Sliding windows over a device's live polls, causal: the window ending at t closes when the
first poll after t arrives, and holds the samples in (t - window, t]. Window ends sit on a
grid of `hop` from the first poll, so a gap in polling skips windows instead of shifting them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from gatewayd.features import FeatureSpec, window_features


class DeviceWindows:
    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.window_ms = int(spec.window_s * 1000)
        self.hop_ms = int(spec.hop_s * 1000)
        self.samples: deque[tuple[int, tuple[float, ...]]] = deque()
        self.next_end: int | None = None
        self.expected = spec.min_fill * spec.window_s / spec.sample_period_s

    def add(self, ts_ms: int, values: dict[str, float]) -> Iterator[tuple[int, np.ndarray]]:
        """Add one poll; yields (end_ms, features) of every window this poll closes."""
        if self.next_end is None:
            self.next_end = ts_ms + self.window_ms - 1
        if self.samples and ts_ms < self.samples[-1][0]:
            return  # a poll from the past (clock stepped back): windows move on with new time only
        while ts_ms > self.next_end:
            end = self.next_end
            self.next_end += self.hop_ms
            rows = [(t, v) for t, v in self.samples if end - self.window_ms < t <= end]
            if len(rows) >= max(1.0, self.expected):
                ts = np.array([t for t, _ in rows], dtype=np.int64)
                yield end, window_features(self.spec, ts, np.array([v for _, v in rows], dtype=np.float64))
            if ts_ms > self.next_end + self.window_ms:  # a long gap: jump the grid past it
                gap = (ts_ms - self.next_end) // self.hop_ms
                self.next_end += gap * self.hop_ms
        self.samples.append((ts_ms, tuple(values.get(c, np.nan) for c in self.spec.channels)))
        while self.samples and self.samples[0][0] <= ts_ms - self.window_ms:
            self.samples.popleft()
