"""The demo's detection story, end to end and shortened (one pump instead of three, a minute of
scoring before the fault instead of several): the virtual node, the daemon's own training and calibration,
scoring. While the pump runs normally no model alert is raised; when its motor current jumps,
the node's edge alert comes first and the gateway's model alert naming `current` follows within
a few windows, and stays open while the fault holds. The demo runs in the background from the
start of the session (demo_run.py)."""

import pytest

from gatewayd.store.database import Store
from tests.integration import demo_run


@pytest.mark.integration
@pytest.mark.timeout(demo_run.DURATION_S + 240)
def test_no_model_alert_in_normal_operation_and_one_naming_the_fault():
    run = demo_run.wait(timeout_s=demo_run.DURATION_S + 200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "models trained in this run: pump-1 v1" in run.stdout, run.stdout[-2000:]
    store = Store(run.folder / "var" / "gatewayd.sqlite3", readonly=True)
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
