"""Malformed Modbus frames, each answered exactly as the spec says (or not at all, where it
says so), and the node neither stalls, nor reboots, nor trips."""

import time

import pytest

from gatewayd.acquisition.profiles import edge_node as reg
from hil_tests.bench import Bench
from hil_tests.frames import FrameMaker, send_rtu, send_tcp


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_malformed_frames_survived(bench: Bench, transport, record_property):
    link = bench.links().get(transport)
    if link is None:
        pytest.skip(f"this bench has no Modbus {transport.upper()} link (--modbus-port / --modbus-host)")
    count = bench.frames if transport == "tcp" else bench.rtu_frames
    if bench.rig is not None:
        bench.make_healthy()  # outputs on, nothing latched: so that "nothing tripped" means something
    maker = FrameMaker(bench.plan.unit, len(bench.plan.channels), bench.reset_code)
    before = link.status()
    started = time.monotonic()
    if transport == "tcp":
        tally = send_tcp(link.raw_tcp, maker, count)
    else:
        with link.raw_serial() as line:
            tally = send_rtu(line, maker, count)
    elapsed = time.monotonic() - started
    # Counters are published once a sample: two samples on, every frame is counted.
    sent_by = link.status().samples
    after = bench.wait(
        "two samples", lambda: (s := link.status()).samples >= sent_by + 2 and s, 3.0 + 10 * bench.period_s
    )
    record_property("frames", tally.sent)
    record_property("frames_per_s", round(tally.sent / elapsed))
    record_property("retried", tally.retried)
    assert tally.sent == count
    assert tally.answered + tally.dropped + tally.silent == count
    assert tally.answered > count // 2, tally.kinds
    assert tally.retried <= max(2, count // 100), f"{tally.retried} frames answered only when sent again"
    # Still the same boot, still sampling on schedule all along.
    assert after.uptime_s >= before.uptime_s + int(elapsed) - 1, "the node rebooted"
    assert after.samples - before.samples >= 0.8 * elapsed / bench.period_s, "the sample loop fell behind"
    # Every refusal counted; nothing tripped; wrong reset codes counted one by one.
    assert tally.answered <= after.bad_frames - before.bad_frames <= count + tally.retried
    assert after.latched == before.latched == 0
    rejects = (after[reg.IR_RESET_REJECTS] - before[reg.IR_RESET_REJECTS]) % 65536
    assert rejects == tally.kinds["reset-code"]
    if bench.rig is not None:
        assert bench.rig.output(bench.output)
