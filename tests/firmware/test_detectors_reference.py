"""The firmware's integer detectors against a floating-point reference computed on the
host with numpy, and MicroPython against CPython on the same series, sample by sample."""

import importlib.util
import json
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.demo.virtual_node import find_firmware_dir, find_micropython, micropython_env


def load_detectors():
    spec = importlib.util.spec_from_file_location("detectors", find_firmware_dir() / "detectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


det = load_detectors()


def run(series, **kwargs):
    d = det.ChannelDetector(**kwargs)
    out = []
    for q in series:
        flags = d.update(int(q))
        out.append((flags, d.z16, d.mean16, d.std16))
    return d, out


@pytest.mark.parametrize("sigma,level", [(3, 0), (40, 5000), (300, -200_000)])
def test_mean_std_and_z_match_float_reference(sigma, level):
    rng = np.random.default_rng(sigma)
    series = np.round(level + rng.normal(0, sigma, 3000)).astype(int)
    series[1500:] += 6 * sigma  # a step: re-anchoring must keep the statistics right
    w = 32
    _, out = run(series, window_bits=5, z_limit=10_000)
    for t in range(w, len(series)):
        # after sample t the statistics cover the last w samples up to t ...
        current = series[t - w + 1 : t + 1].astype(float)
        _, _, mean16, std16 = out[t]
        assert abs(mean16 / 16 - current.mean()) <= 1 / 16, t
        if np.abs(current - current.mean()).max() < det.DEV_CLAMP / 2:
            assert abs(std16 / 16 - current.std()) <= 0.1 + 0.01 * current.std(), (t, std16 / 16, current.std())
        else:
            # Deviations past DEV_CLAMP are clamped: the spread is underestimated, never
            # overestimated, so a Z-score errs towards alarming (documented behaviour).
            assert std16 / 16 <= current.std() + 0.1, (t, std16 / 16, current.std())
            continue
        # ... and the Z-score of sample t is taken against the window before it
        prev = series[t - w : t].astype(float)
        z = (series[t] - prev.mean()) / prev.std()
        assert abs(out[t][1] / 16 - z) <= 0.1 + 0.02 * abs(z), (t, out[t][1] / 16, z)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 30) - 1), st.integers(0, 1 << 15))
def test_isqrt(n, guess):
    r = det.isqrt(n, guess)
    assert r * r <= n < (r + 1) * (r + 1)


def test_micropython_and_cpython_agree_sample_by_sample():
    rng = np.random.default_rng(5)
    series = [int(v) for v in np.round(rng.normal(0, 80, 600))]
    series[300] += 5000  # spike
    series[400:420] = [series[399]] * 20  # stuck stretch
    kwargs = {
        "window_bits": 4,
        "z_limit": 48,
        "rate_limit": 400,
        "rate_horizon": 8,
        "low": -900,
        "high": 900,
        "consecutive": 2,
    }
    _, expected = run(series, **kwargs)
    script = (
        "import json, detectors\n"
        f"d = detectors.ChannelDetector(**{kwargs!r})\n"
        "out = []\n"
        f"for q in {series!r}:\n"
        "    f = d.update(q)\n"
        "    out.append((f, d.z16, d.mean16, d.std16))\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [find_micropython(), "-X", "heapsize=512k", "-c", script],
        env=micropython_env(find_firmware_dir()),
        capture_output=True,
        text=True,
        check=True,
    )
    got = [tuple(row) for row in json.loads(proc.stdout)]
    assert got == expected
    flags = [row[0] for row in expected]
    assert any(f & det.FLAG_ZSCORE for f in flags) and any(f & det.FLAG_STUCK for f in flags)
