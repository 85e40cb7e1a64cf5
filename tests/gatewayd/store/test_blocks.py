import sqlite3
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gatewayd.store import blocks, migrations

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import block_codec  # noqa: E402

from gatewayd.store.database import Reading, Store

I64 = st.integers(-(2**63), 2**63 - 1)

stamps = st.lists(st.integers(0, 3_600_000), min_size=1, max_size=300).map(
    lambda deltas: 1_700_000_000_000 + np.cumsum(np.array(deltas, dtype=np.int64))
)
# any sorted int64 timestamps: polled ones, duplicates, and jumps of any size (a clock stepping by years)
any_stamps = st.lists(
    st.one_of(I64, st.integers(1_700_000_000_000, 1_700_000_100_000), st.sampled_from([-(2**63), 0, 2**63 - 1])),
    min_size=1,
    max_size=300,
).map(lambda ts: np.array(sorted(ts), dtype=np.int64))


def bits_of(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.uint64)


def node_values(n: int, draw) -> np.ndarray:
    """Integer counts of 2**-k, as a node publishes them (float32 on the wire)."""
    k = draw(st.integers(0, 16))
    counts = draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**20), 2**20)))
    return (counts * 2.0**-k).astype(np.float32).astype(np.float64)


def any_values(n: int, draw) -> np.ndarray:
    kind = draw(st.sampled_from(["bits", "node", "decimal", "few", "special"]))
    if kind == "bits":  # every float64 bit pattern: NaN payloads, infinities, -0.0, subnormals
        return draw(hnp.arrays(np.uint64, n, elements=st.integers(0, 2**64 - 1))).view(np.float64)
    if kind == "node":
        return node_values(n, draw)
    if kind == "decimal":  # parsed from text, or a register scaled by 0.1
        counts = draw(hnp.arrays(np.int64, n, elements=st.integers(-(10**9), 10**9)))
        d = draw(st.integers(1, 9))
        return counts / 10.0**d if draw(st.booleans()) else counts * 10.0**-d
    pool = [0.0, -0.0, 1.5, -2.25, float("inf"), -float("inf"), float("nan"), 0.1, 5e-324, 1.7976931348623157e308]
    if kind == "few":
        return np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)))
    values = node_values(n, draw)  # mostly counts, with NaN (any payload), infinities and -0.0 among them
    for i in draw(st.lists(st.integers(0, n - 1), max_size=n)):
        values.view(np.uint64)[i] = draw(
            st.sampled_from(
                [0x7FF8_0000_0000_0000, 0xFFF0_0000_0000_0001, 0x7FF0_0000_0000_0000, 0x8000_0000_0000_0000]
            )
        )
    return values


@settings(max_examples=300)
@given(any_stamps, st.data())
def test_round_trip_is_bit_exact(ts, data):
    values = any_values(len(ts), data.draw)
    b = blocks.decode(blocks.encode(ts, values))
    assert b.ts_ms.dtype == np.int64 and b.values.dtype == np.float64
    assert np.array_equal(b.ts_ms, ts)
    assert np.array_equal(b.values.view(np.uint64), bits_of(values))


@given(any_stamps, st.data())
def test_small_encoder_round_trip_is_bit_exact(ts, data):
    ts = ts[: blocks.SMALL - 1]
    values = any_values(len(ts), data.draw)
    b = blocks.decode(blocks.encode_small(ts.tolist(), values.tolist()))
    assert np.array_equal(b.ts_ms, ts)
    assert np.array_equal(b.values.view(np.uint64), bits_of(values))


@given(stamps, st.data())
def test_round_trip_is_exact(ts, data):
    values = data.draw(hnp.arrays(np.float64, len(ts), elements=st.floats(allow_nan=True, allow_infinity=True)))
    b = blocks.decode(blocks.encode(ts, values))
    assert (b.ts_ms == ts).all()
    assert np.array_equal(b.values, values, equal_nan=True)


@pytest.mark.parametrize("encoder", ["encode", "encode_small"])
def test_any_gap_between_stamps(encoder):
    """A wall clock may step by years: no gap is too large for a block (it was 49 days)."""
    for ts in (
        [0, 50 * 86_400_000, 2**62],
        [-(2**63), 2**63 - 1],
        [-(2**63), -(2**63), 5, 2**63 - 1, 2**63 - 1],
        [1_700_000_000_000, 1_700_000_001_003, 1_700_000_001_003 + 2**40],
    ):
        values = [1.0, 2.5, -0.0, float("nan"), 7.0][: len(ts)]
        blob = blocks.encode(np.array(ts), np.array(values)) if encoder == "encode" else blocks.encode_small(ts, values)
        b = blocks.decode(blob)
        assert b.ts_ms.tolist() == ts
        assert np.array_equal(b.values.view(np.uint64), bits_of(values))


def test_node_readings_cost_about_a_byte():
    """A node channel (counts of 2**-10, noise of 16 counts, a slow drift), polled every second
    with a few ms of latency: a compacted block costs well under 2 bytes per reading."""
    rng = np.random.default_rng(3)
    n = 4096
    ts = 1_700_000_000_000 + 1000 * np.arange(n) + rng.integers(2, 7, n)
    counts = np.round(5 * 1024 + 300 * np.sin(np.arange(n) / 900) + rng.normal(0, 16, n))
    values = (counts / 1024).astype(np.float32).astype(np.float64)
    blob = blocks.encode(ts, values)
    assert len(blob) / n < 1.4
    assert blob[2] == blocks._VALUES_GRID
    assert np.array_equal(blocks.decode(blob).values, values)


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
    conn.executemany(
        "INSERT INTO readings (channel_id, ts_ms, value) VALUES (7, ?, ?)",
        [(1000 + 100 * i, i / 4) for i in range(5000)],
    )
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


# -- version 1 -------------------------------------------------------------------------------


def encode_v1(ts: np.ndarray, vals: np.ndarray) -> bytes:
    """The version-1 layout, as the codec bench keeps it for its reference: old stores still read."""
    encoded = block_codec.encode_v1(ts, vals)
    assert encoded is not None
    return encoded


# written by the version-1 encoder (gatewayd/store/blocks.py before version 2)
V1_BLOCKS = {
    # 16-bit deltas, float32: readings at 10, 20, 35 ms
    "0106030000000a0000000000000000000000000000000a000f000000c03f000000c00000803e": ([10, 20, 35], [1.5, -2.0, 0.25]),
    # regular, float32, compressed: 200 readings a second apart, i / 8
    "010bc80000000000000000000000e80300000000000078011dc33d4814600000d08f081189100991083942444242244242f48c"
    "100911890889882322242424424422ceb2b2b4ba52cbd2ea2a2dcdbfabacccacaed27468706868687068686870686868f0d1"
    "8317c27f1521c44d1b2a4388183566dc844953a65d76c5554334844cb3cd336291259619b5c67a1b8cd968b3adc6edb0d36e"
    "13f6daefa049871c71dc94d3ce3867da7997fceab2dffcee0f57fce92f7fbbea1ffffacf5015c23ad79b61a6596e70a3d9e6"
    "b8c95cf3dcec16f38db8d5020b2d729bc56eb7c45277b8d33277596e855177bbc76a6bdc6bad75d6bbcffd1eb0c1831ef2b0"
    "318f78d463367adc264fd8ec494fd962ab6d9ef68c71db3deb393b3cef052fdae9252fdb65b757bcea35135ef7863df6dae7"
    "4d6fd9ef6def38e0a077bde77d933ef0a18f1c72d8c73e71c4519f3ae6b8134e3a65ca673ef785d3bef495af9df18db3be75"
    "ce77bef783693ffac9cfcebbe01717abd6004e199333": ([1000 * i for i in range(200)], [i / 8 for i in range(200)]),
    # 32-bit deltas, float64 (encode_small): 0.1 is no float32
    "01010200000005000000000000006b110100000000009a9999999999b93f0000000000000040": ([5, 70000], [0.1, 2.0]),
}


@pytest.mark.parametrize("blob", list(V1_BLOCKS))
def test_version_1_blocks_from_an_old_store(blob):
    ts, values = V1_BLOCKS[blob]
    b = blocks.decode(bytes.fromhex(blob))
    assert b.ts_ms.tolist() == ts and b.values.tolist() == values


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=300), st.data())
def test_version_1_blocks_still_decode(deltas, data):
    ts = 1_700_000_000_000 + np.cumsum(np.array(deltas, dtype=np.int64))
    values = data.draw(hnp.arrays(np.float64, len(ts), elements=st.floats(allow_nan=True, allow_infinity=True)))
    b = blocks.decode(encode_v1(ts, values))
    assert np.array_equal(b.ts_ms, ts) and np.array_equal(b.values, values, equal_nan=True)


# -- corrupt blocks ----------------------------------------------------------------------------


def sample_blocks() -> list[bytes]:
    rng = np.random.default_rng(7)
    ts = 1_700_000_000_000 + 1000 * np.arange(500) + rng.integers(2, 7, 500)
    node = np.round(rng.normal(0, 30, 500)) / 1024
    with_specials = node.copy()
    with_specials[[3, 90]] = [np.nan, -0.0]
    return [
        blocks.encode(ts, node),
        blocks.encode(ts, with_specials),
        blocks.encode(ts, rng.normal(0, 1, 500)),  # float bits
        blocks.encode(ts, np.round(rng.normal(0, 5, 500), 2)),  # decimal
        blocks.encode(ts, rng.choice([0.1, 7.25, np.inf], 500)),  # a table
        blocks.encode(1000 * np.arange(500), node),  # regular
        blocks.encode_small([1, 5, 7], [0.5, 1e300, 2.0]),
    ]


def test_truncated_or_damaged_blocks_raise_block_error():
    for blob in sample_blocks():
        for cut in range(len(blob)):
            with pytest.raises(blocks.BlockError):
                blocks.decode(blob[:cut])
        for at in range(0, len(blob), 3):  # any damaged byte fails the checksum
            with pytest.raises(blocks.BlockError):
                blocks.decode(blob[:at] + bytes([blob[at] ^ 0x5A]) + blob[at + 1 :])


def sealed(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=500)
@given(st.sampled_from(range(7)), st.data())
def test_forged_blocks_raise_block_error_or_decode(which, data):
    """Damage behind a valid checksum (what the checksum cannot see): the parser still raises
    BlockError, never another exception, or decodes something well-formed."""
    body = bytearray(sample_blocks()[which][:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(0, len(body)))]
    try:
        b = blocks.decode(sealed(bytes(body)))
    except blocks.BlockError:
        return
    assert len(b.ts_ms) == len(b.values) > 0 and (np.diff(b.ts_ms) >= 0).all()


def test_forged_header_fields():
    good = sample_blocks()[0]
    body = good[:-4]
    for at, value in [(0, 3), (1, 9), (2, 99), (3, 7)]:
        with pytest.raises(blocks.BlockError):
            blocks.decode(sealed(body[:at] + bytes([value]) + body[at + 1 :]))
    for count in (0, blocks.MAX_COUNT + 1, 2**32 - 1, 499, 501):
        with pytest.raises(blocks.BlockError):
            blocks.decode(sealed(body[:4] + struct.pack("<I", count) + body[8:]))
