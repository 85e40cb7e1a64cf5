"""The level the models compare a device's windows against, following slow normal change.

Training sees a few minutes to hours of a device; a temperature that creeps by a degree over
the next hours, or a vibration level that settles, is normal operation the models never saw,
and compared with the training state alone it alarms for as long as it lasts. The baseline
starts at the training mean and follows windows judged clearly normal (combined ratio below
FOLLOW_BELOW, no incident open) as an exponential average whose time constant is
`follow_windows` window lengths (so the same setting means the same on a device polled every
second and on one sampled every three minutes); the models score each window's features
shifted by how far the baseline has moved.

It never follows an alarming window or an open incident, so a sustained fault stays open
until the device is back, and a change faster than the time constant is seen whole. A fault
that develops more slowly than that is followed; the drift watch (drift.py) compares with
the training state, not the baseline, and reports it. A new bundle, or a restart, starts
from its training mean again.
"""

from __future__ import annotations

import numpy as np

FOLLOW_BELOW = 0.5  # of the alarm ratio: only windows well inside normal move the baseline


class Baseline:
    def __init__(self, training_mean: np.ndarray, follow_windows: float, window_s: float, hop_s: float):
        self.training_mean = np.asarray(training_mean, dtype=np.float64)
        self.level = self.training_mean.copy()
        # the share of the way to each new normal window: one hop of the time constant
        self.rate = min(1.0, hop_s / (follow_windows * window_s)) if follow_windows > 0 else 0.0

    @property
    def offset(self) -> np.ndarray:
        """How far the baseline has moved from the training mean, per feature."""
        return self.level - self.training_mean

    def shift(self, features: np.ndarray) -> np.ndarray:
        """Features as the models should see them: moved back by the baseline's offset."""
        return features - self.offset if self.rate else features

    def follow(self, features: np.ndarray, ratio: float, incident_open: bool) -> None:
        """Move towards one window's (unshifted) features if it was clearly normal; a feature
        the window could not compute stays where it is."""
        if not self.rate or incident_open or not ratio < FOLLOW_BELOW:
            return
        known = np.isfinite(features)
        self.level[known] += self.rate * (features[known] - self.level[known])
