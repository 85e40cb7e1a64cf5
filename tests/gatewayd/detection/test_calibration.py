"""Calibrated alarm levels on the gateway's real path (training, the TFLite graphs, the rules):
the stated false-alarm budget holds on normal data, a sustained fault keeps its incident open
until the device is back, and a new model's first windows are not alarms for being first."""

from __future__ import annotations

import numpy as np
import pytest

from gatewayd.detection.detector import Detector, DriftSettings, score_tails
from gatewayd.detection.features import FeatureSpec
from gatewayd.detection.rules import RuleSettings
from gatewayd.models.bundle import generate_keypair, load_private_key, load_public_key, verify, write_bundle
from gatewayd.models.calibration import Tail, window_alpha
from gatewayd.models.scorer import Scorer
from gatewayd.models.training import train_bundle

CHANNELS = ("pressure", "flow", "current", "temperature")
SPEC = FeatureSpec(CHANNELS, window_s=10, hop_s=5, stats=("mean",))


def plant(n: int, seed: int) -> np.ndarray:
    """Window means of a pump at a slowly wandering speed: four channels driven by one state
    (an AR(1) process, as consecutive windows are), each with its own noise."""
    rng = np.random.default_rng(seed)
    speed = np.empty(n)
    speed[0] = 0.0
    for i in range(1, n):
        speed[i] = 0.95 * speed[i - 1] + rng.normal(0, 0.3)
    levels = np.array([4.0, 25.0, 8.0, 40.0])
    gains = np.array([0.6, 3.0, 1.2, 0.8])
    return levels + np.outer(speed, gains) + rng.normal(0, [0.05, 0.3, 0.08, 0.1], (n, 4))


def signed_scorer(folder, windows: np.ndarray) -> Scorer:
    """A bundle trained on these windows (5 s apart), signed, verified and loaded."""
    trained = train_bundle(
        windows, np.arange(len(windows)) * 5000, SPEC, name="pump", version=1, source="test", trees=50
    )
    generate_keypair(folder / "k.pem", folder / "k.pub")
    bundle = write_bundle(folder / "b", trained.manifest, trained.files, load_private_key(folder / "k.pem"))
    return Scorer(verify(bundle, [load_public_key(folder / "k.pub")]), bundle)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    return signed_scorer(tmp_path_factory.mktemp("bundle"), plant(2000, seed=1))


def test_the_budget_holds_on_normal_data(scorer):
    """Fresh normal windows exceed each PCA score's level about as often as the budget says:
    within a factor of three either way, at budgets of 1% and 0.1% of windows."""
    tails = score_tails(scorer.manifest)
    fresh = scorer.score(plant(40_000, seed=2)).named
    for alpha in (1e-2, 1e-3):
        for name in ("pca_t2", "pca_q"):
            rate = float(np.mean(fresh[name] > tails[name].level(alpha)))
            assert alpha / 3 <= rate <= 3 * alpha, f"{name} at {alpha:g}: {rate:.4%} of normal windows alarmed"


def test_a_smaller_budget_is_a_higher_level():
    tail = Tail.fit(np.random.default_rng(0).exponential(1.0, 500))
    levels = [tail.level(a) for a in (1e-2, 1e-4, 1e-6)]
    assert levels[0] < levels[1] < levels[2]
    assert levels[1] - levels[0] == pytest.approx(levels[2] - levels[1])  # a fixed step per factor of 100
    assert window_alpha(1.0, 5.0) == pytest.approx(5 / 86_400)


def run(scorer: Scorer, windows: np.ndarray, settings: RuleSettings = RuleSettings()) -> list:
    detector = Detector("pump", scorer, settings, DriftSettings(enabled=False))
    return [detector.window(i * 5000, w).step for i, w in enumerate(windows)]


def test_a_sustained_fault_stays_open_until_the_device_is_back(scorer):
    normal = plant(600, seed=3)
    faulty = normal[200:500].copy()
    faulty[:, 2] += 3.0  # the motor draws 3 A more, held: every window of it is faulty
    steps = run(scorer, np.vstack([normal[:200], faulty, normal[500:]]))
    opened = [i for i, s in enumerate(steps) if s.opened is not None]
    closed = [i for i, s in enumerate(steps) if s.closed is not None]
    assert opened and 200 <= opened[0] < 206, f"opened at {opened}"
    assert all(s.incident_open for s in steps[opened[0] : 500]), "closed while the fault was still there"
    assert closed and 500 <= closed[0] <= 500 + 10, f"closed at {closed}"
    assert not any(s.incident_open for s in steps[closed[0] + 1 :])
    assert "current" in steps[opened[0]].opened.top_channels()


def test_windows_with_a_channel_missing_never_close_an_open_incident(scorer):
    normal = plant(300, seed=4)
    windows = normal.copy()
    windows[100:200, 2] += 3.0
    windows[150:200, 2] = np.nan  # the faulty channel stops answering while the fault goes on
    steps = run(scorer, windows)
    assert all(s.incident_open for s in steps[110:200])
    assert any(s.closed is not None for s in steps[200:215])


def test_a_new_models_first_windows_on_normal_data_raise_nothing(tmp_path):
    """Trained on the first windows of a stream, a model scores the next ones without an
    alarm: its levels come from windows it did not fit, not from those it memorised."""
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    for seed in range(5):
        x = plant(700, seed=10 + seed)
        trained = train_bundle(
            x[:400], np.arange(400) * 5000, SPEC, name="pump", version=1, source="test", trees=50, seed=seed
        )
        bundle = write_bundle(
            tmp_path / f"b{seed}", trained.manifest, trained.files, load_private_key(tmp_path / "k.pem")
        )
        scorer = Scorer(verify(bundle, [load_public_key(tmp_path / "k.pub")]), bundle)
        steps = run(scorer, x[400:])
        assert not any(s.alarming for s in steps[:20]), f"seed {seed}: the first windows alarmed"
        assert not any(s.opened for s in steps), f"seed {seed}: an incident on normal data"


def test_a_level_never_goes_below_its_floor():
    tail = Tail.fit(np.random.default_rng(0).exponential(1.0, 500))
    floored = tail.with_floor(tail.level(1e-6) + 5.0)
    assert floored.level(1e-2) == floored.level(1e-6) == tail.level(1e-6) + 5.0
    assert floored.level(1e-12) == pytest.approx(tail.level(1e-12))  # a smaller budget still raises it


def two_state_stretch(seed: int) -> np.ndarray:
    """A pump that ran at a second operating point (more speed, more current) in the first
    quarter of its training stretch only, and at its usual one since."""
    x = plant(400, seed)
    x[:100] += np.array([1.2, 6.0, 2.4, 1.6])
    return x


def alarms_on_return(tmp_path, monkeypatch, seed: int, floors: bool) -> int:
    """Alarming windows when the pump goes back to the first quarter's operating point."""
    if not floors:
        monkeypatch.setattr("gatewayd.models.calibration.blocks", lambda n, count=4: [])
    folder = tmp_path / f"{seed}-{floors}"
    folder.mkdir()
    scorer = signed_scorer(folder, two_state_stretch(seed))
    back = plant(200, seed + 100) + np.array([1.2, 6.0, 2.4, 1.6])
    # Both PCA scores decide: the earlier operating point lies along the channels' usual
    # relation, so it is T² that the latest quarter alone would set too low.
    return sum(s.alarming for s in run(scorer, back, RuleSettings(scores=("pca_t2", "pca_q"))))


def test_a_state_seen_early_in_training_is_not_an_alarm(tmp_path, monkeypatch):
    """The latest quarter holds back only the usual operating point; the floor from blocks of the
    whole stretch keeps the earlier one normal. Without the floors the same stretch alarms (the
    case the floors exist for)."""
    for seed in range(3):
        assert alarms_on_return(tmp_path, monkeypatch, seed, floors=True) == 0, f"seed {seed}"
    assert alarms_on_return(tmp_path, monkeypatch, 0, floors=False) > 0


def test_a_few_odd_windows_in_training_do_not_raise_the_floor():
    """Two wild windows among 400 (a glitch while the gateway was learning) leave the floors
    where they were: the floor is a high quantile of the blocks' scores, not their maximum."""
    clean = plant(400, seed=5)
    odd = clean.copy()
    odd[[120, 310]] += np.array([20.0, -80.0, 30.0, 0.0])

    def floors(x: np.ndarray) -> dict[str, float]:
        m = train_bundle(x, np.arange(len(x)) * 5000, SPEC, name="p", version=1, source="t", trees=20).manifest
        return {k: m["models"]["pca"][k]["floor"] for k in ("t2", "q")}

    before, after = floors(clean), floors(odd)
    for k in ("t2", "q"):
        assert after[k] < 2.0 * before[k], f"{k}: floor {before[k]:.3g} became {after[k]:.3g}"


def test_a_bundle_made_before_floors_keeps_its_levels(scorer):
    """A manifest without `floor` (bundles made before it existed) loads, at the tail's levels."""
    from gatewayd.models.bundle import Manifest

    data = scorer.manifest.model_dump(mode="json", exclude_none=True)
    for key in ("t2", "q"):
        data["models"]["pca"][key].pop("floor")
    old = score_tails(Manifest.model_validate(data))
    new = score_tails(scorer.manifest)
    assert old["pca_t2"].floor is None and new["pca_t2"].floor is not None
    assert old["pca_q"].level(1e-9) == Tail(**{**new["pca_q"].to_dict(), "floor": None}).level(1e-9)
