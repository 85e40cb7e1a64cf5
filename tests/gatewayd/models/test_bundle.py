"""Bundles: signature, hashes, versions and expiry are checked; installation is atomic at every
step; rollback works and a rolled-back version is refused afterwards."""

import json
import os
import shutil

import numpy as np
import pytest

from gatewayd.detection.detector import Detector, DriftSettings, score_tails
from gatewayd.detection.features import FeatureSpec, sliding_windows
from gatewayd.detection.rules import DEFAULT_BUDGET, RuleSettings
from gatewayd.models import install as install_module
from gatewayd.models.bundle import (
    MANIFEST,
    SIGNATURE,
    BundleError,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign,
    verify,
    write_bundle,
)
from gatewayd.models.calibration import window_alpha
from gatewayd.models.install import ModelStore
from gatewayd.models.scorer import Scorer
from gatewayd.models.training import train_bundle


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    ts = np.arange(0, 1200_000, 1000, dtype=np.int64)
    a = np.sin(ts / 20_000) + rng.normal(0, 0.05, len(ts))
    values = np.column_stack([a, 2 * a + rng.normal(0, 0.05, len(ts))])
    spec = FeatureSpec(("a", "b"), window_s=10, hop_s=5, stats=("mean", "std", "slope"))
    ends, features = sliding_windows(spec, ts, values)
    return {v: train_bundle(features, ends, spec, name="pump", version=v, source="test", trees=20) for v in (1, 2, 3)}


@pytest.fixture
def keys(tmp_path):
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    return (
        load_private_key(tmp_path / "k.pem"),
        load_public_key(tmp_path / "k.pub"),
        load_public_key(tmp_path / "other.pub"),
    )


def write(trained, version, folder, key, **changes):
    b = trained[version]
    return write_bundle(folder, {**b.manifest, **changes}, b.files, key)


def alarm_levels(scorer: Scorer) -> dict[str, float]:
    """Each score's alarm level at the default false-alarm budget."""
    alpha = window_alpha(DEFAULT_BUDGET, scorer.spec.hop_s)
    return {name: tail.level(alpha) for name, tail in score_tails(scorer.manifest).items()}


def test_a_good_bundle_verifies_and_scores(trained, keys, tmp_path):
    private, public, _ = keys
    folder = write(trained, 1, tmp_path / "b", private)
    manifest = verify(folder, [public])
    assert manifest.version == 1 and manifest.models.iforest.trees == 20
    scorer = Scorer(manifest, folder)
    normal = np.zeros((1, len(scorer.spec.names)))
    normal[:] = scorer.scaler.mean
    whole = normal + 8 * scorer.scaler.scale  # every feature far off: both models alarm
    one = normal.copy()  # b's level decoupled from a's: the autoencoder names it
    one[0, scorer.spec.names.index("b:mean")] += 40 * scorer.scaler.scale[scorer.spec.names.index("b:mean")]
    s = scorer.score(np.vstack([normal, whole, one]))
    levels = alarm_levels(scorer)
    # the forest's score is bounded by 1: at a budget this small its level may be out of reach
    assert s.iforest[1] > s.iforest[0] and s.iforest[0] < levels["iforest"]
    assert list(s.pca_t2 > levels["pca_t2"])[:2] == [False, True]
    assert list(s.autoencoder > levels["autoencoder"]) == [False, True, True]
    assert not s.pca_q[0] > levels["pca_q"] and s.pca_q[2] > levels["pca_q"]  # b left its relation with a
    assert scorer.top_features(s.feature_error[2], k=1)[0][0] == "b:mean"


def tamper_cases():
    def flip_model_byte(folder):
        path = folder / "iforest.tflite"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    def edit_manifest(folder):
        m = json.loads((folder / MANIFEST).read_text())
        m["models"]["iforest"]["threshold"] = 0.99
        (folder / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")

    def truncate(folder):
        path = folder / "autoencoder.tflite"
        path.write_bytes(path.read_bytes()[:100])

    def remove_file(folder):
        (folder / "autoencoder.tflite").unlink()

    def remove_signature(folder):
        (folder / SIGNATURE).unlink()

    return {
        "byte flipped in a model": (flip_model_byte, "sha256"),
        "manifest edited": (edit_manifest, "signature"),
        "truncated file": (truncate, "bytes"),
        "missing file": (remove_file, "missing"),
        "unsigned": (remove_signature, "unsigned"),
    }


@pytest.mark.parametrize("case", list(tamper_cases()))
def test_tampered_bundles_are_rejected_and_the_installed_model_stays(case, trained, keys, tmp_path):
    private, public, _ = keys
    store = ModelStore(tmp_path / "models", [public])
    store.install(write(trained, 1, tmp_path / "v1", private))
    bad = write(trained, 2, tmp_path / "v2", private)
    damage, reason = tamper_cases()[case]
    damage(bad)
    with pytest.raises(BundleError, match=reason):
        store.install(bad)
    manifest, folder = store.current("pump")
    assert manifest.version == 1 and folder.name == "1"


def test_wrong_key_replayed_version_and_expiry_are_rejected(trained, keys, tmp_path):
    private, public, other = keys
    store = ModelStore(tmp_path / "models", [other])
    with pytest.raises(BundleError, match="signature"):
        store.install(write(trained, 1, tmp_path / "v1", private))
    store = ModelStore(tmp_path / "models", [other, public])  # key rotation: either key is accepted
    store.install(tmp_path / "v1")
    store.install(write(trained, 2, tmp_path / "v2", private))
    with pytest.raises(BundleError, match="not above the installed version 2"):
        store.install(tmp_path / "v1")
    with pytest.raises(BundleError, match="not above"):
        store.install(tmp_path / "v2")
    with pytest.raises(BundleError, match="expired"):
        store.install(write(trained, 3, tmp_path / "v3", private, expires="2020-01-01T00:00:00+00:00"))
    assert store.installed_version("pump") == 2


def test_a_signed_manifest_cannot_name_files_outside_the_bundle(trained, keys, tmp_path):
    private, public, _ = keys
    folder = write(trained, 1, tmp_path / "b", private)
    m = json.loads((folder / MANIFEST).read_text())
    m["files"]["../escape.tflite"] = m["files"]["iforest.tflite"]
    (folder / MANIFEST).write_text(json.dumps(m))
    sign(folder, private)
    with pytest.raises(BundleError, match="plain file name"):
        verify(folder, [public])


def test_rollback_returns_to_the_previous_version_and_refuses_the_bad_one(trained, keys, tmp_path):
    private, public, _ = keys
    store = ModelStore(tmp_path / "models", [public])
    for v in (1, 2):
        store.install(write(trained, v, tmp_path / f"v{v}", private))
    assert store.rollback("pump") == 1
    assert store.current("pump")[0].version == 1
    with pytest.raises(BundleError, match="rolled back"):
        store.install(tmp_path / "v2")
    with pytest.raises(BundleError, match="no previous"):
        store.rollback("pump")
    store.install(write(trained, 3, tmp_path / "v3", private))
    assert store.installed_version("pump") == 3
    assert sorted(p.name for p in (tmp_path / "models" / "pump").iterdir() if p.name.isdigit()) == ["1", "3"]


class Crash(Exception):
    pass


class CrashingOs:
    """The os module, except that the n-th state-changing call raises (a crash at that point)."""

    CHANGES = {"open", "write", "fsync", "rename", "replace", "symlink", "unlink", "mkdir", "makedirs"}

    def __init__(self, crash_at):
        self.crash_at, self.calls = crash_at, 0

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.CHANGES:
            return real

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self.crash_at:
                raise Crash(f"{name} #{self.calls}")
            return real(*args, **kwargs)

        return call


def test_a_crash_at_any_step_of_installation_leaves_old_or_new(trained, keys, tmp_path, monkeypatch):
    private, public, _ = keys
    v1, v2 = write(trained, 1, tmp_path / "v1", private), write(trained, 2, tmp_path / "v2", private)
    outcomes = set()
    step = 1
    while True:
        root = tmp_path / f"models-{step}"
        ModelStore(root, [public]).install(v1)
        crashing = CrashingOs(step)
        monkeypatch.setattr(install_module, "os", crashing)
        try:
            ModelStore(root, [public]).install(v2)
            crashed = False
        except Crash:
            crashed = True
        finally:
            monkeypatch.setattr(install_module, "os", os)
        store = ModelStore(root, [public])  # a restarted gateway
        manifest, folder = store.current("pump")  # verifies signature and every hash
        outcomes.add(manifest.version)
        assert (folder / "iforest.tflite").read_bytes() == trained[manifest.version].files["iforest.tflite"]
        if crashed:
            store.install(v2) if manifest.version == 1 else None  # the retry succeeds
            assert store.current("pump")[0].version == 2
            assert not [p for p in (root / "pump").iterdir() if p.name.startswith(".staging")]
        shutil.rmtree(root)
        if not crashed:
            break
        step += 1
    assert step > 15 and outcomes == {1, 2}  # the run went through every call, and both outcomes occurred


def test_a_format_1_bundle_still_loads_and_alarms_at_its_old_margins(trained, keys, tmp_path):
    """A bundle trained before calibration (two models, a threshold and a typical score each)
    loads and scores; its alarm levels are its old margins over its threshold."""
    private, public, _ = keys
    b = trained[1]
    models = json.loads(json.dumps(b.manifest["models"]))
    del models["pca"]
    for name in ("iforest", "autoencoder"):
        calibration = models[name].pop("calibration")
        models[name].update(typical=calibration["typical"], threshold=calibration["tail_start"])
    files = {k: v for k, v in b.files.items() if k != "pca.tflite"}
    folder = write_bundle(tmp_path / "old", {**b.manifest, "format": 1, "models": models}, files, private)
    scorer = Scorer(verify(folder, [public]), folder)
    assert scorer.pca is None
    detector = Detector("pump", scorer, RuleSettings(), DriftSettings(enabled=False))
    assert detector.names == ("iforest", "autoencoder")  # the configured PCA scores are not there
    ae = models["autoencoder"]
    assert detector.alarm_levels()["autoencoder"] == pytest.approx(
        ae["typical"] + 5.5 * (ae["threshold"] - ae["typical"])
    )
    normal = np.array(scorer.scaler.mean)
    assert not detector.window(0, normal).step.alarming
    assert detector.window(5000, normal + 20 * scorer.scaler.scale).step.alarming
