"""Days of outage the default disk budget holds at the seed's plant, and its uplink: 280
sensors at 1 Hz, 1% of samples anomalous, a simulated day (time-accelerated), through the real
store, its compaction and the real uploader to the reference endpoint over loopback.

    .venv/bin/python bench/bandwidth.py [--hours 24] [--noise 12] [--sweep 4,48] [--sample-devices 1] [--jobs 2]

The plant as its nodes serve it: 28 devices of 10 channels. Each channel has a resolution
(0.1, 0.01 or 0.001, firmware/README.md), so its values are integer counts of 2^-4, 2^-7 or
2^-10 served as float32; the process is a level, a slow sine drift and a random walk, plus
Gaussian noise of `--noise` counts (default 12: the README's 0..16 bar channel at 0.001 has
about 5 counts per step of the ESP32's 12-bit ADC, whose noise is a couple of steps rms, so
8..16 counts). A device is polled every second; the poller stamps the poll with the wall clock
after it, so its channels share a timestamp 1000 ms plus 2..6 ms of latency after the last,
at the device's own phase in the second.

Disk: for each data model (the node at `--noise` counts, at each `--sweep` size, and generic
float32 registers with unquantised noise of 1% of the level), `--sample-devices` devices are
written exactly as the daemon writes (one write per flush interval holding that second's
polls, and every compact_after_s the writer's pass: raw blocks, then minutes that are over
into summary blocks) for the whole simulated span; the pages in use per table (SQLite's
dbstat) are scaled from the sample to the plant's sensors (each channel's blocks are its own).
Nothing is compacted beyond what the writer would have done at the end of the day. Days of
outage = what the data may use of the default budget (the budget less the WAL allowance, the
reserve file and the shared memory, which the daemon keeps within it too) / bytes per day.
The reference: a plain (timestamp, channel, value) SQLite row per reading.

Uplink: the whole plant (node model) written in minute batches for speed (the uplink does not
depend on the batches), compacted as above; anomaly episodes are protected as the detection
stage does; then the uploader sends everything to the reference endpoint, as after an outage.
Prints bytes uploaded (gzip, as sent) against raw readings at 100 bytes each (the seed's
reference: 99.1% reduction, 264 B/s), and checks that every anomalous sample went up at full
resolution. Progress on stderr; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from block_codec import sqlite_row_bytes

from cloud_sync.server import BackgroundEndpoint
from cloud_sync.uploader import STATE_FILE, Uploader
from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.config import StoreSection
from gatewayd.store import reserve
from gatewayd.store.database import Reading, Store

RAW_BYTES_PER_READING = 100
# Stores in memory where there is a tmpfs: the bytes are the same, the run is quicker.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
CHANNELS_PER_DEVICE = 10
RESOLUTIONS = (0.1, 0.01, 0.001)
EPISODE_S = 600  # anomalies come as 10-minute episodes on one device
SETTINGS = StoreSection()
DATA_TABLES = ("reading_blocks", "summaries", "summary_blocks")  # and their indexes


class Plant:
    """Devices of CHANNELS_PER_DEVICE channels, each polled once a second. `noise` is the
    noise in counts of a node channel; None makes generic float32 registers instead."""

    def __init__(self, devices: int, noise: float | None, seed: int, t0: int):
        rng = np.random.default_rng(seed)
        n = devices * CHANNELS_PER_DEVICE
        self.rng, self.noise, self.t0, self.devices = rng, noise, t0, devices
        resolution = rng.choice(RESOLUTIONS, n)
        self.unit = 2.0 ** -np.floor(np.log2(resolution))  # counts per unit: the largest 2^-k not above it
        self.level = rng.uniform(1, 100, n)
        self.swing = self.level * rng.uniform(0.01, 0.05, n)
        self.period_s = rng.uniform(3600, 6 * 3600, n)
        self.phase = rng.uniform(0, 2 * np.pi, n)
        self.walk = np.zeros(n)  # counts
        self.poll_at_ms = rng.integers(0, 1000, devices)  # each device's phase in the second
        self.names = [(f"dev-{d}", f"s{c}") for d in range(devices) for c in range(CHANNELS_PER_DEVICE)]

    def values(self, second: int) -> np.ndarray:
        self.walk += self.rng.normal(0, 0.5, len(self.walk))
        process = (
            self.level + self.swing * np.sin(2 * np.pi * second / self.period_s + self.phase) + self.walk / self.unit
        )
        if self.noise is None:
            return (process + self.rng.normal(0, 0.01, len(process)) * self.level).astype(np.float32).astype(np.float64)
        counts = np.clip(np.round(process * self.unit + self.rng.normal(0, self.noise, len(process))), -(2**20), 2**20)
        return (counts / self.unit).astype(np.float32).astype(np.float64)

    def poll(self, second: int) -> list[Reading]:
        """Every device's poll of one second: its channels share the stamp taken after the poll."""
        stamps = (self.t0 + 1000 * second + self.poll_at_ms + self.rng.integers(2, 7, self.devices)).tolist()
        values = self.values(second).tolist()
        return [Reading(dev, ch, stamps[i // CHANNELS_PER_DEVICE], values[i]) for i, (dev, ch) in enumerate(self.names)]

    def register(self, store: Store) -> None:
        for d in range(self.devices):
            store.register_device(
                f"dev-{d}", "edge-node", "bench", {}, [(f"s{c}", "u") for c in range(CHANNELS_PER_DEVICE)]
            )


def compaction_pass(store: Store, now_ms: int) -> None:
    """What the writer does every compact_after_s (gatewayd/store/writer.py), all slices at once."""
    cutoff = now_ms - int(SETTINGS.compact_after_s * 1000)
    store.compact_channels(store.compactable_channels(cutoff), cutoff)
    store.compact_summaries(store.compactable_summaries(cutoff), cutoff)


def table_bytes(store: Store) -> dict[str, int]:
    """Pages in use per table and index."""
    return dict(store.conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())


def disk_run(model: str, noise: float | None, devices: int, seconds: int, t0: int, seed: int) -> dict:
    """A sample of the plant written as the daemon writes it, for `seconds`."""
    plant = Plant(devices, noise, seed, t0)
    w0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bandwidth-bench-", dir=SCRATCH) as tmp:
        store = Store(Path(tmp) / "gatewayd.sqlite3")
        store.limit_wal(reserve.wal_allowance(int(SETTINGS.disk_budget_mb * 1e6)))
        plant.register(store)
        written: list[list[Reading]] = []
        flush_s, compact_s = int(SETTINGS.flush_interval_s), int(SETTINGS.compact_after_s)
        for s in range(0, seconds, flush_s):
            batch = [r for second in range(s, min(seconds, s + flush_s)) for r in plant.poll(second)]
            store.write_readings(batch)
            if s < 3600:
                written.append(batch)
            if (s + flush_s) % compact_s == 0:
                compaction_pass(store, t0 + (s + flush_s) * 1000)
            if (s + flush_s) % 21600 == 0:
                print(
                    f"  [{model}] {(s + flush_s) / 3600:4.0f} h simulated, {time.perf_counter() - w0:5.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        store.checkpoint()
        tables = table_bytes(store)
        shm = store.disk_usage().shm
        # every reading of the first hour comes back with its bits
        first_hour = [r for batch in written for r in batch]
        exact = all(
            np.array_equal(
                store.readings(dev, ch, t0, t0 + 3600_000).values.view(np.uint64),
                np.array([r.value for r in first_hour if (r.device, r.channel) == (dev, ch)]).view(np.uint64),
            )
            for dev, ch in plant.names
        )
        store.close()
    by_channel: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for r in first_hour:
        ts, vals = by_channel.setdefault((r.device, r.channel), ([], []))
        ts.append(r.ts_ms)
        vals.append(r.value)
    rows = sqlite_row_bytes([(np.array(ts), np.array(vals)) for ts, vals in by_channel.values()])
    return {
        "model": model,
        "channels": len(plant.names),
        "readings": seconds * len(plant.names),
        "tables": tables,
        "shm": shm,
        "exact": exact,
        "plain_row_bytes": rows,
        "wall_s": time.perf_counter() - w0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uplink_run(devices: int, noise: float, seconds: int, anomalous: float, t0: int, seed: int) -> dict:
    """The whole plant for `seconds`, its anomaly episodes protected, then uploaded."""
    rng = np.random.default_rng(seed + 1)
    plant = Plant(devices, noise, seed, t0)
    # Episodes: enough device-episodes that their samples are the asked share of all samples.
    episodes = max(1, round(anomalous * seconds * devices / EPISODE_S))
    starts = sorted(
        (int(d), int(s))
        for d, s in zip(rng.integers(0, devices, episodes), rng.integers(0, seconds - EPISODE_S, episodes))
    )
    w0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bandwidth-bench-", dir=SCRATCH) as tmp:
        folder = Path(tmp)
        store = Store.in_state_dir(folder / "gw")
        plant.register(store)
        for minute in range(0, seconds, 60):
            store.write_readings([r for s in range(minute, min(seconds, minute + 60)) for r in plant.poll(s)])
            if (minute + 60) % 3600 == 0:
                compaction_pass(store, t0 + (minute + 60) * 1000)
            if (minute + 60) % 21600 == 0:
                print(
                    f"  [uplink] {(minute + 60) / 3600:4.0f} h simulated, {time.perf_counter() - w0:5.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        compaction_pass(store, t0 + seconds * 1000 + 120_000)
        anomalous_samples = 0
        for d, s in starts:  # as the detection stage records and protects an episode
            name = f"dev-{d}"
            opened, closed = t0 + s * 1000, t0 + (s + EPISODE_S) * 1000
            store.record_alert(Alert(f"bench:{name}:model:{opened}", name, ["s0"], "warning", "model", opened, {}))
            store.update_alert(AlertChange(f"bench:{name}:model:{opened}", name, "model", closed_ms=closed))
            for c in range(CHANNELS_PER_DEVICE):
                store.protect(name, f"s{c}", opened, closed)
            anomalous_samples += EPISODE_S * CHANNELS_PER_DEVICE
        store.checkpoint()

        server = BackgroundEndpoint(folder / "cloud")
        token = server.tokens.issue("bench")
        up = Uploader(
            store,
            folder / STATE_FILE,
            server.url,
            token,
            gateway="bench",
            batch_records=200,
            daily_budget_bytes=10**12,
            now_ms=lambda: t0 + seconds * 1000 + 180_000,
        )
        u0 = time.perf_counter()
        while batch := up.next_batch():
            up.send(batch)
        upload_s = time.perf_counter() - u0
        up.close()
        usage = server.storage.usage("bench")
        uploaded_window_samples = sum(r["payload"]["count"] for r in server.storage.records("bench", "window"))
        by_kind = {
            kind: len(server.storage.records("bench", kind)) for kind in ("alert", "alert_update", "window", "summary")
        }
        server.stop()
        store.close()
    return {
        "sent": usage["wire_bytes"],
        "episodes": episodes,
        "anomalous_samples": anomalous_samples,
        "uploaded_window_samples": uploaded_window_samples,
        "records": by_kind,
        "upload_s": upload_s,
        "readings": seconds * devices * CHANNELS_PER_DEVICE,
    }


def per_day(run: dict, sensors: int, seconds: int) -> dict:
    """A disk run's bytes scaled to the plant's sensors and to a day: data tables and their
    indexes scale with the channels, the rest (schema, empty tables) is counted once."""
    scale = sensors / run["channels"]
    day = 86400 / seconds
    split = {"raw_blocks": 0.0, "summaries": 0.0, "indexes": 0.0, "other": 0.0}
    for name, size in run["tables"].items():
        if name in DATA_TABLES:
            split["raw_blocks" if name == "reading_blocks" else "summaries"] += size * scale * day
        elif name.startswith(DATA_TABLES):  # their indexes
            split["indexes"] += size * scale * day
        else:
            split["other"] += size
    total = sum(split.values())
    return {"bytes_per_day": total, "bytes_per_reading": total / (sensors * 86400), "split": split}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--sensors", type=int, default=280)
    parser.add_argument("--anomalous", type=float, default=0.01, help="share of samples in anomaly episodes")
    parser.add_argument("--noise", type=float, default=12.0, help="node noise in counts of the resolution (σ)")
    parser.add_argument("--sweep", default="4,48", help="more noise sizes to measure on disk (comma-separated)")
    parser.add_argument("--sample-devices", type=int, default=1, help="devices written as the daemon writes, per model")
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    args = parser.parse_args(argv)
    seconds = int(args.hours * 3600)
    devices = max(1, args.sensors // CHANNELS_PER_DEVICE)
    sensors = devices * CHANNELS_PER_DEVICE
    t0 = (int(time.time()) // 86400 - 2) * 86_400_000  # a whole UTC day, in the past
    sweep = sorted({args.noise, *(float(x) for x in args.sweep.split(",") if x)})
    models: list[tuple[str, float | None]] = [(f"node σ={n:g}", n) for n in sweep] + [("float32 registers", None)]
    w0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        uplink_job = pool.submit(uplink_run, devices, args.noise, seconds, args.anomalous, t0, 0)
        disk_jobs = [
            pool.submit(disk_run, name, noise, min(devices, args.sample_devices), seconds, t0, 7)
            for name, noise in models
        ]
        runs = [job.result() for job in disk_jobs]
        uplink = uplink_job.result()

    budget = int(SETTINGS.disk_budget_mb * 1e6)
    wal, reserve_size = reserve.wal_allowance(budget), reserve.reserve_bytes(budget)
    shm = max(run["shm"] for run in runs)
    room = budget - wal - reserve_size - shm
    results = {}
    for (name, noise), run in zip(models, runs):
        day = per_day(run, sensors, seconds)
        results[name] = {
            **day,
            "noise": noise,
            "outage_days": room / day["bytes_per_day"],
            "exact": run["exact"],
            "plain_row_bytes": run["plain_row_bytes"],
        }
    default = results[f"node σ={args.noise:g}"]
    plain = default["plain_row_bytes"] * sensors * 86400
    raw = uplink["readings"] * RAW_BYTES_PER_READING
    sent = uplink["sent"]

    print(
        f"plant       : {sensors} sensors on {devices} devices at 1 Hz for {args.hours:g} h; node channels in counts of "
        f"2^-4, 2^-7, 2^-10 (resolution 0.1, 0.01, 0.001), noise σ = {args.noise:g} counts; polls stamped 1 s + 2..6 ms apart"
    )
    print(
        f"budget      : {SETTINGS.disk_budget_mb:g} MB, of which the data may use {room / 1e6:.1f} MB (WAL allowance "
        f"{wal / 1e6:.1f} MB, reserve {reserve_size / 1e6:.1f} MB, shared memory {shm / 1e6:.2f} MB come off the top)"
    )
    print(
        f"disk        : {min(devices, args.sample_devices) * CHANNELS_PER_DEVICE} sensors per model written as the daemon "
        f"writes (a write every {SETTINGS.flush_interval_s:g} s, compaction every {SETTINGS.compact_after_s:g} s), "
        f"scaled to {sensors}"
    )
    print(
        f"  {'model':<20} {'B/reading':>9} {'MB/day':>7} {'raw':>6} {'summaries':>9} {'indexes':>7} {'outage days':>11}"
    )
    for name, r in results.items():
        split = r["split"]
        print(
            f"  {name + (' (default)' if r is default else ''):<20} {r['bytes_per_reading']:9.2f} {r['bytes_per_day'] / 1e6:7.1f} "
            f"{split['raw_blocks'] / 1e6:6.1f} {split['summaries'] / 1e6:9.1f} {split['indexes'] / 1e6:7.2f} "
            f"{r['outage_days']:11.1f}"
        )
    print(
        f"  {'plain rows (ref.)':<20} {default['plain_row_bytes']:9.2f} {plain / 1e6:7.1f} {'':>6} {'':>9} {'':>7} "
        f"{room / plain:11.1f}"
    )
    print(f"exact       : every reading read back with its bits: {all(r['exact'] for r in results.values())}")
    print(
        f"uplink      : {sent:,} B sent = {sent / seconds:.1f} B/s against {raw / seconds:,.0f} B/s raw at 100 B/reading: "
        f"{100 * (1 - sent / raw):.3f}% reduction (reference: 99.1%, 264 B/s)"
    )
    print(
        f"anomalies   : {uplink['uploaded_window_samples']:,} samples uploaded at full resolution for "
        f"{uplink['anomalous_samples']:,} anomalous ({uplink['episodes']} episodes)"
    )
    print(f"run         : {time.perf_counter() - w0:.0f} s", file=sys.stderr)
    figures = {
        "outage_days_default_budget": round(default["outage_days"], 1),
        "outage_days_by_noise": {f"{r['noise']:g}": round(r["outage_days"], 1) for r in results.values() if r["noise"]},
        "outage_days_float32_registers": round(results["float32 registers"]["outage_days"], 1),
        "outage_days_plain_rows": round(room / plain, 1),
        "disk_bytes_per_day": round(default["bytes_per_day"]),
        "disk_split_bytes_per_day": {k: round(v) for k, v in default["split"].items()},
        "bytes_per_reading": round(default["bytes_per_reading"], 3),
        "bytes_per_reading_float32_registers": round(results["float32 registers"]["bytes_per_reading"], 3),
        "plain_row_bytes_per_reading": round(default["plain_row_bytes"], 2),
        "data_room_bytes": room,
        "noise_counts": args.noise,
        "readings_exact": all(r["exact"] for r in results.values()),
        "reduction_pct": round(100 * (1 - sent / raw), 3),
        "uplink_bytes_per_s": round(sent / seconds, 1),
        "raw_bytes_per_s": round(raw / seconds),
        "reference_reduction_pct": 99.1,
        "reference_uplink_bytes_per_s": 264,
        "anomalous_samples": uplink["anomalous_samples"],
        "anomalous_samples_uploaded": uplink["uploaded_window_samples"],
        "every_anomaly_window_uploaded": uplink["uploaded_window_samples"] >= uplink["anomalous_samples"],
        "simulated_hours": args.hours,
        "sensors": sensors,
        "records": uplink["records"],
        "upload_s": round(uplink["upload_s"], 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
