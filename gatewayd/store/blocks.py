"""Encoding a channel's readings as one compact block: the on-disk form of raw readings.

A block holds the readings of one channel in time order, bit-exact: every int64 timestamp
(non-decreasing, duplicates allowed, any gap) and every float64 value, NaN payloads, infinities
and -0.0 included, comes back with the same bits.

Version 2 (written here; version 1 blocks are still read) is a fixed header, the descriptors of
the streams it holds, their bytes (deflated when that is smaller) and a CRC-32 of all that.

- Timestamps: the first one and a step; when the step is not exact (a poll is stamped with
  the wall clock after it: 998..1004 ms apart), the residuals from first + i * step, as
  offsets from the smallest or as deltas (delta minus step), whichever is smaller.
- Values, the smallest of:
  - counts on a binary grid: node readings are integer counts of 2^-k (firmware/README.md)
    and every float32 is on some grid too: value = count * 2**-k, |count| < 2^53;
  - counts on a decimal grid: value = count / 10**d (parsed from text) or count * 10**-d
    (a register scaled by 0.1), d = 1..9;
    either as offsets from the block's smallest count (noise-like channels) or as deltas
    (autocorrelated ones), NaN, infinities and -0.0 listed apart with their bits;
  - a table of the distinct values (at most a quarter of the readings) and an index stream;
  - the float64 bits, XOR with the previous value (Gorilla, Pelikan et al., VLDB 2015) or
    deltas of the bits.
- An integer stream is zigzagged where it is signed and split into byte planes (byte 0 of
  every element, then byte 1, ...); planes that are all zero are left out, so a small count
  costs one plane and a float32 stored as float64 skips its three low planes. Each plane is
  its own deflate block (its own Huffman table), run-length coded (Z_RLE). The choice between
  the ways above is made on each plane's order-0 entropy, before compressing.

`encode_small` writes the same format without the search and without compression: the values
as raw float32 (when every value is one) or float64. Compaction merges small blocks into large
ones with `encode`. Pure functions over numpy arrays, no I/O.

The same streams serve other compact records (the summary blocks of gatewayd/store/summaries.py):
`integer_column` and `value_column` encode a column, `frame` deflates the planes and seals the
record, `FrameReader` reads it back column by column.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from gatewayd.errors import GatewayError

VERSION = 2
assert sys.byteorder == "little", "blocks are little-endian; array() writes native order"
MAX_COUNT = 1 << 24  # readings in one block; a header claiming more is corrupt
T = TypeVar("T")

_V1_HEADER = struct.Struct("<BBIqq")  # version, flags, count, first_ts_ms, step_ms
_V1_REGULAR = 0x01
_V1_FLOAT32 = 0x02
_V1_DELTA16 = 0x04
_V1_COMPRESSED = 0x08

_HEADER = struct.Struct("<BBBBIq")  # version, time kind, value kind, compression, count, first_ts_ms
_FLAG_AT = 3  # the header's compression byte
_STEP = struct.Struct("<Q")  # regular timestamps: the step, as an unsigned 64-bit integer
_STREAM = struct.Struct("<BBQ")  # integer stream: mode, plane mask, base (64 bits)
_GRID = struct.Struct("<hI")  # values on a grid: k (count * 2**-k) or d (count / 10**d), exceptions
_TABLE = struct.Struct("<I")  # values from a table: its length
_KIND = struct.Struct("<B")  # a value column's kind (in a block, the header says it)
_CRC = struct.Struct("<I")

_TIME_REGULAR, _TIME_STREAM = 0, 1
_VALUES_F64, _VALUES_F32, _VALUES_GRID, _VALUES_BITS = 0, 1, 2, 3  # raw, raw, counts of 2**-k, float64 bits
_VALUES_DECIMAL, _VALUES_SCALED, _VALUES_TABLE = 4, 5, 6  # counts / 10**d, counts * 10**-d, a table
_RAW, _DEFLATE = 0, 1
_OFFSET, _DELTA, _XOR = 0, 1, 2  # integer stream modes

_U64 = np.uint64
_M64 = (1 << 64) - 1
_NEG_ZERO = 0x8000_0000_0000_0000
# Deflate as run-length coding plus Huffman: on byte planes of noisy readings, LZ77's string
# matches cost more than they save, Z_RLE is as small as zstd and levels 1..9 (bench/block_codec.py)
_LEVEL = 6  # Z_RLE codes the same at every level
_STRATEGY = zlib.Z_RLE


class BlockError(GatewayError, ValueError):
    """A block that cannot be decoded: wrong version, truncated, or corrupt."""


@dataclass(frozen=True)
class Block:
    ts_ms: np.ndarray  # int64, non-decreasing
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.ts_ms)


SMALL = 64  # below this many readings numpy's per-call cost dominates: plain Python instead


def _check_count(n: int, other: int) -> None:
    if n == 0 or n != other:
        raise ValueError(f"need equal, non-empty lists, got {n} and {other}")
    if n > MAX_COUNT:
        raise ValueError(f"{n} readings in one block: at most {MAX_COUNT}")


def encode_small(ts: list[int], values: list[float]) -> bytes:
    """encode() for short lists (one write's share of a channel), same format, uncompressed:
    compaction later merges and compresses these blocks."""
    n = len(ts)
    _check_count(n, len(values))
    deltas = [b - a for a, b in zip(ts, ts[1:])]
    parts = []
    if not deltas or deltas.count(deltas[0]) == len(deltas):
        if deltas and deltas[0] < 0:
            raise ValueError("timestamps must not go backwards inside a block")
        time_kind = _TIME_REGULAR
        parts.append(_STEP.pack(deltas[0] if deltas else 0))
    else:
        step = min(deltas)
        if step < 0:
            raise ValueError("timestamps must not go backwards inside a block")
        # the residuals' deltas (d - step, from 0 to 2**64 - 1), zigzagged as int64 values
        zigzagged = [2 * r if r < 1 << 63 else 2 * ((1 << 64) - r) - 1 for r in (d - step for d in deltas)]
        width = (max(zigzagged).bit_length() + 7) // 8
        size = 1 if width == 1 else 2 if width == 2 else 4 if width <= 4 else 8
        raw = array("BHIQ"[size.bit_length() - 1], zigzagged).tobytes()
        time_kind = _TIME_STREAM
        parts.append(_STEP.pack(step) + _STREAM.pack(_DELTA, (1 << width) - 1, 0))
        parts.extend(raw[j::size] for j in range(width))
    as32 = array("f", values)
    if as32.tolist() == values:  # exact in float32 (a NaN compares unequal: kept as float64)
        value_kind = _VALUES_F32
        parts.append(as32.tobytes())
    else:
        value_kind = _VALUES_F64
        parts.append(array("d", values).tobytes())
    blob = _HEADER.pack(VERSION, time_kind, value_kind, _RAW, n, ts[0]) + b"".join(parts)
    return blob + _CRC.pack(zlib.crc32(blob))


# -- integer streams ------------------------------------------------------------------------


def _zigzag(d: np.ndarray) -> np.ndarray:
    return (d << _U64(1)) ^ (d.view(np.int64) >> 63).view(np.uint64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> _U64(1)) ^ (_U64(0) - (z & _U64(1)))


def _stream(x: np.ndarray, mode: int, signed: bool) -> tuple[int, np.ndarray]:
    """The base and elements (uint64, wrapping arithmetic: exact for any 64-bit input) of `x`."""
    if mode == _OFFSET:
        base = int(x.view(np.int64).min()) & _M64 if signed else int(x.min())
        return base, x - _U64(base)
    if mode == _DELTA:
        return int(x[0]), _zigzag(x[1:] - x[:-1])
    return int(x[0]), x[1:] ^ x[:-1]


def _planes(elements: np.ndarray) -> tuple[int, np.ndarray]:
    """The plane mask and the planes that are not all zero (one row per plane)."""
    if len(elements) == 0:
        return 0, np.zeros((0, 0), np.uint8)
    as_bytes = elements.astype("<u8").view(np.uint8).reshape(-1, 8)
    present = as_bytes.any(axis=0)
    return int(np.packbits(present, bitorder="little")[0]), as_bytes[:, present].T


def _cost(planes: np.ndarray) -> float:
    """Estimated deflated size of the planes: order-0 entropy of each (what Huffman codes reach)."""
    total = 0.0
    for plane in planes:
        counts = np.bincount(plane, minlength=256)
        counts = counts[counts > 0]
        m = len(plane)
        # entropy in bytes: (m*log2(m) - sum(c*log2(c))) / 8
        table = 20 if len(counts) > 1 else 2  # a Huffman table's cost, roughly
        total += (m * np.log2(m) - float((counts * np.log2(counts)).sum())) / 8 + table
    return total


def _best_stream(x: np.ndarray, modes: tuple[int, ...], signed: bool) -> tuple[float, bytes, list[bytes]]:
    """The cheapest of `modes` for `x`: estimated cost, descriptor, planes."""
    best: tuple[float, bytes, list[bytes]] | None = None
    for mode in modes:
        base, elements = _stream(x, mode, signed)
        mask, planes = _planes(elements)
        cost = _cost(planes)
        if best is None or cost < best[0]:
            best = (cost, _STREAM.pack(mode, mask, base), [plane.tobytes() for plane in planes])
    assert best is not None
    return best


def _exceptions(vals: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Where a value cannot be a count on a grid: NaN, infinities, -0.0."""
    return ~np.isfinite(vals) | (bits == _U64(_NEG_ZERO))


def _binary_grid(plain: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """(kind, k, counts) when every value (finite, not -0.0) is count * 2**-k, |count| < 2**53."""
    nonzero = plain[plain != 0].view(np.uint64)
    k = 0
    if len(nonzero):
        exponent = ((nonzero >> _U64(52)) & _U64(0x7FF)).astype(np.int64)
        mantissa = nonzero & _U64((1 << 52) - 1)
        mantissa = np.where(exponent > 0, mantissa | _U64(1 << 52), mantissa)
        lowest_bit = mantissa & (_U64(0) - mantissa)
        _, shift = np.frexp(lowest_bit.astype(np.float64))  # lowest set bit is 2**(shift - 1)
        low_exponent = np.maximum(exponent, 1) - 1075 + shift - 1
        k = -int(low_exponent.min())
    with np.errstate(over="ignore"):
        counts = np.ldexp(plain, k)
    if len(counts) and not np.abs(counts).max() < 2.0**53:
        return None
    return _VALUES_GRID, k, counts.astype(np.int64)


def _decimal_grid(plain: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """(kind, d, counts) when every value is count / 10**d as parsed from decimal text, or
    count * 10**-d as a register scaled by 0.1, 0.01 ... gives (1 <= d <= 9, |count| < 2**53)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _decimal_search(plain)


def _decimal_search(plain: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    sample = plain[:16]
    for d in range(1, 10):
        scale, inverse = 10.0**d, 10.0**-d
        guess = np.round(sample * scale)
        if (guess / scale == sample).all():
            kind = _VALUES_DECIMAL
        elif (guess * inverse == sample).all():
            kind = _VALUES_SCALED
        else:
            continue
        counts = np.round(plain * scale)
        if not np.abs(counts).max() < 2.0**53:
            return None
        if ((counts / scale if kind == _VALUES_DECIMAL else counts * inverse) == plain).all():
            return kind, d, counts.astype(np.int64)
    return None


def _scaled(vals: np.ndarray, special: np.ndarray, find) -> tuple[int, int, np.ndarray] | None:
    """A grid found by `find` over the values that are not exceptions, with each exception's
    count repeating its neighbour's (so deltas stay small)."""
    exceptions = np.flatnonzero(special)
    if not len(exceptions):
        return find(vals)
    keep = np.flatnonzero(~special)
    if not len(keep):
        return _VALUES_GRID, 0, np.zeros(len(vals), np.int64)
    found = find(vals[keep])
    if found is None:
        return None
    kind, scale, counts = found
    full = np.zeros(len(vals), np.int64)
    full[keep] = counts
    source = np.maximum.accumulate(np.where(special, -1, np.arange(len(vals))))
    source[source < 0] = keep[0]
    return kind, scale, full[source]


def _order_keys(bits: np.ndarray) -> np.ndarray:
    """float64 bits to unsigned keys in the order of the values (negative values flipped)."""
    negative = (bits >> _U64(63)).astype(bool)
    return np.where(negative, ~bits, bits | _U64(1 << 63))


def _from_order_keys(keys: np.ndarray) -> np.ndarray:
    positive = (keys >> _U64(63)).astype(bool)
    return np.where(positive, keys ^ _U64(1 << 63), ~keys)


def _best_values(vals: np.ndarray, bits: np.ndarray) -> tuple[float, int, list[bytes], list[bytes]]:
    """The cheapest way to store the values: estimated cost, value kind, descriptors, planes."""
    n = len(vals)
    cost, descriptor, data = _best_stream(bits, (_XOR, _DELTA), signed=True)
    best = (cost, _VALUES_BITS, [descriptor], data)
    special = _exceptions(vals, bits)
    exceptions = np.flatnonzero(special)
    for find in (_binary_grid, _decimal_grid):
        found = _scaled(vals, special, find)
        if found is None:
            continue
        kind, scale, counts = found
        cost, descriptor, data = _best_stream(counts.view(np.uint64), (_OFFSET, _DELTA), signed=True)
        descriptors = [_GRID.pack(scale, len(exceptions)), descriptor]
        if len(exceptions):
            where = _best_stream(exceptions.astype(np.uint64), (_DELTA,), signed=False)
            cost += where[0] + 8 * len(exceptions)
            descriptors.append(where[1])
            data = data + where[2] + [bits[exceptions].astype("<u8").tobytes()]
        if cost < best[0]:
            best = (cost, kind, descriptors, data)
        if kind == _VALUES_GRID and best[1] == kind and counts.min() > -(1 << 24) and counts.max() < 1 << 24:
            break  # integer counts of a node: no decimal grid will be smaller
    keys = _order_keys(bits)
    table, index = np.unique(keys, return_inverse=True)
    if len(table) <= n // 4:
        cost, descriptor, data = _best_stream(table, (_DELTA,), signed=False)
        where = _best_stream(index.astype(np.uint64), (_OFFSET, _DELTA), signed=True)
        if cost + where[0] < best[0]:
            descriptors = [_TABLE.pack(len(table)), descriptor, where[1]]
            best = (cost + where[0], _VALUES_TABLE, descriptors, data + where[2])
    return best


def _encode_parts(ts_ms: np.ndarray, values: np.ndarray) -> tuple[bytes, list[bytes]]:
    """The block's header and descriptors, and its payload as a list of planes (uncompressed)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != vals.shape:
        raise ValueError(f"need equal, non-empty 1-d arrays, got {ts.shape} and {vals.shape}")
    n = len(ts)
    _check_count(n, len(vals))
    if (ts[1:] < ts[:-1]).any():
        raise ValueError("timestamps must not go backwards inside a block")
    unsigned = ts.view(np.uint64)
    deltas = unsigned[1:] - unsigned[:-1]  # exact: a gap of up to 2**64 - 1 wraps back on decode
    parts: list[bytes] = []
    planes: list[bytes] = []
    if len(deltas) == 0 or (deltas == deltas[0]).all():
        time_kind = _TIME_REGULAR
        parts.append(_STEP.pack(int(deltas[0]) if len(deltas) else 0))
    else:
        time_kind = _TIME_STREAM
        step = np.partition(deltas, len(deltas) // 2)[len(deltas) // 2]  # the median delta
        residuals = unsigned - unsigned[0] - step * np.arange(n, dtype=np.uint64)
        _, descriptor, data = _best_stream(residuals, (_OFFSET, _DELTA), signed=True)
        parts.append(_STEP.pack(int(step)) + descriptor)
        planes.extend(data)

    bits = vals.view(np.uint64)
    _, value_kind, descriptors, data = _best_values(vals, bits)
    parts.extend(descriptors)
    planes.extend(data)
    head = _HEADER.pack(VERSION, time_kind, value_kind, _RAW, n, int(ts[0])) + b"".join(parts)
    return head, planes


def encode(ts_ms: np.ndarray, values: np.ndarray) -> bytes:
    """Encode readings (timestamps in UTC ms, non-decreasing) into a block."""
    head, planes = _encode_parts(ts_ms, values)
    return frame(head, _FLAG_AT, planes)


def frame(head: bytes, flag_at: int, planes: list[bytes]) -> bytes:
    """A head (with descriptors), then the planes, deflated plane by plane when that is smaller
    (the head's byte at `flag_at` says which), then a CRC-32 of all that."""
    payload = b"".join(planes)
    flag = _RAW
    if len(payload) > 64:
        packed = _deflate(planes)
        if len(packed) < len(payload):
            flag, payload = _DEFLATE, packed
    blob = head[:flag_at] + bytes([flag]) + head[flag_at + 1 :] + payload
    return blob + _CRC.pack(zlib.crc32(blob))


# -- columns: a block's streams for other compact records (summaries.py) ----------------------


def integer_column(x: np.ndarray) -> tuple[float, bytes, list[bytes]]:
    """An int64 column stored as a block stores its integers (offsets from the smallest or
    zigzagged deltas, whichever is smaller): estimated cost, descriptor, byte planes.
    FrameReader.integer_column and .integers read it back (view the result as int64)."""
    return _best_stream(np.ascontiguousarray(x, np.int64).view(np.uint64), (_OFFSET, _DELTA), signed=True)


def value_column(x: np.ndarray) -> tuple[float, bytes, list[bytes]]:
    """A float64 column stored as a block stores its values, bit-exact: estimated cost,
    descriptor (the value kind, then its own descriptors), byte planes. FrameReader.value_column
    and .values read it back."""
    vals = np.ascontiguousarray(x, np.float64)
    cost, kind, descriptors, planes = _best_values(vals, vals.view(np.uint64))
    return cost, _KIND.pack(kind) + b"".join(descriptors), planes


def grid_scale(x: np.ndarray) -> float | None:
    """The grid every finite value of `x` lies on, as the factor that makes them integer
    counts (2**k for a binary grid, 10**d for a decimal one); None when there is none."""
    vals = np.ascontiguousarray(x, np.float64)
    special = _exceptions(vals, vals.view(np.uint64))
    for find in (_binary_grid, _decimal_grid):
        found = _scaled(vals, special, find)
        if found is not None:
            kind, scale, _ = found
            with np.errstate(over="ignore"):
                return float(np.ldexp(1.0, scale)) if kind == _VALUES_GRID else 10.0**scale
    return None


def order_keys(x: np.ndarray) -> np.ndarray:
    """float64 values as unsigned 64-bit keys in the values' order (NaNs beyond the
    infinities): the difference of two keys counts the doubles between them."""
    return _order_keys(np.ascontiguousarray(x, np.float64).view(np.uint64))


def from_order_keys(keys: np.ndarray) -> np.ndarray:
    """The float64 values of order keys, bit-exact."""
    return _from_order_keys(keys).view(np.float64)


def _deflate(planes: list[bytes]) -> bytes:
    """One raw deflate stream, a deflate block (with its own Huffman table) per plane."""
    z = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, 9, _STRATEGY)
    out = [z.compress(plane) + z.flush(zlib.Z_BLOCK) for plane in planes]
    out.append(z.flush())
    return b"".join(out)


# -- decoding -------------------------------------------------------------------------------


def decode(blob: bytes) -> Block:
    if len(blob) < 1:
        raise BlockError("empty block")
    if blob[0] == 1:
        return _decode_v1(blob)
    if blob[0] != VERSION:
        raise BlockError(f"block version {blob[0]} is not supported (this gateway reads 1 and {VERSION})")
    return guarded(_decode_v2, blob)


def guarded(decoder: Callable[[bytes], T], blob: bytes) -> T:
    """decoder(blob), any error of forged input (behind a valid checksum) raised as BlockError."""
    try:
        return decoder(blob)
    except BlockError:
        raise
    except (ValueError, struct.error, zlib.error, OverflowError, IndexError, MemoryError) as exc:
        raise BlockError(f"corrupt block: {exc}") from None


class _Reader:
    def __init__(self, blob: bytes | memoryview) -> None:
        self.blob = blob
        self.at = 0

    def take(self, layout: struct.Struct) -> tuple:
        if self.at + layout.size > len(self.blob):
            raise BlockError("corrupt block: truncated")
        fields = layout.unpack_from(self.blob, self.at)
        self.at += layout.size
        return fields

    def stream(self) -> tuple[int, int, int]:
        """An integer stream's descriptor: mode, plane mask, base."""
        mode, mask, base = self.take(_STREAM)
        return mode, mask, base

    def bytes(self, size: int) -> memoryview:
        if self.at + size > len(self.blob):
            raise BlockError("corrupt block: truncated")
        out = memoryview(self.blob)[self.at : self.at + size]
        self.at += size
        return out


def _stream_length(mode: int, n: int) -> int:
    if mode not in (_OFFSET, _DELTA, _XOR):
        raise BlockError(f"corrupt block: integer stream mode {mode}")
    return n if mode == _OFFSET else max(n - 1, 0)


def _unstream(mode: int, mask: int, base: int, n: int, payload: _Reader) -> np.ndarray:
    """n uint64 values back from an integer stream."""
    m = _stream_length(mode, n)
    elements = np.zeros((m, 8), np.uint8)
    for j in range(8):
        if mask >> j & 1:
            elements[:, j] = np.frombuffer(payload.bytes(m), np.uint8)
    x = elements.view("<u8").reshape(m)
    if mode == _OFFSET:
        return x + _U64(base)
    head = np.array([base], np.uint64)
    if mode == _DELTA:
        return np.cumsum(np.concatenate((head, _unzigzag(x))), dtype=np.uint64)
    return np.bitwise_xor.accumulate(np.concatenate((head, x)))


def _plane_bytes(mode: int, mask: int, n: int) -> int:
    return _stream_length(mode, n) * int(mask).bit_count()


class FrameReader(_Reader):
    """Reads what `frame` wrote: checks the CRC and takes the head, then the descriptors of
    the columns in order (each adds the payload bytes it announces), then, once `inflate`
    has unpacked the payload, each column in the same order. Raises BlockError (or, on
    forged input, an error decode() turns into one)."""

    def __init__(self, blob: bytes, head: struct.Struct, flag_at: int) -> None:
        if len(blob) < head.size + _CRC.size:
            raise BlockError(f"block of {len(blob)} bytes is shorter than its {head.size + _CRC.size}-byte frame")
        body = memoryview(blob)[: -_CRC.size]
        (crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
        if zlib.crc32(body) != crc:
            raise BlockError("corrupt block: checksum mismatch")
        super().__init__(body)
        self.head = self.take(head)
        self.compression = blob[flag_at]
        self.size = 0  # payload bytes announced so far
        self.payload = _Reader(b"")

    def integer_column(self, n: int) -> tuple[int, int, int, int]:
        """The descriptor of an integer stream of n elements."""
        mode, mask, base = self.stream()
        self.size += _plane_bytes(mode, mask, n)
        return mode, mask, base, n

    def value_column(self, n: int, kind: int | None = None) -> tuple:
        """The descriptors of n values of `kind` (read from the column when None)."""
        if kind is None:
            (kind,) = self.take(_KIND)
        if kind == _VALUES_F64:
            self.size += 8 * n
            return (kind, n)
        if kind == _VALUES_F32:
            self.size += 4 * n
            return (kind, n)
        if kind in (_VALUES_GRID, _VALUES_DECIMAL, _VALUES_SCALED):
            k, n_exceptions = self.take(_GRID)
            if n_exceptions > n:
                raise BlockError(f"corrupt block: {n_exceptions} exceptions in {n} readings")
            counts = self.integer_column(n)
            where = self.integer_column(n_exceptions) if n_exceptions else None
            self.size += 8 * n_exceptions
            return (kind, n, k, n_exceptions, counts, where)
        if kind == _VALUES_BITS:
            return (kind, n, self.integer_column(n))
        if kind == _VALUES_TABLE:
            (n_table,) = self.take(_TABLE)
            if not 0 < n_table <= n:
                raise BlockError(f"corrupt block: a table of {n_table} values for {n} readings")
            return (kind, n, self.integer_column(n_table), self.integer_column(n))
        raise BlockError(f"corrupt block: value encoding {kind}")

    def inflate(self) -> None:
        """Unpack the payload the descriptors announced."""
        rest = self.blob[self.at :]
        data: bytes | memoryview
        if self.compression == _DEFLATE and self.size:
            z = zlib.decompressobj(-15)
            data = z.decompress(rest, self.size)
            if len(data) != self.size or not z.eof or z.unconsumed_tail or z.unused_data:
                raise BlockError(f"corrupt block: payload does not inflate to the {self.size} bytes its streams need")
        elif self.compression in (_RAW, _DEFLATE):
            data = rest
            if len(data) != self.size:
                raise BlockError(f"block holds {len(data)} payload bytes for the {self.size} its streams need")
        else:
            raise BlockError(f"corrupt block: compression {self.compression}")
        self.payload = _Reader(data)

    def integers(self, spec: tuple[int, int, int, int]) -> np.ndarray:
        """An integer column (uint64, as stored: view as int64 where it is signed)."""
        return _unstream(*spec, self.payload)

    def values(self, spec: tuple) -> np.ndarray:
        """A value column (float64), bit-exact."""
        kind, n = spec[0], spec[1]
        if kind == _VALUES_F64:
            return np.frombuffer(self.payload.bytes(8 * n), "<f8").astype(np.float64)
        if kind == _VALUES_F32:
            return np.frombuffer(self.payload.bytes(4 * n), "<f4").astype(np.float64)
        if kind == _VALUES_BITS:
            return self.integers(spec[2]).view(np.float64)
        if kind == _VALUES_TABLE:
            table = _from_order_keys(self.integers(spec[2]))
            index = self.integers(spec[3])
            if index.max() >= len(table):
                raise BlockError("corrupt block: a value lies outside its table")
            return table[index].view(np.float64)
        _, _, k, n_exceptions, counts_spec, where_spec = spec
        counts = self.integers(counts_spec).view(np.int64).astype(np.float64)
        if kind == _VALUES_GRID:
            if not -1100 <= k <= 1100:
                raise BlockError(f"corrupt block: grid 2**-{k}")
            with np.errstate(over="ignore", under="ignore"):
                values = np.ldexp(counts, -k)
        elif not 1 <= k <= 9:
            raise BlockError(f"corrupt block: grid 10**-{k}")
        else:
            values = counts / 10.0**k if kind == _VALUES_DECIMAL else counts * 10.0**-k
        if n_exceptions:
            where = self.integers(where_spec)
            if where.max() >= n:
                raise BlockError("corrupt block: an exception lies outside the block")
            values.view(np.uint64)[where] = np.frombuffer(self.payload.bytes(8 * n_exceptions), "<u8")
        return values


def _decode_v2(blob: bytes) -> Block:
    r = FrameReader(blob, _HEADER, _FLAG_AT)
    _, time_kind, value_kind, _, n, first = r.head
    if not 0 < n <= MAX_COUNT:
        raise BlockError(f"corrupt block: {n} readings")
    if time_kind not in (_TIME_REGULAR, _TIME_STREAM):
        raise BlockError(f"corrupt block: time encoding {time_kind}")
    (step,) = r.take(_STEP)
    time_spec = r.integer_column(n) if time_kind == _TIME_STREAM else None
    value_spec = r.value_column(n, value_kind)
    r.inflate()
    ts = _U64(first & _M64) + _U64(step) * np.arange(n, dtype=np.uint64)
    if time_spec is not None:
        ts += r.integers(time_spec)
        if (ts.view(np.int64)[1:] < ts.view(np.int64)[:-1]).any():
            raise BlockError("corrupt block: timestamps go backwards")
    return Block(ts.view(np.int64), r.values(value_spec))


def _decode_v1(blob: bytes) -> Block:
    if len(blob) < _V1_HEADER.size:
        raise BlockError(f"block of {len(blob)} bytes is shorter than its {_V1_HEADER.size}-byte header")
    version, flags, count, first, step = _V1_HEADER.unpack_from(blob)
    if not 0 < count <= MAX_COUNT:
        raise BlockError(f"corrupt block: {count} readings")
    payload = blob[_V1_HEADER.size :]
    if flags & _V1_COMPRESSED:
        try:
            z = zlib.decompressobj()
            payload = z.decompress(payload, 12 * count)
        except zlib.error as exc:
            raise BlockError(f"corrupt block: {exc}") from None
    offset = 0
    if flags & _V1_REGULAR:
        ts = first + step * np.arange(count, dtype=np.int64)
    else:
        width = 2 if flags & _V1_DELTA16 else 4
        offset = width * (count - 1)
        if len(payload) < offset:
            raise BlockError(f"block says {count} readings but holds {len(payload)} bytes")
        deltas = np.frombuffer(payload, dtype="<u2" if width == 2 else "<u4", count=count - 1, offset=0)
        ts = np.concatenate(([first], first + np.cumsum(deltas, dtype=np.int64)))
    width = 4 if flags & _V1_FLOAT32 else 8
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
