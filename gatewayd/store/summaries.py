"""One-minute statistics per channel: computed from each write batch and merged into the
`summaries` table with exact pairwise formulas, so batches may split a minute anywhere; and
the compact form older minutes take, many minutes of a channel in one block.

A summary block (version 1) holds a channel's minutes in order, every field bit-exact: the
columns of the rows (minute, count, mean, m2, min, max, last, last_ms) in the streams of
gatewayd/store/blocks.py (byte planes, deflated plane by plane, CRC-32).

- minute, count and last_ms - minute: integer streams (offsets or deltas).
- min, max, last: value columns as a block stores readings: node values are counts on the
  channel's grid (2^-k or 10^-d), anything else keeps its float64 bits.
- mean and m2 are float64 results of the merges and must come back to the bit. On a grid of
  step 1/g, count * mean * g is nearly the integer sum of the counts, and count * m2 * g^2
  the integer count * sum(c^2) - sum(c)^2: stored are that integer and how many doubles the
  value lies from the prediction (integer / g / count), a few bits. Without a grid (or when
  cheaper) the float64 bits are stored as a value column.
NULL (SQLite stores a NaN as NULL) is a NaN in a block, and NULL again when read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from gatewayd.store import blocks

MINUTE_MS = 60_000
VERSION = 1
MAX_MINUTES = 1 << 20

_HEAD = struct.Struct("<BBI")  # version, compression, minutes
_FLAG_AT = 1
_MODE = struct.Struct("<B")  # how a mean or m2 column is stored
_SCALE = struct.Struct("<d")
_AS_VALUES, _PREDICTED = 0, 1

# Merging two partial summaries of one minute (Chan, Golub, LeVeque): SQLite evaluates the
# right-hand sides on the row's old values. A row keeps the write order (`seq`) of its first
# write: eviction goes oldest written first.
MERGE = (
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
UPSERT = (
    "INSERT INTO summaries (channel_id, minute_ms, count, mean, m2, min, max, last, last_ms, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id, minute_ms) DO UPDATE SET " + MERGE
)


def rows(channel_id: int, ts: list[int], values: list[float]) -> Iterator[tuple]:
    """Summary rows of one channel's readings (timestamps in order), one per minute touched:
    (channel_id, minute_ms, count, mean, m2, min, max, last, last_ms). NaN readings count for
    `last` only; statistics cover the numbers."""
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
            mean = _sum(chunk) / count
            m2 = _sum([(v - mean) * (v - mean) for v in chunk])
            low, high = min(chunk), max(chunk)
        else:
            mean = m2 = low = high = None
        yield (channel_id, minute, count, mean, m2, low, high, values[end - 1], ts[end - 1])
        start = end


def _sum(values: list[float]) -> float:
    """The exactly rounded sum; where it does not exist (an infinity, or a sum beyond the
    largest double), the plain one: a reading of 1e308 must not stop the writer."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return sum(values)


@dataclass(frozen=True)
class Minutes:
    """A channel's minutes as columns, in the order of the table's fields; NaN where a row
    holds NULL."""

    minute_ms: np.ndarray  # int64
    count: np.ndarray  # int64
    mean: np.ndarray  # float64
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    last_ms: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.minute_ms)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> Minutes:
        """From rows (minute_ms, count, mean, m2, min, max, last, last_ms), as the table holds them."""
        columns = list(zip(*rows)) if rows else [()] * 8
        ints = [np.array(columns[i], np.int64) for i in (0, 1, 7)]
        floats = [np.array([math.nan if v is None else v for v in columns[i]], np.float64) for i in range(2, 7)]
        mean, m2, low, high, last = floats
        return cls(ints[0], ints[1], mean, m2, low, high, last, ints[2])

    def rows(self) -> list[tuple]:
        """The rows back, NULL for NaN."""
        floats = [
            [None if v != v else v for v in column.tolist()]
            for column in (self.mean, self.m2, self.min, self.max, self.last)
        ]
        return list(zip(self.minute_ms.tolist(), self.count.tolist(), *floats, self.last_ms.tolist()))

    def take(self, keep: np.ndarray | slice) -> Minutes:
        """The minutes where `keep` (a mask or indices) says."""
        return Minutes(*(getattr(self, f)[keep] for f in _FIELDS))

    @staticmethod
    def concat(parts: Sequence[Minutes]) -> Minutes:
        """The minutes of several parts, one after the other."""
        return Minutes(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def order(self) -> np.ndarray:
        """The indices that put the minutes in time order."""
        return np.argsort(self.minute_ms, kind="stable")


_FIELDS = ("minute_ms", "count", "mean", "m2", "min", "max", "last", "last_ms")


def encode_block(m: Minutes) -> bytes:
    """A channel's minutes (in time order) as one summary block."""
    n = len(m)
    if not 0 < n <= MAX_MINUTES:
        raise ValueError(f"a summary block holds 1 to {MAX_MINUTES} minutes, not {n}")
    if (np.diff(m.minute_ms) <= 0).any():
        raise ValueError("minutes must be in time order, each once")
    scale = blocks.grid_scale(np.concatenate((m.min, m.max, m.last)))
    offsets = (m.last_ms.view(np.uint64) - m.minute_ms.view(np.uint64)).view(np.int64)
    columns = [blocks.integer_column(x) for x in (m.minute_ms, m.count, offsets)]
    for x, power in ((m.mean, 1), (m.m2, 2)):
        best = blocks.value_column(x)
        best = (best[0], _MODE.pack(_AS_VALUES) + best[1], best[2])
        if scale is not None:
            with np.errstate(over="ignore"):
                predicted = _predicted(x, m.count, float(np.float64(scale) ** power))  # inf for a tiny grid: no use
            if predicted[0] < best[0]:
                best = predicted
        columns.append(best)
    columns += [blocks.value_column(x) for x in (m.min, m.max, m.last)]
    head = _HEAD.pack(VERSION, 0, n) + b"".join(c[1] for c in columns)
    return blocks.frame(head, _FLAG_AT, [plane for c in columns for plane in c[2]])


def _prediction(sums: np.ndarray, count: np.ndarray, scale: float) -> np.ndarray:
    """What a mean (or an m2) nearly is, from its integer on the grid: integer / scale / count."""
    with np.errstate(all="ignore"):
        return np.where(count > 0, sums.astype(np.float64) / scale / count, 0.0)


def _predicted(x: np.ndarray, count: np.ndarray, scale: float) -> tuple[float, bytes, list[bytes]]:
    with np.errstate(all="ignore"):
        t = x * count * scale
        sums = np.where(np.isfinite(t) & (np.abs(t) < 2.0**62), np.round(t), 0).astype(np.int64)
    residuals = (blocks.order_keys(x) - blocks.order_keys(_prediction(sums, count, scale))).view(np.int64)
    cost_s, descriptor_s, planes_s = blocks.integer_column(sums)
    cost_r, descriptor_r, planes_r = blocks.integer_column(residuals)
    descriptor = _MODE.pack(_PREDICTED) + _SCALE.pack(scale) + descriptor_s + descriptor_r
    return cost_s + cost_r + _SCALE.size, descriptor, planes_s + planes_r


def decode_block(blob: bytes) -> Minutes:
    """The minutes of a summary block; BlockError when it is corrupt."""
    if len(blob) < 1 or blob[0] != VERSION:
        version = blob[0] if len(blob) else "missing"
        raise blocks.BlockError(f"summary block version {version} is not supported (this gateway reads {VERSION})")
    return blocks.guarded(_decode, blob)


def _decode(blob: bytes) -> Minutes:
    r = blocks.FrameReader(blob, _HEAD, _FLAG_AT)
    n = r.head[2]
    if not 0 < n <= MAX_MINUTES:
        raise blocks.BlockError(f"corrupt summary block: {n} minutes")
    integer_specs = [r.integer_column(n) for _ in range(3)]
    stat_specs: list[tuple] = []
    for _ in range(2):
        (mode,) = r.take(_MODE)
        if mode == _AS_VALUES:
            stat_specs.append((mode, r.value_column(n)))
        elif mode == _PREDICTED:
            stat_specs.append((mode, *r.take(_SCALE), r.integer_column(n), r.integer_column(n)))
        else:
            raise blocks.BlockError(f"corrupt summary block: statistics stored as {mode}")
    value_specs = [r.value_column(n) for _ in range(3)]
    r.inflate()
    minute_ms, count, offsets = (r.integers(spec).view(np.int64) for spec in integer_specs)
    stats = []
    for spec in stat_specs:
        if spec[0] == _AS_VALUES:
            stats.append(r.values(spec[1]))
        else:
            sums, residuals = r.integers(spec[2]).view(np.int64), r.integers(spec[3])
            stats.append(blocks.from_order_keys(blocks.order_keys(_prediction(sums, count, spec[1])) + residuals))
    if (np.diff(minute_ms) <= 0).any():
        raise blocks.BlockError("corrupt summary block: minutes out of order")
    last_ms = (minute_ms.view(np.uint64) + offsets.view(np.uint64)).view(np.int64)
    low, high, last = (r.values(spec) for spec in value_specs)
    return Minutes(minute_ms, count, stats[0], stats[1], low, high, last, last_ms)
