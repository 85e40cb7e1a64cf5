"""The autoencoder graph equals a numpy forward pass of the same weights."""

import numpy as np
import pytest

from gatewayd.models.autoencoder import DenseLayers, compile_autoencoder, hidden_sizes, train
from gatewayd.models.runtime import ModelError, TfliteModel


@pytest.mark.parametrize("sizes", [(4, 2, 4), (12, 6, 3, 6, 12), (48, 24, 12, 24, 48)])
def test_graph_matches_numpy_forward_pass(sizes):
    rng = np.random.default_rng(len(sizes))
    layers = DenseLayers(
        [rng.normal(scale=0.5, size=(a, b)) for a, b in zip(sizes, sizes[1:])],
        [rng.normal(scale=0.1, size=b) for b in sizes[1:]],
    )
    x = rng.normal(size=(64, sizes[0])).astype(np.float32)
    out = TfliteModel(compile_autoencoder(layers))(x)
    expected = (layers.forward(x) - x) ** 2
    np.testing.assert_allclose(out["feature_error"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["reconstruction_error"], expected.mean(axis=1), rtol=1e-4, atol=1e-5)


def test_trained_autoencoder_flags_the_broken_feature():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1500, 2))
    z = np.column_stack([base, base @ [[1.0], [0.5]], base @ [[0.3], [-1.0]]]).astype(np.float32)
    layers = train(z, hidden=(4, 2, 4), seed=0)
    model = TfliteModel(compile_autoencoder(layers))
    normal = model(z[:200])["reconstruction_error"]
    broken = z[:200].copy()
    broken[:, 2] += 4.0  # breaks the relation between feature 2 and the others
    out = model(broken)
    assert np.median(out["reconstruction_error"]) > 5 * np.median(normal)
    assert np.bincount(np.argmax(out["feature_error"], axis=1), minlength=4).argmax() == 2


def test_bad_model_bytes_are_a_model_error():
    with pytest.raises(ModelError):
        TfliteModel(b"not a flatbuffer at all")


def test_the_scoring_path_needs_neither_sklearn_nor_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, gatewayd.models.scorer, gatewayd.models.install, gatewayd.daemon; "
        "print(sorted(m for m in ('sklearn', 'tensorflow', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_model_runtime_loads_only_with_the_first_model():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, gatewayd.daemon\n"
        "from gatewayd.models.autoencoder import DenseLayers, compile_autoencoder\n"
        "from gatewayd.models.runtime import TfliteModel\n"
        "before = 'ai_edge_litert.interpreter' in sys.modules\n"
        "w = [np.eye(4, dtype=np.float32)]; b = [np.zeros(4, dtype=np.float32)]\n"
        "TfliteModel(compile_autoencoder(DenseLayers(w, b)))\n"
        "print(before, 'ai_edge_litert.interpreter' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_hidden_layers_are_capped_for_wide_devices():
    assert hidden_sizes(48) == (24, 12, 24)  # an 8-channel node: the plain funnel
    assert hidden_sizes(480) == (64, 32, 64)
    assert hidden_sizes(6) == (4, 2, 4)
