"""The dashboard's pure parts: cutting series down for charts, gaps, minute points, spans, the
score ring, access rules, the drift level, JSON without NaN."""

import base64
import json
import math

import numpy as np

from gatewayd.dashboard import minute_points, spans
from gatewayd.dashboard.access import Access, split_host
from gatewayd.dashboard.envelope import envelope
from gatewayd.dashboard.gaps import broken_at_gaps, gap_after
from gatewayd.dashboard.views import json_safe, packed_times, packed_values, score_series
from gatewayd.detection.drift import PageHinkley
from gatewayd.detection.score_history import COLUMNS, ScoreHistory, ring_capacity
from gatewayd.store.summaries import Minutes


def test_envelope_keeps_spikes_gaps_and_order():
    ts = np.arange(36_000, dtype=np.int64) * 100  # an hour at 10 Hz
    values = np.sin(np.arange(36_000) / 500.0)
    values[12_345] = 40.0  # one sample
    values[20_000:20_003] = np.nan  # a short gap
    index = envelope(ts, values, 0, 3_600_000, 500)
    assert len(index) <= 3 * 500 and np.all(np.diff(index) > 0)
    assert 12_345 in index and np.isnan(values[index]).sum() == 1
    assert np.nanmax(values[index]) == 40.0 and np.nanmin(values[index]) == np.nanmin(values)
    short = envelope(ts[:900], values[:900], 0, 90_000, 500)
    assert np.array_equal(short, np.arange(900))  # few enough: every reading


def test_score_ring_keeps_the_newest_in_order():
    ring = ScoreHistory(5)
    for i in range(8):
        ring.append(1000 * i, {c: float(i) for c in COLUMNS})
    ends, columns = ring.between(0, 10**9)
    assert ends.tolist() == [3000, 4000, 5000, 6000, 7000] and columns["ratio"].tolist() == [3, 4, 5, 6, 7]
    ends, columns = ring.between(4000, 6000)
    assert ends.tolist() == [4000, 5000] and columns["autoencoder_level"].tolist() == [4, 5]
    assert ring_capacity(5.0, 3) == 720  # an hour at the default hop
    assert ring_capacity(0.5, 1000) == 104  # many devices share 4 MB (40 B a window)
    assert ring_capacity(1.0, 100_000) == 60  # never below a minimum
    series = score_series(ring, 1000, 10**9, 100, 2.0, 1000)
    assert unpack(series["ts"], "<i4").tolist() == [2000, 3000, 4000, 5000, 6000]  # after `from`
    assert unpack(series["ratio"], "<f4").tolist() == [3, 4, 5, 6, 7] and series["count"] == 5
    assert series["critical"] == 2.0 and series["alarm"] == 1.0
    empty = score_series(None, 0, 1, 100, 2.0, 1000)
    assert empty["count"] == 0 and empty["ts"] == "" and empty["autoencoder"] == ""


def test_access_rules():
    assert (
        split_host("[::1]:8080") == "::1" and split_host("LocalHost:80") == "localhost" and split_host("::1") == "::1"
    )
    open_ = Access(None, loopback=True)
    assert open_.authorised(None, None) and not open_.token_required
    assert open_.host_allowed("127.0.0.1:8080") and open_.host_allowed("localhost") and open_.host_allowed("[::1]:1")
    assert not open_.host_allowed("evil.example:8080") and not open_.host_allowed(None)
    assert open_.origin_allowed(None, "127.0.0.1:8080") and open_.origin_allowed(
        "http://127.0.0.1:8080", "127.0.0.1:8080"
    )
    assert not open_.origin_allowed("http://evil.example", "127.0.0.1:8080")
    lan = Access("a-long-enough-token", loopback=False)
    assert lan.host_allowed("gateway.plant.local:8080")
    assert not lan.authorised(None, None) and not lan.authorised("Bearer nope", None)
    assert lan.authorised("Bearer a-long-enough-token", None)
    cookie = lan.login("a-long-enough-token")
    assert cookie and "token" not in cookie and lan.authorised(None, cookie) and not lan.authorised(None, cookie[:-1])
    assert lan.login("wrong") is None and open_.login("anything") is None
    assert Access("another-long-token!", loopback=False).session != cookie  # a new token logs everyone out


def test_drift_level_rises_towards_one():
    test = PageHinkley(delta=0.5, threshold=10.0, min_samples=20)
    rng = np.random.default_rng(0)
    assert test.level() is None  # measuring the stream first
    for x in rng.normal(size=70):
        assert test.update(float(x)) is None
    assert test.level() is not None and test.level() < 0.5
    levels, declared = [], None
    for _ in range(200):
        declared = test.update(2.0)
        if declared is not None:
            break
        levels.append(test.level())
    assert declared == "up" and len(levels) > 3 and levels == sorted(levels) and levels[-1] > 0.7


def unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype)


def test_series_are_packed_arrays_and_json_has_no_nan():
    ts = np.array([1_000_000, 1_000_100, 1_010_000_123], dtype=np.int64)
    assert unpack(packed_times(ts, 1_000_000), "<i4").tolist() == [0, 100, 1_009_000_123]
    values = unpack(packed_values(np.array([2.5751953125, np.nan, 1e-3])), "<f4")
    assert values[0] == 2.5751953125 and np.isnan(values[1]) and values[2] == np.float32(1e-3)
    body = json_safe({"a": [math.nan, 1.5, {"b": math.inf}], "c": "x"})
    assert json.loads(json.dumps(body, allow_nan=False)) == {"a": [None, 1.5, {"b": None}], "c": "x"}


def test_gaps_break_the_line_where_no_data_came():
    assert gap_after(100, 50, 2.5) == 500  # five polls
    assert gap_after(100, 1000, 2.5) == 2500  # neighbours of a cut-down series may be two buckets apart
    ts = np.array([0, 100, 200, 5000, 5100, 9000], dtype=np.int64)
    broken, columns = broken_at_gaps(ts, {"v": np.arange(6.0)}, 500)
    assert broken.tolist() == [0, 100, 200, 2600, 5000, 5100, 7050, 9000]
    assert np.isnan(columns["v"][[3, 6]]).all() and columns["v"][~np.isnan(columns["v"])].tolist() == [0, 1, 2, 3, 4, 5]
    same, untouched = broken_at_gaps(ts[:3], {"v": np.arange(3.0)}, 500)
    assert same.tolist() == [0, 100, 200] and untouched["v"].tolist() == [0, 1, 2]


def test_minutes_merge_into_points_weighted_by_their_readings():
    minute = 60_000
    minutes = Minutes.from_rows(
        [
            (0, 60, 1.0, 0.0, 0.5, 1.5, 1.0, 59_000),
            (minute, 20, 5.0, 0.0, 4.0, 9.0, 5.0, 119_000),
            (2 * minute, 10, None, None, None, None, None, 179_000),  # a minute of missing readings
            (5 * minute, 60, 2.0, 0.0, 2.0, 2.0, 2.0, 359_000),
        ]
    )
    points = minute_points.merged(minutes, 0, 3 * minute)
    assert points.ts_ms.tolist() == [0, 3 * minute] and points.readings == 150
    assert points.mean.tolist() == [(60 * 1.0 + 20 * 5.0) / 80, 2.0]
    assert points.low.tolist() == [0.5, 2.0] and points.high.tolist() == [9.0, 2.0]
    assert len(minute_points.merged(None, 0, minute).ts_ms) == 0


def test_a_span_fits_the_data_within_bounds_and_long_ones_come_from_minutes():
    now = 10 * 86_400_000
    assert spans.fitted_start(now - 20_000, now) == now - 30_000  # a demo 20 s old: half a minute
    assert spans.fitted_start(now - 2 * 3_600_000, now) == now - 2 * 3_600_000
    assert spans.fitted_start(0, now) == now - 7 * 86_400_000  # at most a week
    assert spans.fitted_start(None, now) == now - 30_000
    assert spans.resolution(3 * 3_600_000) == "raw" and spans.resolution(3 * 3_600_000 + 1) == "minutes"
    assert spans.minutes_per_point(6 * 3_600_000, 600) == 1
    assert spans.minutes_per_point(7 * 86_400_000, 700) == 15
