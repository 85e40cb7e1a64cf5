"""Polling many Modbus TCP devices through the gateway's pollers (profile, decoding, the store
writer), beside a bare pymodbus client loop polling the same devices in the same run.

    .venv/bin/python bench/poll.py [--devices 100] [--floats 8] [--interval 0.1] [--seconds 20]

The devices run in a separate process (bench/modbus_farm.py), so CPU time is the gateway's.
Prints readings per second delivered against those asked for, CPU seconds per 1000 readings,
the schedule jitter (how late each poll started against its slot, p50 and p99), RSS and its
growth over the second half of the run; progress every 5 s on stderr; last line: a JSON object.

10x overload (80,000 readings/s asked, more than one core can store):
    .venv/bin/python bench/poll.py --floats 80 --seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
from array import array
import json
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


def rss_mb_now() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def gateway_run(config_text_: str, seconds: float) -> tuple[int, float, array, list[float]]:
    config = parse_config(config_text_)
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
        print(f"  {seconds - (end - loop.time()):6.0f} s  {done:>10,} readings  queued {gateway.writer.queued:>7,}"
              f"  RSS {rss_mb_now():6.1f} MB", file=sys.stderr)  # fmt: skip
    rss.append(rss_mb_now())
    cpu = time.process_time() - c0
    readings = sum(h.readings for h in gateway.health().values()) - start_readings
    stop.set()
    await task
    return readings, cpu, lates, rss


async def bare_run(first_port: int, args: argparse.Namespace, seconds: float) -> tuple[int, float]:
    clients = [AsyncModbusTcpClient("127.0.0.1", port=first_port + d, timeout=1, retries=0) for d in range(args.devices)]
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
    args = parser.parse_args(argv)
    if not 1 <= args.floats <= 125:
        parser.error("--floats must be 1..125")
    first_port = free_ports(args.devices)
    farm = subprocess.Popen([sys.executable, str(REPO / "bench" / "modbus_farm.py"), "--devices", str(args.devices),
                             "--first-port", str(first_port)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert farm.stdout is not None and farm.stdout.readline().startswith("READY")
        asked = args.devices * args.floats / args.interval
        with tempfile.TemporaryDirectory(prefix="poll-bench-") as tmp:
            readings, cpu, lates, rss = asyncio.run(gateway_run(config_text(Path(tmp), first_port, args), args.seconds))
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
        "reference_readings_per_s": round(bare_readings / args.seconds),
        "reference_cpu_s_per_1000_readings": round(1000 * bare_cpu / max(bare_readings, 1), 4),
    }
    figures["cpu_ratio_to_reference"] = round(figures["cpu_s_per_1000_readings"] / figures["reference_cpu_s_per_1000_readings"], 2)
    print(f"gateway  : {rate:8.0f} readings/s of {asked:.0f} asked ({figures['delivered_ratio']:.1%}), "
          f"{figures['cpu_s_per_1000_readings']:.4f} CPU-s per 1000 readings, RSS {rss_mb:.0f} MB")
    print(f"RSS      : {rss[0]:.0f} MB at the start of the measured run, {rss[-1]:.0f} MB at its end, "
          f"{max(rss):.0f} MB at most (sampled every 5 s); "
          f"{figures['rss_growth_second_half_mb']:+.1f} MB over the second half")
    print(f"jitter   : poll start late by p50 {figures['jitter_p50_ms']} ms, p99 {figures['jitter_p99_ms']} ms")
    print(f"reference: {figures['reference_readings_per_s']:8d} readings/s, "
          f"{figures['reference_cpu_s_per_1000_readings']:.4f} CPU-s per 1000 (bare pymodbus loop, no store); "
          f"ratio {figures['cpu_ratio_to_reference']}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
