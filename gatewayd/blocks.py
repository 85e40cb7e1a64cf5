"""Encoding a channel's readings as one compact block: the on-disk form of raw readings.

A block holds the readings of one channel in time order. Timestamps are stored as the first
timestamp and either one step (regular sampling, the common case: zero bytes per reading) or
the deltas; values as float32 when every value survives the round trip exactly (readings from
our nodes are float32 on the wire) and as float64 otherwise, so nothing is ever rounded.
Pure functions over numpy arrays, no I/O.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from dataclasses import dataclass

import numpy as np

VERSION = 1
assert sys.byteorder == "little", "blocks are little-endian; array() writes native order"
_HEADER = struct.Struct("<BBIqq")  # version, flags, count, first_ts_ms, step_ms
_REGULAR = 0x01
_FLOAT32 = 0x02
_DELTA16 = 0x04
_COMPRESSED = 0x08


class BlockError(ValueError):
    """A block that cannot be decoded: wrong version, truncated, or corrupt."""


@dataclass(frozen=True)
class Block:
    ts_ms: np.ndarray  # int64, non-decreasing
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.ts_ms)


SMALL = 64  # below this many readings numpy's per-call cost dominates: plain Python instead


def encode_small(ts: list[int], values: list[float]) -> bytes:
    """encode() for short lists (one write's share of a channel), same format, uncompressed:
    compaction later merges and compresses these blocks."""
    n = len(ts)
    if n == 0 or n != len(values):
        raise ValueError(f"need equal, non-empty lists, got {n} and {len(values)}")
    deltas = [b - a for a, b in zip(ts, ts[1:])]
    if deltas and min(deltas) < 0:
        raise ValueError("timestamps must not go backwards inside a block")
    flags = 0
    step = 0
    parts = []
    if not deltas or deltas.count(deltas[0]) == len(deltas):
        flags |= _REGULAR
        step = deltas[0] if deltas else 0
    elif max(deltas) < 1 << 16:
        flags |= _DELTA16
        parts.append(array("H", deltas).tobytes())
    else:
        if max(deltas) >= 1 << 32:
            raise ValueError("gap of more than 49 days inside one block")
        parts.append(array("I", deltas).tobytes())
    as32 = array("f", values)
    if as32.tolist() == values:  # exact in float32 (a NaN compares unequal: kept as float64)
        flags |= _FLOAT32
        parts.append(as32.tobytes())
    else:
        parts.append(array("d", values).tobytes())
    return _HEADER.pack(VERSION, flags, n, ts[0], step) + b"".join(parts)


def encode(ts_ms: np.ndarray, values: np.ndarray) -> bytes:
    """Encode readings (timestamps in UTC ms, non-decreasing) into a block."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != vals.shape or len(ts) == 0:
        raise ValueError(f"need equal, non-empty 1-d arrays, got {ts.shape} and {vals.shape}")
    deltas = np.diff(ts)
    if (deltas < 0).any():
        raise ValueError("timestamps must not go backwards inside a block")
    flags = 0
    step = 0
    parts: list[bytes] = []
    if len(deltas) == 0 or (deltas == deltas[0]).all():
        flags |= _REGULAR
        step = int(deltas[0]) if len(deltas) else 0
    elif deltas.max() < 1 << 16:
        flags |= _DELTA16
        parts.append(deltas.astype("<u2").tobytes())
    else:
        if deltas.max() >= 1 << 32:
            raise ValueError("gap of more than 49 days inside one block")
        parts.append(deltas.astype("<u4").tobytes())
    with np.errstate(over="ignore"):  # a float64 beyond float32's range simply fails the check
        as32 = vals.astype(np.float32)
    if np.array_equal(as32.astype(np.float64), vals, equal_nan=True):
        flags |= _FLOAT32
        parts.append(as32.astype("<f4").tobytes())
    else:
        parts.append(vals.astype("<f8").tobytes())
    payload = b"".join(parts)
    packed = zlib.compress(payload, 1)
    if len(packed) < len(payload):
        flags |= _COMPRESSED
        payload = packed
    return _HEADER.pack(VERSION, flags, len(ts), int(ts[0]), step) + payload


def decode(blob: bytes) -> Block:
    if len(blob) < _HEADER.size:
        raise BlockError(f"block of {len(blob)} bytes is shorter than its {_HEADER.size}-byte header")
    version, flags, count, first, step = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise BlockError(f"block version {version} is not supported (this gateway reads {VERSION})")
    payload = blob[_HEADER.size :]
    if flags & _COMPRESSED:
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise BlockError(f"corrupt block: {exc}") from None
    offset = 0
    if flags & _REGULAR:
        ts = first + step * np.arange(count, dtype=np.int64)
    else:
        width = 2 if flags & _DELTA16 else 4
        size = width * (count - 1)
        deltas = np.frombuffer(payload, dtype="<u2" if width == 2 else "<u4", count=count - 1, offset=0)
        ts = np.concatenate(([first], first + np.cumsum(deltas, dtype=np.int64)))
        offset = size
    width = 4 if flags & _FLOAT32 else 8
    if len(payload) - offset != width * count:
        raise BlockError(f"block says {count} readings but holds {len(payload) - offset} value bytes")
    values = np.frombuffer(payload, dtype="<f4" if width == 4 else "<f8", count=count, offset=offset)
    return Block(ts.astype(np.int64), values.astype(np.float64))


def merge(blocks: list[Block]) -> Block:
    """Readings of several blocks of one channel, in time order (stable for equal stamps)."""
    ts = np.concatenate([b.ts_ms for b in blocks])
    values = np.concatenate([b.values for b in blocks])
    order = np.argsort(ts, kind="stable")
    return Block(ts[order], values[order])
