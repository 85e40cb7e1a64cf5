"""PostgreSQL, for a fleet: any number of `cloud-sync serve` processes and workers share one
database through a psycopg connection pool each.

- Records are partitioned by month of arrival (native range partitioning on `received_ms`),
  so retention drops or empties whole partitions instead of scanning one large table.
- "Once per (gateway, key)" is the primary key of `record_keys`, a table outside the
  partitioning (a unique key on a partitioned table must hold the partition column, which
  would allow the same key again next month). A batch is the primary key of `batches`: two
  servers receiving the same batch at once store it once, whatever process answers first.
- Schema steps are recorded in `schema_migrations`, applied under an advisory lock so two
  servers starting together do not race.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from cloud_sync.records import StoredRecord
from cloud_sync.storage.base import BatchOutcome, SqlStorage, StorageUnavailable
from gatewayd.clock import now_ms

MIGRATION_LOCK = 0x636C6F7564  # pg_advisory_xact_lock key for schema changes
MIGRATIONS = [
    (
        "records, batches, tokens, jobs, bundles",
        """
        CREATE TABLE batches (gateway text NOT NULL, batch_id text NOT NULL, received_ms bigint NOT NULL,
            wire_bytes integer NOT NULL, records integer NOT NULL, wire_digest text NOT NULL,
            content_digest text NOT NULL, PRIMARY KEY (gateway, batch_id));
        CREATE TABLE record_keys (gateway text NOT NULL, key text NOT NULL, received_ms bigint NOT NULL,
            PRIMARY KEY (gateway, key));
        CREATE TABLE records (gateway text NOT NULL, key text NOT NULL, kind text NOT NULL, ts_ms bigint,
            payload text NOT NULL, received_ms bigint NOT NULL) PARTITION BY RANGE (received_ms);
        CREATE INDEX records_by_gateway ON records (gateway, kind, received_ms);
        CREATE INDEX records_by_kind ON records (kind, received_ms);
        CREATE TABLE tokens (digest text PRIMARY KEY, gateway text NOT NULL, issued_ms bigint NOT NULL,
            revoked_ms bigint);
        CREATE TABLE jobs (id text PRIMARY KEY, scope text NOT NULL, state text NOT NULL, attempts integer NOT NULL,
            created_ms bigint NOT NULL, started_ms bigint, finished_ms bigint, worker text, version integer,
            error text);
        CREATE TABLE bundles (scope text NOT NULL, name text NOT NULL, version integer NOT NULL,
            archive bytea NOT NULL, published_ms bigint NOT NULL, job_id text,
            PRIMARY KEY (scope, name, version), UNIQUE (scope, name, job_id));
        """,
    )
]

# Records of a batch go in with one statement: arrays in, new keys claimed, their rows written.
# The arrays go in binary (%b): as text, each JSON payload's quotes would be escaped one by one
# (22 ms of client CPU a batch of 500 summaries, against 0.7 ms).
INSERT_RECORDS = """
WITH incoming AS (
    SELECT DISTINCT ON (key) key, kind, ts_ms, payload
    FROM unnest(%(keys)b::text[], %(kinds)b::text[], %(ts)b::bigint[], %(payloads)b::text[])
        WITH ORDINALITY AS r(key, kind, ts_ms, payload, n)
    ORDER BY key, n
), fresh AS (
    INSERT INTO record_keys (gateway, key, received_ms)
    SELECT %(gateway)s, key, %(now)s FROM incoming
    ON CONFLICT DO NOTHING RETURNING key
)
INSERT INTO records (gateway, key, kind, ts_ms, payload, received_ms)
SELECT %(gateway)s, i.key, i.kind, i.ts_ms, i.payload, %(now)s FROM incoming i JOIN fresh USING (key)
"""


def month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def month_of(ms: int) -> tuple[int, int]:
    d = datetime.fromtimestamp(ms / 1000, UTC)
    return d.year, d.month


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


class PostgresStorage(SqlStorage):
    def __init__(self, url: str, *, pool_size: int = 8, pool_timeout_s: float = 10.0):
        self.url = url
        self.pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, timeout=pool_timeout_s, open=False, name="cloud-sync"
        )
        try:
            self.pool.open(wait=True, timeout=pool_timeout_s)
        except PoolTimeout:
            self.pool.close()
            raise StorageUnavailable(
                f"cannot connect to {psycopg.conninfo.conninfo_to_dict(url).get('host')}"
            ) from None
        self.partitions: set[tuple[int, int]] = set()
        self.partition_lock = threading.Lock()
        self._migrate()
        self.ensure_partitions(now_ms())

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; a database away or a connection it ended is StorageUnavailable
        (answered 503: the agent comes back), and the pool replaces the broken connection."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StorageUnavailable(str(exc).strip()) from None

    def _migrate(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                "applied_ms bigint NOT NULL)"
            )
            done = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]  # type: ignore[index]
            for version, (name, script) in enumerate(MIGRATIONS[done:], start=done + 1):
                conn.execute(script)  # type: ignore[arg-type]
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (%s, %s, %s)",
                    (version, name, now_ms()),
                )

    def ensure_partitions(self, at_ms: int) -> None:
        """This month's partition and the next: a batch never waits on DDL at midnight."""
        this = month_of(at_ms)
        wanted = {this, next_month(*this)}
        if wanted <= self.partitions:
            return
        with self.partition_lock, self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            for year, month in sorted(wanted - self.partitions):
                upper = month_start_ms(*next_month(year, month))
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS records_{year:04d}{month:02d} PARTITION OF records "  # type: ignore[arg-type]
                    f"FOR VALUES FROM ({month_start_ms(year, month)}) TO ({upper})"
                )
            self.partitions |= wanted

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(self._sql(sql), params).fetchall()  # type: ignore[arg-type]

    def _write(self, sql: str, params: tuple = ()) -> int:
        with self._connection() as conn:
            return conn.execute(self._sql(sql), params).rowcount  # type: ignore[arg-type]

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
        now = now_ms()
        self.ensure_partitions(now)
        with self._connection() as conn, conn.transaction():
            # The batch row first: a second server with the same batch waits here for the
            # first one's commit, then finds the row.
            claimed = conn.execute(
                "INSERT INTO batches (gateway, batch_id, received_ms, wire_bytes, records, wire_digest, "
                "content_digest) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (gateway, batch_id, now, wire_bytes, len(records), wire_digest, content_digest),
            ).fetchone()
            if claimed is None:
                row = conn.execute(
                    "SELECT content_digest FROM batches WHERE gateway = %s AND batch_id = %s", (gateway, batch_id)
                ).fetchone()
                same = row is not None and row[0] == content_digest
                return BatchOutcome(0, duplicate=same, conflict=not same)
            cursor = conn.execute(
                INSERT_RECORDS,
                {
                    "gateway": gateway,
                    "now": now,
                    "keys": [r.key for r in records],
                    "kinds": [r.kind for r in records],
                    "ts": [r.ts_ms for r in records],
                    "payloads": [r.payload for r in records],
                },
            )
            return BatchOutcome(cursor.rowcount)

    def summary_devices(self) -> dict[str, list[str]]:
        rows = self._rows(
            "SELECT DISTINCT gateway, jsonb_object_keys(payload::jsonb -> 'devices') FROM records "
            "WHERE kind = 'summary' ORDER BY 1, 2"
        )
        out: dict[str, list[str]] = {}
        for gateway, device in rows:
            out.setdefault(gateway, []).append(device)
        return out

    def prune(self, retention_days: dict[str, int], now_ms: int) -> dict[str, int]:
        """Delete records past their kind's retention, then drop months left empty (and the keys
        that guarded them): a replay of something that old is stored again, as new."""
        deleted = {
            kind: self._write(
                "DELETE FROM records WHERE kind = %s AND received_ms < %s", (kind, now_ms - days * 86_400_000)
            )
            for kind, days in retention_days.items()
        }
        this = month_of(now_ms)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records' ORDER BY 1"
                )
            ]
            for name in names:
                year, month = int(name[8:12]), int(name[12:14])
                if (year, month) >= this:
                    continue
                if conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {name})").fetchone()[0]:  # type: ignore[arg-type, index]
                    conn.execute(f"DROP TABLE {name}")  # type: ignore[arg-type]
                    conn.execute(
                        "DELETE FROM record_keys WHERE received_ms < %s", (month_start_ms(*next_month(year, month)),)
                    )
                    self.partitions.discard((year, month))
                    deleted[f"partition {name}"] = 1
        return deleted

    # -- bundles, kept in the database so every server sees every publication --------------

    def bundle_versions(self, scope: str, name: str) -> list[int]:
        return [v for (v,) in self._rows("SELECT version FROM bundles WHERE scope = ? AND name = ?", (scope, name))]

    def bundle_latest(self, scopes: tuple[str, ...]) -> list[tuple[str, int, str]]:
        rows = self._rows(
            "SELECT name, max(version), (array_agg(scope ORDER BY version DESC))[1] FROM bundles "
            "WHERE scope = ANY(?) GROUP BY name ORDER BY name",
            (list(scopes),),
        )
        return [(n, int(v), s) for n, v, s in rows]

    def bundle_archive(self, scope: str, name: str, version: int) -> bytes | None:
        rows = self._rows(
            "SELECT archive FROM bundles WHERE scope = ? AND name = ? AND version = ?", (scope, name, version)
        )
        return bytes(rows[0][0]) if rows else None

    def bundle_publish(self, scope: str, name: str, version: int, archive: bytes, job_id: str | None) -> bool:
        """False when that job published this bundle already, or the version is taken."""
        return (
            self._write(
                "INSERT INTO bundles (scope, name, version, archive, published_ms, job_id) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (scope, name, version, archive, now_ms(), job_id),
            )
            == 1
        )

    def bundle_by_job(self, scope: str, name: str, job_id: str) -> int | None:
        rows = self._rows(
            "SELECT version FROM bundles WHERE scope = ? AND name = ? AND job_id = ?", (scope, name, job_id)
        )
        return int(rows[0][0]) if rows else None

    def close(self) -> None:
        self.pool.close()
