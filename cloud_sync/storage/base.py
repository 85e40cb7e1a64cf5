"""The storage contract, and the SQL both backends share (written with `?` placeholders; the
PostgreSQL backend translates them). What differs between the engines, the batch insert, the
schema and retention, lives in each backend."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_sync.errors import CloudSyncError
from cloud_sync.records import StoredRecord

# Days a record is kept after it arrived, per kind; kinds not named are kept until deleted.
DEFAULT_RETENTION_DAYS = {"summary": 400, "health": 30, "window": 400, "model_report": 90}


class StorageUnavailable(CloudSyncError):
    """The database cannot take the request now (pool exhausted, server away): answered 503."""


@dataclass(frozen=True)
class BatchSeen:
    wire_digest: str
    content_digest: str


@dataclass(frozen=True)
class BatchOutcome:
    accepted: int  # records new to the store
    duplicate: bool = False  # the same batch stored before: nothing new
    conflict: bool = False  # the batch id was used before for other records: nothing kept


class Storage(Protocol):
    def batch_seen(self, gateway: str, batch_id: str) -> BatchSeen | None: ...

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
        """Store a batch's records once each per (gateway, key), atomically with the batch id."""

    def records(self, gateway: str, kind: str | None = None) -> list[dict]: ...

    def usage(self, gateway: str) -> dict[str, int]: ...

    def gateways(self) -> list[str]: ...

    def summary_devices(self) -> dict[str, list[str]]: ...

    def fleet(self) -> list[dict]: ...

    def prune(self, retention_days: dict[str, int], now_ms: int) -> dict[str, int]: ...

    # tokens: SHA-256 digests only
    def add_token(self, gateway: str, digest: str, now_ms: int) -> None: ...

    def revoke_tokens(self, gateway: str, now_ms: int) -> int: ...

    def token_gateway(self, digest: str) -> str | None: ...

    def token_list(self) -> list[dict]: ...

    # retraining jobs
    def create_job(self, job_id: str, scope: dict, now_ms: int) -> None: ...

    def job(self, job_id: str) -> dict | None: ...

    def job_started(self, job_id: str, worker: str, now_ms: int) -> int: ...

    def job_finished(self, job_id: str, now_ms: int, *, version: int | None, error: str | None) -> None: ...

    def jobs(self, limit: int = 100) -> list[dict]: ...

    def close(self) -> None: ...


JOB_COLUMNS = (
    "id",
    "scope",
    "state",
    "attempts",
    "created_ms",
    "started_ms",
    "finished_ms",
    "worker",
    "version",
    "error",
)


class SqlStorage(ABC):
    """Statements that read the same on SQLite and PostgreSQL."""

    @abstractmethod
    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]: ...

    @abstractmethod
    def _write(self, sql: str, params: tuple = ()) -> int:
        """Run one statement in its own transaction; the rows it changed."""

    def batch_seen(self, gateway: str, batch_id: str) -> BatchSeen | None:
        rows = self._rows(
            "SELECT wire_digest, content_digest FROM batches WHERE gateway = ? AND batch_id = ?", (gateway, batch_id)
        )
        return BatchSeen(rows[0][0] or "", rows[0][1] or "") if rows else None

    def records(self, gateway: str, kind: str | None = None) -> list[dict]:
        if kind is None:
            rows = self._rows(
                "SELECT key, kind, payload FROM records WHERE gateway = ? ORDER BY received_ms, key", (gateway,)
            )
        else:
            rows = self._rows(
                "SELECT key, kind, payload FROM records WHERE gateway = ? AND kind = ? ORDER BY received_ms, key",
                (gateway, kind),
            )
        return [{"key": k, "kind": kd, "payload": json.loads(p)} for k, kd, p in rows]

    def usage(self, gateway: str) -> dict[str, int]:
        batches, wire, recs = self._rows(
            "SELECT count(*), coalesce(sum(wire_bytes), 0), coalesce(sum(records), 0) FROM batches WHERE gateway = ?",
            (gateway,),
        )[0]
        return {"batches": int(batches), "wire_bytes": int(wire), "records_sent": int(recs)}

    def gateways(self) -> list[str]:
        return [g for (g,) in self._rows("SELECT DISTINCT gateway FROM batches ORDER BY gateway")]

    def _payloads(self, kind: str) -> list[tuple[str, dict]]:
        return [
            (g, json.loads(p)) for g, p in self._rows("SELECT gateway, payload FROM records WHERE kind = ?", (kind,))
        ]

    def fleet(self) -> list[dict]:
        """Per gateway: its last upload, the backlog it last reported, alerts open, models running."""
        out: dict[str, dict[str, Any]] = {}
        for gateway, last, batches in self._rows(
            "SELECT gateway, max(received_ms), count(*) FROM batches GROUP BY gateway ORDER BY gateway"
        ):
            out[gateway] = {
                "gateway": gateway,
                "last_upload_ms": int(last),
                "batches": int(batches),
                "backlog": None,
                "alerts_open": 0,
                "models": {},
            }
        for gateway, payload in self._latest_payloads("health"):
            if gateway in out and isinstance(payload.get("backlog"), dict):
                out[gateway]["backlog"] = sum(v for v in payload["backlog"].values() if isinstance(v, int))
        closed = {(g, p["id"]) for g, p in self._payloads("alert_update") if p.get("closed_ms")}
        for gateway, payload in self._payloads("alert"):
            if gateway in out and (gateway, payload["id"]) not in closed:
                out[gateway]["alerts_open"] += 1
        for gateway, payload in sorted(self._payloads("model_event"), key=lambda gp: gp[1].get("ts_ms", 0)):
            if gateway in out and payload.get("event") in ("loaded", "rollback"):
                out[gateway]["models"][payload["name"]] = payload.get("version")
        return list(out.values())

    def _latest_payloads(self, kind: str) -> list[tuple[str, dict]]:
        rows = self._rows(
            "SELECT r.gateway, r.payload FROM records r JOIN (SELECT gateway, max(received_ms) AS at FROM records "
            "WHERE kind = ? GROUP BY gateway) m ON r.gateway = m.gateway AND r.received_ms = m.at WHERE r.kind = ?",
            (kind, kind),
        )
        return [(g, json.loads(p)) for g, p in rows]

    # -- tokens ---------------------------------------------------------------------------

    def add_token(self, gateway: str, digest: str, now_ms: int) -> None:
        self._write("INSERT INTO tokens (digest, gateway, issued_ms) VALUES (?, ?, ?)", (digest, gateway, now_ms))

    def revoke_tokens(self, gateway: str, now_ms: int) -> int:
        return self._write(
            "UPDATE tokens SET revoked_ms = ? WHERE gateway = ? AND revoked_ms IS NULL", (now_ms, gateway)
        )

    def token_gateway(self, digest: str) -> str | None:
        rows = self._rows("SELECT gateway FROM tokens WHERE digest = ? AND revoked_ms IS NULL", (digest,))
        return rows[0][0] if rows else None

    def token_list(self) -> list[dict]:
        rows = self._rows(
            "SELECT gateway, count(*), max(issued_ms) FROM tokens WHERE revoked_ms IS NULL GROUP BY gateway "
            "ORDER BY gateway"
        )
        return [{"gateway": g, "tokens": int(n), "last_issued_ms": int(t)} for g, n, t in rows]

    # -- retraining jobs --------------------------------------------------------------------

    def create_job(self, job_id: str, scope: dict, now_ms: int) -> None:
        self._write(
            "INSERT INTO jobs (id, scope, state, attempts, created_ms) VALUES (?, ?, 'queued', 0, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (job_id, json.dumps(scope, sort_keys=True), now_ms),
        )

    def _job_dicts(self, rows: list[tuple]) -> list[dict]:
        jobs = [dict(zip(JOB_COLUMNS, row)) for row in rows]
        for j in jobs:
            j["scope"] = json.loads(j["scope"])
        return jobs

    def job(self, job_id: str) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE id = ?", (job_id,))
        return self._job_dicts(rows)[0] if rows else None

    def job_started(self, job_id: str, worker: str, now_ms: int) -> int:
        self._write(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_ms = ?, worker = ?, error = NULL "
            "WHERE id = ?",
            (now_ms, worker, job_id),
        )
        rows = self._rows("SELECT attempts FROM jobs WHERE id = ?", (job_id,))
        return int(rows[0][0]) if rows else 0

    def job_finished(self, job_id: str, now_ms: int, *, version: int | None, error: str | None) -> None:
        self._write(
            "UPDATE jobs SET state = ?, finished_ms = ?, version = ?, error = ? WHERE id = ?",
            ("failed" if error else "done", now_ms, version, error, job_id),
        )

    def jobs(self, limit: int = 100) -> list[dict]:
        rows = self._rows(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs ORDER BY created_ms DESC, id LIMIT ?", (limit,))
        return self._job_dicts(rows)
