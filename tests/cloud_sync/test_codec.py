"""The uplink's compact encodings round-trip: summaries within float16 of the spread, windows
exactly."""

import numpy as np
import pytest

from cloud_sync import codec


def test_summary_round_trip_keeps_level_and_spread():
    channels = {
        "flow": {
            "unit": "m3/h",
            "count": 120,
            "mean": 1234.5678,
            "std": 0.0123,
            "min": 1234.51,
            "max": 1234.61,
            "last": 1234.55,
        },
        "temp": {"unit": "C", "count": 119, "mean": -3.25, "std": 2.0, "min": -7.0, "max": 1.5, "last": None},
    }
    packed = codec.encode_summary(channels)
    assert len(packed["data"]) == 32  # 2 channels x 12 bytes, base64
    back = codec.decode_summary(packed)
    assert back["flow"]["unit"] == "m3/h" and back["flow"]["count"] == 120 and back["temp"]["last"] is None
    assert back["flow"]["mean"] == pytest.approx(1234.5678, rel=1e-7)
    for key in ("min", "max", "last"):
        assert back["flow"][key] == pytest.approx(
            channels["flow"][key], abs=1e-4
        )  # the spread, not the level, is rounded
    assert back["flow"]["std"] == pytest.approx(0.0123, rel=1e-3)
    with pytest.raises(ValueError):
        codec.decode_summary({**packed, "data": packed["data"][:-8]})


def test_window_round_trip_is_exact():
    ts = np.arange(1_795_000_000_000, 1_795_000_000_000 + 600_000, 1000, dtype=np.int64)
    values = np.random.default_rng(0).normal(size=600).astype(np.float32).astype(np.float64)
    block = codec.decode_window(codec.encode_window(ts, values))
    assert np.array_equal(block.ts_ms, ts) and np.array_equal(block.values, values)
