"""The baseline the models compare against: it follows slow normal change, and never an
alarm, an open incident or a channel that has no value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gatewayd.detection.baseline import FOLLOW_BELOW, Baseline
from gatewayd.detection.baseline_file import FILE_NAME as BASELINES_FILE
from gatewayd.detection.baseline_file import BaselineFile
from gatewayd.detection.detector import Detector, DriftSettings
from gatewayd.detection.rules import RuleSettings
from gatewayd.models.scorer import Scorer
from tests.faults.support import tmpfs
from tests.gatewayd.detection.test_calibration import plant, signed_scorer


def test_it_moves_one_hop_of_its_time_constant_towards_a_normal_window():
    b = Baseline(np.array([10.0, 20.0]), follow_windows=10, window_s=10.0, hop_s=5.0)
    b.follow(np.array([30.0, 20.0]), ratio=0.1, incident_open=False)
    assert b.level == pytest.approx([11.0, 20.0])  # 5 % of the way
    assert b.shift(np.array([31.0, 25.0])) == pytest.approx([30.0, 25.0])


@pytest.mark.parametrize("ratio, incident_open", [(FOLLOW_BELOW, False), (1.5, False), (0.0, True), (np.nan, False)])
def test_it_never_follows_an_alarm_an_open_incident_or_an_undecided_window(ratio, incident_open):
    b = Baseline(np.array([10.0]), follow_windows=10, window_s=10.0, hop_s=5.0)
    b.follow(np.array([30.0]), ratio=ratio, incident_open=incident_open)
    assert b.level == pytest.approx([10.0])


def test_a_feature_without_a_value_stays_where_it_is():
    b = Baseline(np.array([10.0, 20.0]), follow_windows=1, window_s=10.0, hop_s=5.0)
    b.follow(np.array([np.nan, 30.0]), ratio=0.0, incident_open=False)
    assert b.level == pytest.approx([10.0, 25.0])
    assert np.isnan(b.shift(np.array([np.nan, 30.0]))[0])


def test_zero_keeps_the_training_state():
    b = Baseline(np.array([10.0]), follow_windows=0, window_s=10.0, hop_s=5.0)
    b.follow(np.array([30.0]), ratio=0.0, incident_open=False)
    assert b.level == pytest.approx([10.0]) and b.shift(np.array([30.0])) == pytest.approx([30.0])


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    return signed_scorer(tmp_path_factory.mktemp("bundle"), plant(400, seed=21))


def run(scorer: Scorer, windows: np.ndarray, follow_windows: float) -> list:
    detector = Detector("pump", scorer, RuleSettings(follow_windows=follow_windows), DriftSettings(enabled=False))
    return [detector.window(i * 5000, w).step for i, w in enumerate(windows)]


FOLLOW = 30  # windows of 10 s: 300 s, 60 hops of 5 s


def slow_creep(n: int) -> np.ndarray:
    """Normal windows whose temperature creeps up by 3 degrees over n windows, far outside
    the states seen in training (its noise there was 0.1 around the shared state), and slowly
    enough for the baseline to keep up (a lag of about 0.1 degree at 30 windows of 10 s)."""
    x = plant(n, seed=22)
    x[:, 3] += np.linspace(0.0, 3.0, n)
    return x


def test_a_slow_normal_creep_alarms_against_the_training_state_and_not_against_the_baseline(scorer):
    creep = slow_creep(2000)
    assert any(s.opened for s in run(scorer, creep, follow_windows=0)), "the creep should be outside the training state"
    assert not any(s.opened for s in run(scorer, creep, FOLLOW))


def test_a_creep_faster_than_the_baseline_can_follow_alarms(scorer):
    """4 degrees over 2000 windows reaches the alarm level of the training state in about 25
    minutes: followed with a time constant of 30 windows (5 minutes), seen as a change with 180
    (30 minutes), where the baseline falls behind, stops following and the creep alarms."""
    creep = plant(2000, seed=22)
    creep[:, 3] += np.linspace(0.0, 4.0, 2000)
    assert not any(s.opened for s in run(scorer, creep, FOLLOW))
    assert any(s.opened for s in run(scorer, creep, 180))


def test_a_step_on_top_of_a_creep_opens_stays_open_while_held_and_closes_when_gone(scorer):
    x = slow_creep(2000)
    x[1500:1700, 2] += 3.0  # the motor draws 3 A more, held for 200 windows
    steps = run(scorer, x, FOLLOW)
    opened = [i for i, s in enumerate(steps) if s.opened]
    assert opened and 1500 <= opened[0] < 1506, f"opened at {opened}"
    assert all(s.incident_open for s in steps[opened[0] : 1700]), "the baseline absorbed a held fault"
    closed = [i for i, s in enumerate(steps) if s.closed]
    assert closed and 1700 <= closed[0] <= 1710, f"closed at {closed}"
    assert not any(s.incident_open for s in steps[closed[0] + 1 :])


# -- across restarts ----------------------------------------------------------------------


def followed(level: list[float]) -> Baseline:
    b = Baseline(np.zeros(len(level)), follow_windows=30, window_s=10.0, hop_s=5.0)
    b.level[:] = level
    return b


def test_a_restart_restores_the_baseline_of_the_same_bundle_only(tmp_path):
    path = tmp_path / BASELINES_FILE
    f = BaselineFile(path)
    f.save(f.snapshot({"pump-1": ("pump-1 v3", followed([1.0, 2.0])), "pump-2": ("pump-2 v1", followed([5.0]))}))
    restarted = BaselineFile(path)
    restarted.load()
    same, newer, wider = (Baseline(np.zeros(n), 30, 10.0, 5.0) for n in (2, 1, 3))
    assert restarted.restore("pump-1", "pump-1 v3", same) and same.level == pytest.approx([1.0, 2.0])
    assert not restarted.restore("pump-2", "pump-2 v2", newer) and newer.level == pytest.approx([0.0])
    assert not restarted.restore("pump-3", "pump-3 v1", wider)


def test_a_fixed_baseline_is_not_saved(tmp_path):
    path = tmp_path / BASELINES_FILE
    f = BaselineFile(path)
    f.save(f.snapshot({"pump-1": ("pump-1 v3", Baseline(np.zeros(2), 0, 10.0, 5.0))}))
    assert not path.exists()


@pytest.mark.parametrize("text", ["{not json", '["a", "list"]', '{"pump-1": {"bundle": "pump-1 v3", "level": ["x"]}}'])
def test_an_unreadable_file_starts_from_the_training_state(tmp_path, text):
    path = tmp_path / BASELINES_FILE
    path.write_text(text)
    f = BaselineFile(path)
    f.load()
    b = Baseline(np.zeros(1), 30, 10.0, 5.0)
    assert not f.restore("pump-1", "pump-1 v3", b) and b.level == pytest.approx([0.0])


def test_a_full_disk_keeps_the_last_saved_file_and_logs_once(tmp_path, caplog):
    with tmpfs(tmp_path / "state", "64k") as state:
        path = state / BASELINES_FILE
        f = BaselineFile(path)
        f.save(f.snapshot({"pump-1": ("pump-1 v3", followed([1.0]))}))
        (state / "filler").write_bytes(b"\0" * 60_000)  # what is left is smaller than the next file
        with pytest.raises(OSError):
            (state / "more").write_bytes(b"\0" * 8192)
        wide = f.snapshot({"pump-1": ("pump-1 v3", followed([float(i) for i in range(2000)]))})
        assert f.due(60.0) and not f.due(90.0) and f.due(120.0)
        f.save(wide)
        f.save(wide)
        assert sum("not saved" in r.getMessage() for r in caplog.records) == 1
        assert json.loads(path.read_text())["pump-1"]["level"] == [1.0]
        assert not (state / f".{BASELINES_FILE}.tmp").exists()
        (state / "filler").unlink()
        f.save(wide)
        assert len(json.loads(path.read_text())["pump-1"]["level"]) == 2000
