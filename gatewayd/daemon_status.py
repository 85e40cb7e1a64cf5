"""The running daemon's status file (`status.json`, in `gateway.runtime_dir` or the state
directory): its schema, how the daemon writes it and how others read it. The daemon writes it
every few seconds and once at stop; `gatewayd status`, the cloud agent (device health) and the
tests read it. One schema, validated on both sides, instead of string keys parsed twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gatewayd.clock import boot_id, now_ms

log = logging.getLogger(__name__)


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")  # a newer daemon may say more; readers take what they know


class DeviceStatus(_Part):
    state: str
    consecutive_failures: int
    last_error: str | None
    polls: int
    readings: int
    skipped_ticks: int


class WriterStatus(_Part):
    written: int
    batches: int
    queued: int
    compacted_blocks: int
    evicted: dict[str, int] = {}  # rows the disk budget evicted in this run, by kind


class StoreStatus(_Part):
    state: str
    writing: bool
    since_ms: int | None
    last_error: str | None
    faults: int
    recoveries: int
    last_outage_s: float | None
    readings_dropped: int
    writes_waiting: int
    writes_dropped: int
    emergency_evictions: int
    disk_bytes: int | None
    budget_bytes: int


class ClockStatus(_Part):
    synchronized: bool | None
    trust: str
    steps: int
    last_step_s: float


class DaemonStatus(_Part):
    ts_ms: int  # the wall clock when written
    monotonic_s: float  # the monotonic clock then: its age whatever the wall clock did since
    boot_id: str | None
    pid: int
    devices: dict[str, DeviceStatus]
    writer: WriterStatus
    store: StoreStatus
    clock: ClockStatus
    mqtt: dict | None
    alerts: int
    alerts_by_kind: dict[str, int] = {}  # opened in this run
    detection: dict | None
    stopped: bool = False

    def age_s(self) -> float | None:
        """How old the status is, by the monotonic clock (immune to wall-clock steps) when it
        was written since this boot; None when it is from an earlier boot."""
        if self.boot_id is not None:
            if self.boot_id != boot_id():
                return None
            return max(0.0, time.monotonic() - self.monotonic_s)
        return max(0.0, (now_ms() - self.ts_ms) / 1000)


def write(path: Path, status: DaemonStatus) -> None:
    """Replace the file; on a full or read-only disk, overwrite the old file's blocks in place,
    and failing that log and go on: a status file must never stop the daemon."""
    text = status.model_dump_json().encode()
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(text)
        tmp.replace(path)
        return
    except OSError as exc:
        log.debug("status file not replaced: %s", exc)
    try:
        # A full disk has no room for a new file, but the old file's blocks take the new text
        # (padded with blanks, which JSON ignores, so no stale tail is left).
        with open(path, "r+b") as f:
            size = f.seek(0, 2)
            f.seek(0)
            f.write(text.ljust(size))
    except OSError as exc:
        log.debug("status file not written: %s", exc)


def read(path: Path) -> DaemonStatus | None:
    """The last status a daemon wrote; None when there is none or it cannot be read."""
    try:
        return DaemonStatus.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def describe_models(models: Mapping[str, Mapping[str, Any]]) -> str:
    """Each scope's model as people read it: "pump-1 v2, pump-2 collecting (40 windows)"."""

    def state(m: Mapping[str, Any]) -> str:
        if m.get("version"):
            return f"v{m['version']}"
        return "training" if m.get("training") else f"collecting ({m.get('collected', 0)} windows)"

    return ", ".join(f"{name} {state(m)}" for name, m in sorted(models.items()))
