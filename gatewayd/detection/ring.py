"""The slot arithmetic of a fixed ring of preallocated rows: where the next row goes (over the
oldest once the ring is full) and the rows oldest first. The rows themselves are the owner's
arrays, allocated once, so a ring's memory never grows."""

from __future__ import annotations

import numpy as np


class RingSlots:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.start = 0  # the oldest row
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def take(self) -> int:
        """The slot for a new row: the next free one, or the oldest once the ring is full."""
        slot = (self.start + self.size) % self.capacity
        if self.size == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.size += 1
        return slot

    def oldest_first(self) -> np.ndarray:
        return (self.start + np.arange(self.size)) % max(1, self.capacity)

    def reset(self, capacity: int | None = None) -> None:
        self.capacity = self.capacity if capacity is None else capacity
        self.start = self.size = 0
