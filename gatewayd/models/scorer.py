"""Scoring windows with an installed bundle: both models, their thresholds, and which features
the autoencoder reconstructs worst. numpy and the interpreter only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatewayd.features import FeatureSpec

from .bundle import Manifest
from .runtime import TfliteModel
from .scaling import Standardizer


@dataclass
class Scores:
    iforest: np.ndarray  # (n,) anomaly score in (0, 1], higher is more anomalous
    autoencoder: np.ndarray  # (n,) mean squared reconstruction error of the scaled features
    feature_error: np.ndarray  # (n, features)
    iforest_alarm: np.ndarray  # (n,) bool: above the bundle's threshold
    autoencoder_alarm: np.ndarray


class Scorer:
    def __init__(self, manifest: Manifest, folder: Path, *, threads: int = 1):
        self.manifest = manifest
        self.spec = FeatureSpec.from_dict({k: v for k, v in manifest.features.items() if k != "names"})
        self.scaler = Standardizer.from_dict(manifest.scaler.model_dump())
        self.device_scalers = {d: Standardizer.from_dict(sc.model_dump()) for d, sc in manifest.device_scalers.items()}
        self.iforest = TfliteModel(folder / manifest.models.iforest.file, threads=threads)
        self.autoencoder = TfliteModel(folder / manifest.models.autoencoder.file, threads=threads)
        width = len(self.spec.names)
        if self.iforest.width != width or self.autoencoder.width != width:
            raise ValueError(f"models take {self.iforest.width} and {self.autoencoder.width} features, "
                             f"the feature spec gives {width}")  # fmt: skip
        self.feature_thresholds = np.asarray(manifest.models.autoencoder.feature_thresholds)

    def scaler_for(self, device: str | None) -> Standardizer:
        """A device's own scaler in a global bundle; the bundle's scaler otherwise."""
        return self.device_scalers.get(device, self.scaler) if device is not None else self.scaler

    def score(self, features: np.ndarray, device: str | None = None) -> Scores:
        """Score windows: `features` (n, len(spec.names)) or one window (len(spec.names),)."""
        z = self.scaler_for(device).transform(np.atleast_2d(features))
        if_score = self.iforest(z)["anomaly_score"]
        ae = self.autoencoder(z)
        return Scores(
            iforest=if_score,
            autoencoder=ae["reconstruction_error"],
            feature_error=ae["feature_error"],
            iforest_alarm=if_score > self.manifest.models.iforest.threshold,
            autoencoder_alarm=ae["reconstruction_error"] > self.manifest.models.autoencoder.threshold,
        )

    def top_features(self, feature_error: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The features of one window whose error is furthest above their training level."""
        ratio = feature_error / np.maximum(self.feature_thresholds, 1e-12)
        order = np.argsort(ratio)[::-1][:k]
        return [(self.spec.names[i], float(ratio[i])) for i in order]
