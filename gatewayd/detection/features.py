"""Window features: the vector a model scores for one window of a device's channels.

A `FeatureSpec` names the channels, the window length and hop, the statistics taken per
channel, the differences between channel pairs treated as channels of their own (seed: "the
difference between stage N and stage N+1"), and FFT band energies for fast channels. It
travels in a model bundle's manifest so the gateway computes exactly the features the model
was trained on. Pure numpy, no I/O; NaN marks a missing sample.
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
    pairs: tuple[tuple[str, str], ...] = ()  # (a, b): "a-b" gets the same statistics as a channel
    fft_channels: tuple[str, ...] = ()  # channels sampled fast enough for band energies
    fft_bands: int = 4

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
        for a, b in self.pairs:
            if a not in self.channels or b not in self.channels or a == b:
                raise ValueError(f"pair ({a!r}, {b!r}) needs two different channels of the spec")
        unknown_fft = [c for c in self.fft_channels if c not in self.channels]
        if unknown_fft:
            raise ValueError(f"fft_channels not among the channels: {unknown_fft}")
        if self.fft_channels and not 1 <= self.fft_bands <= self.window_s / self.sample_period_s / 2:
            raise ValueError(
                f"fft_bands must be within 1..{int(self.window_s / self.sample_period_s / 2)} "
                "(half the samples in a window)"
            )

    @property
    def derived(self) -> list[str]:
        """The channels statistics are taken of: the channels, then each pair's difference."""
        return [*self.channels, *(f"{a}-{b}" for a, b in self.pairs)]

    @property
    def names(self) -> list[str]:
        return [f"{c}:{s}" for c in self.derived for s in self.stats] + [
            f"{c}:band{i}" for c in self.fft_channels for i in range(self.fft_bands)
        ]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["stats"], d["fft_channels"] = list(self.channels), list(self.stats), list(self.fft_channels)
        d["pairs"] = [list(p) for p in self.pairs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(
            **{
                **d,
                "channels": tuple(d["channels"]),
                "stats": tuple(d["stats"]),
                "pairs": tuple(tuple(p) for p in d.get("pairs", ())),
                "fft_channels": tuple(d.get("fft_channels", ())),
            }
        )


def _statistics(stats: tuple[str, ...], x: np.ndarray, t: np.ndarray) -> list[float]:
    out = []
    for stat in stats:
        if stat == "mean":
            out.append(x.mean())
        elif stat == "std":
            out.append(x.std())
        elif stat == "min":
            out.append(x.min())
        elif stat == "max":
            out.append(x.max())
        elif stat == "last":
            out.append(x[-1])
        elif stat == "slope":  # least-squares slope, units per second
            dt = t - t.mean()
            denom = float(dt @ dt)
            out.append(float(dt @ (x - x.mean())) / denom if denom > 0 else 0.0)
    return out


def band_energies(x: np.ndarray, bands: int) -> np.ndarray:
    """Mean power of the de-meaned signal in `bands` equal slices of its spectrum above DC."""
    spectrum = np.abs(np.fft.rfft(x - x.mean())[1:]) ** 2 / len(x)
    if len(spectrum) < bands:
        return np.full(bands, np.nan)
    return np.array([part.mean() for part in np.array_split(spectrum, bands)])


def window_features(spec: FeatureSpec, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Features of one window: samples `values` (n, channels) at `ts_ms` (n,), in time order.
    Returns a vector of len(spec.names); NaN where a channel has no sample in the window."""
    values = np.asarray(values, dtype=np.float64).reshape(len(ts_ms), len(spec.channels))
    t = (np.asarray(ts_ms, dtype=np.float64) - (ts_ms[-1] if len(ts_ms) else 0)) / 1000.0
    index = {c: i for i, c in enumerate(spec.channels)}
    series = [values[:, i] for i in range(len(spec.channels))]
    series += [values[:, index[a]] - values[:, index[b]] for a, b in spec.pairs]
    out: list[float] = []
    for x in series:
        ok = ~np.isnan(x)
        out += _statistics(spec.stats, x[ok], t[ok]) if ok.any() else [np.nan] * len(spec.stats)
    for c in spec.fft_channels:
        x = values[:, index[c]]
        ok = ~np.isnan(x)
        out += (
            list(band_energies(x[ok], spec.fft_bands)) if ok.sum() >= 2 * spec.fft_bands else [np.nan] * spec.fft_bands
        )
    return np.array(out, dtype=np.float64)


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
