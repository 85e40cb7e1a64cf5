"""Model scope (device, segment) and lifecycle (static, periodic, disposable) decisions of the
detection stage."""

import asyncio
import time

import numpy as np

from gatewayd.config import parse_config
from gatewayd.detection.stage import DetectionStage
from tests.gatewayd.models.test_bundle import alarm_levels
from tests.store_fake import RecordingStore

DEVICES = "".join(f'[[devices]]\nname = "pump-{i}"\nhost = "127.0.0.1"\nport = {1000 + i}\n' for i in (1, 2, 3))


def stage(tmp_path, detection: str) -> DetectionStage:
    config = parse_config(f'[gateway]\nstate_dir = "{tmp_path}"\n[detection]\n{detection}\n{DEVICES}')

    return DetectionStage(config, RecordingStore(), None)


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
    assert run_lifecycle(tmp_path, 'lifecycle = "periodic"\nretrain_hours = 24\n') == [
        ("pump-1", 200, "periodic retraining")
    ]


def test_disposable_trains_on_the_last_hours_only(tmp_path):
    started = run_lifecycle(tmp_path, 'lifecycle = "disposable"\nretrain_hours = 24\ntrain_hours = 4\n')
    assert started == [("pump-1", 81, "disposable retraining")]  # windows of the last 4 h (every 3 min)


def test_global_scope_scales_each_device_by_its_own_scaler(tmp_path):
    from gatewayd.detection.features import FeatureSpec
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
    trained = train_bundle(
        x, np.arange(600), spec, name="global", version=1, source="test", trees=30, devices=["a"] * 300 + ["b"] * 300
    )
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    folder = write_bundle(tmp_path / "g", trained.manifest, trained.files, load_private_key(tmp_path / "k.pem"))
    scorer = Scorer(verify(folder, [load_public_key(tmp_path / "k.pub")]), folder)
    assert set(scorer.device_scalers) == {"a", "b"}
    b_window = np.array([[100.0, 50.0]])
    level = alarm_levels(scorer)["autoencoder"]
    assert scorer.score(b_window, "b").autoencoder[0] < level  # normal for b, at b's level
    assert scorer.score(b_window, "a").autoencoder[0] > level  # far off for a


def test_a_model_alert_left_open_by_the_previous_run_is_continued_and_closed_under_its_id(tmp_path):
    from types import SimpleNamespace

    from gatewayd.detection.detector import WindowResult
    from gatewayd.detection.features import FeatureSpec
    from gatewayd.detection.rules import AlertRules

    open_alerts = [
        {
            "id": "g:pump-1:model:1000",
            "device": "pump-1",
            "channels": ["flow"],
            "severity": "warning",
            "opened_ms": 1000,
        },
        {
            "id": "g:pump-1:model:5000",
            "device": "pump-1",
            "channels": ["flow"],
            "severity": "critical",
            "opened_ms": 5000,
        },
    ]

    store = RecordingStore({"open_alerts": open_alerts})
    calls = store.calls
    config = parse_config(f'[gateway]\nstate_dir = "{tmp_path}"\n{DEVICES}')
    s = DetectionStage(config, store, None)
    s.specs["pump-1"] = FeatureSpec(("flow",), stats=("mean",))

    async def run() -> None:
        await s._open_alerts()
        # an older run's leftover is closed; the newest continues
        assert calls[-1] == ("update_alert", ("g:pump-1:model:1000",), {"closed_ms": 5000})
        detector = SimpleNamespace(rules=AlertRules("pump-1", s.rules))
        s._resume("pump-1", detector)
        assert detector.rules.incident is not None and detector.rules.incident.severity == "critical"
        step = None
        for k in range(s.settings.close_after):  # the device is back to normal
            step = detector.rules.step(10_000 + 5000 * k, np.array([0.1, 0.1]))
            result = WindowResult(10_000 + 5000 * k, 0.1, 0.1, np.array([0.1, 0.1]), step, [])
            await s._incident("pump-1", result, s.scopes["pump-1"])
        assert step is not None and step.closed is not None
        closes = [c for c in calls if c[0] == "update_alert" and c[2].get("closed_ms")]
        assert closes[-1][1] == ("g:pump-1:model:5000",), "closed under the id it had, not left open"
        assert not [c for c in calls if c[0] == "record_alert"], "no new alert for the same condition"

    asyncio.run(run())


def test_a_failed_training_is_not_retried_at_every_window(tmp_path):
    s = stage(tmp_path, "")
    started = []

    async def failing_train(scope, rows, reason):
        started.append(reason)
        scope.trained_at = scope.failed_at = time.monotonic()  # what _train does when the child dies

    s._train = failing_train
    scope = s.scopes["pump-1"]
    for i in range(200):
        s._collect(scope, i * 5000, np.zeros(3), "pump-1")

    async def windows() -> None:
        for _ in range(50):  # the next windows each ask for the bootstrap again
            s._start_training(scope, "bootstrap: no model installed")
            if scope.training is not None:
                await scope.training
                scope.training = None

    asyncio.run(windows())
    assert started == ["bootstrap: no model installed"]
    scope.failed_at = time.monotonic() - 601  # ten minutes later it is tried again
    asyncio.run(windows())
    assert len(started) == 2
