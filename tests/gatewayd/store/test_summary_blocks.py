"""Minute summaries in their two forms: rows while a minute is recent, summary blocks once it
is over. Compaction keeps every minute's statistics to the bit, whatever the readings, however
batches split the minutes and whenever compaction runs; eviction goes in write order; an older
store is converted without losing a minute."""

import asyncio
import math
import sqlite3
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.clock import WallClock
from gatewayd.config import StoreSection
from gatewayd.store import blocks, migrations, summaries
from gatewayd.store.database import SUMMARY_BLOCK_MINUTES, Reading, Store
from gatewayd.store.worker import StoreWorker
from gatewayd.store.writer import ReadingQueue, Writer

T0 = 1_700_000_040_000  # a whole minute
MINUTE = summaries.MINUTE_MS
FAR = 2**61  # a compaction cutoff after every minute


def bits(x):
    """A reader's answer with every float as its bits (NaN and -0.0 compare too)."""
    if isinstance(x, float):
        return struct.pack("<d", x)
    if isinstance(x, dict):
        return {k: bits(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [bits(v) for v in x]
    return x


def everything(store: Store, channels=("a", "b")) -> dict:
    """What every reader of minute summaries answers, for every minute there is."""
    per_channel = {ch: store.minute_summaries("n", ch) for ch in channels}
    minutes = sorted({m["minute_ms"] for found in per_channel.values() for m in found})
    return bits(
        {
            "channels": per_channel,
            "by_minute": [store.minute_of_all(m) for m in minutes],
            "all": store.minutes_of_all(0, FAR, 10_000),
            "pages": [store.minutes_of_all(after, FAR, 3) for after in [0, *minutes]],
            "ranges": [store.minute_summaries("n", "a", m, m + 5 * MINUTE) for m in minutes[::4]],
        }
    )


def new_store(path) -> Store:
    store = Store(path)
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    return store


def compact_all(store: Store, before_ms: int = FAR) -> int:
    return store.compact_summaries(store.compactable_summaries(before_ms), before_ms)


# -- the codec ------------------------------------------------------------------------------

specials = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e308, 1.3e-288])
grid_values = st.integers(-(2**20), 2**20).map(lambda c: c / 1024)
any_float = st.one_of(grid_values, st.floats(allow_nan=True, allow_infinity=True), specials)


@st.composite
def minute_columns(draw):
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))
    minute_ms = T0 + MINUTE * np.cumsum(gaps)
    values = draw(st.sampled_from([grid_values, any_float]))
    column = st.lists(st.one_of(values, st.none()), min_size=n, max_size=n)
    floats = [np.array([math.nan if v is None else v for v in draw(column)], np.float64) for _ in range(5)]
    count = np.array(draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)), np.int64)
    last_ms = minute_ms + np.array(draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n)))
    return summaries.Minutes(minute_ms.astype(np.int64), count, *floats, last_ms.astype(np.int64))


@settings(max_examples=300, deadline=None)
@given(minute_columns())
def test_a_summary_block_gives_back_every_field_to_the_bit(m):
    back = summaries.decode_block(summaries.encode_block(m))
    assert bits(back.rows()) == bits(m.rows())


def test_node_minutes_cost_a_few_bytes_and_the_statistics_are_exact(tmp_path):
    """A node channel (counts of 2^-10) written every second: the merged means and m2 are
    stored as integers on the grid and a small residual."""
    store = new_store(tmp_path / "g.sqlite3")
    rng = np.random.default_rng(5)
    for s in range(3 * 3600):
        counts = np.round(5 * 1024 + 300 * np.sin(s / 900) + rng.normal(0, 16, 2))
        store.write_readings([Reading("n", ch, T0 + 1000 * s + 3, float(c / 1024)) for ch, c in zip("ab", counts)])
    before = everything(store)
    assert compact_all(store) == 2 * 180
    (size,) = store.conn.execute("SELECT sum(length(data)) FROM summary_blocks").fetchone()
    assert size / 360 < 10  # bytes per minute (a row: about 75)
    assert everything(store) == before
    store.close()


def test_values_on_a_grid_too_fine_to_scale_are_kept_as_bits():
    tiny = summaries.Minutes.from_rows(
        [(T0 + i * MINUTE, 3, 1.3e-288 * i, 0.0, 1.3e-288, 1.3e-288, 0.0, T0 + i * MINUTE) for i in range(5)]
    )
    assert bits(summaries.decode_block(summaries.encode_block(tiny)).rows()) == bits(tiny.rows())


def test_corrupt_summary_blocks_raise_block_error():
    m = summaries.Minutes.from_rows(
        [(T0 + i * MINUTE, 60, 1.5 + i, 2.25, 1.0, 2.0, 1.5, T0 + i * MINUTE + 59_003) for i in range(200)]
    )
    blob = summaries.encode_block(m)
    for cut in range(len(blob)):
        with pytest.raises(blocks.BlockError):
            summaries.decode_block(blob[:cut])
    for at in range(len(blob)):
        with pytest.raises(blocks.BlockError):
            summaries.decode_block(blob[:at] + bytes([blob[at] ^ 0x5A]) + blob[at + 1 :])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_forged_summary_blocks_raise_block_error_or_decode(data):
    """Damage behind a valid checksum: BlockError or a well-formed answer, never another error."""
    m = summaries.Minutes.from_rows(
        [(T0 + i * MINUTE, 60, 1.5 + i / 7, 2.25 + i, 1.0, None, 1.5, T0 + i * MINUTE + 59_003) for i in range(50)]
    )
    body = bytearray(summaries.encode_block(m)[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(0, len(body)))]
    try:
        back = summaries.decode_block(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
    except blocks.BlockError:
        return
    assert len(back) > 0 and (np.diff(back.minute_ms) > 0).all()


# -- compaction keeps every minute exactly ---------------------------------------------------

reading_values = st.one_of(
    st.integers(-5000, 5000).map(lambda c: c / 256),  # a node channel
    st.floats(-1e6, 1e6, width=32),  # a float32 register
    st.floats(allow_nan=True, allow_infinity=False),
)


@st.composite
def writes(draw):
    """Batches of readings on two channels; a batch may go back in time (a clock step, late
    readings); compaction may run (with a cutoff somewhere) before any batch."""
    out = []
    for _ in range(draw(st.integers(1, 12))):
        start = T0 + draw(st.integers(0, 40)) * 20_000
        step = draw(st.sampled_from([1000, 7000, 20_000]))
        n = draw(st.integers(1, 30))
        values = draw(st.lists(reading_values, min_size=n, max_size=n))
        channel = draw(st.sampled_from("ab"))
        batch = [Reading("n", channel, start + i * step, v) for i, v in enumerate(values)]
        cutoff = draw(st.one_of(st.none(), st.integers(0, 45).map(lambda m: T0 + m * MINUTE)))
        out.append((cutoff, batch))
    return out


@settings(max_examples=60, deadline=None)
@given(writes(), st.booleans())
def test_every_reader_answers_the_same_bits_whenever_compaction_runs(tmp_path_factory, plan, finish):
    folder = tmp_path_factory.mktemp("s")
    reference, compacted = new_store(folder / "ref.sqlite3"), new_store(folder / "c.sqlite3")
    for cutoff, batch in plan:
        if cutoff is not None:
            compacted.compact_summaries(compacted.compactable_summaries(cutoff) + [1, 2], cutoff)
        reference.write_readings(batch)
        compacted.write_readings(batch)
        if cutoff is not None and cutoff % (7 * MINUTE) == 0:
            compacted.compact_summaries([1, 2], FAR)  # everything, the minute just written too
    if finish:
        compact_all(compacted)
    assert everything(compacted) == everything(reference)
    # no minute is in two places
    rows = compacted.conn.execute("SELECT channel_id, minute_ms FROM summaries").fetchall()
    in_blocks = [
        (cid, m)
        for cid, data in compacted.conn.execute("SELECT channel_id, data FROM summary_blocks")
        for m in summaries.decode_block(data).minute_ms.tolist()
    ]
    assert len(set(rows) | set(in_blocks)) == len(rows) + len(in_blocks)
    reference.close()
    compacted.close()


def test_a_reading_for_a_compacted_minute_reopens_it_exactly(tmp_path):
    store, reference = new_store(tmp_path / "g.sqlite3"), new_store(tmp_path / "r.sqlite3")
    for s in range(0, 3 * 3600, 2):
        batch = [Reading("n", "a", T0 + 1000 * s, 20 + (s % 37) / 64)]
        store.write_readings(batch)
        reference.write_readings(batch)
    compact_all(store)
    assert store.conn.execute("SELECT count(*) FROM summaries").fetchone()[0] == 0
    late = [Reading("n", "a", T0 + 90 * MINUTE + 1, 99.0), Reading("n", "a", T0 + 90 * MINUTE + 2, -3.0)]
    store.write_readings(late)  # a clock stepped back an hour and a half
    reference.write_readings(late)
    assert store.conn.execute("SELECT minute_ms FROM summaries").fetchall() == [(T0 + 90 * MINUTE,)]
    assert everything(store, "a") == everything(reference, "a")
    compact_all(store)
    assert everything(store, "a") == everything(reference, "a")
    store.close()
    reference.close()


def test_blocks_hold_a_day_at_most_and_never_span_a_long_gap(tmp_path):
    store = new_store(tmp_path / "g.sqlite3")
    day = 24 * 60
    for start in (0, 2 * day, 10 * day):  # a day and a half, half a day off, again, a week off, again
        for m in range(start, start + 3 * day // 2, 10):
            store.write_readings([Reading("n", "a", T0 + (m + i) * MINUTE, 1.0) for i in range(10)])
    steps = [compact_all(store) for _ in range(6)]
    assert steps == [day, day, day, day, day // 2, 0]  # a step takes a day of minutes at most
    spans = store.conn.execute("SELECT first_ms, last_ms, minutes FROM summary_blocks ORDER BY first_ms").fetchall()
    assert all(minutes <= SUMMARY_BLOCK_MINUTES for _, _, minutes in spans)
    assert sum(minutes for _, _, minutes in spans) == 3 * (3 * day // 2)
    assert all(last - first <= 2 * day * MINUTE for first, last, _ in spans)
    store.close()


def test_a_channel_gathers_an_hour_of_rows_before_they_are_compacted(tmp_path):
    store = new_store(tmp_path / "g.sqlite3")
    for m in range(30):
        store.write_readings([Reading("n", "a", T0 + m * MINUTE + s * 1000, 1.0) for s in range(60)])
    now = T0 + 31 * MINUTE
    assert store.compactable_summaries(now) == []  # half an hour: rows still
    assert store.compactable_summaries(now + 60 * MINUTE) == [1]  # an hour later it is left alone
    for m in range(30, 70):
        store.write_readings([Reading("n", "a", T0 + m * MINUTE + s * 1000, 1.0) for s in range(60)])
    now = T0 + 71 * MINUTE
    assert store.compactable_summaries(now) == [1]
    assert store.compact_summaries([1], now) == 70
    assert store.conn.execute("SELECT count(*) FROM summaries").fetchone()[0] == 0
    store.close()


# -- eviction --------------------------------------------------------------------------------


def test_summaries_are_evicted_in_write_order_not_by_their_timestamps(tmp_path):
    """Minutes stamped by a clock a year ahead, written first, go first, and then the real
    minutes, oldest written first, whichever form they are in."""
    store = new_store(tmp_path / "g.sqlite3")
    rng = np.random.default_rng(1)
    ahead = T0 + 365 * 24 * 60 * MINUTE

    def minute(start: int) -> list[Reading]:
        return [Reading("n", ch, start + s * 5000, v) for ch in "ab" for s, v in enumerate(rng.normal(0, 1, 12))]

    for m in range(120):  # two hours with the clock a year ahead, then it is set right
        store.write_readings(minute(ahead + m * MINUTE))
    for m in range(3 * 24 * 60):  # three days of real minutes
        store.write_readings(minute(T0 + m * MINUTE))
        if m % 60 == 59:
            compact_all(store, T0 + (m + 2) * MINUTE)  # as the writer does: the year-ahead minutes are not over yet
    assert store.conn.execute("SELECT count(*) FROM summaries WHERE minute_ms >= ?", (ahead,)).fetchone()[0] == 240
    real = [m["minute_ms"] for m in store.minute_summaries("n", "a", 0, ahead)]
    store.enforce_budget(store.disk_bytes() - 4 * 4096)  # raw blocks go first
    assert store.evictions()["raw"][0] > 0 and "summaries" not in store.evictions()
    store.evict_oldest(2**40)  # then every raw block
    assert store.reading_count() == 0
    store.enforce_budget(store.disk_bytes() - 12 * 4096)  # now minutes must go
    left = [m["minute_ms"] for m in store.minute_summaries("n", "a", 0, ahead)]
    assert store.minute_summaries("n", "a", ahead) == []  # all year-ahead minutes are gone
    assert 0 < len(left) < len(real) and left == real[-len(left) :]  # then the oldest real ones
    rows, readings = store.evictions()["summaries"]
    assert rows > 0 and readings >= 240 * 12
    store.close()


# -- converting an older store ---------------------------------------------------------------


def test_an_older_store_is_migrated_and_its_minutes_compacted_without_loss(tmp_path):
    path = tmp_path / "g.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.migrate_to(conn, "m008_block_order_and_clock")
    conn.execute(
        "INSERT INTO devices (id, name, profile, address, identity, first_seen_ms) VALUES (1, 'n', 'p', 'a', '{}', 0)"
    )
    conn.executemany("INSERT INTO channels (id, device_id, name, unit) VALUES (?, 1, ?, 'V')", [(1, "a"), (2, "b")])
    upsert = (
        "INSERT INTO summaries (channel_id, minute_ms, count, mean, m2, min, max, last, last_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id, minute_ms) DO UPDATE SET " + summaries.MERGE
    )
    rng = np.random.default_rng(2)
    for s in range(0, 3 * 3600, 10):  # three hours as an older gateway wrote them, a write every 10 s
        for cid in (1, 2):
            ts = [T0 + 1000 * (s + i) for i in range(10)]
            values = (np.round(rng.normal(4000, 12, 10)) / 256).tolist()
            conn.execute(
                "INSERT INTO reading_blocks (channel_id, first_ms, last_ms, count, data, seq) VALUES (?, ?, ?, 10, ?, ?)",
                (cid, ts[0], ts[-1], blocks.encode_small(ts, values), s),
            )
            conn.executemany(upsert, summaries.rows(cid, ts, values))
    old = conn.execute("SELECT * FROM summaries ORDER BY channel_id, minute_ms").fetchall()
    conn.close()

    store = Store(path)
    assert "m009_summary_blocks" in migrations.applied(store.conn)
    rows = store.conn.execute(
        "SELECT channel_id, minute_ms, count, mean, m2, min, max, last, last_ms, seq "
        "FROM summaries ORDER BY channel_id, minute_ms"
    ).fetchall()
    assert bits(rows) == bits([(*row, 0) for row in old])  # nothing changed but the write order
    before = everything(store)
    assert len(before["all"]) == 180
    assert compact_all(store, T0 + 4 * 3600_000) == 360
    assert store.conn.execute("SELECT count(*) FROM summaries").fetchone()[0] == 0
    assert everything(store) == before
    # the daemon goes on writing into the migrated store
    store.register_device("n", "p", "a", {}, [("a", "V"), ("b", "V")])
    store.write_readings([Reading("n", "a", T0 + 3 * 3600_000 + 5, 1.0)])
    assert store.minute_summaries("n", "a")[-1]["count"] == 1
    store.close()


# -- the writer ------------------------------------------------------------------------------


async def test_the_writer_compacts_minutes_that_are_over_between_writes(tmp_path):
    settings = StoreSection(flush_interval_s=0.1, compact_after_s=1.0)
    worker = StoreWorker(tmp_path / "state", 10**9)
    assert await worker.open()
    await worker.register("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    queue = ReadingQueue(settings.queue_readings)
    writer = Writer(worker, queue, settings, WallClock("always"))
    start = (time.time_ns() // 1_000_000 - 3 * 3600_000) // MINUTE * MINUTE  # three hours ago
    for m in range(90):  # readings that waited: ninety minutes of them, ten a minute
        await queue.put([Reading("n", ch, start + m * MINUTE + 6000 * i, float(i)) for ch in "ab" for i in range(10)])
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        for _ in range(200):
            if writer.stats.summarised:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    store = worker.store
    assert writer.stats.summarised == 180 and writer.stats.written == 1800
    assert store.conn.execute("SELECT count(*) FROM summaries").fetchone()[0] == 0
    found = store.minute_summaries("n", "b")
    assert len(found) == 90 and {m["count"] for m in found} == {10} and found[0]["mean"] == 4.5
    await worker.close()
