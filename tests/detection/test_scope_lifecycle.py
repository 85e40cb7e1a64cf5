"""Model scope (device, segment) and lifecycle (static, periodic, disposable) decisions of the
detection stage."""

import asyncio
import time

import numpy as np

from gatewayd.config import parse_config
from gatewayd.detection.stage import DetectionStage

DEVICES = "".join(f'[[devices]]\nname = "pump-{i}"\nhost = "127.0.0.1"\nport = {1000 + i}\n' for i in (1, 2, 3))


def stage(tmp_path, detection: str) -> DetectionStage:
    config = parse_config(f'[gateway]\nstate_dir = "{tmp_path}"\n[detection]\n{detection}\n{DEVICES}')

    async def store_call(name, *args, **kwargs):
        raise AssertionError("not used")

    return DetectionStage(config, store_call, None)


def test_segment_scope_shares_one_bundle_name(tmp_path):
    s = stage(tmp_path, 'scope = "segment"\n[[detection.segments]]\nname = "pumps"\ndevices = ["pump-1", "pump-2"]\n')
    assert s.scope_of == {"pump-1": "pumps", "pump-2": "pumps", "pump-3": "pump-3"}
    assert sorted(s.scopes["pumps"].devices) == ["pump-1", "pump-2"]
    d = stage(tmp_path, "")
    assert d.scope_of == {f"pump-{i}": f"pump-{i}" for i in (1, 2, 3)}


def run_lifecycle(tmp_path, detection):
    s = stage(tmp_path, detection)
    started = []

    async def fake_train(scope, rows, reason):
        started.append((scope.name, len(rows), reason))

    s._train = fake_train
    scope = s.scopes["pump-1"]
    hour = 3_600_000
    for i in range(200):  # windows judged normal over the last 10 hours
        s._collect(scope, i * hour // 20, np.zeros(3), "pump-1")

    async def decide():
        scope.trained_at = time.monotonic() - 25 * 3600  # the model is a day old
        s._maybe_retrain(scope, 10 * hour)
        if scope.training is not None:
            await scope.training

    asyncio.run(decide())
    return started


def test_static_models_are_kept(tmp_path):
    assert run_lifecycle(tmp_path, "") == []


def test_periodic_retrains_from_all_recent_normal_windows(tmp_path):
    assert run_lifecycle(tmp_path, 'lifecycle = "periodic"\nretrain_hours = 24\n') == [("pump-1", 200, "periodic retraining")]


def test_disposable_trains_on_the_last_hours_only(tmp_path):
    started = run_lifecycle(tmp_path, 'lifecycle = "disposable"\nretrain_hours = 24\ntrain_hours = 4\n')
    assert started == [("pump-1", 81, "disposable retraining")]  # windows of the last 4 h (every 3 min)


def test_global_scope_scales_each_device_by_its_own_scaler(tmp_path):
    from gatewayd.features import FeatureSpec
    from gatewayd.models.bundle import generate_keypair, load_private_key, load_public_key, verify, write_bundle
    from gatewayd.models.scorer import Scorer
    from gatewayd.models.training import train_bundle

    s = stage(tmp_path, 'scope = "global"\n')
    assert set(s.scope_of.values()) == {"global"} and len(s.scopes["global"].devices) == 3
    rng = np.random.default_rng(0)
    spec = FeatureSpec(("level", "load"), stats=("mean",))
    base = rng.normal(size=(300, 1))
    a = np.column_stack([10 + base[:, 0], 5 + 0.5 * base[:, 0]]) + rng.normal(0, 0.05, (300, 2))
    b = np.column_stack([100 + 3 * base[:, 0], 50 + 1.5 * base[:, 0]]) + rng.normal(0, 0.15, (300, 2))
    x = np.vstack([a, b])
    trained = train_bundle(x, np.arange(600), spec, name="global", version=1, source="test", trees=30,
                           devices=["a"] * 300 + ["b"] * 300)  # fmt: skip
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    folder = write_bundle(tmp_path / "g", trained.manifest, trained.files, load_private_key(tmp_path / "k.pem"))
    scorer = Scorer(verify(folder, [load_public_key(tmp_path / "k.pub")]), folder)
    assert set(scorer.device_scalers) == {"a", "b"}
    b_window = np.array([[100.0, 50.0]])
    assert not scorer.score(b_window, "b").autoencoder_alarm[0]  # normal for b, at b's level
    assert scorer.score(b_window, "a").autoencoder_alarm[0]  # far off for a
