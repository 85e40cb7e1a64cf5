"""Injected faults trip the safety output within one sample period of being detectable,
and the trip stays latched until the node's own reset path clears it, across a reset of
the board too."""

import time

import pytest

from gatewayd.acquisition.profiles import edge_node as reg
from hil_tests.bench import Bench


@pytest.mark.parametrize("name", ["out-of-bound", "fast-ramp", "stuck"])
def test_trip_within_one_sample_period_and_latched(bench: Bench, rig, healthy, name, record_property):
    fault = bench.faults().get(name)
    if fault is None:
        pytest.skip(f"channel {bench.channel} has no check for a {name} fault (no rate limit)")
    kind, size, check, samples = fault
    trips_before = bench.link.status().trips
    try:
        injected = rig.drive(bench.channel, kind, size)
        tripped = rig.wait_output(bench.output, False, samples * bench.period_s + 2.0)
        assert tripped is not None, f"{bench.output} still energised after the {name} injection"
        latency = tripped - injected
        record_property("trip_latency_ms", round(latency * 1000, 1))
        limit = samples * bench.period_s + bench.slack_s
        assert latency <= limit, (
            f"{name}: the output tripped {latency * 1000:.0f} ms after the injection; the check needs "
            f"{samples} sample(s) of {bench.period_s * 1000:.0f} ms, so at most {limit * 1000:.0f} ms"
        )
        status = bench.link.status()
        assert status.latched, "tripped but not latched"
        assert status[reg.IR_NODE_STATUS] & reg.STATUS_TRIP_LATCHED
        assert bench.cause() == (bench.channel, check)
        assert status.trips == trips_before + 1
    finally:
        rig.release(bench.channel)
    # The cause goes away; the trip does not.
    bench.wait_quiet()
    hold_until = time.monotonic() + max(1.0, 5 * bench.period_s)
    while time.monotonic() < hold_until:
        assert not rig.output(bench.output), "the output came back without a reset"
        time.sleep(bench.period_s / 2)
    assert bench.link.status().latched
    # Only the reset path clears it; the output returns once the node is healthy.
    assert bench.link.write_reset(bench.reset_code) == 0
    assert rig.wait_output(bench.output, True, bench.ready_s()) is not None
    assert not bench.link.status().latched


def test_reset_keeps_the_latch_and_only_the_reset_code_clears_it(bench: Bench, rig, healthy):
    rig.drive(bench.channel, "value", bench.faults()["out-of-bound"].size)
    assert rig.wait_output(bench.output, False, 2.0) is not None
    rig.release(bench.channel)
    before = bench.link.status()
    with bench.console() as console:
        console.enter_repl()
        board = console.describe()
        console.reset(board.platform)
    # Back up after the reset: a new uptime, outputs off at boot, the latch read from flash.
    after = bench.wait(
        "the node up again after the reset", lambda: (s := bench.link.status()).samples < before.samples and s, 15.0
    )
    assert after.latched == before.latched and after.trips == before.trips
    assert not rig.output(bench.output)
    # Healthy again, still tripped: a wrong code is refused and counted, the right one clears.
    bench.wait(
        "channels warmed up",
        lambda: not bench.link.status()[reg.IR_NODE_STATUS] & reg.STATUS_NOT_READY,
        bench.ready_s(),
    )
    assert not rig.output(bench.output), "energised with a trip latched"
    rejects = bench.link.status()[reg.IR_RESET_REJECTS]
    assert bench.link.write_reset((bench.reset_code + 1) % 65536) == 3
    assert bench.link.status()[reg.IR_RESET_REJECTS] == rejects + 1
    assert bench.link.status().latched
    assert bench.link.write_reset(bench.reset_code) == 0
    assert rig.wait_output(bench.output, True, bench.ready_s()) is not None
