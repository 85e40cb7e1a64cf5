"""Principal component analysis over scaled window features, the classic monitor of process
data: T² (Hotelling's, the distance within the normal subspace in units of each component's
spread) and Q (the squared prediction error outside it: a broken correlation between
channels). Fitted in numpy; exported as a `.tflite` graph of two matrix products."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph

EXPLAINED = 0.9  # components kept: the fewest that explain this share of the variance


@dataclass(frozen=True)
class Components:
    center: np.ndarray  # (n,) the training mean of the scaled features
    loadings: np.ndarray  # (n, k) orthonormal columns
    variances: np.ndarray  # (k,) the variance along each

    def scores(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T², Q, per-feature squared residual) in float64: the reference for the graph."""
        d = np.asarray(z, dtype=np.float64) - self.center
        t = d @ self.loadings
        residual = (d - t @ self.loadings.T) ** 2
        return (t * t / self.variances).sum(axis=1), residual.sum(axis=1), residual


def fit(z: np.ndarray, explained: float = EXPLAINED) -> Components:
    """Components of normal windows (rows of scaled features). At least one component is left
    out when there are two features or more, so Q measures something; each variance has a
    floor (a direction that never moved in training must not make T² infinite)."""
    center = z.mean(axis=0)
    cov = np.atleast_2d(np.cov(z - center, rowvar=False))
    variances, vectors = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    variances, vectors = np.maximum(variances[order], 0.0), vectors[:, order]
    total = variances.sum()
    k = int(np.searchsorted(np.cumsum(variances) / total, explained) + 1) if total > 0 else 1
    k = max(1, min(k, z.shape[1] - 1 if z.shape[1] > 1 else 1))
    floor = max(1e-6, 1e-6 * float(variances[0]))
    return Components(center, vectors[:, :k], np.maximum(variances[:k], floor))


def compile_pca(c: Components, *, description: str = "pca") -> bytes:
    """The `.tflite` bytes: input `features` (batch, n) float32 (scaled); outputs `t2` (batch,),
    `q` (batch,) and `feature_error` (batch, n), each feature's squared residual."""
    g = Graph()
    x = g.input("features", c.loadings.shape[0])
    center = g.const("center", c.center, np.float32)
    d = g.op("SUB", [x, center], name="centered", rank=2)
    k = c.loadings.shape[1]
    project = g.const("loadings_t", c.loadings.T, np.float32)  # FULLY_CONNECTED wants (out, in)
    t = g.op("FULLY_CONNECTED", [d, project, g.const("no_bias_k", np.zeros(k), np.float32)], name="scores", rank=2)
    whiten = g.const("inverse_sd", 1.0 / np.sqrt(c.variances), np.float32)
    u = g.op("MUL", [t, whiten], name="whitened", rank=2)
    axis = g.const("feature_axis", [1], np.int32)
    t2 = g.op("SUM", [g.op("MUL", [u, u], name="whitened_squared", rank=2), axis], name="t2", rank=1, keepDims=False)
    back = g.const("loadings", c.loadings, np.float32)  # (n, k): back to feature space
    n = c.loadings.shape[0]
    recon = g.op(
        "FULLY_CONNECTED", [t, back, g.const("no_bias_n", np.zeros(n), np.float32)], name="reconstruction", rank=2
    )
    per_feature = g.op("SQUARED_DIFFERENCE", [d, recon], name="feature_error", rank=2)
    q = g.op("SUM", [per_feature, axis], name="q", rank=1, keepDims=False)
    return g.finish([t2, q, per_feature], description)
