"""gatewayd, polling the node over the bench's link, records a trip as a critical alert
within a second."""

import sqlite3
import subprocess
import sys
import time

from gatewayd.store.database import Store
from hil_tests.bench import Bench

POLL_S = 0.2


def gateway_config(bench: Bench, state_dir) -> str:
    link = bench.link
    device = f'[[devices]]\nname = "{bench.plan.id}"\nprofile = "edge-node"\nunit = {bench.plan.unit}\ninterval_s = {POLL_S}\n'
    if link.transport == "tcp":
        device += f'host = "{link.host}"\nport = {link.port}\n'
        bus = ""
    else:
        device += 'transport = "rtu"\nbus = "bench"\n'
        bus = (
            f'[[buses]]\nname = "bench"\nport = "{link.device}"\nbaud = {link.baud}\nparity = "{link.parity}"\n'
            f"stop_bits = {link.stop_bits}\n"
        )
    return (
        f'[gateway]\nname = "hil"\nstate_dir = "{state_dir}"\n\n[store]\nflush_interval_s = 0.2\n\n'
        f"[detection]\nenabled = false\n\n{bus}\n{device}"
    )


def critical_edge_alerts(db, device: str) -> list[dict]:
    try:
        store = Store(db, readonly=True)
    except sqlite3.OperationalError:
        return []  # not created yet
    try:
        return [a for a in store.alerts(device=device) if a["severity"] == "critical" and a["kind"] == "edge"]
    except sqlite3.OperationalError:
        return []
    finally:
        store.close()


def test_gateway_sees_the_trip_as_a_critical_alert_within_1s(bench: Bench, rig, healthy, tmp_path, record_property):
    config = tmp_path / "gatewayd.toml"
    config.write_text(gateway_config(bench, tmp_path / "state"))
    db = tmp_path / "state" / "gatewayd.sqlite3"
    if bench.link.transport == "rtu":
        bench.link.close()  # the adapter is the gateway's for this test
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = tmp_path / "state" / "status.json"
        bench.wait(
            "gatewayd polling the node", lambda: status.exists() and '"online"' in status.read_text(), 30.0, every_s=0.1
        )
        assert not critical_edge_alerts(db, bench.plan.id)
        rig.drive(bench.channel, "value", bench.faults()["out-of-bound"].size)
        tripped = rig.wait_output(bench.output, False, 2.0)
        assert tripped is not None
        alerts = bench.wait(
            "a critical alert in the gateway's store",
            lambda: critical_edge_alerts(db, bench.plan.id),
            5.0,
            every_s=0.005,
        )
        stored = time.time()
        # Seen: the poll that read the trip (the alert's own time); stored: on disk, where the test found it.
        seen = alerts[0]["opened_ms"] / 1000
        record_property("alert_seen_after_trip_ms", round((seen - tripped) * 1000))
        record_property("alert_stored_after_trip_ms", round((stored - tripped) * 1000))
        assert seen - tripped <= 1.0, f"the gateway saw the trip {seen - tripped:.2f} s after it happened"
        assert alerts[0]["channels"] == [bench.plan.channels[bench.channel]]
        assert "high" in alerts[0]["detail"]["checks"]
    finally:
        rig.release(bench.channel)
        daemon.terminate()
        _, stderr = daemon.communicate(timeout=15)
    assert daemon.returncode == 0, stderr
