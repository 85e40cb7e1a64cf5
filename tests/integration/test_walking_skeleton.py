"""End to end: virtual nodes in the MicroPython binary, `gatewayd run` as its own process,
readings with plausible values in SQLite."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.store.database import Store
from tests.integration.support import stop_everything

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GATEWAYD = [sys.executable, "-m", "gatewayd"]

PLAUSIBLE = {"pressure": (0.5, 7.0), "flow": (10.0, 35.0), "temperature": (15.0, 45.0), "current": (2.0, 12.0)}


def write_config(path: Path, state_dir: Path, ports: list[int]) -> None:
    devices = "".join(
        f'\n[[devices]]\nname = "node-{i + 1}"\nhost = "127.0.0.1"\nport = {p}\nunit = {i + 1}\ninterval_s = 0.2\n'
        for i, p in enumerate(ports)
    )
    path.write_text(f'[gateway]\nname = "it"\nstate_dir = "{state_dir}"\n\n[store]\nflush_interval_s = 0.2\n{devices}')


def test_gatewayd_run_stores_plausible_readings_from_virtual_nodes(tmp_path):
    nodes = [VirtualNode(unit=1, seed=11), VirtualNode(unit=2, seed=12)]
    daemon = None
    try:
        for n in nodes:
            n.start()
        config = tmp_path / "gatewayd.toml"
        write_config(config, tmp_path / "state", [n.port for n in nodes])
        daemon = subprocess.Popen([*GATEWAYD, "run", "--config", str(config)], stderr=subprocess.PIPE, text=True)
        db_path = tmp_path / "state" / "gatewayd.sqlite3"
        deadline = time.monotonic() + 20
        count = 0
        while time.monotonic() < deadline and count < 80:
            time.sleep(0.3)
            if db_path.exists():
                try:
                    store = Store(db_path, readonly=True)
                    count = store.reading_count()
                    store.close()
                except sqlite3.OperationalError:
                    count = 0  # schema not created yet
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=15)
        assert daemon.returncode == 0, stderr
        assert count >= 80, stderr
    finally:
        stop_everything(daemon, nodes)

    store = Store(db_path, readonly=True)
    try:
        assert store.journal_mode() == "wal"
        series = {(d, c): store.readings(d, c) for _, d, c, _ in store.channels()}
    finally:
        store.close()
    assert set(series) == {(f"node-{i}", ch) for i in (1, 2) for ch in PLAUSIBLE}
    now_ms = time.time() * 1000
    for (device, channel), b in series.items():
        lo, hi = PLAUSIBLE[channel]
        low, high = b.values.min(), b.values.max()
        assert lo < low <= high < hi, (device, channel, low, high)
        assert low < high, f"{device}/{channel} is constant"
        assert now_ms - 60_000 < b.ts_ms[0] < b.ts_ms[-1] <= now_ms
        assert (np.diff(b.ts_ms) > 0).all(), "one reading per poll, in time order"
    assert "gatewayd stopped" in stderr


def test_check_config_exit_codes(tmp_path):
    good = tmp_path / "good.toml"
    write_config(good, tmp_path, [5020])
    ok = subprocess.run([*GATEWAYD, "check-config", "--config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok (1 devices)" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("unit = 1\n", "unit = 1\npoll_rate = 3\n"))
    line = bad.read_text().splitlines().index("poll_rate = 3") + 1
    res = subprocess.run([*GATEWAYD, "check-config", "--config", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"{bad}:{line}: devices.0.poll_rate: unknown key" in res.stderr
    run = subprocess.run([*GATEWAYD, "run", "--config", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2 and "poll_rate" in run.stderr


def test_demo_runs_from_a_bare_copy_of_the_repository(tmp_path):
    """The demo needs nothing beside the clone: copy the tracked files and run it there."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    clone = tmp_path / "clone"
    for rel in listed:
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("EDGE_FIRMWARE_DIR", None)
    res = subprocess.run(
        [*GATEWAYD, "demo", "--duration", "4", "--progress", "1", "--interval", "0.2"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "starting 3 virtual nodes" in out
    assert out.count("] stored ") >= 3, out
    for unit in (1, 2, 3):
        assert f"pump-{unit}   online" in out
        assert f"  pump-{unit}   flow " in out
    db = clone / "var" / "gatewayd.sqlite3"
    assert f"database: {db}" in out
    store = Store(db, readonly=True)
    try:
        devices = {device for _, device, _, _ in store.channels() if store.reading_count(device)}
    finally:
        store.close()
    assert devices == {"pump-1", "pump-2", "pump-3"}
    assert (clone / "var" / "demo-gatewayd.toml").exists()
