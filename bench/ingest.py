"""Readings through the gateway's store path, beside a bare SQLite executemany in the same run.

    .venv/bin/python bench/ingest.py [--devices 100] [--channels 8] [--rate-hz 10] [--seconds 300]

Simulates `--seconds` of polling (devices x channels at rate-hz, float32 values, one write per
second of data as the daemon's writer does), then compacts blocks older than a minute as the
daemon would. Prints readings per second and CPU seconds per million readings, bytes on disk
per reading after compaction, process RSS; and the same figures for plain (ts, channel, value)
rows written with executemany into SQLite in WAL mode. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewayd.store.database import Reading, Store  # noqa: E402


def batches(devices: int, channels: int, rate_hz: float, seconds: int, seed: int = 1):
    """One batch per simulated second: Reading objects, as the pollers hand them over."""
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000_000
    step = int(1000 / rate_hz)
    names = [(f"dev-{d}", f"ch-{c}") for d in range(devices) for c in range(channels)]
    levels = rng.uniform(1, 100, len(names))
    for s in range(seconds):
        stamps = t0 + s * 1000 + step * np.arange(int(rate_hz))
        noise = rng.normal(0, 0.5, (len(stamps), len(names))).astype(np.float32)
        values = (levels.astype(np.float32) + noise).tolist()
        yield [
            Reading(dev, ch, int(ts), row[i])
            for ts, row in zip(stamps.tolist(), values)
            for i, (dev, ch) in enumerate(names)
        ]


def run_store(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    store = Store(folder / "gatewayd.sqlite3")
    for d in range(args.devices):
        store.register_device(f"dev-{d}", "edge-node", "bench", {}, [(f"ch-{c}", "V") for c in range(args.channels)])
    written = 0
    wall = cpu = 0.0
    for batch in batches(args.devices, args.channels, args.rate_hz, args.seconds):
        w0, c0 = time.perf_counter(), time.process_time()
        written += store.write_readings(batch)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
    w0, c0 = time.perf_counter(), time.process_time()
    newest = 1_700_000_000_000 + args.seconds * 1000
    store.compact(before_ms=newest - 60_000)
    compact_wall = time.perf_counter() - w0
    compact_cpu = time.process_time() - c0
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = store.disk_bytes()
    store.close()
    return {
        "readings": written,
        "readings_per_s": written / wall,
        "cpu_s_per_million": 1e6 * cpu / written,
        "compact_cpu_s_per_million": 1e6 * compact_cpu / written,
        "compact_s": compact_wall,
        "bytes_per_reading": size / written,
    }


def run_reference(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    conn = sqlite3.connect(folder / "reference.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE readings (ts INTEGER, channel INTEGER, value REAL)")
    ids = {}
    written = 0
    wall = cpu = 0.0
    for batch in batches(args.devices, args.channels, args.rate_hz, args.seconds):
        rows = [(r.ts_ms, ids.setdefault((r.device, r.channel), len(ids)), r.value) for r in batch]
        w0, c0 = time.perf_counter(), time.process_time()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        written += len(rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return {
        "readings_per_s": written / wall,
        "cpu_s_per_million": 1e6 * cpu / written,
        "bytes_per_reading": pages / written,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--seconds", type=int, default=300, help="simulated seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        folder = Path(tmp)
        print(
            f"{args.devices} devices x {args.channels} channels at {args.rate_hz:g} Hz, {args.seconds} s simulated",
            file=sys.stderr,
        )
        store = run_store(args, folder)
        reference = run_reference(args, folder)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"store path : {store['readings_per_s']:>12,.0f} readings/s  {store['cpu_s_per_million']:6.2f} CPU-s per million"
        f"  {store['bytes_per_reading']:6.2f} B/reading on disk (after compaction)"
    )
    print(
        f"reference  : {reference['readings_per_s']:>12,.0f} rows/s      {reference['cpu_s_per_million']:6.2f} CPU-s per million"
        f"  {reference['bytes_per_reading']:6.2f} B/row (bare executemany, WAL)"
    )
    print(
        f"ratios     : speed {store['readings_per_s'] / reference['readings_per_s']:.2f}x of the reference, "
        f"size {store['bytes_per_reading'] / reference['bytes_per_reading']:.2f}x; compaction "
        f"{store['compact_cpu_s_per_million']:.2f} CPU-s per million readings; peak RSS {rss_mb:.0f} MB"
    )
    figures = {
        "readings_per_s": round(store["readings_per_s"]),
        "cpu_s_per_million": round(store["cpu_s_per_million"], 3),
        "bytes_per_reading": round(store["bytes_per_reading"], 3),
        "compact_cpu_s_per_million": round(store["compact_cpu_s_per_million"], 3),
        "rss_mb": round(rss_mb, 1),
        "reference_rows_per_s": round(reference["readings_per_s"]),
        "reference_bytes_per_row": round(reference["bytes_per_reading"], 3),
        "speed_ratio": round(store["readings_per_s"] / reference["readings_per_s"], 3),
        "size_ratio": round(store["bytes_per_reading"] / reference["bytes_per_reading"], 3),
        "readings": store["readings"],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
