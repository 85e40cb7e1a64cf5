"""Training a bundle: window features -> scaler -> Isolation Forest and autoencoder -> `.tflite`
files checked in the interpreter -> thresholds at a target false-alarm rate -> manifest.

scikit-learn is used here only; the gateway's scoring path needs numpy and the interpreter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sklearn.ensemble import IsolationForest

from gatewayd.features import FeatureSpec

from . import autoencoder
from .iforest import compile_forest
from .runtime import TfliteModel
from .scaling import Standardizer

from . import MIN_TRAINING_WINDOWS as MIN_WINDOWS
IFOREST_FILE = "iforest.tflite"
AUTOENCODER_FILE = "autoencoder.tflite"


class TrainingError(Exception):
    """Training could not produce a bundle (too little data, a graph that disagrees with its model)."""


@dataclass
class TrainedBundle:
    manifest: dict
    files: dict[str, bytes]


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def train_bundle(features: np.ndarray, window_ends_ms: np.ndarray, spec: FeatureSpec, *, name: str, version: int,
                 source: str, trees: int = 100, false_alarm_rate: float = 0.01, seed: int = 0,
                 expires: str | None = None, devices: Sequence[str] | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> TrainedBundle:  # fmt: skip
    """Train both models on windows judged normal (rows of `features`, columns `spec.names`).
    With `devices` (the device of each row), every device's windows are scaled with its own
    scaler, so one model serves devices that run at different levels (global scope)."""
    if features.ndim != 2 or features.shape[1] != len(spec.names):
        raise TrainingError(f"expected ({len(spec.names)}) features per window, got shape {features.shape}")
    if not 0 < false_alarm_rate < 0.5:
        raise TrainingError("false_alarm_rate must be within (0, 0.5)")
    complete = np.all(np.isfinite(features), axis=1)
    x, ends = features[complete], window_ends_ms[complete]
    groups = np.asarray(devices, dtype=object)[complete] if devices is not None else None
    if len(x) < MIN_WINDOWS:
        raise TrainingError(f"{len(x)} complete windows; training needs at least {MIN_WINDOWS}")
    progress(f"{len(x)} windows ({len(features) - len(x)} incomplete left out), {x.shape[1]} features")
    scaler = Standardizer.fit(x)
    device_scalers: dict[str, Standardizer] = {}
    if groups is None:
        z = scaler.transform(x)
    else:
        z = np.empty(x.shape, dtype=np.float32)
        for device in sorted(set(groups)):
            rows = groups == device
            device_scalers[device] = Standardizer.fit(x[rows])
            z[rows] = device_scalers[device].transform(x[rows])
        progress(f"per-device scaling for {len(device_scalers)} devices")

    progress(f"isolation forest: {trees} trees")
    forest = IsolationForest(n_estimators=trees, max_samples="auto", random_state=seed).fit(z)
    iforest_bytes = compile_forest(forest, description=f"{name} v{version} isolation forest")
    if_scores = TfliteModel(iforest_bytes)(z)["anomaly_score"]
    worst = float(np.max(np.abs(if_scores + forest.score_samples(z))))
    if worst > 1e-5:
        raise TrainingError(f"isolation forest graph differs from scikit-learn by {worst:.2e}")
    depth = max(e.tree_.max_depth for e in forest.estimators_)

    progress("autoencoder")
    layers = autoencoder.train(z, seed=seed)
    ae_bytes = autoencoder.compile_autoencoder(layers, description=f"{name} v{version} autoencoder")
    ae = TfliteModel(ae_bytes)(z)
    expected = (layers.forward(z) - z) ** 2
    worst = float(np.max(np.abs(ae["feature_error"] - expected) / (1.0 + expected)))
    if worst > 1e-4:
        raise TrainingError(f"autoencoder graph differs from its numpy forward pass by {worst:.2e}")

    q = 1.0 - false_alarm_rate
    manifest = {
        "format": 1,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "expires": expires,
        "features": {**spec.to_dict(), "names": spec.names},
        "scaler": scaler.to_dict(),
        "device_scalers": {d: sc.to_dict() for d, sc in device_scalers.items()},
        "models": {
            "iforest": {"file": IFOREST_FILE, "threshold": float(np.quantile(if_scores, q)),
                        "typical": float(np.median(if_scores)), "trees": trees,
                        "max_samples": int(forest.max_samples_), "depth": int(depth)},  # fmt: skip
            "autoencoder": {
                "file": AUTOENCODER_FILE,
                "threshold": float(np.quantile(ae["reconstruction_error"], q)),
                "typical": float(np.median(ae["reconstruction_error"])),
                "feature_thresholds": [float(v) for v in np.quantile(ae["feature_error"], q, axis=0)],
                "layers": [int(layers.weights[0].shape[0])] + [int(w.shape[1]) for w in layers.weights],
            },
        },
        "training": {
            "source": source,
            "windows": int(len(x)),
            "incomplete_windows": int(len(features) - len(x)),
            "start": _iso(int(ends[0])),
            "end": _iso(int(ends[-1])),
            "target_false_alarm_rate": false_alarm_rate,
            "seed": seed,
            "feature_min": [float(v) for v in x.min(axis=0)],
            "feature_max": [float(v) for v in x.max(axis=0)],
        },
    }
    progress(f"thresholds at {false_alarm_rate:.2%} false alarms on training windows: "
             f"iforest {manifest['models']['iforest']['threshold']:.4f}, "
             f"autoencoder {manifest['models']['autoencoder']['threshold']:.4f}")  # fmt: skip
    return TrainedBundle(manifest, {IFOREST_FILE: iforest_bytes, AUTOENCODER_FILE: ae_bytes})
