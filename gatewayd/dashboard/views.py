"""What the dashboard shows, as JSON-ready dicts: from the running gateway (in the event loop)
or from the store (on the dashboard's reading thread, through a read-only connection)."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np

from gatewayd import heap
from gatewayd.config import Config
from gatewayd.detection.score_history import COLUMNS, ScoreHistory
from gatewayd.store import upload_state
from gatewayd.store.database import Store

from . import gaps, minute_points
from .envelope import envelope
from .running import RunningGateway

# Series travel as base64 of little-endian arrays, not JSON lists: a list of an hour's points
# makes thousands of Python objects per request, and their churn kept ~3.5 MB more of the
# daemon's RSS while a page was open (bench/dashboard.py); the text is also half the size.


def packed_times(ts_ms: np.ndarray, start_ms: int) -> str:
    """Milliseconds after `start_ms` as int32 (a span is 7 days at most, int32 holds 24)."""
    return base64.b64encode((np.asarray(ts_ms) - start_ms).astype("<i4").tobytes()).decode("ascii")


def packed_values(values: np.ndarray) -> str:
    """float32 (readings are float32 at best); NaN where a reading is missing."""
    return base64.b64encode(np.asarray(values).astype("<f4").tobytes()).decode("ascii")


def json_safe(obj: object) -> object:
    """NaN and infinities (which JSON lacks) as None, in nested dicts and lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


# -- in the event loop ---------------------------------------------------------------------


def overview(config: Config, gateway: RunningGateway, stored: dict, now_ms: int) -> dict:
    """Nodes and their health, detection, queues, store and uplink, the clock: the page's every
    refresh. The store's state and the disk use of all its files come from the running gateway
    (its worker), the rest of `stored` from a read of the store (store_status or store_missing)."""
    status = gateway.status().model_dump()
    detail = gateway.detection.detail() if gateway.detection is not None else None
    devices = []
    for device in config.devices:
        poller = gateway.pollers.get(device.name)
        health = poller.health if poller is not None else None
        found = (detail or {}).get("devices", {}).get(device.name, {})
        scope = (detail or {}).get("scopes", {}).get(found.get("scope", ""), {})
        devices.append(
            {
                "name": device.name,
                "profile": device.profile,
                "address": f"{device.host}:{device.port} unit {device.unit}"
                if device.transport == "tcp"
                else f"bus {device.bus} unit {device.unit}",
                "interval_s": device.interval_s,
                "state": health.state if health else "unknown",
                "consecutive_failures": health.consecutive_failures if health else 0,
                "last_error": health.last_error if health else None,
                "polls": health.polls if health else 0,
                "readings": health.readings if health else 0,
                "skipped_ticks": poller.skipped_ticks if poller else 0,
                "values": {c: {"value": v, "unit": health.units.get(c, "")} for c, v in health.last_values.items()}
                if health
                else {},
                "scope": found.get("scope"),
                "model_version": scope.get("version"),
                "incident_open": found.get("incident_open", False),
                "drift": found.get("drift", {}),
            }
        )
    return json_safe(
        {
            "gateway": config.gateway.name,
            "ts_ms": now_ms,
            "refresh_s": config.dashboard.refresh_s,
            "devices": devices,
            "detection": None
            if detail is None
            else {
                **detail,
                **{k: v for k, v in status["detection"].items() if k != "models"},
                "scopes": learning(detail["scopes"], gateway, config),
            },
            "queues": {
                "readings": {
                    "queued": gateway.writer.queued,
                    "capacity": config.store.queue_readings,
                    "written": gateway.writer.written,
                },
                "detection": None
                if gateway.detection is None
                else {
                    "queued": gateway.detection.queue.qsize(),
                    "capacity": gateway.detection.queue.maxsize,
                    "dropped": gateway.detection.stats.dropped,
                },
                "mqtt": status["mqtt"],
            },
            "alerts_raised": gateway.alerts,
            **stored,
            "store": {**status["store"], "path": str(gateway.worker.path), **stored["store"]},
            "clock": status["clock"],
        }
    )  # type: ignore[return-value]


def learning(scopes: dict, gateway: RunningGateway, config: Config) -> dict:
    """Each scope's detail with how far it has come towards its first model: `collected_ms`
    of data (its device furthest on) of the `bootstrap_ms` the first training waits for."""
    stage = gateway.detection
    bootstrap_ms = round(config.detection.bootstrap_minutes * 60_000)
    out = {}
    for name, scope in scopes.items():
        state = stage.scopes.get(name) if stage is not None else None
        collected = max(state.collected_ms.values(), default=0) if state is not None else 0
        out[name] = {**scope, "collected_ms": collected, "bootstrap_ms": bootstrap_ms}
    return out


def score_series(
    history: ScoreHistory | None, start_ms: int, end_ms: int, points: int, critical_ratio: float, hop_ms: float
) -> dict:
    """A device's window scores in [start_ms, end_ms): each model's score and alarm level, and
    their ratios (1.0 is the alarm threshold, `critical_ratio` makes an incident critical).
    The ring holds the last hour; a gap between windows is a NaN point (gaps.py)."""
    ends, columns = (
        history.between(start_ms, end_ms)
        if history is not None
        else (np.zeros(0, dtype=np.int64), {c: np.zeros(0, dtype=np.float32) for c in COLUMNS})
    )
    index = envelope(ends, columns["ratio"].astype(np.float64), start_ms, end_ms, points)
    gap_ms = gaps.gap_after(hop_ms, (end_ms - start_ms) / points, gaps.ENVELOPE_BUCKETS)
    ts, shown = gaps.broken_at_gaps(ends[index], {name: values[index] for name, values in columns.items()}, gap_ms)
    return {
        "alarm": 1.0,
        "critical": critical_ratio,
        "count": len(ts),
        "gap_ms": gap_ms,
        "ts": packed_times(ts, start_ms),
        **{name: packed_values(values) for name, values in shown.items()},
    }


# -- on the reading thread ---------------------------------------------------------------


def store_status(store: Store, config: Config) -> dict:
    """What only the store knows: its pages in use and evictions, alerts waiting for an
    operator, and the uplink: what waits in the outbox for cloud_sync and when it last uploaded
    (from its state file)."""
    upload = upload_state.read(config.state_path)  # None: no cloud agent has run on this gateway
    return {
        "store": {
            "data_bytes": store.disk_bytes(),
            "read_error": None,
            "evictions": {
                kind: {"rows": rows, "readings": readings} for kind, (rows, readings) in store.evictions().items()
            },
        },
        "alerts": store.alert_counts(),
        "uplink": {
            "configured": config.cloud is not None,
            "agent_seen": upload is not None,
            "last_upload_ms": (upload or {}).get("last_upload_ms") or None,
            "bytes_today": (upload or {}).get("bytes_today"),
            "batches": (upload or {}).get("batches"),
            "pending": store.outbox_waiting(upload_state.outbox_cursors(upload)),
        },
    }


def store_missing(config: Config, reason: str) -> dict:
    """store_status's shape while the store cannot be read: what comes from the state directory
    is null (unknown, not zero), and `read_error` says why. No I/O: the disk may hang."""
    return {
        "store": {"data_bytes": None, "evictions": None, "read_error": reason},
        "alerts": None,
        "uplink": {
            "configured": config.cloud is not None,
            "agent_seen": None,
            "last_upload_ms": None,
            "bytes_today": None,
            "batches": None,
            "pending": None,
        },
    }


def first_reading_ms(store: Store, device: str) -> int | None:
    """When the device's oldest data in the store begins: its raw readings or, once those are
    evicted, its one-minute summaries (a minute's start). None when it has none."""
    ids = [cid for cid, dev, _, _ in store.channels() if dev == device]
    if not ids:
        return None
    marks = ",".join("?" * len(ids))
    found = [
        store.conn.execute(f"SELECT min({column}) FROM {table} WHERE channel_id IN ({marks})", ids).fetchone()[0]
        for table, column in (
            ("reading_blocks", "first_ms"),
            ("summaries", "minute_ms"),
            ("summary_blocks", "first_ms"),
        )
    ]
    return min((f for f in found if f is not None), default=None)


def channel_series(store: Store, device: str, start_ms: int, end_ms: int, points: int, interval_ms: float) -> dict:
    """Each channel's raw readings in [start_ms, end_ms), cut down to about `points` buckets,
    a NaN point where no reading came for longer than a few polls."""
    gap_ms = gaps.gap_after(interval_ms, (end_ms - start_ms) / points, gaps.ENVELOPE_BUCKETS)
    out = []
    for channel_id, dev, channel, unit in store.channels():
        if dev != device:
            continue
        block = store.channel_readings(channel_id, start_ms, end_ms)
        index = envelope(block.ts_ms, block.values, start_ms, end_ms, points)
        ts, shown = gaps.broken_at_gaps(block.ts_ms[index], {"values": block.values[index]}, gap_ms)
        out.append(
            {
                "name": channel,
                "unit": unit,
                "readings": len(block),
                "count": len(ts),
                "ts": packed_times(ts, start_ms),
                "values": packed_values(shown["values"]),
            }
        )
    heap.trim()  # an hour of decoded readings was just freed: give it back (this thread's arena)
    return {"resolution": "raw", "point_ms": None, "gap_ms": gap_ms, "channels": out}


def channel_minutes(store: Store, device: str, start_ms: int, end_ms: int, point_ms: int, interval_ms: float) -> dict:
    """Each channel's one-minute summaries in [start_ms, end_ms), merged into points of
    `point_ms` (whole minutes): mean, lowest and highest reading; a NaN point at a gap."""
    base_ms = start_ms - start_ms % point_ms  # points stay on the same minutes as the span moves on
    gap_ms = gaps.gap_after(interval_ms, point_ms, gaps.MINUTE_BUCKETS)
    out = []
    for channel_id, dev, channel, unit in store.channels():
        if dev != device:
            continue
        # the store's columns as they are: a dict per minute (minute_summaries) would be
        # thousands of Python objects for a week
        minutes = store._minutes(channel_id, start_ms, end_ms).get(channel_id)
        merged = minute_points.merged(minutes, base_ms, point_ms)
        ts, shown = gaps.broken_at_gaps(
            merged.ts_ms, {"values": merged.mean, "min": merged.low, "max": merged.high}, gap_ms
        )
        out.append(
            {
                "name": channel,
                "unit": unit,
                "readings": merged.readings,
                "count": len(ts),
                "ts": packed_times(ts, start_ms),
                **{name: packed_values(values) for name, values in shown.items()},
            }
        )
    return {"resolution": "minutes", "point_ms": point_ms, "gap_ms": gap_ms, "channels": out}


def alerts(store: Store, limit: int, device: str | None, kinds: list[str] | None, unacknowledged: bool) -> list[dict]:
    return json_safe(store.alerts(limit, device, kinds=kinds, unacknowledged=unacknowledged))  # type: ignore[return-value]


def read_static(folder: Path) -> dict[str, tuple[bytes, str]]:
    """Every file the page needs, read once: name (relative, with "/") -> (bytes, content type)."""
    types = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".txt": "text/plain; charset=utf-8",
    }
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), types[p.suffix])
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in types
    }
