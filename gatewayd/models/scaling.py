"""Feature scaling carried in a bundle, and what the scorer does with values that are not
ordinary numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A scaled feature further than this from the training mean is as anomalous as it gets; the
# clip keeps +-inf from turning into NaN inside the autoencoder's matrix products.
CLIP = 1e4


@dataclass(frozen=True)
class Standardizer:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 1e-12, std, 1.0))

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64))

    def to_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale]}

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scaled float32 features. NaN (a feature that could not be computed) becomes 0, the
        training mean, so a gap alone does not raise a model alarm (sensor faults are the
        node's and the window builder's to report); +-inf and huge values are clipped to
        +-CLIP."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        z = np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP)
        return np.clip(z, -CLIP, CLIP).astype(np.float32)
