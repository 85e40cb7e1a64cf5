"""Polling many Modbus TCP devices through the gateway's pollers (profile, decoding, the store
writer), beside a bare pymodbus client loop polling the same devices in the same run.

    .venv/bin/python bench/poll.py [--devices 100] [--floats 8] [--interval 0.1] [--seconds 20]

The devices run in a separate process (bench/modbus_farm.py), so CPU time is the gateway's.
Prints readings per second delivered against those asked for, CPU seconds per 1000 readings,
the schedule jitter (how late each poll started against its slot, p50 and p99), RSS and its
growth over the second half of the run; progress every 5 s on stderr; last line: a JSON object.

10x overload (80,000 readings/s asked, more than one core can store):
    .venv/bin/python bench/poll.py --floats 80 --seconds 300

With `--models`, every device starts with a signed bundle of its own (trained before the run on
the farm's own signal, installed as the gateway's local training would), so the detection stage
scores every window from the start: the memory and CPU of a site whose models are all in place.
"""

from __future__ import annotations

import argparse
import asyncio
from array import array
from concurrent.futures import ProcessPoolExecutor
import json
import multiprocessing
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from gatewayd import daemon  # noqa: E402
from gatewayd.config import parse_config  # noqa: E402


def free_ports(n: int) -> int:
    """A first port with n free ports after it."""
    for base in range(20000, 60000, n + 10):
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def config_text(state: Path, first_port: int, args: argparse.Namespace) -> str:
    registers = "".join(
        f'\n[[devices.registers]]\nname = "v{i}"\ntable = "holding"\naddress = {2 * i}\ntype = "float32"\n'
        for i in range(args.floats)
    )
    devices = "".join(
        f'\n[[devices]]\nname = "d{d}"\nprofile = "generic"\nhost = "127.0.0.1"\nport = {first_port + d}\n'
        f"interval_s = {args.interval}\ntimeout_s = 1.0\n{registers}"
        for d in range(args.devices)
    )
    return f'[gateway]\nstate_dir = "{state}"\n{devices}'


def rss_mb_now(field: str = "VmRSS") -> float:
    """Resident memory from /proc: VmRSS (all), RssAnon (heap: what the gateway holds itself) or
    RssFile (mapped files: libraries and model files, shared and reclaimable)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def install_models(config_text_: str, floats: int) -> None:
    """One bundle per device, trained on the windows of a bootstrap period (`bootstrap_minutes`)
    of the signal bench/modbus_farm.py serves it.
    Run in a child process: scikit-learn must not count in the gateway's memory."""
    import numpy as np

    from gatewayd.detection.local_training import local_key
    from gatewayd.detection.stage import default_spec
    from gatewayd.detection.features import sliding_windows
    from gatewayd.models.bundle import load_private_key, write_bundle
    from gatewayd.models.install import ModelStore
    from gatewayd.models.training import train_bundle

    config = parse_config(config_text_)
    key_path, public = local_key(config.state_path)
    key = load_private_key(key_path)
    models = ModelStore(config.models_path, [public])
    t0 = time.monotonic()
    for d, device in enumerate(config.devices):
        spec = default_spec(config.detection, [r.name for r in device.registers], device.interval_s)
        windows = int(config.detection.bootstrap_minutes * 60 / spec.hop_s)
        polls = int((windows * spec.hop_s + spec.window_s) / device.interval_s)
        ts = 1_700_000_000_000 + np.arange(polls, dtype=np.int64) * int(device.interval_s * 1000)
        t = ts[:, None] / 1000 + np.arange(floats)[None, :]
        values = (20 + d + np.sin(t)).astype(np.float32).astype(np.float64)  # as the farm serves them
        ends, features = sliding_windows(spec, ts, values)
        trained = train_bundle(features, ends, spec, name=device.name, version=1, source="bench")
        with tempfile.TemporaryDirectory() as tmp:
            models.install(write_bundle(Path(tmp) / "bundle", trained.manifest, trained.files, key))
    print(
        f"models   : {len(config.devices)} bundles trained and installed in {time.monotonic() - t0:.0f} s",
        file=sys.stderr,
    )


async def gateway_run(
    config_text_: str, seconds: float, args: argparse.Namespace
) -> tuple[int, float, array, list[float], dict[str, int]]:
    config = parse_config(config_text_)
    if args.models:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            child.submit(install_models, config_text_, args.floats).result()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[daemon.Gateway] = loop.create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready))
    gateway = await ready
    await asyncio.sleep(2.0)  # connect and describe every device first
    start_readings = sum(h.readings for h in gateway.health().values())
    seen = {n: p.poll_starts for n, p in gateway.pollers.items()}
    lates = array("d")  # compact: the bench's own memory is in the RSS it reports

    def collect() -> None:
        # the pollers keep their last 1000 start times; take what is new since the last look
        for n, p in gateway.pollers.items():
            new = p.poll_starts - seen[n]
            if new:
                lates.extend(list(p.lateness)[-new:])
            seen[n] = p.poll_starts

    c0 = time.process_time()
    rss: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        rss.append(rss_mb_now())
        await asyncio.sleep(min(5.0, max(0.0, end - loop.time())))
        collect()
        done = sum(h.readings for h in gateway.health().values()) - start_readings
        print(
            f"  {seconds - (end - loop.time()):6.0f} s  {done:>10,} readings  queued {gateway.writer.queued:>7,}"
            f"  RSS {rss_mb_now():6.1f} MB",
            file=sys.stderr,
        )
    rss.append(rss_mb_now())
    cpu = time.process_time() - c0
    readings = sum(h.readings for h in gateway.health().values()) - start_readings
    detection = gateway.detection.stats if gateway.detection is not None else None
    stats = {
        "windows_scored": detection.scored if detection else 0,
        "detection_polls_dropped": detection.dropped if detection else 0,
        "rss_anon_last_mb": round(rss_mb_now("RssAnon"), 1),
        "rss_file_last_mb": round(rss_mb_now("RssFile"), 1),
    }
    stop.set()
    await task
    return readings, cpu, lates, rss, stats


async def bare_run(first_port: int, args: argparse.Namespace, seconds: float) -> tuple[int, float]:
    clients = [
        AsyncModbusTcpClient("127.0.0.1", port=first_port + d, timeout=1, retries=0) for d in range(args.devices)
    ]
    for c in clients:
        await c.connect()
    count = 0
    stop_at = time.monotonic() + seconds

    async def loop_one(c: AsyncModbusTcpClient) -> None:
        nonlocal count
        next_tick = time.monotonic()
        while time.monotonic() < stop_at:
            for address in range(0, 2 * args.floats, 124):  # at most 62 float32 per request
                r = await c.read_holding_registers(address, count=min(124, 2 * args.floats - address), device_id=1)
                if r.isError():
                    raise RuntimeError(f"reference poll failed: {r}")
                count += len(c.convert_from_registers(r.registers, c.DATATYPE.FLOAT32))
            next_tick += args.interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    c0 = time.process_time()
    await asyncio.gather(*(loop_one(c) for c in clients))
    cpu = time.process_time() - c0
    for c in clients:
        c.close()
    return count, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--floats", type=int, default=8, help="float32 values per device (at most 125)")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--models", action="store_true", help="start with a trained bundle installed for every device")
    args = parser.parse_args(argv)
    if not 1 <= args.floats <= 125:
        parser.error("--floats must be 1..125")
    first_port = free_ports(args.devices)
    farm = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "modbus_farm.py"),
            "--devices",
            str(args.devices),
            "--first-port",
            str(first_port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert farm.stdout is not None and farm.stdout.readline().startswith("READY")
        asked = args.devices * args.floats / args.interval
        with tempfile.TemporaryDirectory(prefix="poll-bench-") as tmp:
            readings, cpu, lates, rss, stats = asyncio.run(
                gateway_run(config_text(Path(tmp), first_port, args), args.seconds, args)
            )
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        bare_readings, bare_cpu = asyncio.run(bare_run(first_port, args, args.seconds))
    finally:
        farm.terminate()
        farm.wait()
    rate = readings / args.seconds
    lates_ms = sorted(x * 1000 for x in lates) or [0.0]
    figures = {
        "asked_readings_per_s": round(asked),
        "readings_per_s": round(rate),
        "delivered_ratio": round(rate / asked, 3),
        "cpu_s_per_1000_readings": round(1000 * cpu / max(readings, 1), 4),
        "jitter_p50_ms": round(statistics.median(lates_ms), 2),
        "jitter_p99_ms": round(lates_ms[int(0.99 * (len(lates_ms) - 1))], 2),
        "rss_mb": round(rss_mb, 1),
        "rss_first_mb": round(rss[0], 1),
        "rss_last_mb": round(rss[-1], 1),
        "rss_max_mb": round(max(rss), 1),
        # flatness: growth over the second half of the run (the first half fills queues and caches)
        "rss_growth_second_half_mb": round(rss[-1] - rss[len(rss) // 2], 1),
        "models": args.devices if args.models else 0,
        **stats,
        "reference_readings_per_s": round(bare_readings / args.seconds),
        "reference_cpu_s_per_1000_readings": round(1000 * bare_cpu / max(bare_readings, 1), 4),
    }
    figures["cpu_ratio_to_reference"] = round(
        figures["cpu_s_per_1000_readings"] / figures["reference_cpu_s_per_1000_readings"], 2
    )
    print(
        f"gateway  : {rate:8.0f} readings/s of {asked:.0f} asked ({figures['delivered_ratio']:.1%}), "
        f"{figures['cpu_s_per_1000_readings']:.4f} CPU-s per 1000 readings, RSS {rss_mb:.0f} MB"
    )
    print(
        f"RSS      : {rss[0]:.0f} MB at the start of the measured run, {rss[-1]:.0f} MB at its end, "
        f"{max(rss):.0f} MB at most (sampled every 5 s); "
        f"{figures['rss_growth_second_half_mb']:+.1f} MB over the second half; at the end "
        f"{stats['rss_anon_last_mb']:.0f} MB heap, {stats['rss_file_last_mb']:.0f} MB mapped files"
    )
    print(
        f"detection: {stats['windows_scored']:,} windows scored with {figures['models']} bundles installed, "
        f"{stats['detection_polls_dropped']:,} polls not offered to it (its queue full)"
    )
    print(f"jitter   : poll start late by p50 {figures['jitter_p50_ms']} ms, p99 {figures['jitter_p99_ms']} ms")
    print(
        f"reference: {figures['reference_readings_per_s']:8d} readings/s, "
        f"{figures['reference_cpu_s_per_1000_readings']:.4f} CPU-s per 1000 (bare pymodbus loop, no store); "
        f"ratio {figures['cpu_ratio_to_reference']}"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
