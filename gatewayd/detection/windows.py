"""Sliding windows over a device's live polls, causal: the window ending at t closes when the
first poll after t arrives, and holds the samples in (t - window, t]. Window ends sit on a
grid of `hop` from the first poll, so a gap in polling skips windows instead of shifting them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from gatewayd.detection.features import FeatureSpec, window_features
from gatewayd.detection.ring import RingSlots


class DeviceWindows:
    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.window_ms = int(spec.window_s * 1000)
        self.hop_ms = int(spec.hop_s * 1000)
        # one small array per poll: a tenth of the memory of a tuple of Python floats
        self.samples: deque[tuple[int, np.ndarray]] = deque()
        self.next_end: int | None = None
        self.expected = spec.min_fill * spec.window_s / spec.sample_period_s
        self._names: tuple[str, ...] = ()
        self._take = np.zeros(0, dtype=np.intp)

    def add(self, ts_ms: int, names: tuple[str, ...], values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Add one poll (`values` of the channels `names`); yields (end_ms, features) of every
        window this poll closes."""
        if self.samples and ts_ms < self.samples[-1][0]:
            if self.samples[-1][0] - ts_ms <= self.window_ms:
                return  # a poll out of order: windows only move forward
            # The wall clock stepped back: the windows start again from the new time rather than
            # waiting for it to catch up with the old one (a clock a year ahead would stop them).
            self.samples.clear()
            self.next_end = None
        if self.next_end is None:
            self.next_end = ts_ms + self.window_ms - 1
        while ts_ms > self.next_end:
            end = self.next_end
            self.next_end += self.hop_ms
            rows = [(t, v) for t, v in self.samples if end - self.window_ms < t <= end]
            if len(rows) >= max(1.0, self.expected):
                ts = np.array([t for t, _ in rows], dtype=np.int64)
                yield end, window_features(self.spec, ts, np.vstack([v for _, v in rows]))
            if ts_ms > self.next_end + self.window_ms:  # a long gap: jump the grid past it
                gap = (ts_ms - self.next_end) // self.hop_ms
                self.next_end += gap * self.hop_ms
        if names != self._names:  # where each of the spec's channels sits in a poll
            self._names = names
            self._take = np.array([names.index(c) if c in names else len(names) for c in self.spec.channels])
        padded = np.append(np.asarray(values, dtype=np.float64), np.nan)  # a channel the poll lacks: NaN
        self.samples.append((ts_ms, padded[self._take]))
        while self.samples and self.samples[0][0] <= ts_ms - self.window_ms:
            self.samples.popleft()


class RecentWindows:
    """A bounded ring of windows (end time, float32 features, device), oldest dropped first;
    allocated within `budget_bytes` once the feature width is known, and written through at once,
    so the memory it takes is resident from the start instead of creeping up as it fills."""

    def __init__(self, budget_bytes: int, *, least: int = 128, most: int = 20_000):
        self.budget, self.least, self.most = budget_bytes, least, most
        self.slots = RingSlots(0)
        self.ends = np.zeros(0, dtype=np.int64)
        self.features = np.zeros((0, 0), dtype=np.float32)
        self.device_index = np.zeros(0, dtype=np.int32)
        self.devices: list[str] = []

    def append(self, end_ms: int, features: np.ndarray, device: str) -> None:
        if self.features.shape[1] != len(features):  # first window, or a bundle with other features
            capacity = max(self.least, min(self.most, self.budget // (4 * len(features) + 16)))
            self.slots.reset(capacity)
            self.ends = np.full(capacity, -1, dtype=np.int64)
            self.features = np.full((capacity, len(features)), np.nan, dtype=np.float32)
            self.device_index = np.full(capacity, -1, dtype=np.int32)
        if device not in self.devices:
            self.devices.append(device)
        i = self.slots.take()
        self.ends[i] = end_ms
        self.features[i] = features
        self.device_index[i] = self.devices.index(device)

    @property
    def capacity(self) -> int:
        return self.slots.capacity

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, str]]:
        for i in self.slots.oldest_first():
            yield int(self.ends[i]), self.features[i].copy(), self.devices[self.device_index[i]]

    def clear(self) -> None:
        self.slots.reset()
