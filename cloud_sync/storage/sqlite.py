"""The embedded default: one SQLite file in the data folder, for one site and one server
process. Batches are stored with `synchronous=FULL`: a 2xx promises the gateway it may forget
the data."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from cloud_sync.records import StoredRecord
from cloud_sync.storage.base import BatchOutcome, SqlStorage

# Each step brings a database of the step before up to date; PRAGMA user_version records the step.
MIGRATIONS = [
    (
        "CREATE TABLE IF NOT EXISTS batches (gateway TEXT NOT NULL, batch_id TEXT NOT NULL, received_ms INTEGER "
        "NOT NULL, wire_bytes INTEGER NOT NULL, records INTEGER NOT NULL, PRIMARY KEY (gateway, batch_id));"
        "CREATE TABLE IF NOT EXISTS records (gateway TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, "
        "payload TEXT NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (gateway, key));"
    ),
    (
        "ALTER TABLE batches ADD COLUMN wire_digest TEXT;"
        "ALTER TABLE batches ADD COLUMN content_digest TEXT;"
        "ALTER TABLE records ADD COLUMN ts_ms INTEGER;"
        "CREATE INDEX records_by_kind ON records (kind, gateway, received_ms);"
        "CREATE TABLE tokens (digest TEXT PRIMARY KEY, gateway TEXT NOT NULL, issued_ms INTEGER NOT NULL, "
        "revoked_ms INTEGER);"
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, scope TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, "
        "created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER, worker TEXT, version INTEGER, error TEXT);"
    ),
]


class SqliteStorage(SqlStorage):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one connection, shared by the server's threads
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=10000")  # `cloud-sync token` beside a running server
        self._migrate()

    def _migrate(self) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                done = self.conn.execute("PRAGMA user_version").fetchone()[0]
                for step, script in enumerate(MIGRATIONS[done:], start=done + 1):
                    for statement in filter(str.strip, script.split(";")):
                        self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {step}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple = ()) -> int:
        with self.lock:
            return self.conn.execute(sql, params).rowcount

    def accept_batch(
        self,
        gateway: str,
        batch_id: str,
        records: list[StoredRecord],
        *,
        wire_digest: str,
        content_digest: str,
        wire_bytes: int,
    ) -> BatchOutcome:
        from gatewayd.clock import now_ms

        now = now_ms()
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                seen = self.conn.execute(
                    "SELECT content_digest FROM batches WHERE gateway = ? AND batch_id = ?", (gateway, batch_id)
                ).fetchone()
                if seen:
                    self.conn.execute("ROLLBACK")
                    # a batch stored before the digests were kept counts as the same batch
                    same = seen[0] is None or seen[0] == content_digest
                    return BatchOutcome(0, duplicate=same, conflict=not same)
                before = self.conn.total_changes
                self.conn.executemany(
                    "INSERT OR IGNORE INTO records (gateway, key, kind, ts_ms, payload, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(gateway, r.key, r.kind, r.ts_ms, r.payload, now) for r in records],
                )
                new = self.conn.total_changes - before
                self.conn.execute(
                    "INSERT INTO batches (gateway, batch_id, received_ms, wire_bytes, records, wire_digest, "
                    "content_digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (gateway, batch_id, now, wire_bytes, len(records), wire_digest, content_digest),
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return BatchOutcome(new)

    def summary_devices(self) -> dict[str, list[str]]:
        rows = self._rows(
            "SELECT DISTINCT r.gateway, d.key FROM records r, json_each(r.payload, '$.devices') d "
            "WHERE r.kind = 'summary' ORDER BY 1, 2"
        )
        out: dict[str, list[str]] = {}
        for gateway, device in rows:
            out.setdefault(gateway, []).append(device)
        return out

    def prune(self, retention_days: dict[str, int], now_ms: int) -> dict[str, int]:
        return {
            kind: self._write(
                "DELETE FROM records WHERE kind = ? AND received_ms < ?", (kind, now_ms - days * 86_400_000)
            )
            for kind, days in retention_days.items()
        }

    def close(self) -> None:
        self.conn.close()
