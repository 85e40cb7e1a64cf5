"""A stalled sample loop is caught by the watchdog: the board resets, its outputs drop, and
the node comes back by itself. The loop is stalled from the console (Ctrl-C leaves the
firmware in the REPL, where nothing feeds the watchdog); on the virtual board the watchdog
is the board's own, which resets it when the firmware stops feeding it."""

import re
import time

import pytest

from hil_tests.bench import Bench

BOOT_S = {True: 1.0, False: 5.0}  # reboot to a running node: virtual board, ESP32


def test_stalled_loop_recovered_by_the_watchdog(bench: Bench, rig, healthy, record_property):
    if not bench.watchdog_s:
        pytest.skip("the node's watchdog is off (watchdog_ms = 0)")
    before = bench.link.status()
    with bench.console() as console:
        console.enter_repl()  # the loop stops here, in the REPL
        stalled = time.time()
        dropped = rig.wait_output(bench.output, False, bench.watchdog_s + BOOT_S[bench.virtual])
        assert dropped is not None, f"the outputs stayed on with the loop stalled\n{_evidence(bench, rig)}"
        record_property("outputs_off_after_stall_ms", round((dropped - stalled) * 1000))
        assert bench.watchdog_s * 0.9 <= dropped - stalled <= bench.watchdog_s + BOOT_S[bench.virtual]
        found, text = console.read_console(
            re.compile(r"node \d+ running"), bench.watchdog_s + 2 * BOOT_S[bench.virtual]
        )
    assert found, f"the node did not start again after the watchdog reset; console:\n{text[-800:]}"
    if bench.console_log is not None:  # the virtual board says why it reset
        log = bench.console_log.read_text(errors="replace")
        assert re.search(r"reset: watchdog not fed for \d+ ms \(timeout \d+ ms\)", log), log[-800:]
    after = bench.wait("the node answering again", lambda: bench.link.status(), 10.0)
    assert after.samples < before.samples, "no reset happened"
    assert rig.wait_output(bench.output, True, bench.ready_s()) is not None, "the outputs did not come back"


def _evidence(bench: Bench, rig) -> str:
    """What the board said and, on the virtual board, the watchdog's file: why it did not reset."""
    lines = []
    if bench.console_log is not None:
        lines.append("console (last 800 characters):\n" + bench.console_log.read_text(errors="replace")[-800:])
    flash = getattr(rig, "flash", None)
    if flash is not None:
        wdt = flash / "wdt"
        try:
            age_s = time.time() - wdt.stat().st_mtime
            lines.append(f"wdt file: {wdt.read_text()!r}, last written {age_s:.1f} s ago")
        except OSError as exc:
            lines.append(f"wdt file: {exc}")
    return "\n".join(lines)
