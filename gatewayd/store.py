"""The gateway's SQLite store. All SQL of gatewayd lives here and in migrations.py.

One writer: the daemon calls the write methods from a single worker thread."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gatewayd import migrations

DB_NAME = "gatewayd.sqlite3"


@dataclass(frozen=True)
class Reading:
    device: str
    channel: str
    ts_ms: int
    value: float


@dataclass(frozen=True)
class ChannelSummary:
    device: str
    channel: str
    unit: str
    count: int
    minimum: float | None
    mean: float | None
    maximum: float | None
    last: float | None


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; a power cut may lose
        # only the last transactions since the previous checkpoint, never corrupt the file.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        migrations.migrate(self.conn)
        self._channel_ids: dict[tuple[str, str], int] = {}

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> Store:
        return cls(Path(state_dir) / DB_NAME)

    def close(self) -> None:
        self.conn.close()

    def journal_mode(self) -> str:
        return self.conn.execute("PRAGMA journal_mode").fetchone()[0]

    def register_device(self, name: str, profile: str, address: str, identity: dict, channels: Sequence[tuple[str, str]]) -> None:
        """Record a device and its channels (name, unit); ids stay stable across restarts."""
        now = int(time.time() * 1000)
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO devices (name, profile, address, identity, first_seen_ms) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET profile=excluded.profile, address=excluded.address, "
                "identity=excluded.identity",
                (name, profile, address, json.dumps(identity, sort_keys=True), now),
            )
            device_id = self.conn.execute("SELECT id FROM devices WHERE name=?", (name,)).fetchone()[0]
            for channel, unit in channels:
                self.conn.execute(
                    "INSERT INTO channels (device_id, name, unit) VALUES (?, ?, ?) "
                    "ON CONFLICT(device_id, name) DO UPDATE SET unit=excluded.unit",
                    (device_id, channel, unit),
                )
            rows = self.conn.execute("SELECT id, name FROM channels WHERE device_id=?", (device_id,)).fetchall()
        for channel_id, channel in rows:
            self._channel_ids[(name, channel)] = channel_id

    def write_readings(self, readings: Iterable[Reading]) -> int:
        """Write one batch in one transaction; returns rows written."""
        ids = self._channel_ids
        rows = [(ids[(r.device, r.channel)], r.ts_ms, r.value) for r in readings]
        if not rows:
            return 0
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO readings (channel_id, ts_ms, value) VALUES (?, ?, ?)", rows)
        return len(rows)

    def reading_count(self, device: str | None = None) -> int:
        if device is None:
            return self.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        return self.conn.execute(
            "SELECT count(*) FROM readings r JOIN channels c ON c.id = r.channel_id "
            "JOIN devices d ON d.id = c.device_id WHERE d.name = ?",
            (device,),
        ).fetchone()[0]

    def summaries(self, since_ms: int = 0) -> list[ChannelSummary]:
        """Per-channel statistics of the readings at or after `since_ms`."""
        rows = self.conn.execute(
            "SELECT d.name, c.name, c.unit, count(r.value), min(r.value), avg(r.value), max(r.value), "
            "(SELECT value FROM readings WHERE channel_id = c.id ORDER BY ts_ms DESC LIMIT 1) "
            "FROM channels c JOIN devices d ON d.id = c.device_id "
            "LEFT JOIN readings r ON r.channel_id = c.id AND r.ts_ms >= ? GROUP BY c.id ORDER BY d.name, c.id",
            (since_ms,),
        ).fetchall()
        return [ChannelSummary(*row) for row in rows]
