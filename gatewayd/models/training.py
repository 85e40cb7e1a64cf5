"""Training a bundle: window features -> scaler -> Isolation Forest, autoencoder and PCA ->
`.tflite` files checked in the interpreter -> alarm levels calibrated on held-back windows,
with the PCA's floored by what blocks of the whole stretch score out of sample -> manifest.

Calibration (see calibration.py): the models are first fitted on the earlier windows and
score the latest ones, held back, to learn each score's distribution out of sample; then they
are fitted again on every window, and those are the models shipped.

scikit-learn is used here only; the gateway's scoring path needs numpy and the interpreter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sklearn.ensemble import IsolationForest

from gatewayd.detection.features import FeatureSpec
from gatewayd.errors import GatewayError

from . import MIN_TRAINING_WINDOWS as MIN_WINDOWS
from . import autoencoder, calibration, pca
from .bundle import FORMAT
from .iforest import compile_forest
from .runtime import TfliteModel
from .scaling import SCALE_FLOOR, Standardizer

IFOREST_FILE = "iforest.tflite"
AUTOENCODER_FILE = "autoencoder.tflite"
PCA_FILE = "pca.tflite"
FEATURE_QUANTILE = 0.99  # a feature's error level for explanations, on the calibration windows


class TrainingError(GatewayError):
    """Training could not produce a bundle (too little data, a graph that disagrees with its model)."""


@dataclass
class TrainedBundle:
    manifest: dict
    files: dict[str, bytes]


@dataclass
class _Fitted:
    forest: IsolationForest
    layers: autoencoder.DenseLayers
    components: pca.Components

    def scores(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Every score of these windows, by the reference implementations (the graphs agree
        with them, checked below)."""
        t2, q, _ = self.components.scores(z)
        errors = (self.layers.forward(z) - z) ** 2
        return {
            "iforest": -self.forest.score_samples(z),
            "autoencoder": errors.mean(axis=1),
            "pca_t2": t2,
            "pca_q": q,
            "feature_error": errors,
        }


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def _scale(
    x: np.ndarray, groups: np.ndarray | None, floor: float
) -> tuple[Standardizer, dict[str, Standardizer], np.ndarray]:
    """The scaler (and with `groups`, each device's own) and the scaled windows."""
    scaler = Standardizer.fit(x, floor)
    if groups is None:
        return scaler, {}, scaler.transform(x)
    per_device: dict[str, Standardizer] = {}
    z = np.empty(x.shape, dtype=np.float32)
    for device in sorted(set(groups)):
        rows = groups == device
        per_device[device] = Standardizer.fit(x[rows], floor)
        z[rows] = per_device[device].transform(x[rows])
    return scaler, per_device, z


def _scale_like(
    x: np.ndarray, groups: np.ndarray | None, scaler: Standardizer, per_device: dict[str, Standardizer]
) -> np.ndarray:
    """`x` scaled by scalers fitted on other windows; a device they never saw gets the shared one."""
    if groups is None:
        return scaler.transform(x)
    z = np.empty(x.shape, dtype=np.float32)
    for device in set(groups):
        rows = groups == device
        z[rows] = per_device.get(device, scaler).transform(x[rows])
    return z


def _pca_floors(x: np.ndarray, groups: np.ndarray | None, scale_floor: float) -> dict[str, float]:
    """The PCA scores' floors (calibration.py): each block of the stretch scored by a scaler and
    PCA fitted on the other blocks. The PCA only: it fits in milliseconds, while the forest and
    the autoencoder would each be fitted once more per block."""
    spans = calibration.blocks(len(x))
    if not spans:
        return {}
    t2s, qs = [], []
    for a, b in spans:
        rest = np.r_[0:a, b : len(x)]
        scaler, per_device, z_rest = _scale(x[rest], groups[rest] if groups is not None else None, scale_floor)
        z_block = _scale_like(x[a:b], groups[a:b] if groups is not None else None, scaler, per_device)
        t2, q, _ = pca.fit(z_rest).scores(z_block)
        t2s.append(t2)
        qs.append(q)
    return {"pca_t2": calibration.floor_of(np.concatenate(t2s)), "pca_q": calibration.floor_of(np.concatenate(qs))}


def _fit(z: np.ndarray, trees: int, seed: int) -> _Fitted:
    forest = IsolationForest(n_estimators=trees, max_samples="auto", random_state=seed).fit(z)
    return _Fitted(forest, autoencoder.train(z, seed=seed), pca.fit(z))


def train_bundle(
    features: np.ndarray,
    window_ends_ms: np.ndarray,
    spec: FeatureSpec,
    *,
    name: str,
    version: int,
    source: str,
    trees: int = 100,
    seed: int = 0,
    scale_floor: float = SCALE_FLOOR,
    calibration_share: float = calibration.CALIBRATION_SHARE,
    expires: str | None = None,
    devices: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> TrainedBundle:
    """Train the models on windows judged normal (rows of `features`, columns `spec.names`, in
    time order) and calibrate their alarm levels on the latest of them. With `devices` (the
    device of each row), every device's windows are scaled with its own scaler, so one model
    serves devices that run at different levels (global scope)."""
    if features.ndim != 2 or features.shape[1] != len(spec.names):
        raise TrainingError(f"expected ({len(spec.names)}) features per window, got shape {features.shape}")
    if not 0 < calibration_share < 1:
        raise TrainingError("calibration_share must be within (0, 1)")
    complete = np.all(np.isfinite(features), axis=1)
    order = np.argsort(window_ends_ms[complete], kind="stable")
    x, ends = features[complete][order], window_ends_ms[complete][order]
    groups = np.asarray(devices, dtype=object)[complete][order] if devices is not None else None
    if len(x) < MIN_WINDOWS:
        raise TrainingError(f"{len(x)} complete windows; training needs at least {MIN_WINDOWS}")
    progress(f"{len(x)} windows ({len(features) - len(x)} incomplete left out), {x.shape[1]} features")

    cut = calibration.split(len(x), calibration_share)
    if cut > 0:
        progress(f"calibration: fitting on the first {cut} windows, scoring the latest {len(x) - cut}")
        fit_scaler, fit_device_scalers, z_fit = _scale(
            x[:cut], groups[:cut] if groups is not None else None, scale_floor
        )
        z_held = _scale_like(x[cut:], groups[cut:] if groups is not None else None, fit_scaler, fit_device_scalers)
        held_scores = _fit(z_fit, trees, seed).scores(z_held)
    else:
        progress(f"calibration: {len(x)} windows are too few to hold any back; levels from the fitted windows")

    progress(f"models on all {len(x)} windows: isolation forest ({trees} trees), autoencoder, PCA")
    scaler, device_scalers, z = _scale(x, groups, scale_floor)
    if device_scalers:
        progress(f"per-device scaling for {len(device_scalers)} devices")
    fitted = _fit(z, trees, seed)
    if cut == 0:
        held_scores = fitted.scores(z)
    tails = {k: calibration.Tail.fit(v) for k, v in held_scores.items() if k != "feature_error"}
    floors = _pca_floors(x, groups, scale_floor) if cut > 0 else {}
    if floors:
        progress(
            f"floors from {calibration.FLOOR_BLOCKS} blocks, each scored by a PCA of the others: "
            + ", ".join(f"{k} {v:.4g}" for k, v in floors.items())
        )
    tails.update({k: tails[k].with_floor(v) for k, v in floors.items()})

    forest = fitted.forest
    iforest_bytes = compile_forest(forest, description=f"{name} v{version} isolation forest")
    if_scores = TfliteModel(iforest_bytes)(z)["anomaly_score"]
    worst = float(np.max(np.abs(if_scores + forest.score_samples(z))))
    if worst > 1e-5:
        raise TrainingError(f"isolation forest graph differs from scikit-learn by {worst:.2e}")
    depth = max(e.tree_.max_depth for e in forest.estimators_)

    layers = fitted.layers
    ae_bytes = autoencoder.compile_autoencoder(layers, description=f"{name} v{version} autoencoder")
    ae = TfliteModel(ae_bytes)(z)
    expected = (layers.forward(z) - z) ** 2
    worst = float(np.max(np.abs(ae["feature_error"] - expected) / (1.0 + expected)))
    if worst > 1e-4:
        raise TrainingError(f"autoencoder graph differs from its numpy forward pass by {worst:.2e}")

    components = fitted.components
    pca_bytes = pca.compile_pca(components, description=f"{name} v{version} pca")
    graph = TfliteModel(pca_bytes)(z)
    t2, q, _ = components.scores(z)
    worst = max(float(np.max(np.abs(graph["t2"] - t2) / (1.0 + t2))), float(np.max(np.abs(graph["q"] - q) / (1.0 + q))))
    if worst > 1e-3:
        raise TrainingError(f"PCA graph differs from its numpy reference by {worst:.2e}")

    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "expires": expires,
        "features": {**spec.to_dict(), "names": spec.names},
        "scaler": scaler.to_dict(),
        "device_scalers": {d: sc.to_dict() for d, sc in device_scalers.items()},
        "models": {
            "iforest": {
                "file": IFOREST_FILE,
                "calibration": tails["iforest"].to_dict(),
                "trees": trees,
                "max_samples": int(forest.max_samples_),
                "depth": int(depth),
            },
            "autoencoder": {
                "file": AUTOENCODER_FILE,
                "calibration": tails["autoencoder"].to_dict(),
                "feature_thresholds": [
                    float(v) for v in np.quantile(held_scores["feature_error"], FEATURE_QUANTILE, axis=0)
                ],
                "layers": [int(layers.weights[0].shape[0])] + [int(w.shape[1]) for w in layers.weights],
            },
            "pca": {
                "file": PCA_FILE,
                "components": int(components.loadings.shape[1]),
                "t2": tails["pca_t2"].to_dict(),
                "q": tails["pca_q"].to_dict(),
            },
        },
        "training": {
            "source": source,
            "windows": int(len(x)),
            "calibration_windows": int(len(x) - cut) if cut else 0,
            "incomplete_windows": int(len(features) - len(x)),
            "start": _iso(int(ends[0])),
            "end": _iso(int(ends[-1])),
            "scale_floor": scale_floor,
            "seed": seed,
            "feature_min": [float(v) for v in x.min(axis=0)],
            "feature_max": [float(v) for v in x.max(axis=0)],
        },
    }
    progress(
        "calibrated (median, 90th percentile, tail scale): "
        + ", ".join(f"{k} {t.typical:.4g}/{t.tail_start:.4g}/{t.tail_scale:.3g}" for k, t in tails.items())
    )
    return TrainedBundle(manifest, {IFOREST_FILE: iforest_bytes, AUTOENCODER_FILE: ae_bytes, PCA_FILE: pca_bytes})
