"""Detection logic on crafted inputs: features against numpy, the ensemble rule, hysteresis,
severity and fusion, feedback moving thresholds within bounds, drift, causal windows."""

import numpy as np
import pytest

from gatewayd.detection.drift import PageHinkley
from gatewayd.detection.features import FeatureSpec, sliding_windows, window_features
from gatewayd.detection.feedback import FeedbackSettings, ThresholdAdapter
from gatewayd.detection.rules import AlertRules, RuleSettings, combine
from gatewayd.detection.windows import DeviceWindows


def test_features_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    ts = np.arange(0, 10_000, 100, dtype=np.int64)
    values = rng.normal(size=(len(ts), 3))
    values[5, 1] = np.nan
    spec = FeatureSpec(
        ("a", "b", "c"),
        window_s=10,
        hop_s=5,
        sample_period_s=0.1,
        pairs=(("a", "c"),),
        fft_channels=("a",),
        fft_bands=5,
    )
    f = dict(zip(spec.names, window_features(spec, ts, values)))
    t = (ts - ts[-1]) / 1000.0
    for i, c in enumerate(("a", "b", "c")):
        x = values[:, i]
        ok = ~np.isnan(x)
        assert f[f"{c}:mean"] == pytest.approx(np.nanmean(x))
        assert f[f"{c}:std"] == pytest.approx(np.nanstd(x))
        assert f[f"{c}:min"] == np.nanmin(x) and f[f"{c}:max"] == np.nanmax(x)
        assert f[f"{c}:last"] == x[ok][-1]
        assert f[f"{c}:slope"] == pytest.approx(np.polyfit(t[ok], x[ok], 1)[0])
    diff = values[:, 0] - values[:, 2]
    assert f["a-c:mean"] == pytest.approx(diff.mean()) and f["a-c:std"] == pytest.approx(diff.std())
    power = np.abs(np.fft.rfft(values[:, 0] - values[:, 0].mean()))[1:] ** 2 / len(ts)
    for i, part in enumerate(np.array_split(power, 5)):
        assert f[f"a:band{i}"] == pytest.approx(part.mean())
    # a 2 Hz sine sampled at 10 Hz: bands of 1 Hz up to 5 Hz, its energy in the second
    sine = np.sin(2 * np.pi * 2.0 * ts / 1000.0)[:, None].repeat(3, axis=1)
    g = dict(zip(spec.names, window_features(spec, ts, sine)))
    bands = [g[f"a:band{i}"] for i in range(5)]
    assert int(np.argmax(bands)) == 1 and bands[1] > 1e6 * max(bands[0], *bands[2:])


def test_spec_rejects_bad_settings():
    with pytest.raises(ValueError, match="pair"):
        FeatureSpec(("a",), pairs=(("a", "z"),))
    with pytest.raises(ValueError, match="hop_s"):
        FeatureSpec(("a",), window_s=5, hop_s=6)
    with pytest.raises(ValueError, match="stats"):
        FeatureSpec(("a",), stats=("median",))


def test_combine_rules():
    r = np.array([0.5, 1.5])
    assert combine(r, RuleSettings(combine="any")) == 1.5
    assert combine(r, RuleSettings(combine="majority")) == 0.5  # one of two is not a majority
    assert combine(np.array([1.2, 1.5]), RuleSettings(combine="majority")) == 1.2
    assert combine(r, RuleSettings(combine="weighted", weights=(0.25, 0.75))) == pytest.approx(1.25)
    # fewer weights than the bundle has deciding scores (a format 1 bundle under a PCA-only setting): equal weights
    assert combine(r, RuleSettings(combine="weighted", weights=(1.0,), scores=("pca_q",))) == pytest.approx(
        float(np.mean(r))
    )


def test_hysteresis_severity_and_fusion():
    rules = AlertRules("pump", RuleSettings(open_after=3, close_after=2, critical_ratio=2.0))
    sequence = [0.2, 1.5, 1.4, 0.3, 1.2, 1.3, 1.4, 1.1, 2.5, 0.5, 1.3, 0.2, 0.1, 0.1]
    opened, escalated, closed, open_flags = [], [], [], []
    for i, r in enumerate(sequence):
        excess = {"flow:mean": r, "pressure:mean": 0.1} if r > 1 else {}
        step = rules.step(1000 * i, np.array([r, 0.0]), excess)
        if step.opened:
            opened.append(i)
        if step.escalated:
            escalated.append(i)
        if step.closed:
            closed.append((i, step.closed))
        open_flags.append(step.incident_open)
    assert opened == [6]  # two alarming windows then a quiet one do not open; three in a row do
    assert escalated == [8]
    assert [i for i, _ in closed] == [12]  # the quiet window at 9 is followed by an alarm: still open
    incident = closed[0][1]
    assert incident.severity == "critical" and incident.opened_ms == 6000 and incident.closed_ms == 12000
    assert incident.top_channels()[0] == "flow" and incident.top_features(1)[0][0] == "flow:mean"
    assert open_flags == [False] * 6 + [True] * 6 + [False] * 2


def test_feedback_moves_the_threshold_within_bounds():
    adapter = ThresholdAdapter(FeedbackSettings(min_labels=5, window=10, step=1.5, lowest=0.7, highest=2.0))
    changes = [adapter.add("false_positive") for _ in range(8)]
    moved = [c for c in changes if c is not None]
    assert moved[0][0] == 1.0 and moved[0][1] == 1.5 and "precision 0%" in moved[0][2]
    assert adapter.multiplier == 2.0  # never above the upper bound
    adapter = ThresholdAdapter(FeedbackSettings(min_labels=5, window=10, step=1.5, lowest=0.7, highest=2.0))
    for label in ["true_positive"] * 4 + ["missed"] * 6:
        adapter.add(label)
    assert adapter.multiplier == 0.7  # recall below 95%: lowered, to the lower bound and no further
    adapter = ThresholdAdapter()
    assert all(adapter.add(label) is None for label in ["true_positive"] * 9 + ["false_positive"])  # 90% precision
    with pytest.raises(ValueError):
        adapter.add("maybe")


def test_drift_found_on_a_shift_and_not_on_a_stationary_stream():
    rng = np.random.default_rng(3)
    for scale in (1.0, 0.01, 300.0):  # in units of the stream's own spread, whatever its scale
        stationary = PageHinkley()
        assert not any(stationary.update(x) for x in rng.normal(5 * scale, scale, 20_000))
        shifted = PageHinkley()
        stream = np.concatenate([rng.normal(0, scale, 500), rng.normal(2 * scale, scale, 200)])
        hits = [(i, d) for i, x in enumerate(stream) if (d := shifted.update(x))]
        assert hits and hits[0][1] == "up" and 500 <= hits[0][0] < 560
        down = PageHinkley()
        stream = np.concatenate([rng.normal(0, scale, 500), rng.normal(-2 * scale, scale, 200)])
        assert [d for x in stream if (d := down.update(x))][:1] == ["down"]


def test_live_windows_are_causal_and_match_batch_windows():
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.integers(80, 120, 600)).astype(np.int64)
    values = rng.normal(size=(600, 2))
    spec = FeatureSpec(("x", "y"), window_s=3, hop_s=1, sample_period_s=0.1)
    live = DeviceWindows(spec)
    got = [w for t, v in zip(ts, values) for w in live.add(int(t), ("x", "y"), v)]
    ends, batch = sliding_windows(spec, ts, values)
    assert len(got) >= len(ends) - 1
    for (end, feats), (b_end, b_feats) in zip(got, zip(ends, batch)):
        assert end == b_end
        np.testing.assert_allclose(feats, b_feats)
    # a future change of data never changes an earlier decision
    changed = values.copy()
    changed[400:] += 100.0
    live2 = DeviceWindows(spec)
    again = [w for t, v in zip(ts, changed) for w in live2.add(int(t), ("y", "x"), v[::-1])]  # any channel order
    for (end, feats), (end2, feats2) in zip(got, again):
        if end < ts[400]:
            assert end == end2 and np.array_equal(feats, feats2)


def test_windows_go_on_through_wall_clock_steps_either_way():
    spec = FeatureSpec(("x",), window_s=2, hop_s=1, sample_period_s=0.1)
    live = DeviceWindows(spec)

    def feed(start_ms: int, n: int) -> list[int]:
        return [end for i in range(n) for end, _ in live.add(start_ms + 100 * i, ("x",), np.array([1.0]))]

    t0 = 1_800_000_000_000
    assert len(feed(t0, 100)) >= 7
    year = 365 * 86_400_000
    ahead = feed(t0 + 10_000 + year, 100)  # a year ahead: the grid jumps the gap
    assert sum(end > t0 + year for end in ahead) >= 7
    back = feed(t0 + 20_000, 100)  # and back again: windows start over from the real time
    assert sum(end < t0 + year for end in back) >= 7
    assert feed(t0 + 20_000 + 9_950, 1) == []  # a poll 50 ms out of order is only dropped


def test_recent_windows_ring_is_bounded_and_ordered():
    from gatewayd.detection.windows import RecentWindows

    ring = RecentWindows(budget_bytes=10 * (4 * 3 + 16), least=4, most=100)
    for i in range(25):
        ring.append(i, np.full(3, i, dtype=np.float64), f"d{i % 2}")
    rows = list(ring)
    assert ring.capacity == 10 and len(ring) == 10
    assert [r[0] for r in rows] == list(range(15, 25)) and rows[-1][2] == "d0" and rows[0][1].dtype == np.float32
    ring.append(99, np.zeros(5), "d0")  # other features: starts afresh
    assert len(ring) == 1 and list(ring)[0][1].shape == (5,)
