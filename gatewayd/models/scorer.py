"""Scoring windows with an installed bundle: every model's scores, and which features the
autoencoder reconstructs worst. numpy and the interpreter only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gatewayd.detection.features import FeatureSpec

from .bundle import Manifest
from .runtime import TfliteModel
from .scaling import Standardizer


@dataclass
class Scores:
    iforest: np.ndarray  # (n,) anomaly score in (0, 1], higher is more anomalous
    autoencoder: np.ndarray  # (n,) mean squared reconstruction error of the scaled features
    feature_error: np.ndarray  # (n, features), the autoencoder's
    pca_t2: np.ndarray | None = None  # (n,) Hotelling's T² (bundles of format 2)
    pca_q: np.ndarray | None = None  # (n,) squared prediction error
    named: dict[str, np.ndarray] = field(default_factory=dict)  # every score above, by name


class Scorer:
    def __init__(self, manifest: Manifest, folder: Path, *, threads: int = 1):
        self.manifest = manifest
        self.spec = FeatureSpec.from_dict({k: v for k, v in manifest.features.items() if k != "names"})
        self.scaler = Standardizer.from_dict(manifest.scaler.model_dump())
        self.device_scalers = {d: Standardizer.from_dict(sc.model_dump()) for d, sc in manifest.device_scalers.items()}
        models = manifest.models
        self.iforest = TfliteModel(folder / models.iforest.file, threads=threads)
        self.autoencoder = TfliteModel(folder / models.autoencoder.file, threads=threads)
        self.pca = TfliteModel(folder / models.pca.file, threads=threads) if models.pca is not None else None
        width = len(self.spec.names)
        for model in (self.iforest, self.autoencoder, self.pca):
            if model is not None and model.width != width:
                raise ValueError(f"a model takes {model.width} features, the feature spec gives {width}")
        self.feature_thresholds = np.asarray(models.autoencoder.feature_thresholds)

    def scaler_for(self, device: str | None) -> Standardizer:
        """A device's own scaler in a global bundle; the bundle's scaler otherwise."""
        return self.device_scalers.get(device, self.scaler) if device is not None else self.scaler

    def score(self, features: np.ndarray, device: str | None = None) -> Scores:
        """Score windows: `features` (n, len(spec.names)) or one window (len(spec.names),)."""
        z = self.scaler_for(device).transform(np.atleast_2d(features))
        ae = self.autoencoder(z)
        scores = Scores(
            iforest=self.iforest(z)["anomaly_score"],
            autoencoder=ae["reconstruction_error"],
            feature_error=ae["feature_error"],
        )
        scores.named = {"iforest": scores.iforest, "autoencoder": scores.autoencoder}
        if self.pca is not None:
            out = self.pca(z)
            scores.pca_t2, scores.pca_q = out["t2"], out["q"]
            scores.named.update(pca_t2=out["t2"], pca_q=out["q"])
        return scores

    def top_features(self, feature_error: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The features of one window whose error is furthest above their training level."""
        ratio = feature_error / np.maximum(self.feature_thresholds, 1e-12)
        order = np.argsort(ratio)[::-1][:k]
        return [(self.spec.names[i], float(ratio[i])) for i in order]
