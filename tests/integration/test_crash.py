"""kill -9 of gatewayd while it writes: every reading it had committed is still there after a
restart, and the database is intact."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.store.database import Store
from tests.integration.support import stop_everything

pytestmark = pytest.mark.integration


def committed(db) -> int:
    try:
        store = Store(db, readonly=True)
    except sqlite3.OperationalError:
        return 0
    try:
        return store.reading_count()
    except sqlite3.OperationalError:
        return 0
    finally:
        store.close()


def test_kill_9_loses_no_committed_reading(tmp_path):
    nodes = [VirtualNode(unit=u, seed=u, period_ms=20) for u in (1, 2, 3)]
    proc = None
    try:
        for n in nodes:
            n.start()
        devices = "".join(
            f'\n[[devices]]\nname = "n{i}"\nhost = "127.0.0.1"\nport = {n.port}\nunit = {i}\ninterval_s = 0.05\n'
            for i, n in enumerate(nodes, 1)
        )
        config = tmp_path / "gatewayd.toml"
        config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n\n[store]\nflush_interval_s = 0.1\n{devices}')
        db = tmp_path / "gatewayd.sqlite3"
        run = [sys.executable, "-m", "gatewayd", "run", "--config", str(config)]
        highest = 0
        for _round in range(3):
            proc = subprocess.Popen(run, stderr=subprocess.DEVNULL)
            start = committed(db)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                seen = committed(db)
                highest = max(highest, seen)
                if seen >= start + 300:
                    break
                time.sleep(0.05)
            seen = committed(db)  # acknowledged: committed and visible to another connection
            highest = max(highest, seen)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert committed(db) >= highest
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        proc = subprocess.Popen(run, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert committed(db) > highest >= 900
    finally:
        stop_everything(proc, nodes)
