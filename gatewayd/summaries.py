"""One-minute statistics per channel: computed from each write batch and merged into the
`summaries` table with exact pairwise formulas, so batches may split a minute anywhere."""

from __future__ import annotations

import math
from collections.abc import Iterator

MINUTE_MS = 60_000

# Merging two partial summaries of one minute (Chan, Golub, LeVeque): SQLite evaluates the
# right-hand sides on the row's old values.
UPSERT = (
    "INSERT INTO summaries (channel_id, minute_ms, count, mean, m2, min, max, last, last_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id, minute_ms) DO UPDATE SET "
    "count = count + excluded.count, "
    "mean = CASE WHEN count + excluded.count = 0 THEN NULL "
    "  ELSE (coalesce(mean, 0) * count + coalesce(excluded.mean, 0) * excluded.count) / (count + excluded.count) END, "
    "m2 = CASE WHEN count = 0 THEN excluded.m2 WHEN excluded.count = 0 THEN m2 "
    "  ELSE m2 + excluded.m2 + (excluded.mean - mean) * (excluded.mean - mean) * count * excluded.count "
    "  / (count + excluded.count) END, "
    "min = CASE WHEN min IS NULL OR excluded.min < min THEN excluded.min ELSE min END, "
    "max = CASE WHEN max IS NULL OR excluded.max > max THEN excluded.max ELSE max END, "
    "last = CASE WHEN excluded.last_ms >= last_ms THEN excluded.last ELSE last END, "
    "last_ms = max(last_ms, excluded.last_ms)"
)


def rows(channel_id: int, ts: list[int], values: list[float]) -> Iterator[tuple]:
    """Summary rows of one channel's readings (timestamps in order), one per minute touched.
    NaN readings count for `last` only; statistics cover the numbers."""
    start = 0
    n = len(ts)
    while start < n:
        minute = ts[start] - ts[start] % MINUTE_MS
        end = start
        while end < n and ts[end] - minute < MINUTE_MS:
            end += 1
        chunk = [v for v in values[start:end] if v == v]
        count = len(chunk)
        if count:
            mean = math.fsum(chunk) / count
            m2 = math.fsum((v - mean) * (v - mean) for v in chunk)
            low, high = min(chunk), max(chunk)
        else:
            mean = m2 = low = high = None
        yield (channel_id, minute, count, mean, m2, low, high, values[end - 1], ts[end - 1])
        start = end
