import json
import sqlite3

import numpy as np

from gatewayd.alerts.alert import Alert
from gatewayd.store import migrations, upload_state
from gatewayd.store.database import Reading, Store


def fill(store, minutes, start=0):
    rng = np.random.default_rng(minutes)
    for m in range(start, start + minutes):
        t0 = m * 60_000
        store.write_readings(
            [Reading("n", ch, t0 + 100 * i, float(v)) for ch in ("a", "b") for i, v in enumerate(rng.normal(0, 1, 600))]
        )


def test_budget_evicts_routine_data_oldest_first_and_keeps_alerts(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    fill(store, 30)
    store.protect("n", "a", 2 * 60_000, 3 * 60_000)  # an anomaly window in minute 2
    store.record_alert(Alert("alert-1", "n", ["a"], "critical", "zscore", 2 * 60_000, {"z": 9.1}))
    store.label_alert("alert-1", "true")
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
    assert [kind for _, kind, _ in store.outbox_after(("alert", "label"), 0, 10)] == ["alert", "label"]
    store.close()


def test_outbox_rows_the_cloud_agent_uploaded_are_evicted_and_the_rest_kept(tmp_path):
    """The agent's cursors (cloud-sync.json) say which outbox rows reached the cloud: only those
    go when the budget needs room, and what waits is counted from them."""
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    for i in range(6):
        store.record_alert(Alert(f"alert-{i}", "n", ["a"], "warning", "model", i, {"padding": "x" * 2000}))
        store.label_alert(f"alert-{i}", "false")
    alert_ids = [i for i, _, _ in store.outbox_after(upload_state.OUTBOX_SOURCES["alerts"], 0, 100)]
    label_ids = [i for i, _, _ in store.outbox_after(upload_state.OUTBOX_SOURCES["labels"], 0, 100)]
    (tmp_path / upload_state.FILE_NAME).write_text(
        json.dumps({"cursors": {"alerts": alert_ids[3], "labels": label_ids[1], "summaries": 10**9}})
    )
    cursors = upload_state.outbox_cursors(upload_state.read(tmp_path))
    assert cursors == {"alerts": alert_ids[3], "labels": label_ids[1]}
    assert store.outbox_waiting(cursors) == {"alerts": 2, "labels": 4}
    evicted = store.enforce_budget(1, uploaded=lambda: cursors)
    assert evicted["outbox_uploaded"] == 4 + 2
    left = [i for i, _, _ in store.outbox_after(("alert", "label"), 0, 100)]
    assert left == sorted(alert_ids[4:] + label_ids[2:])
    assert store.alert_count() == 6 and store.outbox_waiting(cursors) == {"alerts": 2, "labels": 4}
    store.close()


def test_without_a_cloud_agent_no_outbox_row_is_evicted(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V")])
    store.record_alert(Alert("alert-1", "n", ["a"], "warning", "model", 0, {}))
    assert upload_state.read(tmp_path) is None
    store.enforce_budget(1, uploaded=lambda: upload_state.outbox_cursors(None))
    assert len(store.outbox_after(("alert",), 0, 10)) == 1 and "outbox_uploaded" not in store.evictions()
    store.close()


def test_an_upgraded_store_keeps_its_outbox_rows_without_the_send_state_columns(tmp_path):
    conn = sqlite3.connect(tmp_path / "g.sqlite3", isolation_level=None)
    migrations.migrate_to(conn, "m009_summary_blocks")
    conn.execute("INSERT INTO outbox (priority, kind, created_ms, payload, sent_ms) VALUES (0, 'alert', 1, '{}', NULL)")
    conn.execute("INSERT INTO outbox (priority, kind, created_ms, payload, sent_ms) VALUES (1, 'label', 2, '{}', 5)")
    conn.close()
    store = Store(tmp_path / "g.sqlite3")
    assert [(i, k) for i, k, _ in store.outbox_after(("alert", "label"), 0, 10)] == [(1, "alert"), (2, "label")]
    columns = {row[1] for row in store.conn.execute("PRAGMA table_info(outbox)")}
    assert columns == {"id", "kind", "created_ms", "payload"}
    store.close()


def test_budget_with_nothing_routine_left_evicts_nothing_protected(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("n", "edge-node", "x", {}, [("a", "V"), ("b", "V")])
    fill(store, 3)
    store.protect("n", "a", 0, 10**12)
    store.protect("n", "b", 0, 10**12)
    store.record_alert(Alert("alert-1", "n", ["a"], "critical", "bound", 0, {}))
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
