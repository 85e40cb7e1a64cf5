"""Batches of the seed plant's one-minute summaries, stored as the endpoint stores them: what
retraining and the fleet view read."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from cloud_sync import codec
from cloud_sync.records import content_digest, parse_batch

T0 = 1_780_000_000_000 // 60_000 * 60_000


def summary_records(devices: list[str], minutes: int, seed: int = 0, start_ms: int = T0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for m in range(minutes):
        packed = {}
        for device in devices:
            flow, current = 20 + rng.normal(), 10 + 0.3 * rng.normal()
            packed[device] = codec.encode_summary(
                {
                    "flow": {
                        "unit": "m3/h",
                        "count": 60,
                        "mean": flow,
                        "std": 0.5,
                        "min": flow - 1,
                        "max": flow + 1,
                        "last": flow,
                    },
                    "current": {
                        "unit": "A",
                        "count": 60,
                        "mean": current,
                        "std": 0.1,
                        "min": current - 0.2,
                        "max": current + 0.2,
                        "last": current,
                    },
                }
            )
        minute = start_ms + m * 60_000
        out.append({"key": f"summary:{minute}", "kind": "summary", "payload": {"minute_ms": minute, "devices": packed}})
    return out


def store_batch(storage, gateway: str, records: list[dict]) -> int:
    """Store records as one batch the way the endpoint does; the number new."""
    raw = json.dumps({"records": records}).encode()
    parsed = parse_batch(raw)
    batch_id = "b:" + hashlib.sha256("\n".join(r["key"] for r in records).encode()).hexdigest()[:40]
    outcome = storage.accept_batch(
        gateway,
        batch_id,
        parsed,
        wire_digest=hashlib.sha256(raw).hexdigest(),
        content_digest=content_digest(parsed),
        wire_bytes=len(raw),
    )
    return outcome.accepted
