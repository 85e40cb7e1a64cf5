"""The demo's detection story, end to end and shortened (one pump instead of three, a minute of
scoring before the fault instead of several): the virtual node, the daemon's own training and calibration,
scoring. While the pump runs normally no model alert is raised; when its motor current jumps,
the node's edge alert comes first and the gateway's model alert naming `current` follows within
a few windows, and stays open while the fault holds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.store.database import Store

REPO = Path(__file__).resolve().parents[2]
FAULT_AFTER_S = 360  # the demo's five minutes of data, then a minute of scoring
DURATION_S = 400


@pytest.mark.integration
@pytest.mark.timeout(DURATION_S + 240)
def test_no_model_alert_in_normal_operation_and_one_naming_the_fault(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "gatewayd",
            "demo",
            "--nodes",
            "1",
            "--duration",
            str(DURATION_S),
            "--fault-after",
            str(FAULT_AFTER_S),
            "--dashboard-port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DURATION_S + 200,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "models trained in this run: pump-1 v1" in res.stdout, res.stdout[-2000:]
    store = Store(tmp_path / "var" / "gatewayd.sqlite3", readonly=True)
    try:
        alerts = store.alerts()
    finally:
        store.close()
    edge = [a for a in alerts if a["kind"] == "edge"]
    model = [a for a in alerts if a["kind"] == "model"]
    assert edge, f"the node raised no edge alert: {alerts}"
    fault_ms = min(a["opened_ms"] for a in edge)
    before = [a for a in model if a["opened_ms"] < fault_ms - 5_000]
    assert not before, f"model alerts in normal operation: {before}"
    after = [a for a in model if a["opened_ms"] >= fault_ms - 5_000]
    assert len(after) == 1, f"expected one model alert for the fault: {model}"
    alert = after[0]
    assert alert["opened_ms"] - fault_ms <= 15_000, "the model alert came more than a few windows late"
    assert alert["channels"][0] == "current", alert
    assert alert["closed_ms"] is None, "the incident closed while the fault still held"
