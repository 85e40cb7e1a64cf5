import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.store.database import Reading, Store


def write_in_batches(store, ts, values, cuts):
    start = 0
    for cut in [*cuts, len(ts)]:
        store.write_readings([Reading("n", "a", int(t), float(v)) for t, v in zip(ts[start:cut], values[start:cut])])
        start = cut


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=400), st.lists(st.integers(0, 400), max_size=6), st.data())
def test_minutes_match_numpy_however_batches_split_them(tmp_path_factory, values, cuts, data):
    path = tmp_path_factory.mktemp("s") / "g.sqlite3"
    store = Store(path)
    store.register_device("n", "edge-node", "a", {}, [("a", "V")])
    step = data.draw(st.sampled_from([250, 1000, 7000]))
    ts = 1_700_000_000_000 + step * np.arange(len(values))
    write_in_batches(store, ts, values, sorted(c for c in cuts if 0 < c < len(values)))
    got = store.minute_summaries("n", "a")
    store.close()
    minutes = ts - ts % 60_000
    assert [g["minute_ms"] for g in got] == sorted(set(minutes.tolist()))
    for g in got:
        chunk = np.array(values)[minutes == g["minute_ms"]]
        assert g["count"] == len(chunk)
        assert math.isclose(g["mean"], chunk.mean(), rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(g["std"], chunk.std(), rel_tol=1e-6, abs_tol=1e-6)
        assert (g["min"], g["max"], g["last"]) == (chunk.min(), chunk.max(), chunk[-1])


def test_nan_counts_for_last_only(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "a", {}, [("a", "V")])
    store.write_readings([Reading("n", "a", 0, 1.0), Reading("n", "a", 1000, float("nan"))])
    (m,) = store.minute_summaries("n", "a")
    assert m["count"] == 1 and m["mean"] == 1.0 and math.isnan(m["last"])
    store.close()
