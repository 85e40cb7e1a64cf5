"""The block codec (gatewayd/store/blocks.py) on node-like, float32 and real sensor data, beside the
version-1 encoder and plain SQLite rows in the same run.

    .venv/bin/python bench/block_codec.py [--data DIR] [--channels 16] [--readings 16384] [--repeat 3]

Data sets, each channel cut into blocks of 4096 readings as compaction does:

- node, σ = 4, 16, 64, 256 counts: a node channel (values are integer counts of 2^-10, sent as
  float32): a slow process (a level, a sine drift of half a unit over hours, a random walk)
  plus Gaussian noise of σ counts; timestamps every second plus the poll's latency (2..6 ms),
  as the poller stamps a reading with the wall clock after its poll.
- float32 registers: unquantised float32 noise about a level (1% of it), as a generic Modbus
  device sends; the same timestamps.
- SKAB (`DIR/skab`, if present): each sensor column of each CSV file a channel, the values as
  parsed (float64) and as float32.
- NAB (`DIR/nab`, if present): each file's value column a channel (float64).

Prints bytes per reading and encode/decode CPU seconds per million readings for version 2,
version 1 and a plain `(timestamp, channel, value)` row (SQLite pages per row); checks that
every block decodes bit-exactly; then the compressors tried on version 2's byte planes (zlib
levels and strategies, and zstandard when it is installed). Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.store import blocks  # noqa: E402

BLOCK = 4096
T0 = 1_700_000_000_000
Channel = tuple[np.ndarray, np.ndarray]  # int64 timestamps (ms), float64 values


# -- data --------------------------------------------------------------------------------


def poll_stamps(rng: np.random.Generator, n: int) -> np.ndarray:
    """A 1 s poll stamped with the wall clock after it: 1000 ms apart plus 2..6 ms of latency."""
    return T0 + 1000 * np.arange(n, dtype=np.int64) + rng.integers(2, 7, n)


def node_channel(rng: np.random.Generator, n: int, sigma: float, k: int = 10) -> Channel:
    t = np.arange(n)
    unit = 2.0**k  # counts per engineering unit
    process = (
        rng.uniform(1, 16) * unit
        + 0.5 * unit * np.sin(2 * np.pi * t / rng.uniform(3600, 21600) + rng.uniform(0, 7))
        + np.cumsum(rng.normal(0, 0.5, n))
    )
    counts = np.clip(np.round(process + rng.normal(0, sigma, n)), -(2**20), 2**20)
    return poll_stamps(rng, n), (counts / unit).astype(np.float32).astype(np.float64)


def float32_channel(rng: np.random.Generator, n: int) -> Channel:
    level = rng.uniform(1, 100)
    return poll_stamps(rng, n), (level * (1 + rng.normal(0, 0.01, n))).astype(np.float32).astype(np.float64)


def skab(folder: Path) -> list[Channel]:
    """Every float column (not the labels) of every SKAB CSV: `datetime;sensor...;anomaly;changepoint`."""
    out = []
    for path in sorted(folder.glob("*/*.csv")):
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        header, body = rows[0], rows[1:]
        ts = np.array([np.datetime64(r[0].replace(" ", "T"), "ms") for r in body]).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        for c, name in enumerate(header):
            if c == 0 or name in ("anomaly", "changepoint"):
                continue
            out.append((ts[order], np.array([float(r[c]) for r in body])[order]))
    return out


def nab(folder: Path) -> list[Channel]:
    out = []
    for path in sorted(folder.glob("*/*.csv")):
        with path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        ts = np.array([np.datetime64(r[0].replace(" ", "T"), "ms") for r in rows]).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        out.append((ts[order], np.array([float(r[1]) for r in rows])[order]))
    return out


def cut(channels: list[Channel]) -> list[Channel]:
    return [(ts[i : i + BLOCK], v[i : i + BLOCK]) for ts, v in channels for i in range(0, len(ts), BLOCK)]


# -- references ----------------------------------------------------------------------------


def encode_v1(ts: np.ndarray, vals: np.ndarray) -> bytes | None:
    """The version-1 encoder (float32 or float64 values, 16/32-bit deltas, zlib level 1);
    None where it could not encode (a gap of 2^32 ms or more)."""
    deltas = np.diff(ts)
    flags, step, parts = 0, 0, []
    if len(deltas) == 0 or (deltas == deltas[0]).all():
        flags |= 0x01
        step = int(deltas[0]) if len(deltas) else 0
    elif deltas.max() < 1 << 16:
        flags |= 0x04
        parts.append(deltas.astype("<u2").tobytes())
    elif deltas.max() < 1 << 32:
        parts.append(deltas.astype("<u4").tobytes())
    else:
        return None
    with np.errstate(over="ignore"):
        as32 = vals.astype(np.float32)
    if np.array_equal(as32.astype(np.float64), vals, equal_nan=True):
        flags |= 0x02
        parts.append(as32.astype("<f4").tobytes())
    else:
        parts.append(vals.astype("<f8").tobytes())
    payload = b"".join(parts)
    packed = zlib.compress(payload, 1)
    if len(packed) < len(payload):
        flags |= 0x08
        payload = packed
    return struct.pack("<BBIqq", 1, flags, len(ts), int(ts[0]), step) + payload


def sqlite_row_bytes(chunks: list[Channel]) -> float:
    """Bytes per plain (ts, channel, value) row, SQLite pages in WAL mode, as bench/ingest.py."""
    with tempfile.TemporaryDirectory(prefix="block-codec-bench-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "rows.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE readings (ts INTEGER, channel INTEGER, value REAL)")
        rows = [(t, c, v) for c, (ts, vals) in enumerate(chunks) for t, v in zip(ts.tolist(), vals.tolist())]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
    return size / len(rows)


# -- measuring -----------------------------------------------------------------------------


def cpu(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def measure(chunks: list[Channel], repeat: int) -> dict[str, float]:
    n = sum(len(ts) for ts, _ in chunks)
    encoded = [blocks.encode(ts, v) for ts, v in chunks]
    for (ts, v), blob in zip(chunks, encoded):  # bit-exact, or the figures mean nothing
        back = blocks.decode(blob)
        assert np.array_equal(back.ts_ms, ts) and np.array_equal(back.values.view(np.uint64), v.view(np.uint64))
    old = [encode_v1(ts, v) for ts, v in chunks]
    old_ok = [blob for blob in old if blob is not None]
    return {
        "bytes_per_reading": sum(map(len, encoded)) / n,
        "encode_cpu_s_per_million": 1e6 * cpu(lambda: [blocks.encode(ts, v) for ts, v in chunks], repeat) / n,
        "decode_cpu_s_per_million": 1e6 * cpu(lambda: [blocks.decode(b) for b in encoded], repeat) / n,
        "v1_bytes_per_reading": sum(map(len, old_ok)) / n if len(old_ok) == len(old) else float("nan"),
        "v1_encode_cpu_s_per_million": 1e6 * cpu(lambda: [encode_v1(ts, v) for ts, v in chunks], repeat) / n,
        "v1_decode_cpu_s_per_million": 1e6 * cpu(lambda: [blocks.decode(b) for b in old_ok], repeat) / max(1, n),
        "readings": n,
    }


def compressors() -> dict[str, Callable[[list[bytes]], bytes]]:
    """Ways to compress a block's planes: one deflate (or zstd) block per plane."""

    def deflate(level: int, strategy: int) -> Callable[[list[bytes]], bytes]:
        def run(planes: list[bytes]) -> bytes:
            z = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
            return b"".join([z.compress(p) + z.flush(zlib.Z_BLOCK) for p in planes] + [z.flush()])

        return run

    out: dict[str, Callable[[list[bytes]], bytes]] = {"none": b"".join}
    for level in (1, 6, 9):
        out[f"zlib {level}"] = deflate(level, zlib.Z_DEFAULT_STRATEGY)
    out["zlib 6 Z_FILTERED"] = deflate(6, zlib.Z_FILTERED)
    out["zlib Z_HUFFMAN_ONLY"] = deflate(6, zlib.Z_HUFFMAN_ONLY)
    out["zlib Z_RLE (chosen)"] = deflate(6, zlib.Z_RLE)
    try:
        import zstandard
    except ImportError:
        return out
    for level in (1, 3, 9, 19):

        def zstd(planes: list[bytes], c=zstandard.ZstdCompressor(level=level)) -> bytes:
            z = c.compressobj()
            flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
            return b"".join([z.compress(p) + z.flush(flush) for p in planes] + [z.flush()])

        out[f"zstd {level}"] = zstd
    return out


def compare_compressors(sets: dict[str, list[Channel]], repeat: int) -> dict[str, dict[str, list[float]]]:
    """Bytes per reading and compression CPU-s per million of each compressor, per data set."""
    result: dict[str, dict[str, list[float]]] = {}
    for set_name, chunks in sets.items():
        parts = [blocks._encode_parts(ts, v) for ts, v in chunks]
        n = sum(len(ts) for ts, _ in chunks)
        for name, compress in compressors().items():

            def run() -> int:
                return sum(len(head) + 4 + min(len(compress(planes)), sum(map(len, planes))) for head, planes in parts)

            size = run()
            result.setdefault(name, {})[set_name] = [size / n, 1e6 * cpu(run, repeat) / n]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder holding skab/ and nab/ (optional)")
    parser.add_argument("--channels", type=int, default=16, help="synthetic channels per data set")
    parser.add_argument("--readings", type=int, default=16384, help="readings per synthetic channel")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs (the fastest counts)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    sets: dict[str, list[Channel]] = {}
    for sigma in (4, 16, 64, 256):
        sets[f"node σ={sigma}"] = cut([node_channel(rng, args.readings, sigma) for _ in range(args.channels)])
    sets["float32 registers"] = cut([float32_channel(rng, args.readings) for _ in range(args.channels)])
    if args.data and (args.data / "skab").is_dir():
        found = skab(args.data / "skab")
        sets["SKAB float64"] = cut(found)
        sets["SKAB float32"] = cut([(ts, v.astype(np.float32).astype(np.float64)) for ts, v in found])
    if args.data and (args.data / "nab").is_dir():
        sets["NAB float64"] = cut(nab(args.data / "nab"))

    row_bytes = sqlite_row_bytes(sets["node σ=16"])
    print(f"{'data set':<18} {'readings':>9} | {'version 2':^27} | {'version 1':^27} | plain row")
    print(
        f"{'':<18} {'':>9} | {'B/reading':>9} {'enc':>8} {'dec':>8} | {'B/reading':>9} {'enc':>8} {'dec':>8} | B/reading"
    )
    figures: dict[str, object] = {"plain_row_bytes": round(row_bytes, 2)}
    for name, chunks in sets.items():
        m = measure(chunks, args.repeat)
        print(
            f"{name:<18} {m['readings']:>9,} | {m['bytes_per_reading']:>9.3f} {m['encode_cpu_s_per_million']:>8.3f}"
            f" {m['decode_cpu_s_per_million']:>8.3f} | {m['v1_bytes_per_reading']:>9.3f}"
            f" {m['v1_encode_cpu_s_per_million']:>8.3f} {m['v1_decode_cpu_s_per_million']:>8.3f} | {row_bytes:>9.2f}"
        )
        figures[name] = {key: round(value, 3) for key, value in m.items()}
    print("enc, dec: CPU seconds per million readings; every version-2 block decoded bit-exactly")

    picked: dict[str, list[Channel]] = {
        name: sets[name] for name in ("node σ=16", "float32 registers", "SKAB float32") if name in sets
    }
    table = compare_compressors(picked, args.repeat)
    print(f"\ncompressing version 2's planes: B/reading (CPU-s per million to compress)")
    print(f"{'':<22}" + "".join(f"{name:>26}" for name in picked))
    for name, by_set in table.items():
        print(f"{name:<22}" + "".join(f"{by_set[s][0]:>15.3f} ({by_set[s][1]:6.3f})" for s in picked))
    if not any(name.startswith("zstd") for name in table):
        print("(zstandard is not installed: not compared)")
    figures["compressors"] = {
        name: {s: [round(x, 3) for x in v] for s, v in by_set.items()} for name, by_set in table.items()
    }
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
