"""Where the reference endpoint keeps what gateways upload. `Storage` is the interface; the
SQLite implementation is the default (a PostgreSQL one can follow behind the same methods)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from gatewayd.clock import now_ms


class Storage(Protocol):
    def accept_batch(self, gateway: str, batch_id: str, records: list[dict], wire_bytes: int) -> tuple[int, bool]:
        """Store a batch's records once each; returns (records new to the store, batch seen before)."""

    def records(self, gateway: str, kind: str | None = None) -> list[dict]: ...

    def usage(self, gateway: str) -> dict[str, int]: ...

    def gateways(self) -> list[str]: ...


class SqliteStorage:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one writer; the HTTP server is threaded
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a 2xx promises the gateway it may forget the data
        self.conn.executescript(
            "CREATE TABLE IF NOT EXISTS batches (gateway TEXT NOT NULL, batch_id TEXT NOT NULL, received_ms INTEGER "
            "NOT NULL, wire_bytes INTEGER NOT NULL, records INTEGER NOT NULL, PRIMARY KEY (gateway, batch_id));"
            "CREATE TABLE IF NOT EXISTS records (gateway TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, "
            "payload TEXT NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (gateway, key));"
        )

    def accept_batch(self, gateway: str, batch_id: str, records: list[dict], wire_bytes: int) -> tuple[int, bool]:
        now = now_ms()
        with self.lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            seen = self.conn.execute(
                "SELECT 1 FROM batches WHERE gateway = ? AND batch_id = ?", (gateway, batch_id)
            ).fetchone()
            if seen:
                return 0, True
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO records (gateway, key, kind, payload, received_ms) VALUES (?, ?, ?, ?, ?)",
                [(gateway, r["key"], r["kind"], json.dumps(r["payload"], sort_keys=True), now) for r in records],
            )
            new = self.conn.total_changes - before
            self.conn.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?)", (gateway, batch_id, now, wire_bytes, len(records))
            )
            return new, False

    def records(self, gateway: str, kind: str | None = None) -> list[dict]:
        rows = self.conn.execute(
            "SELECT key, kind, payload FROM records WHERE gateway = ? AND (? IS NULL OR kind = ?) ORDER BY received_ms, key",
            (gateway, kind, kind),
        ).fetchall()
        return [{"key": k, "kind": kd, "payload": json.loads(p)} for k, kd, p in rows]

    def usage(self, gateway: str) -> dict[str, int]:
        batches, wire, recs = self.conn.execute(
            "SELECT count(*), coalesce(sum(wire_bytes), 0), coalesce(sum(records), 0) FROM batches WHERE gateway = ?",
            (gateway,),
        ).fetchone()
        return {"batches": batches, "wire_bytes": wire, "records_sent": recs}

    def gateways(self) -> list[str]:
        return [g for (g,) in self.conn.execute("SELECT DISTINCT gateway FROM records ORDER BY gateway")]

    def close(self) -> None:
        self.conn.close()
