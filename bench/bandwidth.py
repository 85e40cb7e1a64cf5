"""Uplink bandwidth of the seed's plant: 280 sensors at 1 Hz, 1% of samples anomalous, over a
simulated day (time-accelerated), through the real store and the real uploader to the
reference endpoint over loopback.

    .venv/bin/python bench/bandwidth.py [--hours 24] [--sensors 280] [--anomalous 0.01]

Prints bytes uploaded (gzip, as sent) against the raw readings at 100 bytes each (the seed's
reference: 99.1% reduction, 264 B/s uplink against 28 KB/s raw), checks that every anomalous
sample went up at full resolution, and how many days of outage the default disk budget holds
for this plant. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloud_sync.server import open_server  # noqa: E402
from cloud_sync.uploader import STATE_FILE, Uploader  # noqa: E402
from gatewayd.config import StoreSection  # noqa: E402
from gatewayd.store import Reading, Store  # noqa: E402

RAW_BYTES_PER_READING = 100
CHANNELS_PER_DEVICE = 10
EPISODE_S = 600  # anomalies come as 10-minute episodes on one device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--sensors", type=int, default=280)
    parser.add_argument("--anomalous", type=float, default=0.01, help="share of samples in anomaly episodes")
    args = parser.parse_args(argv)
    seconds = int(args.hours * 3600)
    devices = max(1, args.sensors // CHANNELS_PER_DEVICE)
    rng = np.random.default_rng(0)
    t0 = (int(time.time()) // 86400 - 2) * 86_400_000  # a whole UTC day, in the past
    # Episodes: enough device-episodes that their samples are the asked share of all samples.
    episodes = max(1, round(args.anomalous * seconds * devices / EPISODE_S))
    starts = sorted((int(d), int(s)) for d, s in zip(rng.integers(0, devices, episodes),
                                                     rng.integers(0, seconds - EPISODE_S, episodes)))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bandwidth-bench-") as tmp:
        folder = Path(tmp)
        store = Store.in_state_dir(folder / "gw")
        names = [f"dev-{d}" for d in range(devices)]
        for n in names:
            store.register_device(n, "edge-node", "bench", {}, [(f"s{c}", "u") for c in range(CHANNELS_PER_DEVICE)])
        levels = rng.uniform(1, 100, (devices, CHANNELS_PER_DEVICE))
        w0 = time.perf_counter()
        chunk = 60
        for block_start in range(0, seconds, chunk):
            span = np.arange(block_start, min(seconds, block_start + chunk))
            noise = rng.normal(0, 0.01, (len(span), devices, CHANNELS_PER_DEVICE)) * levels
            values = (levels + noise).astype(np.float32).tolist()
            store.write_readings([Reading(names[d], f"s{c}", t0 + int(t) * 1000, row[d][c])
                                  for t, row in zip(span, values) for d in range(devices)
                                  for c in range(CHANNELS_PER_DEVICE)])  # fmt: skip
            if block_start % 3600 == 0:
                store.compact(t0 + block_start * 1000 - 60_000)
                print(f"  {block_start / 3600:5.1f} h simulated, {time.perf_counter() - w0:5.1f} s", file=sys.stderr, flush=True)
        store.compact(t0 + seconds * 1000)
        anomalous_samples = 0
        for i, (d, s) in enumerate(starts):  # as the detection stage records and protects an episode
            opened, closed = t0 + s * 1000, t0 + (s + EPISODE_S) * 1000
            store.record_alert(f"bench:{names[d]}:model:{opened}", names[d], ["s0"], "warning", "model", opened, {})
            store.update_alert(f"bench:{names[d]}:model:{opened}", closed_ms=closed)
            for c in range(CHANNELS_PER_DEVICE):
                store.protect(names[d], f"s{c}", opened, closed)
            anomalous_samples += EPISODE_S * CHANNELS_PER_DEVICE
        store.checkpoint()
        disk_bytes = store.disk_bytes()
        readings = seconds * devices * CHANNELS_PER_DEVICE

        port = free_port()
        server = open_server(folder / "cloud", port=port)
        token = server.tokens.issue("bench")
        server.start_background()
        up = Uploader(store, folder / STATE_FILE, f"http://127.0.0.1:{port}", token, gateway="bench",
                      batch_records=200, daily_budget_bytes=10**12, now_ms=lambda: t0 + seconds * 1000 + 180_000)  # fmt: skip
        u0 = time.perf_counter()
        while batch := up.next_batch():
            up.send(batch)
        upload_s = time.perf_counter() - u0
        up.close()
        usage = server.storage.usage("bench")
        windows = server.storage.records("bench", "window")
        uploaded_window_samples = sum(r["payload"]["count"] for r in windows)
        by_kind: dict[str, int] = {}
        for kind in ("alert", "alert_update", "window", "summary"):
            by_kind[kind] = len(server.storage.records("bench", kind))
        server.shutdown()
        server.server_close()
        store.close()

    raw = readings * RAW_BYTES_PER_READING
    sent = usage["wire_bytes"]
    per_day = 86400 / seconds
    budget_days = StoreSection().disk_budget_mb * 1e6 / (disk_bytes * per_day)
    figures = {
        "reduction_pct": round(100 * (1 - sent / raw), 3),
        "uplink_bytes_per_s": round(sent / seconds, 1),
        "raw_bytes_per_s": round(raw / seconds),
        "reference_reduction_pct": 99.1,
        "reference_uplink_bytes_per_s": 264,
        "anomalous_samples": anomalous_samples,
        "anomalous_samples_uploaded": uploaded_window_samples,
        "every_anomaly_window_uploaded": uploaded_window_samples >= anomalous_samples,
        "disk_bytes_per_day": round(disk_bytes * per_day),
        "outage_days_default_budget": round(budget_days, 1),
        "simulated_hours": args.hours,
        "sensors": devices * CHANNELS_PER_DEVICE,
        "records": by_kind,
        "upload_s": round(upload_s, 1),
    }
    print(f"plant       : {figures['sensors']} sensors at 1 Hz for {args.hours:g} h, {episodes} anomaly episodes "
          f"({anomalous_samples / readings:.2%} of samples)")
    print(f"uplink      : {sent:,} B sent = {figures['uplink_bytes_per_s']} B/s against {figures['raw_bytes_per_s']:,} B/s raw"
          f" at 100 B/reading: {figures['reduction_pct']}% reduction (reference: 99.1%, 264 B/s)")
    print(f"anomalies   : {uploaded_window_samples:,} samples uploaded at full resolution for {anomalous_samples:,} anomalous")
    print(f"disk        : {figures['disk_bytes_per_day'] / 1e6:.1f} MB/day on the gateway; the default budget "
          f"({StoreSection().disk_budget_mb:g} MB) holds {figures['outage_days_default_budget']} days of outage")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
