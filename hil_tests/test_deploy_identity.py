"""Deploy and boot; identity and register map over Modbus."""

import pytest

from gatewayd.acquisition.profiles import edge_node as reg
from hil_tests.bench import Bench


def test_deploy_and_boot(bench: Bench, record_property):
    report = bench.deploy
    if report is None:
        pytest.skip("--no-deploy: the node was deployed before the run")
    record_property("deploy_s", round(report.seconds, 2))
    assert report.identity is not None
    assert (report.identity.unit, report.identity.channels) == (bench.plan.unit, len(bench.plan.channels))
    assert report.identity.register_map == reg.MAP_VERSION
    assert "main.py" in report.written and "config.json" in report.written + report.unchanged
    assert {"app.mpy", "node.mpy", "detectors.mpy"} <= set(report.written + report.unchanged)
    if bench.virtual:
        flash = bench.rig.flash  # type: ignore[union-attr]
        assert (flash / "config.json").read_text() == bench.plan.config_json
        assert not list(flash.glob("node.py")), "sources shadowing the compiled modules"
    # It runs: the sample counter moves at the configured period.
    first = bench.link.status().samples
    bench.wait("five samples", lambda: bench.link.status().samples - first >= 5, timeout_s=3.0 + 20 * bench.period_s)


def test_identity_and_register_map(bench: Bench):
    status = bench.link.status()
    assert status[reg.IR_MAGIC] == reg.MAGIC
    assert status[reg.IR_MAP_VERSION] == reg.MAP_VERSION, "a map version this gateway does not read"
    assert status[reg.IR_NODE_ID] == bench.plan.unit
    assert status[reg.IR_CHANNEL_COUNT] == len(bench.plan.channels)
    assert status[reg.IR_SAMPLE_PERIOD_MS] == bench.plan.config["sample_period_ms"]
    assert status[reg.IR_OUTPUT_COUNT] == len(bench.plan.config["outputs"])
    assert status[reg.IR_CONFIG_ERROR] == 0
    assert status[reg.IR_NODE_STATUS] & reg.STATUS_RUNNING
    assert bool(status[reg.IR_NODE_STATUS] & reg.STATUS_WATCHDOG) == bool(bench.watchdog_s)
    fw = status[reg.IR_FW_VERSION]
    if bench.deploy is not None and bench.deploy.identity is not None:
        assert f"{fw >> 8}.{fw & 0xFF}" == bench.deploy.identity.firmware
    assert bench.link.channel_names(len(bench.plan.channels)) == bench.plan.channels
    # The gateway's own profile accepts what the node says about itself.
    identity = reg.parse_identity(status.registers)
    assert (identity.node_id, identity.channel_count) == (bench.plan.unit, len(bench.plan.channels))
