"""Schema migrations: registered functions, applied in order, each in its own
transaction and recorded in the `_migrations` table, so running them again is a no-op."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils

from gatewayd.clock import now_ms

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_devices_channels_readings(db: sqlite_utils.Database) -> None:
    db["devices"].create(
        {"id": int, "name": str, "profile": str, "address": str, "identity": str, "first_seen_ms": int},
        pk="id",
        not_null={"name"},
    )
    db["devices"].create_index(["name"], unique=True)
    db["channels"].create(
        {"id": int, "device_id": int, "name": str, "unit": str},
        pk="id",
        foreign_keys=[("device_id", "devices", "id")],
        not_null={"device_id", "name"},
    )
    db["channels"].create_index(["device_id", "name"], unique=True)
    db["readings"].create({"channel_id": int, "ts_ms": int, "value": float}, not_null={"channel_id", "ts_ms"})
    db["readings"].create_index(["channel_id", "ts_ms"])


@migration
def m002_readings_as_blocks(db: sqlite_utils.Database) -> None:
    """Raw readings move into compact per-channel blocks (gatewayd/store/blocks.py): a few bytes
    per reading instead of a ~26-byte row. Existing rows are converted, nothing is dropped."""
    from gatewayd.store import blocks

    db.execute(
        "CREATE TABLE reading_blocks (id INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL "
        "REFERENCES channels(id), first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, "
        "count INTEGER NOT NULL, data BLOB NOT NULL)"
    )
    db.execute("CREATE INDEX reading_blocks_channel_time ON reading_blocks (channel_id, last_ms)")
    if "readings" in db.table_names():
        import numpy as np

        for (channel_id,) in db.execute("SELECT DISTINCT channel_id FROM readings").fetchall():
            rows = db.execute(
                "SELECT ts_ms, value FROM readings WHERE channel_id = ? ORDER BY ts_ms", (channel_id,)
            ).fetchall()
            for start in range(0, len(rows), 4096):
                chunk = rows[start : start + 4096]
                ts = np.array([r[0] for r in chunk], dtype=np.int64)
                values = np.array([np.nan if r[1] is None else r[1] for r in chunk], dtype=np.float64)
                db.execute(
                    "INSERT INTO reading_blocks (channel_id, first_ms, last_ms, count, data) VALUES (?, ?, ?, ?, ?)",
                    (channel_id, int(ts[0]), int(ts[-1]), len(chunk), blocks.encode(ts, values)),
                )
        db.execute("DROP TABLE readings")


@migration
def m003_minute_summaries(db: sqlite_utils.Database) -> None:
    """Per-channel one-minute statistics, kept after raw readings are gone (and what the
    cloud receives instead of raw data). `m2` is the sum of squared deviations from the mean,
    so minutes merge exactly (Chan et al.) and std = sqrt(m2 / count)."""
    db.execute(
        "CREATE TABLE summaries (channel_id INTEGER NOT NULL REFERENCES channels(id), minute_ms INTEGER NOT NULL, "
        "count INTEGER NOT NULL, mean REAL, m2 REAL, min REAL, max REAL, last REAL, last_ms INTEGER NOT NULL, "
        "PRIMARY KEY (channel_id, minute_ms)) WITHOUT ROWID"
    )
    for (cid,) in db.execute("SELECT DISTINCT channel_id FROM reading_blocks").fetchall():
        from gatewayd.store import blocks, summaries

        found = [
            blocks.decode(d) for (d,) in db.execute("SELECT data FROM reading_blocks WHERE channel_id = ?", (cid,))
        ]
        merged = blocks.merge(found)
        upsert = (
            "INSERT INTO summaries (channel_id, minute_ms, count, mean, m2, min, max, last, last_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id, minute_ms) DO UPDATE SET " + summaries.MERGE
        )
        db.conn.executemany(upsert, summaries.rows(cid, merged.ts_ms.tolist(), merged.values.tolist()))


@migration
def m004_alerts_outbox_budget(db: sqlite_utils.Database) -> None:
    """Alerts and operator labels, the outbox for the cloud (by priority, then age), a
    dead-letter table, blocks protected from eviction, and eviction counters."""
    db.execute(
        "CREATE TABLE alerts (id TEXT PRIMARY KEY, device TEXT NOT NULL, channels TEXT, severity TEXT NOT NULL, "
        "kind TEXT NOT NULL, opened_ms INTEGER NOT NULL, closed_ms INTEGER, detail TEXT, "
        "acknowledged_ms INTEGER, label TEXT, labelled_ms INTEGER)"
    )
    db.execute("CREATE INDEX alerts_opened ON alerts (opened_ms)")
    db.execute(
        "CREATE TABLE labels (id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL REFERENCES alerts(id), "
        "label TEXT NOT NULL, operator TEXT, created_ms INTEGER NOT NULL)"
    )
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, priority INTEGER NOT NULL, kind TEXT NOT NULL, "
        "created_ms INTEGER NOT NULL, payload BLOB NOT NULL, sent_ms INTEGER, attempts INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("CREATE INDEX outbox_pending ON outbox (sent_ms, priority, id)")
    db.execute(
        "CREATE TABLE dead_letter (id INTEGER PRIMARY KEY, source TEXT NOT NULL, created_ms INTEGER NOT NULL, "
        "reason TEXT NOT NULL, payload BLOB)"
    )
    db.execute("ALTER TABLE reading_blocks ADD COLUMN keep INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "CREATE TABLE evictions (kind TEXT PRIMARY KEY, rows INTEGER NOT NULL, readings INTEGER NOT NULL, "
        "last_ms INTEGER NOT NULL)"
    )


@migration
def m005_mqtt_backlog(db: sqlite_utils.Database) -> None:
    """Messages that could not be published while the broker was away, oldest first."""
    db.execute(
        "CREATE TABLE mqtt_backlog (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL, "
        "qos INTEGER NOT NULL, retain INTEGER NOT NULL, important INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
    )


@migration
def m006_detection(db: sqlite_utils.Database) -> None:
    """Threshold changes made by operator feedback, and the device each label concerns."""
    db.execute(
        "CREATE TABLE threshold_changes (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, created_ms INTEGER NOT NULL, "
        "old REAL NOT NULL, new REAL NOT NULL, reason TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX labels_alert ON labels (alert_id)")


@migration
def m007_kept_windows(db: sqlite_utils.Database) -> None:
    """The spans of raw readings kept around anomalies, for the cloud agent to upload exactly."""
    db.execute(
        "CREATE TABLE kept_windows (id INTEGER PRIMARY KEY AUTOINCREMENT, channel_id INTEGER NOT NULL "
        "REFERENCES channels(id), start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
    )


@migration
def m008_block_order_and_clock(db: sqlite_utils.Database) -> None:
    """Blocks get their write order (`seq`: eviction goes oldest written first, whatever the
    clock said) and a mark for readings stamped before the clock was synchronised. Existing
    blocks keep their order by id."""
    db.execute("ALTER TABLE reading_blocks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE reading_blocks ADD COLUMN clock_unsynced INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE reading_blocks SET seq = id")
    db.execute("CREATE INDEX reading_blocks_eviction ON reading_blocks (keep, seq)")


@migration
def m009_summary_blocks(db: sqlite_utils.Database) -> None:
    """One-minute summaries get a compact long-term form: blocks of many minutes of one
    channel (gatewayd/store/summaries.py, about 9 bytes a minute instead of a 75-byte row), made by
    the writer's compaction pass from minutes that are over. Rows get their write order
    (`seq`, 0 for those already there) so that eviction goes oldest written first, as it does
    for raw blocks. The rows already there are kept as they are: the writer's first passes
    compact them, a slice at a time between writes, so that an upgrade does not hold up the
    daemon's start however large the store."""
    db.execute(
        "CREATE TABLE summary_blocks (id INTEGER PRIMARY KEY, channel_id INTEGER NOT NULL REFERENCES channels(id), "
        "first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, minutes INTEGER NOT NULL, readings INTEGER NOT NULL, "
        "seq INTEGER NOT NULL, data BLOB NOT NULL)"
    )
    db.execute("CREATE INDEX summary_blocks_channel_time ON summary_blocks (channel_id, last_ms)")
    db.execute("CREATE INDEX summary_blocks_time ON summary_blocks (last_ms, first_ms)")
    db.execute("CREATE INDEX summary_blocks_eviction ON summary_blocks (seq, first_ms)")
    db.execute("ALTER TABLE summaries ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")


@migration
def m010_outbox_without_send_state(db: sqlite_utils.Database) -> None:
    """The outbox keeps what its reader needs: the cloud agent reads it in id order by kind and
    keeps its own cursors (upload_state.py), so the columns of a send-and-mark scheme that was
    never used (`priority`, `sent_ms`, `attempts`) go; rows the agent has uploaded become
    evictable through its cursors instead."""
    db.execute("DROP INDEX IF EXISTS outbox_pending")
    for column in ("priority", "sent_ms", "attempts"):
        db.execute(f"ALTER TABLE outbox DROP COLUMN {column}")
    db.execute("CREATE INDEX outbox_kind ON outbox (kind, id)")


def applied(conn: sqlite3.Connection) -> list[str]:
    db = sqlite_utils.Database(conn)
    if "_migrations" not in db.table_names():
        return []
    return [row["name"] for row in db["_migrations"].rows_where(order_by="applied_ms, name")]


def migrate_to(conn: sqlite3.Connection, last: str) -> list[str]:
    """Apply pending migrations up to and including `last` (for tests of upgrades)."""
    names = [name for name, _ in MIGRATIONS]
    return migrate(conn, names[: names.index(last) + 1])


def migrate(conn: sqlite3.Connection, only: list[str] | None = None) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    db = sqlite_utils.Database(conn)
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"name": str, "applied_ms": int}, pk="name")
    done = set(applied(conn))
    new = []
    for name, fn in MIGRATIONS:
        if name in done or (only is not None and name not in only):
            continue
        with conn:
            fn(db)
            db["_migrations"].insert({"name": name, "applied_ms": now_ms()})
        new.append(name)
    return new
