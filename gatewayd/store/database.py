"""The gateway's SQLite store. All SQL of gatewayd lives here and in migrations.py.

One writer: the daemon calls the write methods from a single worker thread."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.clock import now_ms
from gatewayd.store import blocks, migrations, summaries
from gatewayd.store.upload_state import OUTBOX_SOURCES

DB_NAME = "gatewayd.sqlite3"
# An alert's states, each as the condition its row meets; an alert is in several at once
# (open and unacknowledged, closed and labelled).
ALERT_STATES = {
    "open": "closed_ms IS NULL",
    "closed": "closed_ms IS NOT NULL",
    "acknowledged": "acknowledged_ms IS NOT NULL",
    "unacknowledged": "acknowledged_ms IS NULL",
    "labelled": "label IS NOT NULL",
    "unlabelled": "label IS NULL",
}


@dataclass(frozen=True, slots=True)  # slots: half the memory of a queued reading
class Reading:
    device: str
    channel: str
    ts_ms: int
    value: float


@dataclass(frozen=True)
class DiskUsage:
    """What the store occupies on disk: the database file, its WAL and shared-memory files.
    `used` is the database's pages in use; the rest of the file is free pages SQLite reuses.
    `pages` is the database's size with what the WAL holds: the file grows to it at the next
    checkpoint."""

    database: int
    wal: int
    shm: int
    used: int
    pages: int

    @property
    def files(self) -> int:
        return self.database + self.wal + self.shm


def file_sizes(path: Path) -> tuple[int, int, int]:
    """Bytes of a database's file, its WAL and its shared memory as the file system sees them
    (0 for one that is not there)."""
    sizes = []
    for suffix in ("", "-wal", "-shm"):
        try:
            sizes.append(os.stat(path.with_name(path.name + suffix)).st_size)
        except OSError:
            sizes.append(0)
    return sizes[0], sizes[1], sizes[2]


# Blocks further apart than this are not merged into one: a block spanning a clock step of
# weeks would be decoded by every query that falls into the gap.
MERGE_GAP_MS = 24 * 3_600_000

# One-minute summaries: a minute stays a row while it can still receive readings; once it is
# over, the writer's compaction merges a channel's minutes into summary blocks.
SUMMARY_BLOCK_MINUTES = 1440  # minutes in one summary block at most: a channel's day
SUMMARY_ROWS = 60  # minutes that are over a channel gathers as rows before they are compacted
SUMMARY_STEP_ROWS = SUMMARY_BLOCK_MINUTES  # rows one channel's compaction takes at once at most
_MINUTE_FIELDS = "minute_ms, count, mean, m2, min, max, last, last_ms"


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
    def __init__(self, path: str | Path, *, readonly: bool = False, cache_kib: int | None = None):
        """Open (and migrate) the store; `readonly` opens an existing one beside a running
        daemon without writing anything; `cache_kib` bounds a reader's page cache (SQLite's
        default is 2 MiB per connection)."""
        self.path = Path(path)
        if readonly:
            self.conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            self.conn.execute("PRAGMA busy_timeout=5000")
            if cache_kib is not None:
                self.conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            self._channel_ids: dict[tuple[str, str], int] = {}
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._setup()
        except BaseException:
            # Closed now, not when the traceback lets go of it: open files would keep a file
            # system that failed from being unmounted and mounted again.
            self.conn.close()
            raise
        self._channel_ids: dict[tuple[str, str], int] = {}
        # Eviction goes in the order blocks and minutes were written, not by their timestamps:
        # data stamped by a clock that was a year ahead must not outlive what came after it.
        self._next_seq = self.conn.execute(
            "SELECT max((SELECT coalesce(max(seq), 0) FROM reading_blocks), (SELECT coalesce(max(seq), 0) FROM summaries), "
            "(SELECT coalesce(max(seq), 0) FROM summary_blocks)) + 1"
        ).fetchone()[0]
        # Per channel, the last minute its summary blocks may hold: a write to a minute at or
        # before it looks for that minute in the blocks first.
        self._compacted_to: dict[int, int] = dict(
            self.conn.execute("SELECT channel_id, max(last_ms) FROM summary_blocks GROUP BY channel_id").fetchall()
        )

    def _setup(self) -> None:
        # A new database can give pages back to the file system (a lowered budget shrinks the
        # file); the mode must be chosen before the first table, so older stores keep theirs.
        self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; a power cut may lose
        # only the last transactions since the previous checkpoint, never corrupt the file.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA cache_size=-16384")  # 16 MiB: the index of recent blocks stays in memory
        self.conn.execute("PRAGMA busy_timeout=5000")
        # Debian builds SQLite to zero every freed page, which doubles what an eviction writes
        # (and an SD card's wear) and needs WAL room on a full disk; nothing here is secret.
        self.conn.execute("PRAGMA secure_delete=OFF")
        migrations.migrate(self.conn)

    def limit_wal(self, wal_bytes: int) -> None:
        """Checkpoint before the WAL holds `wal_bytes`, and truncate it back to that size after
        each reset: the WAL counts in the disk budget."""
        page = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self.conn.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_bytes // page // 2)}")
        self.conn.execute(f"PRAGMA journal_size_limit={int(wal_bytes)}")

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> Store:
        return cls(Path(state_dir) / DB_NAME)

    def close(self) -> None:
        self.conn.close()

    def journal_mode(self) -> str:
        return self.conn.execute("PRAGMA journal_mode").fetchone()[0]

    def register_device(
        self, name: str, profile: str, address: str, identity: dict, channels: Sequence[tuple[str, str]]
    ) -> None:
        """Record a device and its channels (name, unit); ids stay stable across restarts."""
        now = now_ms()
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

    def write_readings(self, readings: Iterable[Reading], *, clock_synced: bool = True) -> int:
        """Write one batch in one transaction, one block per channel; returns readings written.
        Once this returns, the readings are on disk (the transaction has committed).
        `clock_synced` False marks the blocks as stamped by a clock not yet synchronised."""
        ids = self._channel_ids
        grouped: dict[int, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        n = 0
        for r in readings:
            ts, values = grouped[ids[(r.device, r.channel)]]
            ts.append(r.ts_ms)
            values.append(r.value)
            n += 1
        if not n:
            return 0
        rows = []
        minute_rows: list[tuple] = []
        unsynced = 0 if clock_synced else 1
        seq = self._next_seq
        for channel_id, (ts_list, value_list) in grouped.items():
            if any(b < a for a, b in zip(ts_list, ts_list[1:])):  # a clock stepped back inside the batch
                order = sorted(range(len(ts_list)), key=ts_list.__getitem__)
                ts_list = [ts_list[i] for i in order]
                value_list = [value_list[i] for i in order]
            if len(ts_list) < blocks.SMALL:
                data = blocks.encode_small(ts_list, value_list)
            else:
                data = blocks.encode(np.array(ts_list, dtype=np.int64), np.array(value_list, dtype=np.float64))
            rows.append((channel_id, ts_list[0], ts_list[-1], len(ts_list), data, seq, unsynced))
            minute_rows.extend(row + (seq,) for row in summaries.rows(channel_id, ts_list, value_list))
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO reading_blocks (channel_id, first_ms, last_ms, count, data, seq, clock_unsynced) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._reopen_minutes(minute_rows)
            self.conn.executemany(summaries.UPSERT, minute_rows)
        self._next_seq = seq + 1
        return n

    def _reopen_minutes(self, minute_rows: list[tuple]) -> None:
        """Minutes a write adds to that were compacted already (the clock stepped back, or
        readings waited through a store outage) become rows again first: the merge goes on
        from the exact row, and a minute is never in two places."""
        late: dict[int, set[int]] = defaultdict(set)
        for row in minute_rows:
            if row[1] <= self._compacted_to.get(row[0], -(2**63)):
                late[row[0]].add(row[1])
        for cid, minutes in late.items():
            for block_id, seq, data in self.conn.execute(
                "SELECT id, seq, data FROM summary_blocks WHERE channel_id = ? AND last_ms >= ? AND first_ms <= ?",
                (cid, min(minutes), max(minutes)),
            ).fetchall():
                block = summaries.decode_block(data)
                hit = np.isin(block.minute_ms, list(minutes))
                if not hit.any():
                    continue
                self.conn.execute("DELETE FROM summary_blocks WHERE id = ?", (block_id,))
                self._insert_summary_block(cid, block.take(~hit), seq)
                self.conn.executemany(
                    f"INSERT INTO summaries (channel_id, {_MINUTE_FIELDS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(cid, *row, seq) for row in block.take(hit).rows()],
                )

    def _insert_summary_block(self, channel_id: int, minutes: summaries.Minutes, seq: int) -> None:
        if not len(minutes):
            return
        first, last = int(minutes.minute_ms[0]), int(minutes.minute_ms[-1])
        self.conn.execute(
            "INSERT INTO summary_blocks (channel_id, first_ms, last_ms, minutes, readings, seq, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (channel_id, first, last, len(minutes), int(minutes.count.sum()), seq, summaries.encode_block(minutes)),
        )
        self._compacted_to[channel_id] = max(last, self._compacted_to.get(channel_id, last))

    def _minutes(self, channel_id: int | None, start_ms: int, end_ms: int) -> dict[int, summaries.Minutes]:
        """The minutes start_ms <= minute < end_ms of one channel (None: of all), as rows and
        blocks hold them: channel id -> its minutes in time order."""
        where, params = ("channel_id = ? AND ", (channel_id,)) if channel_id is not None else ("", ())
        rows: dict[int, list[tuple]] = defaultdict(list)
        for cid, *row in self.conn.execute(
            f"SELECT channel_id, {_MINUTE_FIELDS} FROM summaries WHERE {where}minute_ms >= ? AND minute_ms < ?",
            (*params, start_ms, end_ms),
        ):
            rows[cid].append(row)
        parts: dict[int, list[summaries.Minutes]] = {cid: [summaries.Minutes.from_rows(r)] for cid, r in rows.items()}
        for cid, data in self.conn.execute(
            f"SELECT channel_id, data FROM summary_blocks WHERE {where}last_ms >= ? AND first_ms < ?",
            (*params, start_ms, end_ms),
        ):
            block = summaries.decode_block(data)
            inside = (block.minute_ms >= start_ms) & (block.minute_ms < end_ms)
            if inside.any():
                parts.setdefault(cid, []).append(block.take(inside))
        joined = {cid: summaries.Minutes.concat(p) for cid, p in parts.items()}
        return {cid: m.take(m.order()) for cid, m in joined.items()}

    def minutes_of_all(self, after_ms: int, until_ms: int, limit: int) -> list[tuple[int, dict[str, dict[str, dict]]]]:
        """Every channel's statistics for the first `limit` minutes after `after_ms`, up to
        `until_ms` (included), oldest first: [(minute_ms, {device: {channel: {...}}})]."""
        names = {cid: (device, channel, unit) for cid, device, channel, unit in self.channels()}
        out: dict[int, dict[str, dict[str, dict]]] = {}
        start = after_ms + 1
        while start <= until_ms and len(out) < limit:
            # a window that holds as many minutes as are still wanted at most
            end = min(until_ms + 1, start + (limit - len(out)) * summaries.MINUTE_MS)
            for cid, minutes in self._minutes(None, start, end).items():
                device, channel, unit = names[cid]
                for minute, stats in zip(minutes.minute_ms.tolist(), _statistics(minutes)):
                    out.setdefault(minute, {}).setdefault(device, {})[channel] = {"unit": unit, **stats}
            start = self._next_minute(end)
        return sorted(out.items())[:limit]

    def _next_minute(self, at_ms: int) -> int:
        """Where the next minute at or after `at_ms` may be (2**62 when there is none)."""
        (row,) = self.conn.execute("SELECT min(minute_ms) FROM summaries WHERE minute_ms >= ?", (at_ms,)).fetchone()
        (block,) = self.conn.execute(
            "SELECT min(max(first_ms, ?)) FROM summary_blocks WHERE last_ms >= ?", (at_ms, at_ms)
        ).fetchone()
        return min(x for x in (row, block, 2**62) if x is not None)

    def minute_of_all(self, minute_ms: int) -> dict[str, dict[str, dict]]:
        """Every channel's statistics for one minute: {device: {channel: {...}}}."""
        return dict(self.minutes_of_all(minute_ms - 1, minute_ms, 1)).get(minute_ms, {})

    def minute_summaries(self, device: str, channel: str, start_ms: int = 0, end_ms: int = 2**62) -> list[dict]:
        """One-minute statistics of a channel: minute_ms, count, mean, std, min, max, last."""
        cid = self._channel_id(device, channel)
        if cid is None:
            return []
        minutes = self._minutes(cid, start_ms, end_ms).get(cid)
        if minutes is None:
            return []
        return [
            {"minute_ms": m, **stats, "last": math.nan if stats["last"] is None else stats["last"]}
            for m, stats in zip(minutes.minute_ms.tolist(), _statistics(minutes))
        ]

    def _channel_id(self, device: str, channel: str) -> int | None:
        row = self.conn.execute(
            "SELECT c.id FROM channels c JOIN devices d ON d.id = c.device_id WHERE d.name = ? AND c.name = ?",
            (device, channel),
        ).fetchone()
        return None if row is None else row[0]

    def compact(self, before_ms: int, target: int = 4096) -> int:
        """Merge each channel's small blocks that end before `before_ms` into blocks of up to
        `target` readings, one transaction per channel; returns blocks removed. Readings are
        never dropped: the merged block replaces its parts atomically."""
        return self.compact_channels(self.compactable_channels(before_ms, target), before_ms, target)

    def compactable_channels(self, before_ms: int, target: int = 4096) -> list[int]:
        """Channels with more than one small block ending before `before_ms`."""
        return [
            cid
            for (cid,) in self.conn.execute(
                "SELECT channel_id FROM reading_blocks WHERE last_ms < ? AND count < ? AND keep = 0 "
                "GROUP BY channel_id HAVING count(*) > 1",
                (before_ms, target // 2),
            )
        ]

    def compact_channels(self, channel_ids: Sequence[int], before_ms: int, target: int = 4096) -> int:
        """compact() for some channels only, so a writer can interleave it with writes. Blocks
        stamped before the clock was synchronised are merged only among themselves, and blocks
        more than MERGE_GAP_MS apart not at all."""
        removed = 0
        for cid in channel_ids:
            rows = self.conn.execute(
                "SELECT id, count, data, seq, clock_unsynced, first_ms, last_ms FROM reading_blocks "
                "WHERE channel_id = ? AND last_ms < ? AND count < ? AND keep = 0 ORDER BY clock_unsynced, first_ms, id",
                (cid, before_ms, target // 2),
            ).fetchall()
            groups: list[list[tuple]] = [[]]
            size = 0
            for row in rows:
                last = groups[-1][-1] if groups[-1] else None
                if last is not None and (
                    size + row[1] > target or row[4] != last[4] or row[5] - last[6] > MERGE_GAP_MS
                ):
                    groups.append([])
                    size = 0
                groups[-1].append(row)
                size += row[1]
            with self.conn:
                self.conn.execute("BEGIN")
                for group in groups:
                    if len(group) < 2:
                        continue
                    merged = blocks.merge([blocks.decode(row[2]) for row in group])
                    self.conn.execute(
                        "INSERT INTO reading_blocks (channel_id, first_ms, last_ms, count, data, seq, clock_unsynced) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            cid,
                            int(merged.ts_ms[0]),
                            int(merged.ts_ms[-1]),
                            len(merged),
                            blocks.encode(merged.ts_ms, merged.values),
                            min(row[3] for row in group),
                            group[0][4],
                        ),
                    )
                    self.conn.executemany("DELETE FROM reading_blocks WHERE id = ?", [(row[0],) for row in group])
                    removed += len(group)
        return removed

    def compactable_summaries(self, before_ms: int) -> list[int]:
        """Channels with minutes over before `before_ms` due for summary blocks: SUMMARY_ROWS
        of them or more, or fewer but all older than that (a channel no longer polled)."""
        return [
            cid
            for (cid,) in self.conn.execute(
                "SELECT channel_id FROM summaries WHERE minute_ms <= ? GROUP BY channel_id "
                "HAVING count(*) >= ? OR max(minute_ms) <= ?",
                (before_ms - summaries.MINUTE_MS, SUMMARY_ROWS, before_ms - (SUMMARY_ROWS + 1) * summaries.MINUTE_MS),
            )
        ]

    def compact_summaries(self, channel_ids: Sequence[int], before_ms: int) -> int:
        """Merge each channel's minute rows that are over before `before_ms` (at most
        SUMMARY_STEP_ROWS, oldest first) and its summary blocks of fewer than
        SUMMARY_BLOCK_MINUTES minutes near them into blocks of up to that many minutes, one
        transaction per channel; returns the rows compacted. Every minute keeps its statistics
        to the bit; minutes more than MERGE_GAP_MS apart do not share a block."""
        compacted = 0
        for cid in channel_ids:
            rows = self.conn.execute(
                f"SELECT {_MINUTE_FIELDS}, seq FROM summaries WHERE channel_id = ? AND minute_ms <= ? "
                "ORDER BY minute_ms LIMIT ?",
                (cid, before_ms - summaries.MINUTE_MS, SUMMARY_STEP_ROWS),
            ).fetchall()
            if not rows:
                continue
            small = self.conn.execute(
                "SELECT id, seq, data FROM summary_blocks WHERE channel_id = ? AND minutes < ? "
                "AND last_ms >= ? AND first_ms <= ?",
                (cid, SUMMARY_BLOCK_MINUTES, rows[0][0] - MERGE_GAP_MS, rows[-1][0] + MERGE_GAP_MS),
            ).fetchall()
            parts = [summaries.Minutes.from_rows([row[:-1] for row in rows])]
            seqs = [np.array([row[-1] for row in rows], np.int64)]
            for _, seq, data in small:
                parts.append(summaries.decode_block(data))
                seqs.append(np.full(len(parts[-1]), seq, np.int64))
            joined = summaries.Minutes.concat(parts)
            order = joined.order()
            minutes, seq_of = joined.take(order), np.concatenate(seqs)[order]
            cuts = np.flatnonzero(np.diff(minutes.minute_ms) > MERGE_GAP_MS) + 1
            groups = [
                (i, min(i + SUMMARY_BLOCK_MINUTES, end))
                for start, end in zip([0, *cuts], [*cuts, len(minutes)])
                for i in range(start, end, SUMMARY_BLOCK_MINUTES)
            ]
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.execute("DELETE FROM summaries WHERE channel_id = ? AND minute_ms <= ?", (cid, rows[-1][0]))
                self.conn.executemany("DELETE FROM summary_blocks WHERE id = ?", [(row[0],) for row in small])
                for start, end in groups:
                    self._insert_summary_block(cid, minutes.take(slice(start, end)), int(seq_of[start:end].min()))
            compacted += len(rows)
        return compacted

    # -- alerts, labels, outbox, dead letters -------------------------------------------

    @contextmanager
    def _synced(self) -> Iterator[None]:
        """Commits inside are on disk when they return, not only at the next checkpoint:
        alerts and operators' labels are few, and a power cut must not take them back
        (synchronous = FULL syncs the WAL at commit; readings stay at NORMAL)."""
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def record_alert(self, alert: Alert) -> None:
        """Store an alert and queue it for the cloud, in one transaction."""
        payload = json.dumps(alert.message(), sort_keys=True)
        with self._synced(), self.conn:
            self.conn.execute("BEGIN")
            # An alert written again (kept in memory through a store outage, the first attempt
            # may have landed) is the same alert: stored and queued once.
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO alerts (id, device, channels, severity, kind, opened_ms, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    alert.id,
                    alert.device,
                    json.dumps(list(alert.channels)),
                    alert.severity,
                    alert.kind,
                    alert.opened_ms,
                    json.dumps(alert.detail),
                ),
            )
            if cur.rowcount:
                self._enqueue("alert", payload.encode())

    def update_alert(self, change: AlertChange) -> None:
        """An incident escalated or closed: the alert row changes and the change goes to the cloud."""
        detail = None if change.detail is None else json.dumps(change.detail)
        with self._synced(), self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "UPDATE alerts SET severity = coalesce(?, severity), closed_ms = coalesce(?, closed_ms), "
                "detail = coalesce(?, detail) WHERE id = ?",
                (change.severity, change.closed_ms, detail, change.id),
            )
            body = {
                "id": change.id,
                "severity": change.severity,
                "closed_ms": change.closed_ms,
                "detail": change.detail,
            }
            self._enqueue("alert_update", json.dumps(body, sort_keys=True).encode())

    def open_alerts(self, kind: str) -> list[dict]:
        """Alerts of one kind that are not closed, oldest first: id, device, channels, severity,
        opened_ms (a restarted daemon continues them)."""
        return [
            {"id": i, "device": d, "channels": json.loads(c or "[]"), "severity": s, "opened_ms": o}
            for i, d, c, s, o in self.conn.execute(
                "SELECT id, device, channels, severity, opened_ms FROM alerts WHERE kind = ? AND closed_ms IS NULL "
                "ORDER BY opened_ms, id",
                (kind,),
            )
        ]

    def acknowledge_alert(self, alert_id: str, operator: str | None = None) -> bool:
        with self._synced(), self.conn:
            cur = self.conn.execute(
                "UPDATE alerts SET acknowledged_ms = ? WHERE id = ? AND acknowledged_ms IS NULL", (now_ms(), alert_id)
            )
        return cur.rowcount == 1

    def label_alert(self, alert_id: str, label: str, operator: str | None = None) -> int:
        """Store an operator's label on an alert and queue it for the cloud; returns the label's id.
        Raises KeyError for an unknown alert."""
        row = self.conn.execute("SELECT device FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise KeyError(f"no alert {alert_id!r}")
        now = now_ms()
        with self._synced(), self.conn:
            self.conn.execute("BEGIN")
            cur = self.conn.execute(
                "INSERT INTO labels (alert_id, label, operator, created_ms) VALUES (?, ?, ?, ?)",
                (alert_id, label, operator, now),
            )
            self.conn.execute(
                "UPDATE alerts SET label = ?, labelled_ms = ?, acknowledged_ms = coalesce(acknowledged_ms, ?) "
                "WHERE id = ?",
                (label, now, now, alert_id),
            )
            body = {"alert_id": alert_id, "device": row[0], "label": label, "operator": operator, "created_ms": now}
            self._enqueue("label", json.dumps(body, sort_keys=True).encode())
        return int(cur.lastrowid or 0)

    def labels_after(self, label_id: int) -> list[tuple[int, str, str, str]]:
        """(id, alert id, device, label) of labels newer than `label_id`, oldest first."""
        return self.conn.execute(
            "SELECT l.id, l.alert_id, a.device, l.label FROM labels l JOIN alerts a ON a.id = l.alert_id "
            "WHERE l.id > ? ORDER BY l.id",
            (label_id,),
        ).fetchall()

    def last_label_id(self) -> int:
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM labels").fetchone()[0]

    def alerts(
        self,
        limit: int = 50,
        device: str | None = None,
        *,
        kinds: Sequence[str] | None = None,
        unacknowledged: bool = False,
        states: Sequence[str] = (),
    ) -> list[dict]:
        """The newest alerts first; of one device, of some kinds, not yet acknowledged, in all
        of `states` (ALERT_STATES)."""
        marks = ",".join("?" * len(kinds or ()))
        rows = self.conn.execute(
            "SELECT id, device, channels, severity, kind, opened_ms, closed_ms, detail, acknowledged_ms, label "
            "FROM alerts WHERE (? IS NULL OR device = ?) "
            + (f"AND kind IN ({marks}) " if kinds else "")
            + ("AND acknowledged_ms IS NULL " if unacknowledged else "")
            + "".join(f"AND {ALERT_STATES[state]} " for state in states)
            + "ORDER BY opened_ms DESC, id LIMIT ?",
            (device, device, *(kinds or ()), limit),
        ).fetchall()
        keys = (
            "id",
            "device",
            "channels",
            "severity",
            "kind",
            "opened_ms",
            "closed_ms",
            "detail",
            "acknowledged_ms",
            "label",
        )
        out = []
        for row in rows:
            d = dict(zip(keys, row))
            d["channels"] = json.loads(d["channels"] or "[]")
            d["detail"] = json.loads(d["detail"] or "{}")
            out.append(d)
        return out

    def alert_devices(self) -> list[str]:
        """Every device with an alert in the store."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT device FROM alerts ORDER BY device")]

    def record_model_event(self, body: dict) -> None:
        """A bundle loaded or rolled back: reported to the cloud with the alerts."""
        self.enqueue("model_event", json.dumps({**body, "ts_ms": now_ms()}, sort_keys=True).encode())

    def alerts_by_id(self, ids: Sequence[str]) -> list[str]:
        """Which of these alert ids exist."""
        marks = ",".join("?" * len(ids))
        return [r[0] for r in self.conn.execute(f"SELECT id FROM alerts WHERE id IN ({marks})", list(ids))]

    def record_threshold_change(self, scope: str, old: float, new: float, reason: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO threshold_changes (scope, created_ms, old, new, reason) VALUES (?, ?, ?, ?, ?)",
                (scope, now_ms(), old, new, reason),
            )

    def threshold_multipliers(self) -> dict[str, float]:
        """The latest feedback multiplier of every scope."""
        return dict(
            self.conn.execute(
                "SELECT scope, new FROM threshold_changes WHERE id IN (SELECT max(id) FROM threshold_changes GROUP BY scope)"
            ).fetchall()
        )

    def alert_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM alerts").fetchone()[0]

    def alert_counts(self) -> dict[str, int]:
        """All alerts, and those no operator has acknowledged or labelled yet."""
        total, unacknowledged, unlabelled = self.conn.execute(
            "SELECT count(*), coalesce(sum(acknowledged_ms IS NULL), 0), coalesce(sum(label IS NULL), 0) FROM alerts"
        ).fetchone()
        return {"total": total, "unacknowledged": unacknowledged, "unlabelled": unlabelled}

    def outbox_count(self, kinds: Sequence[str], after_id: int = 0) -> int:
        """Outbox rows of these kinds after `after_id` (an uploader's cursor): what waits to go."""
        marks = ",".join("?" * len(kinds))
        return self.conn.execute(
            f"SELECT count(*) FROM outbox WHERE id > ? AND kind IN ({marks})", (after_id, *kinds)
        ).fetchone()[0]

    def protect(self, device: str, channel: str, start_ms: int, end_ms: int) -> int:
        """Keep the raw readings of an anomaly window: never compacted away from it, never
        evicted, and recorded as a span for the cloud. Returns blocks marked."""
        cid = self._channel_id(device, channel)
        if cid is None:
            return 0
        with self.conn:
            self.conn.execute("BEGIN")
            cur = self.conn.execute(
                "UPDATE reading_blocks SET keep = 1 WHERE channel_id = ? AND last_ms >= ? AND first_ms < ?",
                (cid, start_ms, end_ms),
            )
            self.conn.execute(
                "INSERT INTO kept_windows (channel_id, start_ms, end_ms, created_ms) VALUES (?, ?, ?, ?)",
                (cid, start_ms, end_ms, now_ms()),
            )
        return cur.rowcount

    def enqueue(self, kind: str, payload: bytes) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self._enqueue(kind, payload)

    def _enqueue(self, kind: str, payload: bytes) -> None:
        self.conn.execute("INSERT INTO outbox (kind, created_ms, payload) VALUES (?, ?, ?)", (kind, now_ms(), payload))

    def outbox_after(self, kinds: Sequence[str], after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Outbox rows (id, kind, payload) of these kinds after `after_id` (an uploader's cursor),
        oldest first."""
        marks = ",".join("?" * len(kinds))
        return self.conn.execute(
            f"SELECT id, kind, payload FROM outbox WHERE id > ? AND kind IN ({marks}) ORDER BY id LIMIT ?",
            (after_id, *kinds, limit),
        ).fetchall()

    def outbox_waiting(self, cursors: Mapping[str, int]) -> dict[str, int]:
        """Per upload source, the outbox rows past its cursor: what waits to go up."""
        return {source: self.outbox_count(kinds, cursors.get(source, 0)) for source, kinds in OUTBOX_SOURCES.items()}

    def kept_windows_after(self, after_id: int, limit: int) -> list[tuple[int, str, str, int, int, int]]:
        """Anomaly windows recorded by `protect` after `after_id`: (id, device, channel,
        channel id, start_ms, end_ms), oldest first."""
        return self.conn.execute(
            "SELECT k.id, d.name, c.name, k.channel_id, k.start_ms, k.end_ms FROM kept_windows k "
            "JOIN channels c ON c.id = k.channel_id JOIN devices d ON d.id = c.device_id "
            "WHERE k.id > ? ORDER BY k.id LIMIT ?",
            (after_id, limit),
        ).fetchall()

    def dead_letter(self, source: str, reason: str, payload: bytes | None) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO dead_letter (source, created_ms, reason, payload) VALUES (?, ?, ?, ?)",
                (source, now_ms(), reason, payload),
            )

    # -- MQTT backlog ---------------------------------------------------------------------

    def backlog_push(self, messages: Sequence[tuple[str, bytes, int, bool, bool]], limit: int) -> int:
        """Keep messages (topic, payload, qos, retain, important) for later publishing. Past
        `limit` rows the oldest unimportant ones go first (counted as evictions); returns how
        many were dropped."""
        now = now_ms()
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO mqtt_backlog (topic, payload, qos, retain, important, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                [(t, p, q, int(r), int(i), now) for t, p, q, r, i in messages],
            )
            excess = self.conn.execute("SELECT count(*) FROM mqtt_backlog").fetchone()[0] - limit
            dropped = 0
            if excess > 0:
                dropped = self.conn.execute(
                    "DELETE FROM mqtt_backlog WHERE id IN (SELECT id FROM mqtt_backlog ORDER BY important, id LIMIT ?)",
                    (excess,),
                ).rowcount
                self.conn.execute(
                    "INSERT INTO evictions (kind, rows, readings, last_ms) VALUES ('mqtt_backlog', ?, 0, ?) "
                    "ON CONFLICT (kind) DO UPDATE SET rows = rows + excluded.rows, last_ms = excluded.last_ms",
                    (dropped, now),
                )
        return dropped

    def backlog_take(self, limit: int) -> list[tuple[int, str, bytes, int, bool]]:
        """The oldest kept messages: (id, topic, payload, qos, retain)."""
        return [
            (i, t, p, q, bool(r))
            for i, t, p, q, r in self.conn.execute(
                "SELECT id, topic, payload, qos, retain FROM mqtt_backlog ORDER BY id LIMIT ?", (limit,)
            )
        ]

    def backlog_delete(self, ids: Sequence[int]) -> None:
        with self.conn:
            self.conn.executemany("DELETE FROM mqtt_backlog WHERE id = ?", [(i,) for i in ids])

    def backlog_size(self) -> int:
        return self.conn.execute("SELECT count(*) FROM mqtt_backlog").fetchone()[0]

    # -- disk budget ----------------------------------------------------------------------

    def enforce_budget(
        self,
        budget_bytes: int,
        *,
        overhead_bytes: int = 0,
        release_free: bool = True,
        chunk: int = 256,
        uploaded: Callable[[], Mapping[str, int]] | None = None,
    ) -> dict[str, int]:
        """Evict routine data until the pages in use plus `overhead_bytes` (room kept for the
        WAL, the shared memory and the reserve file) fit in `budget_bytes`: raw blocks not kept
        for an anomaly window, in the order they were written, then outbox rows the cloud agent
        has uploaded (`uploaded()`: its cursor per source, upload_state.py; asked only when the
        budget needs the outbox's room), then one-minute
        summaries. Alerts, labels, kept blocks and outbox rows not uploaded yet are never
        evicted. Every eviction is counted in `evictions`. Then, with `release_free`, when the
        files themselves are larger than the budget (it was lowered), free pages go back to
        the file system. Returns what was evicted now, by kind (rows)."""
        evicted = self._evict(lambda: self.disk_bytes() + overhead_bytes - budget_bytes, chunk, uploaded=uploaded)
        if release_free:
            usage = self.disk_usage()
            if usage.files + overhead_bytes > budget_bytes and usage.database > usage.used:
                self.release_free_pages()
        return evicted

    def evict_oldest(self, free_bytes: int, chunk: int = 64) -> dict[str, int]:
        """Emergency eviction for a full file system: the oldest routine raw blocks until about
        `free_bytes` of pages are free for the writes that must go on (alerts first)."""
        start = self.disk_bytes()
        return self._evict(lambda: free_bytes - (start - self.disk_bytes()), chunk, kinds=("raw",))

    def _evict(
        self,
        excess_bytes,
        chunk: int,
        kinds: Sequence[str] = ("raw", "outbox_uploaded", "summaries"),
        uploaded: Callable[[], Mapping[str, int]] | None = None,
    ) -> dict[str, int]:
        evicted: dict[str, int] = {}

        def outbox_uploaded() -> tuple[str, list]:
            """Outbox rows at or before their source's cursor: they have reached the cloud."""
            cursors = uploaded() if uploaded is not None else {}
            gone = [(k, cursors.get(source, 0)) for source, k in OUTBOX_SOURCES.items()]
            where = " OR ".join(f"(kind IN ({','.join('?' * len(k))}) AND id <= ?)" for k, _ in gone)
            return (
                f"SELECT 0, length(payload), id FROM outbox WHERE {where} ORDER BY id LIMIT ?",
                [v for k, cursor in gone for v in (*k, cursor)],
            )

        # kind: rows oldest written first as (readings, bytes, key...) with the query's arguments
        # before the limit, and how to delete by key
        steps = {
            "raw": (
                lambda: ("SELECT count, length(data), id FROM reading_blocks WHERE keep = 0 ORDER BY seq LIMIT ?", []),
                lambda keys: self.conn.executemany("DELETE FROM reading_blocks WHERE id = ?", keys),
            ),
            "outbox_uploaded": (
                outbox_uploaded,
                lambda keys: self.conn.executemany("DELETE FROM outbox WHERE id = ?", keys),
            ),
            # both forms of the minutes, in one order: write order, then time
            "summaries": (
                lambda: (
                    "SELECT readings, length(data) + 48, id, NULL, seq, first_ms FROM summary_blocks "
                    "UNION ALL SELECT count, 64, channel_id, minute_ms, seq, minute_ms FROM summaries "
                    "ORDER BY 5, 6 LIMIT ?",
                    [],
                ),
                self._delete_summaries,
            ),
        }
        for kind in kinds:
            query, delete = steps[kind]
            if excess_bytes() <= 0:
                break  # within the budget: the later kinds are not even looked at
            select, args = query()
            while (excess := excess_bytes()) > 0:
                candidates = self.conn.execute(select, (*args, chunk)).fetchall()
                if not candidates:
                    break
                rows = []
                freed = 0
                for row in candidates:  # just enough rows to cover the excess
                    rows.append(row)
                    freed += row[1]
                    if freed >= excess:
                        break
                readings = sum(row[0] for row in rows)
                with self.conn:
                    self.conn.execute("BEGIN")
                    delete([row[2:] for row in rows])
                    self.conn.execute(
                        "INSERT INTO evictions (kind, rows, readings, last_ms) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (kind) DO UPDATE SET rows = rows + excluded.rows, "
                        "readings = readings + excluded.readings, last_ms = excluded.last_ms",
                        (kind, len(rows), readings, now_ms()),
                    )
                evicted[kind] = evicted.get(kind, 0) + len(rows)
        return evicted

    def _delete_summaries(self, keys: list[tuple]) -> None:
        """Delete summary blocks (id, NULL, ...) and minute rows (channel id, minute, ...)."""
        self.conn.executemany("DELETE FROM summary_blocks WHERE id = ?", [key[:1] for key in keys if key[1] is None])
        self.conn.executemany(
            "DELETE FROM summaries WHERE channel_id = ? AND minute_ms = ?",
            [key[:2] for key in keys if key[1] is not None],
        )

    def release_free_pages(self) -> int:
        """Give the database's free pages back to the file system, when it was created able to
        (auto_vacuum = incremental); returns the pages released."""
        if self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            return 0
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free:
            self.conn.execute(f"PRAGMA incremental_vacuum({free})").fetchall()
        return free

    def evictions(self) -> dict[str, tuple[int, int]]:
        """Everything evicted so far: kind -> (rows, readings)."""
        return {k: (r, n) for k, r, n in self.conn.execute("SELECT kind, rows, readings FROM evictions")}

    def reading_count(self, device: str | None = None) -> int:
        if device is None:
            return self.conn.execute("SELECT coalesce(sum(count), 0) FROM reading_blocks").fetchone()[0]
        return self.conn.execute(
            "SELECT coalesce(sum(b.count), 0) FROM reading_blocks b JOIN channels c ON c.id = b.channel_id "
            "JOIN devices d ON d.id = c.device_id WHERE d.name = ?",
            (device,),
        ).fetchone()[0]

    def channels(self) -> list[tuple[int, str, str, str]]:
        """(channel id, device, channel, unit) of every known channel."""
        return self.conn.execute(
            "SELECT c.id, d.name, c.name, c.unit FROM channels c JOIN devices d ON d.id = c.device_id "
            "ORDER BY d.name, c.id"
        ).fetchall()

    def readings(self, device: str, channel: str, start_ms: int = 0, end_ms: int = 2**62) -> blocks.Block:
        """Readings of one channel with start_ms <= ts < end_ms, in time order."""
        cid = self._channel_id(device, channel)
        if cid is None:
            raise KeyError(f"no channel {device}/{channel}")
        return self.channel_readings(cid, start_ms, end_ms)

    def reading_span(self, channel_id: int) -> tuple[int, int] | None:
        """(first, last) timestamp of the channel's readings, or None when it has none."""
        first, last = self.conn.execute(
            "SELECT min(first_ms), max(last_ms) FROM reading_blocks WHERE channel_id = ?", (channel_id,)
        ).fetchone()
        return None if first is None else (first, last)

    def unsynced_spans(self, channel_id: int, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """(first_ms, last_ms) of the channel's blocks stamped before the clock was synchronised."""
        return self.conn.execute(
            "SELECT first_ms, last_ms FROM reading_blocks WHERE channel_id = ? AND clock_unsynced = 1 AND last_ms >= ? "
            "AND first_ms < ? ORDER BY first_ms",
            (channel_id, start_ms, end_ms),
        ).fetchall()

    def last_written(self, device: str, channel: str) -> tuple[int, float] | None:
        """The (timestamp, value) a channel was written last, by write order: after a wall-clock
        step back, the newest timestamp is not the newest reading."""
        row = self.conn.execute(
            "SELECT b.data FROM reading_blocks b JOIN channels c ON c.id = b.channel_id JOIN devices d ON "
            "d.id = c.device_id WHERE d.name = ? AND c.name = ? ORDER BY b.seq DESC, b.id DESC LIMIT 1",
            (device, channel),
        ).fetchone()
        if row is None:
            return None
        block = blocks.decode(row[0])
        return int(block.ts_ms[-1]), float(block.values[-1])

    def channel_readings(self, channel_id: int, start_ms: int, end_ms: int) -> blocks.Block:
        found = [
            blocks.decode(data)
            for (data,) in self.conn.execute(
                "SELECT data FROM reading_blocks WHERE channel_id = ? AND last_ms >= ? AND first_ms < ? ORDER BY first_ms, id",
                (channel_id, start_ms, end_ms),
            )
        ]
        if not found:
            return blocks.Block(np.zeros(0, dtype=np.int64), np.zeros(0))
        merged = blocks.merge(found)
        keep = (merged.ts_ms >= start_ms) & (merged.ts_ms < end_ms)
        return blocks.Block(merged.ts_ms[keep], merged.values[keep])

    def checkpoint(self) -> None:
        """Copy the WAL into the database and sync both: what is committed then survives a
        power cut too (synchronous=NORMAL syncs only at checkpoints)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def disk_bytes(self) -> int:
        """Bytes of the database's pages in use (free pages and the WAL not counted)."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self.conn.execute("PRAGMA page_size").fetchone()[0]

    def disk_usage(self) -> DiskUsage:
        """The files of the store as the file system sees them, and the pages in use."""
        page_size, page_count, free = (
            self.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        )
        database, wal, shm = file_sizes(self.path)
        return DiskUsage(database, wal, shm, (page_count - free) * page_size, page_count * page_size)

    def summaries(self, since_ms: int = 0) -> list[ChannelSummary]:
        """Per-channel statistics of the readings at or after `since_ms`."""
        out = []
        for channel_id, device, channel, unit in self.channels():
            b = self.channel_readings(channel_id, since_ms, 2**62)
            if len(b):
                v = b.values
                out.append(
                    ChannelSummary(
                        device,
                        channel,
                        unit,
                        len(v),
                        float(np.nanmin(v)),
                        float(np.nanmean(v)),
                        float(np.nanmax(v)),
                        float(v[-1]),
                    )
                )
            else:
                out.append(ChannelSummary(device, channel, unit, 0, None, None, None, None))
        return out


def _statistics(minutes: summaries.Minutes) -> list[dict]:
    """Each minute's count, mean, std, min, max, last, as readers give them (None for NULL)."""
    return [
        {
            "count": c,
            "mean": mean,
            "std": math.sqrt(m2 / c) if c and m2 is not None else None,
            "min": lo,
            "max": hi,
            "last": last,
        }
        for _, c, mean, m2, lo, hi, last, _ in minutes.rows()
    ]
