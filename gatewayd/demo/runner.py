"""`gatewayd demo`: three virtual nodes and the daemon on an embedded configuration,
live progress for about a minute, then a summary of what landed in the store.

Each run starts from fresh state: the demo clears its own state folder (`./var` unless
`--state-dir`) first, and only a folder it made itself (marked with `.gatewayd-demo`, or one an
earlier demo filled with nothing but its own files). `--keep` carries on from the last run
instead (its store, models, open alerts, the nodes' trip latches), and says so."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

from gatewayd import daemon
from gatewayd.clock import now_ms
from gatewayd.config import Config, parse_config
from gatewayd.daemon_status import describe_models
from gatewayd.demo.virtual_node import VirtualNode, free_port
from gatewayd.errors import GatewayError
from gatewayd.models.install import ModelStore
from gatewayd.store.database import Store

DEMO_CONFIG = """\
# Written by `gatewayd demo` for one run: its virtual nodes and their ports lived only while the
# demo ran, so nothing answers at the devices below any more. Read what the run stored with
#   gatewayd status --config {path}    (or alert list, export)
# The next `gatewayd demo` clears this folder and starts afresh, unless given --keep.
[gateway]
name = "demo"
state_dir = "{state_dir}"

[store]
flush_interval_s = 1.0
compact_after_s = 20

[detection]                # the pumps change speed every 20-60 s: a few minutes show most of their range
window_s = 5.0
hop_s = 1.0
bootstrap_minutes = {bootstrap_minutes:g}
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

MARKER = ".gatewayd-demo"  # in a state folder the demo made: the next run may clear it
MARKER_TEXT = "This folder is `gatewayd demo`'s state: each demo run clears it first (unless --keep).\n"
# Everything a demo run leaves in its folder (the daemon's state, the nodes' flash): a folder of
# these alone, with the demo's configuration among them, is an earlier demo's from before the marker.
DEMO_ENTRIES = frozenset(
    {
        "demo-gatewayd.toml",
        "gatewayd.sqlite3",
        "gatewayd.sqlite3-wal",
        "gatewayd.sqlite3-shm",
        "gatewayd.sqlite3-journal",
        "gatewayd.reserve",
        "status.json",
        "keys",
        "models",
        "nodes",
    }
)


class DemoStateError(GatewayError, ValueError):
    """The state folder is not the demo's to clear or write into."""


def is_demo_folder(folder: Path) -> bool:
    """Whether `folder` was made by `gatewayd demo`: it holds the marker, or (an earlier demo's,
    from before the marker) only what a demo run writes, its configuration among it."""
    if (folder / MARKER).is_file():
        return True
    config = folder / "demo-gatewayd.toml"
    try:
        first = config.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith("# Written by `gatewayd demo`") and all(e.name in DEMO_ENTRIES for e in folder.iterdir())


def prepare_state_dir(state_dir: Path, *, keep: bool = False) -> str:
    """Make `state_dir` (absolute) the demo's folder for this run: created, cleared of an earlier
    demo's state, or with `keep` kept as it is. Returns what was done, for the user; raises
    DemoStateError, touching nothing, for a folder the demo did not make."""
    if state_dir.exists() and not state_dir.is_dir():
        raise DemoStateError(f"{state_dir} is not a folder")
    if not state_dir.exists() or not any(state_dir.iterdir()):
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / MARKER).write_text(MARKER_TEXT)
        return f"state: {state_dir} (new)"
    if not is_demo_folder(state_dir):
        raise DemoStateError(
            f"{state_dir} holds files that `gatewayd demo` did not write (it has no {MARKER}): the demo neither "
            "clears nor writes into it. Pass another --state-dir (a new or empty folder), or remove this one."
        )
    if keep:
        (state_dir / MARKER).write_text(MARKER_TEXT)
        return (
            f"state: kept {state_dir} (--keep): the store, models, open alerts and the nodes' trip latches "
            "of earlier runs carry on"
        )
    here = Path.cwd().resolve()
    if state_dir == here or state_dir in here.parents or state_dir == Path.home().resolve():
        raise DemoStateError(
            f"{state_dir} holds the working directory or is the home folder: the demo does not "
            "clear it; pass another --state-dir"
        )
    for entry in state_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (state_dir / MARKER).write_text(MARKER_TEXT)
    return (
        f"state: {state_dir} (cleared: this run starts with no readings, models or alerts of earlier runs; "
        "--keep keeps them)"
    )


BOOTSTRAP_MINUTES = 5.0  # covers about 90 % of the simulated pumps' operating range (setpoints 0.6-1.0)
DURATION_S = 420.0  # the bootstrap, then two minutes of scoring


def demo_config(
    state_dir: Path,
    ports: list[int],
    interval_s: float,
    path: Path,
    dashboard_port: int | None = None,
    bootstrap_minutes: float = BOOTSTRAP_MINUTES,
) -> str:
    devices = "".join(DEVICE.format(unit=i + 1, port=p, interval_s=interval_s) for i, p in enumerate(ports))
    dashboard = DASHBOARD.format(port=dashboard_port) if dashboard_port else ""
    return DEMO_CONFIG.format(
        state_dir=state_dir, devices=devices, path=path, dashboard=dashboard, bootstrap_minutes=bootstrap_minutes
    )


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
    *,
    duration_s: float = DURATION_S,
    nodes: int = 3,
    state_dir: Path = Path("var"),
    interval_s: float = 0.5,
    progress_s: float = 5.0,
    out: TextIO = sys.stdout,
    dashboard: int = 8080,
    fault_after_s: float | None = None,
    keep: bool = False,
    bootstrap_minutes: float = BOOTSTRAP_MINUTES,
) -> int:
    state_dir = state_dir.resolve()
    print(prepare_state_dir(state_dir, keep=keep), file=out)
    print(f"starting {nodes} virtual nodes (MicroPython unix port, simulated pump plant)", file=out)
    started = []
    try:
        for unit in range(1, nodes + 1):
            fault: tuple[str, ...] = ()
            if fault_after_s is not None and unit == nodes:  # the current channel (3), in 100 ms samples
                fault = ("--fault", f"3:offset:{int(fault_after_s * 10)}:{FAULT_A:g}")
                print(f"  pump-{unit}: its motor current will jump {FAULT_A:g} A after {fault_after_s:g} s", file=out)
            node = VirtualNode(unit, seed=unit, state_dir=state_dir / "nodes" / f"pump-{unit}", extra_args=fault)
            node.start()
            started.append(node)
            print(f"  pump-{unit}: Modbus TCP on 127.0.0.1:{node.port}, unit {unit}", file=out)
        config_path = state_dir / "demo-gatewayd.toml"
        port = dashboard_port(dashboard) if dashboard else None
        text = demo_config(
            state_dir, [n.port for n in started if n.port], interval_s, config_path, port, bootstrap_minutes
        )
        config_path.write_text(text)
        config = parse_config(text, str(config_path))
        models_before = installed_models(config)
        print(f"gatewayd: polling every {interval_s:g} s, store {state_dir / 'gatewayd.sqlite3'}", file=out)
        if port:
            print(f"dashboard: http://127.0.0.1:{port}/", file=out)
        print(f"running for {duration_s:g} s (Ctrl-C stops early)\n", file=out, flush=True)
        since_ms = now_ms()
        gateway, elapsed = asyncio.run(_run(config, duration_s, progress_s, out))
    finally:
        for node in started:
            node.stop()
    _summary(config, gateway, since_ms, elapsed, out, models_before)
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
        models = describe_models(d["models"])
        print(f"  models: {models}; {d['windows']} windows, {d['incidents']} incidents", file=out)
    for name, h in gateway.health().items():
        values = "  ".join(f"{ch} {v:.2f} {h.units.get(ch, '')}".rstrip() for ch, v in h.last_values.items())
        print(f"  {name:<8} {h.state:<10} {h.readings:>6} readings  {values}", file=out)
    out.flush()


def installed_models(config: Config) -> dict[str, int | None]:
    """The version of each device's installed bundle (None: none), before the daemon starts."""
    store = ModelStore(config.models_path, [])
    return {dev.name: store.installed_version(dev.name) for dev in config.devices}


def models_line(models: dict[str, dict], before: dict[str, int | None]) -> str:
    """Which models this run trained, and which it loaded as an earlier run (--keep) left them."""
    trained = [f"{n} v{m['version']}" for n, m in models.items() if m["version"] and m["version"] != before.get(n)]
    loaded = [f"{n} v{m['version']}" for n, m in models.items() if m["version"] and m["version"] == before.get(n)]
    parts = [f"models trained in this run: {', '.join(trained) or 'none'}"]
    if loaded:
        parts.append(f"loaded from an earlier run: {', '.join(loaded)}")
    return "; ".join(parts)


def _summary(
    config: Config,
    gateway: daemon.Gateway,
    since_ms: int,
    elapsed: float,
    out: TextIO,
    models_before: dict[str, int | None],
) -> None:
    store = Store.in_state_dir(config.state_path)
    try:
        rows = store.summaries(since_ms)
        total = store.reading_count()
    finally:
        store.close()
    print(
        f"\nsummary: {gateway.writer.written} readings stored in {elapsed:.1f} s "
        f"({gateway.writer.written / max(elapsed, 1e-9):.0f}/s), {total} in the store",
        file=out,
    )
    print(f"  {'device':<8} {'channel':<12} {'unit':<5} {'count':>6} {'min':>8} {'mean':>8} {'max':>8}", file=out)
    for r in rows:
        if r.count:
            print(
                f"  {r.device:<8} {r.channel:<12} {r.unit:<5} {r.count:>6} "
                f"{r.minimum:>8.2f} {r.mean:>8.2f} {r.maximum:>8.2f}",
                file=out,
            )
    for name, h in gateway.health().items():
        if h.state != "online":
            print(f"  {name}: {h.state}, last error: {h.last_error}", file=out)
    if gateway.detection is not None:
        d = gateway.detection.status()
        print(
            f"detection: {d['windows']} windows; {models_line(d['models'], models_before)}; "
            f"{d['incidents']} incidents opened (gatewayd alert list --config "
            f"{config.state_path / 'demo-gatewayd.toml'})",
            file=out,
        )
    print(f"database: {store.path}", file=out)
