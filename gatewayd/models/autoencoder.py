"""A small dense autoencoder over scaled window features: trained with scikit-learn's
`MLPRegressor` (input -> input), exported as a `.tflite` graph of FULLY_CONNECTED layers that
outputs the reconstruction error per feature (so an alert can say which channel is off) and
per window (their mean)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from .graph import Graph


@dataclass(frozen=True)
class DenseLayers:
    """Weights (in, out) and biases of each layer; ReLU after every layer but the last."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The reference forward pass in numpy (float64)."""
        h = np.asarray(x, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h


WIDE_MAX, BOTTLENECK_MAX = 64, 32


def hidden_sizes(n_features: int) -> tuple[int, ...]:
    """A funnel that halves twice down to a bottleneck of a quarter of the inputs (at least 2),
    capped: a few hundred training windows cannot fit wider layers, and a wide device (80
    channels, 480 features) would otherwise cost 1.1 MB of weights instead of 0.25 MB."""
    wide = min(WIDE_MAX, max(4, n_features // 2))
    return (wide, min(BOTTLENECK_MAX, max(2, n_features // 4)), wide)


def train(z: np.ndarray, *, hidden: tuple[int, ...] | None = None, seed: int = 0, max_iter: int = 400) -> DenseLayers:
    """Fit on scaled features of normal windows (rows)."""
    net = MLPRegressor(
        hidden_layer_sizes=hidden or hidden_sizes(z.shape[1]),
        activation="relu",
        solver="adam",
        alpha=1e-4,
        max_iter=max_iter,
        early_stopping=len(z) >= 50,
        n_iter_no_change=20,
        random_state=seed,
    )
    with warnings.catch_warnings():
        # Stopping at max_iter is a budget, not a failure: the thresholds are set from the
        # errors this network actually makes on the training windows.
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(z, z)
    return DenseLayers([w.copy() for w in net.coefs_], [b.copy() for b in net.intercepts_])


def compile_autoencoder(layers: DenseLayers, *, description: str = "autoencoder") -> bytes:
    """The `.tflite` bytes: input `features` (batch, n) float32 (scaled); outputs
    `feature_error` (batch, n), the squared reconstruction error of each feature, and
    `reconstruction_error` (batch,), their mean."""
    g = Graph()
    x = g.input("features", layers.weights[0].shape[0])
    h = x
    last = len(layers.weights) - 1
    for i, (w, b) in enumerate(zip(layers.weights, layers.biases)):
        weights = g.const(f"dense{i}/weights", w.T, np.float32)  # FULLY_CONNECTED wants (out, in)
        bias = g.const(f"dense{i}/bias", b, np.float32)
        h = g.op(
            "FULLY_CONNECTED",
            [x if i == 0 else h, weights, bias],
            name=f"dense{i}",
            rank=2,
            fusedActivationFunction=None if i == last else "relu",
        )
    per_feature = g.op("SQUARED_DIFFERENCE", [x, h], name="feature_error", rank=2)
    axis = g.const("feature_axis", [1], np.int32)
    per_window = g.op("MEAN", [per_feature, axis], name="reconstruction_error", rank=1, keepDims=False)
    return g.finish([per_feature, per_window], description)
