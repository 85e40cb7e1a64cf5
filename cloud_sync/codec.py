"""Compact payloads for the uplink, where bytes cost money.

Summary of one device for one minute: channel names, units and sample counts in the clear;
the statistics packed as base64 of, per channel, the mean as float32 and std, min - mean,
max - mean and last - mean as float16 (relative to the mean, so a few significant digits of a
small spread survive on a large level). 12 bytes per channel-minute instead of ~130 in JSON.

Window of raw readings: the gateway's own block encoding (`gatewayd.store.blocks`: first timestamp
and step or deltas, values as float32 when exact), base64; full resolution, nothing rounded.
"""

from __future__ import annotations

import base64

import numpy as np

from gatewayd.store import blocks

SUMMARY_ENCODING = "f32-mean+f16-spread/1"
FIELDS = ("mean", "std", "min", "max", "last")


def encode_summary(channels: dict[str, dict]) -> dict:
    names = sorted(channels)
    stats = np.array(
        [[np.nan if channels[c].get(f) is None else channels[c][f] for f in FIELDS] for c in names], dtype=np.float64
    ).reshape(len(names), len(FIELDS))
    mean = stats[:, 0].astype(np.float32)
    spread = np.column_stack([stats[:, 1], stats[:, 2:] - stats[:, :1]]).astype(np.float16)
    return {
        "channels": names,
        "units": [channels[c].get("unit") or "" for c in names],
        "count": [int(channels[c].get("count") or 0) for c in names],
        "encoding": SUMMARY_ENCODING,
        "data": base64.b64encode(mean.astype("<f4").tobytes() + spread.astype("<f2").tobytes()).decode(),
    }


def decode_summary(payload: dict) -> dict[str, dict]:
    if payload.get("encoding") != SUMMARY_ENCODING:
        raise ValueError(f"unknown summary encoding {payload.get('encoding')!r}")
    n = len(payload["channels"])
    raw = base64.b64decode(payload["data"])
    if len(raw) != n * 12:
        raise ValueError(f"summary data: {len(raw)} bytes for {n} channels")
    mean = np.frombuffer(raw[: 4 * n], dtype="<f4").astype(np.float64)
    spread = np.frombuffer(raw[4 * n :], dtype="<f2").astype(np.float64).reshape(n, 4)
    out = {}
    for i, c in enumerate(payload["channels"]):
        values = [mean[i], spread[i, 0], mean[i] + spread[i, 1], mean[i] + spread[i, 2], mean[i] + spread[i, 3]]
        out[c] = {
            "unit": payload["units"][i],
            "count": payload["count"][i],
            **{f: (None if np.isnan(v) else float(v)) for f, v in zip(FIELDS, values)},
        }
    return out


def encode_window(ts_ms: np.ndarray, values: np.ndarray) -> str:
    return base64.b64encode(blocks.encode(ts_ms, values)).decode()


def decode_window(data: str) -> blocks.Block:
    return blocks.decode(base64.b64decode(data))
