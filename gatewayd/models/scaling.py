"""Feature scaling carried in a bundle, and what the scorer does with values that are not
ordinary numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A scaled feature further than this from the training mean is as anomalous as it gets; the
# clip keeps +-inf from turning into NaN inside the autoencoder's matrix products.
CLIP = 1e4
# A change smaller than this share of a reading's level is within the accuracy of an industrial
# sensor (0.1-1 % of reading is usual; a thermocouple's is about 1.5 degrees at 100): a channel
# that hardly moved in training (a temperature steady to 0.01 %) must not alarm on the next tenth
# of a degree. Chosen by the validation in bench/detection_validation.py, whose tightly
# controlled plant (channels moving 0.3 % of their level) checks that changes of about 1 % of a
# reading are still found.
SCALE_FLOOR = 0.01


@dataclass(frozen=True)
class Standardizer:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, floor: float = 0.0) -> Standardizer:
        """Mean and spread of each feature; the spread is at least `floor` times the
        feature's level, and 1 for a feature that is constant at zero."""
        mean = x.mean(axis=0)
        scale = np.maximum(x.std(axis=0), floor * np.abs(mean))
        return cls(mean, np.where(scale > 1e-12, scale, 1.0))

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
