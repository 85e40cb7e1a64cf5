"""The recent window scores of each device, for the dashboard's charts: one preallocated ring
per device (end time and float32 columns), the oldest window overwritten, so its memory is
fixed whatever the run time."""

from __future__ import annotations

import math

import numpy as np

from .ring import RingSlots

COLUMNS = (
    "ratio",
    "iforest_ratio",
    "autoencoder_ratio",
    "pca_ratio",
    "iforest",
    "autoencoder",
    "iforest_level",
    "autoencoder_level",
)
HISTORY_S = 3600  # what the charts show
BYTES_TOTAL = 4 << 20  # for all devices together: 40 B a window
LEAST_WINDOWS = 60


def ring_capacity(hop_s: float, devices: int) -> int:
    """Windows kept per device: an hour of them, fewer when many devices share the budget."""
    share = BYTES_TOTAL // (max(1, devices) * (8 + 4 * len(COLUMNS)))
    return max(LEAST_WINDOWS, min(math.ceil(HISTORY_S / hop_s), share))


class ScoreHistory:
    def __init__(self, capacity: int):
        self.slots = RingSlots(capacity)
        self.ends = np.zeros(capacity, dtype=np.int64)
        self.values = np.zeros((capacity, len(COLUMNS)), dtype=np.float32)

    def append(self, end_ms: int, row: dict[str, float]) -> None:
        i = self.slots.take()
        self.ends[i] = end_ms
        self.values[i] = [row[c] for c in COLUMNS]

    def __len__(self) -> int:
        return len(self.slots)

    def between(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Windows ending in [start_ms, end_ms), oldest first: their end times and each column."""
        order = self.slots.oldest_first()
        ends = self.ends[order]
        keep = order[(ends >= start_ms) & (ends < end_ms)]
        return self.ends[keep], {c: self.values[keep, k] for k, c in enumerate(COLUMNS)}
