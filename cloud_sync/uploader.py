"""Uploading what the gateway stored, outage-proof: alerts and anomaly windows first, then
labels, then one-minute summaries and device health; raw readings stay on the gateway.

The agent only reads the gateway's store (read-only connection: committed rows only). What it
has uploaded is its own state (`<state_dir>/cloud-sync.json`, replaced atomically): per source a
cursor, advanced only after a 2xx. A batch's id is the hash of its record keys, so a batch
retried after a lost answer is recognised by the endpoint, and every record has a stable key,
so the endpoint keeps each record once whatever happens to batches.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from cloud_sync import codec
from cloud_sync.errors import CloudSyncError
from gatewayd import daemon_status
from gatewayd.backoff import retry_delay
from gatewayd.clock import now_ms
from gatewayd.store.database import Store
from gatewayd.store.upload_state import FILE_NAME, OUTBOX_SOURCES

STATE_FILE = FILE_NAME  # the agent's progress, in the state directory; gatewayd reads it too
log = logging.getLogger("cloud_sync")
# Sources in upload order; the first two are never held back by the daily budget.
PRIORITIES = {"alerts": 0, "windows": 0, "labels": 1, "summaries": 2, "health": 2}


@dataclass
class UploadState:
    cursors: dict[str, int] = field(default_factory=dict)  # source -> last uploaded position
    day: str = ""
    bytes_today: int = 0
    bytes_total: int = 0
    records_total: int = 0
    raw_readings_covered: int = 0  # readings the uploaded summaries and windows stand for
    batches: int = 0
    last_upload_ms: int = 0

    @classmethod
    def load(cls, path: Path) -> UploadState:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@dataclass
class Record:
    source: str
    position: int  # the cursor value once this record is uploaded
    key: str
    kind: str
    payload: dict
    readings: int = 0  # raw readings it stands for


class UploadError(CloudSyncError):
    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Uploader:
    def __init__(
        self,
        store: Store,
        state_path: Path,
        url: str,
        token: str,
        *,
        gateway: str,
        ca_file: str | None = None,
        batch_records: int = 500,
        daily_budget_bytes: int = 50_000_000,
        timeout_s: float = 30.0,
        status_path: Path | None = None,
        now_ms: Callable[[], int] = now_ms,
    ):
        self.store = store
        self.state_path = state_path
        self.state = UploadState.load(state_path)
        self.url = url.rstrip("/")
        self.gateway = gateway
        self.batch_records = batch_records
        self.daily_budget = daily_budget_bytes
        self.timeout = timeout_s
        self.status_path = status_path
        self.now_ms = now_ms
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.verify = ca_file or True
        self.lock = threading.Lock()
        self.model_reports: list[dict] = []  # in memory until uploaded; a restart pulls again anyway

    def close(self) -> None:
        self.session.close()

    def report_models(self, installed: list[str], rejected: list[str]) -> None:
        """Model pulls (and gatewayd's rollbacks, which reach the outbox) go up with the next upload."""
        if installed or rejected:
            with self.lock:
                self.model_reports.append({"ts_ms": self.now_ms(), "installed": installed, "rejected": rejected})

    # -- what to send ----------------------------------------------------------------------

    def _outbox(self, source: str, kinds: tuple[str, ...], limit: int) -> list[Record]:
        rows = self.store.outbox_after(kinds, self.state.cursors.get(source, 0), limit)
        return [Record(source, i, f"outbox:{i}", kind, json.loads(payload)) for i, kind, payload in rows]

    def _windows(self, limit: int) -> list[Record]:
        """Raw readings kept around anomalies (`Store.protect` spans), at full resolution."""
        out = []
        for window_id, device, channel, channel_id, start, end in self.store.kept_windows_after(
            self.state.cursors.get("windows", 0), limit
        ):
            block = self.store.channel_readings(channel_id, start, end)
            payload = {
                "device": device,
                "channel": channel,
                "start_ms": start,
                "end_ms": end,
                "count": len(block),
                "block": codec.encode_window(block.ts_ms, block.values) if len(block) else None,
            }
            out.append(Record("windows", window_id, f"window:{window_id}", "window", payload, len(block)))
        return out

    def _summaries(self, limit: int) -> list[Record]:
        """One record per closed minute: every channel's count, mean, min, max, std, last."""
        closed = (self.now_ms() - 120_000) // 60_000 * 60_000  # a minute is final once flushed
        after = self.state.cursors.get("summaries", 0)
        out = []
        for minute, stats in self.store.minutes_of_all(after, closed, limit):
            readings = sum(c["count"] for d in stats.values() for c in d.values())
            devices = {device: codec.encode_summary(channels) for device, channels in stats.items()}
            out.append(
                Record(
                    "summaries",
                    minute,
                    f"summary:{minute}",
                    "summary",
                    {"minute_ms": minute, "devices": devices},
                    readings,
                )
            )
        return out

    def _health(self) -> list[Record]:
        """The daemon's device health, once a minute at most."""
        if self.status_path is None:
            return []
        minute = self.now_ms() // 60_000 * 60_000
        if self.state.cursors.get("health", 0) >= minute:
            return []
        status = daemon_status.read(self.status_path)
        if status is None:
            return []
        devices = {
            n: d.model_dump(include={"state", "consecutive_failures", "last_error"}) for n, d in status.devices.items()
        }
        backlog = self.store.outbox_waiting(self.state.cursors)  # what the fleet view shows as this gateway's backlog
        return [
            Record(
                "health",
                minute,
                f"health:{minute}",
                "health",
                {"minute_ms": minute, "devices": devices, "backlog": backlog},
            )
        ]

    def next_batch(self) -> list[Record]:
        """Up to `batch_records` records, highest priority first; past the daily byte budget only
        alerts and anomaly windows go."""
        self._roll_day()
        over_budget = self.state.bytes_today >= self.daily_budget
        batch: list[Record] = []
        room = self.batch_records
        for source in ("alerts", "windows", "labels", "summaries", "health"):
            if room <= 0 or (over_budget and PRIORITIES[source] > 0):
                break
            if source == "alerts":
                found = self._outbox(source, OUTBOX_SOURCES["alerts"], room)
                with self.lock:
                    found += [
                        Record("reports", 0, f"model-report:{r['ts_ms']}", "model_report", r)
                        for r in self.model_reports[: max(0, room - len(found))]
                    ]
            elif source == "labels":
                found = self._outbox(source, OUTBOX_SOURCES["labels"], room)
            elif source == "windows":
                found = self._windows(min(room, 50))
            elif source == "summaries":
                found = self._summaries(room)
            else:
                found = self._health()
            batch += found
            room -= len(found)
        return batch

    def _roll_day(self) -> None:
        day = datetime.fromtimestamp(self.now_ms() / 1000, UTC).date().isoformat()
        if day != self.state.day:
            self.state.day, self.state.bytes_today = day, 0

    # -- sending ---------------------------------------------------------------------------

    def send(self, batch: list[Record]) -> dict:
        keys = [r.key for r in batch]
        batch_id = "b:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:40]
        body = gzip.compress(
            json.dumps(
                {
                    "gateway": self.gateway,
                    "records": [{"key": r.key, "kind": r.kind, "payload": r.payload} for r in batch],
                }
            ).encode(),
            6,
            mtime=0,  # a retried batch is the same bytes: the endpoint knows it without unpacking it
        )
        try:
            # verify passed per request: a session's own setting loses to REQUESTS_CA_BUNDLE in the environment
            response = self.session.post(
                f"{self.url}/v1/batches",
                data=body,
                timeout=self.timeout,
                verify=self.session.verify,
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "Idempotency-Key": batch_id},
            )
        except requests.RequestException as exc:
            raise UploadError(f"{exc.__class__.__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code == 503:
            raise UploadError(f"HTTP {response.status_code}", parse_retry_after(response.headers.get("Retry-After")))
        if not 200 <= response.status_code < 300:
            raise UploadError(f"HTTP {response.status_code}: {response.text[:200]}")
        # Acknowledged: only now do the cursors move.
        for r in batch:
            if r.source == "reports":
                with self.lock:
                    self.model_reports = [m for m in self.model_reports if f"model-report:{m['ts_ms']}" != r.key]
                continue
            self.state.cursors[r.source] = max(self.state.cursors.get(r.source, 0), r.position)
        self.state.bytes_today += len(body)
        self.state.bytes_total += len(body)
        self.state.records_total += len(batch)
        self.state.raw_readings_covered += sum(r.readings for r in batch)
        self.state.batches += 1
        self.state.last_upload_ms = self.now_ms()
        self.state.save(self.state_path)
        return response.json()

    def run(
        self,
        should_stop: Callable[[], bool],
        *,
        interval_s: float = 10.0,
        max_backoff_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Upload until `should_stop()`; waits `interval_s` when there is nothing to send; on
        failure backs off exponentially with jitter (honouring Retry-After)."""
        failures = 0
        while not should_stop():
            batch = self.next_batch()
            if not batch:
                sleep(interval_s)
                continue
            try:
                self.send(batch)
                if failures:
                    log.info("cloud reachable again after %d failed attempts", failures)
                failures = 0
            except UploadError as exc:
                if exc.retry_after_s is not None:  # the endpoint paces its fleet: its word, not our backoff
                    log.info("endpoint busy (%s), again in %.0f s", exc, exc.retry_after_s)
                    sleep(paced_delay(exc.retry_after_s))
                    continue
                failures += 1
                if failures == 1:
                    log.error("upload failed, keeping data on the gateway: %s", exc)
                sleep(retry_delay(failures, first_s=1.0, max_s=max_backoff_s))


def paced_delay(retry_after_s: float) -> float:
    """The wait after a 429 or 503 with Retry-After: what the endpoint asked, at least a second
    (an endpoint answering 0 is not hammered). The endpoint spreads its answers over the
    fleet itself (cloud_sync/pacing.py), so no backoff of ours is added on top."""
    return max(1.0, retry_after_s)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None
