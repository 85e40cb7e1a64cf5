import numpy as np

from gatewayd.store import PRIORITY_ALERT, PRIORITY_SUMMARY, Reading, Store


def fill(store, minutes, start=0):
    rng = np.random.default_rng(minutes)
    for m in range(start, start + minutes):
        t0 = m * 60_000
        store.write_readings([Reading("n", ch, t0 + 100 * i, float(v)) for ch in ("a", "b")
                              for i, v in enumerate(rng.normal(0, 1, 600))])  # fmt: skip


def test_budget_evicts_routine_data_oldest_first_and_keeps_alerts(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    fill(store, 30)
    store.protect("n", "a", 2 * 60_000, 3 * 60_000)  # an anomaly window in minute 2
    store.record_alert("alert-1", "n", ["a"], "critical", "zscore", 2 * 60_000, {"z": 9.1})
    store.enqueue(PRIORITY_SUMMARY, "summary", b"{}")
    full = store.disk_bytes()
    total = store.reading_count()
    evicted = store.enforce_budget(full // 2)
    assert store.disk_bytes() <= full // 2
    assert evicted.get("raw", 0) > 0
    rows, readings = store.evictions()["raw"]
    assert rows == evicted["raw"] and readings == total - store.reading_count()
    # oldest first: minute 0 is gone, the newest minute is whole
    assert len(store.readings("n", "b", 0, 60_000)) == 0
    assert len(store.readings("n", "b", 29 * 60_000, 30 * 60_000)) == 600
    # the anomaly window and the alert survive
    assert len(store.readings("n", "a", 2 * 60_000, 3 * 60_000)) == 600
    assert store.alert_count() == 1
    assert [kind for _, _, kind, _ in store.pending()] == ["alert", "summary"]
    store.close()


def test_outbox_order_is_priority_then_age(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.enqueue(PRIORITY_SUMMARY, "summary", b"s1")
    store.enqueue(PRIORITY_ALERT, "window", b"w1")
    store.enqueue(PRIORITY_SUMMARY, "summary", b"s2")
    pending = store.pending()
    assert [p for _, _, _, p in pending] == [b"w1", b"s1", b"s2"]
    store.mark_sent([pending[0][0]])
    assert [p for _, _, _, p in store.pending()] == [b"s1", b"s2"]
    store.close()


def test_budget_with_nothing_routine_left_evicts_nothing_protected(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    fill(store, 3)
    store.protect("n", "a", 0, 10**12)
    store.protect("n", "b", 0, 10**12)
    store.record_alert("alert-1", "n", ["a"], "critical", "bound", 0, {})
    store.enforce_budget(1)
    assert store.reading_count() == 3 * 1200 and store.alert_count() == 1
    assert "raw" not in store.evictions() and store.evictions()["summaries"][0] > 0
    store.close()


def test_eviction_goes_in_the_order_data_was_written_whatever_its_timestamps(tmp_path):
    """A clock a year ahead stamped the first hour; real time came back after it. The year-ahead
    readings were written first, so they are evicted first, not kept for a year."""
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    year = 365 * 86_400_000
    fill(store, 20, start=10_000 + year // 60_000)  # the clock a year ahead
    fill(store, 20, start=10_000)  # then the real time
    store.enforce_budget(store.disk_bytes() // 2)
    assert len(store.readings("n", "a", year, 2 * year)) == 0, "the year-ahead readings go first"
    assert len(store.readings("n", "a", 10_019 * 60_000, 10_020 * 60_000)) == 600, "the newest written stay"
    store.close()


def test_blocks_are_never_merged_across_a_clock_step_or_with_unsynchronised_ones(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V")])
    day = 86_400_000
    for t in range(0, 3000, 100):
        store.write_readings([Reading("n", "a", t, 1.0)], clock_synced=False)  # before NTP
    for t in range(60 * day, 60 * day + 3000, 100):
        store.write_readings([Reading("n", "a", t, 2.0)])
    store.compact(before_ms=61 * day)
    rows = store.conn.execute("SELECT count, clock_unsynced, first_ms FROM reading_blocks ORDER BY first_ms").fetchall()
    assert rows == [(30, 1, 0), (30, 0, 60 * day)]
    assert len(store.readings("n", "a")) == 60
    store.close()
