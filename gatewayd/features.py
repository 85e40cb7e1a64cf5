"""Window features: the vector a model scores for one window of a device's channels.

A `FeatureSpec` names the channels, the window length and hop, and the statistics taken per
channel. It travels in a model bundle's manifest so the gateway computes exactly the features
the model was trained on. Pure numpy, no I/O; NaN marks a missing sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

STATS = ("mean", "std", "min", "max", "last", "slope")


@dataclass(frozen=True)
class FeatureSpec:
    channels: tuple[str, ...]
    window_s: float = 10.0
    hop_s: float = 5.0
    stats: tuple[str, ...] = STATS
    min_fill: float = 0.5  # a window with fewer of its expected samples is not scored
    sample_period_s: float = field(default=1.0)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("a feature spec needs at least one channel")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channel names must be unique")
        unknown = set(self.stats) - set(STATS)
        if unknown or not self.stats:
            raise ValueError(f"stats must be a non-empty subset of {', '.join(STATS)}; unknown: {sorted(unknown)}")
        if not 0 < self.hop_s <= self.window_s:
            raise ValueError(f"need 0 < hop_s <= window_s, got hop_s={self.hop_s}, window_s={self.window_s}")
        if not 0 < self.sample_period_s <= self.window_s:
            raise ValueError("sample_period_s must be positive and not longer than the window")
        if not 0 <= self.min_fill <= 1:
            raise ValueError("min_fill must be within 0..1")

    @property
    def names(self) -> list[str]:
        return [f"{c}:{s}" for c in self.channels for s in self.stats]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["stats"] = list(self.channels), list(self.stats)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(**{**d, "channels": tuple(d["channels"]), "stats": tuple(d["stats"])})


def window_features(spec: FeatureSpec, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Features of one window: samples `values` (n, channels) at `ts_ms` (n,), in time order.
    Returns a vector of len(spec.names); NaN where a channel has no sample in the window."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full((len(spec.channels), len(spec.stats)), np.nan)
    t = (np.asarray(ts_ms, dtype=np.float64) - (ts_ms[-1] if len(ts_ms) else 0)) / 1000.0
    for c in range(values.shape[1] if values.ndim == 2 else 0):
        ok = ~np.isnan(values[:, c])
        if not ok.any():
            continue
        x, tc = values[ok, c], t[ok]
        for s, stat in enumerate(spec.stats):
            if stat == "mean":
                out[c, s] = x.mean()
            elif stat == "std":
                out[c, s] = x.std()
            elif stat == "min":
                out[c, s] = x.min()
            elif stat == "max":
                out[c, s] = x.max()
            elif stat == "last":
                out[c, s] = x[-1]
            elif stat == "slope":  # least-squares slope, units per second
                dt = tc - tc.mean()
                denom = float(dt @ dt)
                out[c, s] = float(dt @ (x - x.mean())) / denom if denom > 0 else 0.0
    return out.reshape(-1)


def sliding_windows(spec: FeatureSpec, ts_ms: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every complete window of a series, causal: a window ending at t holds samples in
    (t - window, t]. Returns (window end times in ms, features (windows, len(names))); windows
    filled below `min_fill` are left out."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    if len(ts_ms) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(spec.names)))
    if np.any(np.diff(ts_ms) < 0):
        raise ValueError("timestamps must be in time order")
    window_ms, hop_ms = int(spec.window_s * 1000), int(spec.hop_s * 1000)
    expected = spec.window_s / spec.sample_period_s
    ends = np.arange(ts_ms[0] + window_ms - 1, ts_ms[-1] + 1, hop_ms, dtype=np.int64)
    lo = np.searchsorted(ts_ms, ends - window_ms, side="right")
    hi = np.searchsorted(ts_ms, ends, side="right")
    keep_ends, rows = [], []
    for end, a, b in zip(ends, lo, hi):
        if b - a < spec.min_fill * expected or b == a:
            continue
        keep_ends.append(end)
        rows.append(window_features(spec, ts_ms[a:b], values[a:b]))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(spec.names)))
    return np.array(keep_ends, dtype=np.int64), np.vstack(rows)
