import sqlite3

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gatewayd import blocks, migrations
from gatewayd.store import Reading, Store

stamps = st.lists(st.integers(0, 3_600_000), min_size=1, max_size=300).map(
    lambda deltas: 1_700_000_000_000 + np.cumsum(np.array(deltas, dtype=np.int64))
)


@given(stamps, st.data())
def test_round_trip_is_exact(ts, data):
    values = data.draw(hnp.arrays(np.float64, len(ts), elements=st.floats(allow_nan=True, allow_infinity=True)))
    b = blocks.decode(blocks.encode(ts, values))
    assert (b.ts_ms == ts).all()
    assert np.array_equal(b.values, values, equal_nan=True)


def test_regular_float32_readings_cost_a_few_bytes():
    ts = 1_700_000_000_000 + 500 * np.arange(1000)
    values = (20 + np.random.default_rng(1).normal(0, 0.3, 1000)).astype(np.float32).astype(np.float64)
    assert len(blocks.encode(ts, values)) / 1000 < 4.5
    # a float64 that float32 cannot hold is kept exactly
    exact = blocks.decode(blocks.encode(ts[:2], np.array([0.1, 0.2])))
    assert list(exact.values) == [0.1, 0.2]


def test_bad_input_and_corrupt_blocks():
    with pytest.raises(ValueError, match="backwards"):
        blocks.encode(np.array([5, 4]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="non-empty"):
        blocks.encode(np.array([], dtype=np.int64), np.array([]))
    good = blocks.encode(np.array([1, 2, 4]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(blocks.BlockError, match="shorter than"):
        blocks.decode(good[:5])
    with pytest.raises(blocks.BlockError, match="version 9"):
        blocks.decode(bytes([9]) + good[1:])
    with pytest.raises(blocks.BlockError):
        blocks.decode(good[:-3])


def test_merge_orders_by_time():
    a = blocks.Block(np.array([10, 30]), np.array([1.0, 3.0]))
    b = blocks.Block(np.array([20]), np.array([2.0]))
    m = blocks.merge([a, b])
    assert list(m.ts_ms) == [10, 20, 30] and list(m.values) == [1.0, 2.0, 3.0]


def test_store_writes_blocks_and_reads_ranges(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "a", {}, [("a", "V"), ("b", "V")])
    store.write_readings([Reading("n", "a", t, float(t)) for t in (30, 10, 20)])  # out of order in one batch
    store.write_readings([Reading("n", "a", 40, 40.0), Reading("n", "b", 40, -1.0)])
    r = store.readings("n", "a", 15, 40)
    assert list(r.ts_ms) == [20, 30] and list(r.values) == [20.0, 30.0]
    assert store.reading_count() == 5 and store.reading_count("n") == 5
    with pytest.raises(KeyError):
        store.readings("n", "zzz")
    store.close()


def test_migration_converts_first_schema_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate_to(conn, "m001_devices_channels_readings")
    conn.execute("INSERT INTO devices (id, name) VALUES (1, 'n')")
    conn.execute("INSERT INTO channels (id, device_id, name, unit) VALUES (7, 1, 'flow', 'm3/h')")
    conn.executemany("INSERT INTO readings (channel_id, ts_ms, value) VALUES (7, ?, ?)",
                     [(1000 + 100 * i, i / 4) for i in range(5000)])  # fmt: skip
    conn.close()
    store = Store(path)
    r = store.readings("n", "flow")
    assert len(r) == 5000 and r.values[-1] == 4999 / 4 and r.ts_ms[0] == 1000
    assert "readings" not in [t for (t,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    store.close()


def test_compaction_merges_small_blocks_and_keeps_every_reading(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "a", {}, [("a", "V"), ("b", "V")])
    for t in range(0, 3000, 10):  # one reading per channel per write: the slow-poll worst case
        store.write_readings([Reading("n", "a", t, t / 10), Reading("n", "b", t, -t / 10)])
    before = store.conn.execute("SELECT count(*) FROM reading_blocks").fetchone()[0]
    removed = store.compact(before_ms=2000, target=64)
    after = store.conn.execute("SELECT count(*) FROM reading_blocks").fetchone()[0]
    # 200 one-reading blocks per channel before the cut become 64 + 64 + 64 + 8
    assert (before, removed, after) == (600, 400, 600 - 400 + 2 * 4)
    a = store.readings("n", "a")
    assert len(a) == 300 and list(a.ts_ms) == list(range(0, 3000, 10)) and a.values[-1] == 299.0
    # blocks ending at or after the cut are left alone
    assert store.conn.execute("SELECT count(*) FROM reading_blocks WHERE first_ms >= 2000").fetchone()[0] == 200
    assert store.compact(before_ms=2000, target=64) == 0
    store.close()


@given(stamps, st.data())
def test_small_encoder_writes_the_same_format(ts, data):
    ts = ts[: blocks.SMALL]
    values = data.draw(st.lists(st.floats(allow_nan=False), min_size=len(ts), max_size=len(ts)))
    b = blocks.decode(blocks.encode_small([int(t) for t in ts], values))
    assert list(b.ts_ms) == list(ts) and list(b.values) == values
