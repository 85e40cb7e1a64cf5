"""`gatewayd demo`: three virtual nodes and the daemon on an embedded configuration,
live progress for about a minute, then a summary of what landed in the store."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

from gatewayd import daemon
from gatewayd.config import Config, parse_config
from gatewayd.store import Store
from gatewayd.virtual_node import VirtualNode, free_port

DEMO_CONFIG = """\
# Written by `gatewayd demo`; run it again with: gatewayd run --config {path}
[gateway]
name = "demo"
state_dir = "{state_dir}"

[store]
flush_interval_s = 1.0
compact_after_s = 20

[detection]                # short, so that the demo's minute shows local training and scoring
window_s = 5.0
hop_s = 1.0
bootstrap_minutes = 0.5
trees = 50
{dashboard}{devices}"""

DASHBOARD = """
[dashboard]                # open it in a browser while the demo runs
enabled = true
port = {port}
"""

DEVICE = """
[[devices]]
name = "pump-{unit}"
profile = "edge-node"
host = "127.0.0.1"
port = {port}
unit = {unit}
interval_s = {interval_s}
"""


FAULT_A = 20.0  # --fault-after: the motor current of the last pump jumps this much, past its bound


def demo_config(state_dir: Path, ports: list[int], interval_s: float, path: Path, dashboard_port: int | None = None) -> str:
    devices = "".join(DEVICE.format(unit=i + 1, port=p, interval_s=interval_s) for i, p in enumerate(ports))
    dashboard = DASHBOARD.format(port=dashboard_port) if dashboard_port else ""
    return DEMO_CONFIG.format(state_dir=state_dir, devices=devices, path=path, dashboard=dashboard)


def dashboard_port(wanted: int) -> int:
    """`wanted` if nothing listens there, else any free port (the demo's dashboard must not
    fail because another program has 8080)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            return free_port()


def run_demo(
    *, duration_s: float = 60, nodes: int = 3, state_dir: Path = Path("var"), interval_s: float = 0.5,
    progress_s: float = 5.0, out: TextIO = sys.stdout, dashboard: int = 8080, fault_after_s: float | None = None,
) -> int:  # fmt: skip
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting {nodes} virtual nodes (MicroPython unix port, simulated pump plant)", file=out)
    started = []
    try:
        for unit in range(1, nodes + 1):
            fault = ()
            if fault_after_s is not None and unit == nodes:  # the current channel (3), in 100 ms samples
                fault = ("--fault", f"3:offset:{int(fault_after_s * 10)}:{FAULT_A:g}")
                print(f"  pump-{unit}: its motor current will jump {FAULT_A:g} A after {fault_after_s:g} s", file=out)
            node = VirtualNode(unit, seed=unit, state_dir=state_dir / "nodes" / f"pump-{unit}", extra_args=fault)
            node.start()
            started.append(node)
            print(f"  pump-{unit}: Modbus TCP on 127.0.0.1:{node.port}, unit {unit}", file=out)
        config_path = state_dir / "demo-gatewayd.toml"
        port = dashboard_port(dashboard) if dashboard else None
        text = demo_config(state_dir, [n.port for n in started if n.port], interval_s, config_path, port)
        config_path.write_text(text)
        config = parse_config(text, str(config_path))
        print(f"gatewayd: polling every {interval_s:g} s, store {state_dir / 'gatewayd.sqlite3'}", file=out)
        if port:
            print(f"dashboard: http://127.0.0.1:{port}/", file=out)
        print(f"running for {duration_s:g} s (Ctrl-C stops early)\n", file=out, flush=True)
        since_ms = time.time_ns() // 1_000_000
        gateway, elapsed = asyncio.run(_run(config, duration_s, progress_s, out))
    finally:
        for node in started:
            node.stop()
    _summary(config, gateway, since_ms, elapsed, out)
    return 0 if gateway.writer.written else 1


async def _run(config: Config, duration_s: float, progress_s: float, out: TextIO) -> tuple[daemon.Gateway, float]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready: asyncio.Future[daemon.Gateway] = loop.create_future()
    task = asyncio.create_task(daemon.run(config, stop, ready))
    gateway = await ready
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            left = duration_s - (time.monotonic() - t0)
            if left <= 0:
                break
            try:
                await asyncio.wait_for(stop.wait(), min(progress_s, left))
            except TimeoutError:
                pass
            _progress(gateway, time.monotonic() - t0, out)
    finally:
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    await task
    return gateway, time.monotonic() - t0


def _progress(gateway: daemon.Gateway, elapsed: float, out: TextIO) -> None:
    print(f"[{elapsed:5.1f} s] stored {gateway.writer.written} readings, {gateway.alerts} alerts", file=out)
    if gateway.detection is not None:
        d = gateway.detection.status()
        models = ", ".join(f"{name} " + (f"v{m['version']}" if m["version"] else
                                          "training" if m["training"] else f"collecting ({m['collected']} windows)")
                           for name, m in d["models"].items())  # fmt: skip
        print(f"  models: {models}; {d['windows']} windows, {d['incidents']} incidents", file=out)
    for name, h in gateway.health().items():
        values = "  ".join(f"{ch} {v:.2f} {h.units.get(ch, '')}".rstrip() for ch, v in h.last_values.items())
        print(f"  {name:<8} {h.state:<10} {h.readings:>6} readings  {values}", file=out)
    out.flush()


def _summary(config: Config, gateway: daemon.Gateway, since_ms: int, elapsed: float, out: TextIO) -> None:
    store = Store.in_state_dir(config.state_path)
    try:
        rows = store.summaries(since_ms)
        total = store.reading_count()
    finally:
        store.close()
    print(f"\nsummary: {gateway.writer.written} readings stored in {elapsed:.1f} s "
          f"({gateway.writer.written / max(elapsed, 1e-9):.0f}/s), {total} in the store", file=out)  # fmt: skip
    print(f"  {'device':<8} {'channel':<12} {'unit':<5} {'count':>6} {'min':>8} {'mean':>8} {'max':>8}", file=out)
    for r in rows:
        if r.count:
            print(f"  {r.device:<8} {r.channel:<12} {r.unit:<5} {r.count:>6} "
                  f"{r.minimum:>8.2f} {r.mean:>8.2f} {r.maximum:>8.2f}", file=out)  # fmt: skip
    for name, h in gateway.health().items():
        if h.state != "online":
            print(f"  {name}: {h.state}, last error: {h.last_error}", file=out)
    if gateway.detection is not None:
        d = gateway.detection.status()
        trained = [f"{n} v{m['version']}" for n, m in d["models"].items() if m["version"]]
        print(f"detection: {d['windows']} windows, models trained here: {', '.join(trained) or 'none yet'}, "
              f"{d['incidents']} incidents (gatewayd alert list --config {config.state_path / 'demo-gatewayd.toml'})",
              file=out)  # fmt: skip
    print(f"database: {store.path}", file=out)
