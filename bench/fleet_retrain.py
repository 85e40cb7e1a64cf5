"""Retraining a fleet on the job queue: N device scopes (one-minute summaries of the seed plant
uploaded to a fresh PostgreSQL database), `cloud-sync retrain --fleet --queue` into a fresh
Redis, drained once by one `cloud-sync worker` process and once by two. Prints scopes per
minute for each and the ratio, and (run alone) ends with one JSON line.

    .venv/bin/python bench/fleet_retrain.py --scopes 1000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud_sync.jobs import Scope, submit
from cloud_sync.server import open_parts
from gatewayd.models.bundle import generate_keypair
from tests.cloud_sync.uploads import store_batch, summary_records
from tests.services import start_postgres, start_redis

DEVICES_PER_GATEWAY = 4


def fill(storage, scopes: int, minutes: int) -> list[Scope]:
    """Summaries for `scopes` devices, four to a gateway; the device scopes to retrain."""
    out = []
    for g in range((scopes + DEVICES_PER_GATEWAY - 1) // DEVICES_PER_GATEWAY):
        gateway = f"gw-{g:04d}"
        devices = [f"pump-{d}" for d in range(min(DEVICES_PER_GATEWAY, scopes - len(out)))]
        store_batch(storage, gateway, summary_records(devices, minutes, seed=g))
        out += [Scope(d, [gateway], [d], [gateway], trees=50) for d in devices]
        if g % 25 == 0:
            print(f"  uploaded summaries for {len(out)}/{scopes} scopes", file=sys.stderr, flush=True)
    return out


def drain(storage, scopes: list[Scope], data: Path, database: str, queue: str, key: Path, processes: int) -> dict:
    """Queue a job per scope, start one worker with `processes` processes, wait for every job."""
    ids = submit(storage, scopes, queue=queue, run_here=lambda _: None)
    with open(data / f"worker-{processes}.log", "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloud_sync", "worker", "--data", str(data), "--database", database]
            + ["--queue", queue, "--key", str(key), "--processes", str(processes)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wanted = set(ids)
        while True:
            jobs = [j for j in storage.jobs(limit=len(ids) * 3) if j["id"] in wanted]
            done = sum(j["state"] in ("done", "failed") for j in jobs)
            if done == len(ids):
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited: see {log.name}")
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
    started = min(j["started_ms"] for j in jobs)
    finished = max(j["finished_ms"] for j in jobs)
    failed = sum(j["state"] == "failed" for j in jobs)
    minutes = (finished - started) / 60_000
    return {
        "scopes": len(ids),
        "failed": failed,
        "wall_s": round(minutes * 60, 1),
        "scopes_per_min": len(ids) / minutes,
    }


def measure(scopes: int, minutes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fleet-retrain-") as tmp:
        tmp_path = Path(tmp)
        postgres = start_postgres(tmp_path)
        redis = start_redis(tmp_path)
        try:
            generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
            results = {}
            for processes in (1, 2):
                database = postgres.create_database(f"retrain_{processes}")
                storage, _, _ = open_parts(tmp_path / "data", database)
                plan = fill(storage, scopes, minutes)
                print(f"  {processes} worker process(es): {len(plan)} jobs", file=sys.stderr, flush=True)
                results[processes] = drain(
                    storage, plan, tmp_path / "data", database, redis.url, tmp_path / "k.pem", processes
                )
                storage.close()
        finally:
            redis.stop()
            postgres.stop()
    one, two = results[1], results[2]
    return {
        "retrain_scopes": scopes,
        "retrain_minutes_per_scope": minutes,
        "cpu_count": os.cpu_count(),
        "retrain_scopes_per_min_1_worker": round(one["scopes_per_min"], 1),
        "retrain_scopes_per_min_2_workers": round(two["scopes_per_min"], 1),
        "retrain_scaling_2_workers": round(two["scopes_per_min"] / one["scopes_per_min"], 3),
        "retrain_failed": one["failed"] + two["failed"],
    }


def report(figures: dict) -> None:
    print(
        f"retraining {figures['retrain_scopes']} device scopes ({figures['retrain_minutes_per_scope']} minutes of "
        f"summaries each) on {figures['cpu_count']} cores:\n"
        f"  1 worker process   {figures['retrain_scopes_per_min_1_worker']:>8.1f} scopes/min\n"
        f"  2 worker processes {figures['retrain_scopes_per_min_2_workers']:>8.1f} scopes/min   "
        f"ratio {figures['retrain_scaling_2_workers']:.2f} (goal >= 1.8)\n"
        f"  failed jobs {figures['retrain_failed']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, default=1000, help="device scopes to retrain (default: %(default)s)")
    parser.add_argument(
        "--minutes", type=int, default=240, help="minutes of summaries per scope (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    figures = measure(args.scopes, args.minutes)
    report(figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
