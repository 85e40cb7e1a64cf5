"""The wall clock stepping under a running daemon, with libfaketime (Debian's faketime): +2 h
and back, a year ahead and back, and a Pi without a real-time clock that boots 60 days behind
and gets NTP later. Blocks, compaction, summaries, windows and status go on through every step;
nothing raises, nothing stalls, every reading is exported as stored."""

from __future__ import annotations

import calendar
import csv
import glob
import io
import re
import subprocess
import sys
import time

import pytest

from gatewayd.demo.virtual_node import VirtualNode
from tests.integration.test_mqtt import Subscriber

from .support import Daemon, stored, wait_for

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
SETTINGS = """
trust_clock = "always"

[store]
flush_interval_s = 0.2
compact_after_s = 1.0

[detection]
window_s = 1.0
hop_s = 0.5

[mqtt]
host = "127.0.0.1"
port = {port}
telemetry = "summaries"
"""


def libfaketime() -> str:
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert found, "libfaketime is missing: make test installs it (Debian package faketime)"
    return found[0]


class SteppedClock:
    """The daemon's wall clock, offset from the real one by what a control file says; monotonic
    time stays real, as when NTP steps a clock."""

    def __init__(self, folder, offset: str = "+0"):
        self.control = folder / "faketime"
        self.set(offset)

    def set(self, offset: str) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.control)  # never a half-written offset

    @property
    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": libfaketime(),
            "FAKETIME_TIMESTAMP_FILE": str(self.control),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


def offset_ending_a_minute(offset_s: int, in_s: int = 6) -> tuple[str, int]:
    """An offset of about `offset_s` at which the daemon's current minute ends `in_s` seconds from
    now, so a minute summary is due soon after the step; (libfaketime's form, milliseconds)."""
    now = time.time() + offset_s
    offset = offset_s + (60 - in_s - now % 60) % 60
    return f"{offset:+.0f}", int(offset * 1000)


def daemon_now_ms(daemon: Daemon) -> int | None:
    status = daemon.status()
    return status["ts_ms"] if status else None


def offset_reached(daemon: Daemon, offset_ms: int):
    """The daemon's status was written after its clock took the offset (within a minute)."""
    return lambda: (now := daemon_now_ms(daemon)) is not None and abs(now - time.time() * 1000 - offset_ms) < 60_000


def progress(daemon: Daemon) -> tuple[int, int]:
    status = daemon.status() or {"writer": {"written": 0}, "detection": {"windows": 0}}
    return status["writer"]["written"], status["detection"]["windows"]


def goes_on(daemon: Daemon, what: str) -> None:
    """Readings are written and windows close after the step, more than a few of each."""
    written, windows = progress(daemon)
    # Seconds when the disk is free. The suite's background package builds write gigabytes; the
    # kernel's writeback flushes them whatever their ionice class, and a store's fsyncs can wait
    # behind that for tens of seconds (40 s was not always enough in CI).
    wait_for(
        f"readings and windows after {what}",
        lambda: (lambda w, n: w > written + 200 and n > windows + 4)(*progress(daemon)),
        timeout_s=120,
    )


def export_rows(daemon: Daemon) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "gatewayd", "export", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(csv.DictReader(io.StringIO(out.stdout)))


def test_steps_forward_and_back_while_running(tmp_path, mosquitto):
    clock = SteppedClock(tmp_path)
    with VirtualNode(unit=1, seed=21, period_ms=20) as node:
        daemon = Daemon(
            tmp_path, tmp_path / "state", [node], extra=SETTINGS.format(port=mosquitto.port), env=clock.env
        ).start()
        sub = Subscriber(mosquitto.port, "gateway/site/summary/#")
        try:
            goes_on(daemon, "the start")
            pid = daemon.pid
            for offset_s, what in ((2 * 3600, "2 h ahead"), (0, "back"), (365 * 86400, "a year ahead"), (0, "back")):
                offset, offset_ms = offset_ending_a_minute(offset_s)
                clock.set(offset)
                wait_for(f"the clock {what}", offset_reached(daemon, offset_ms))
                goes_on(daemon, f"the step {what}")  # compaction runs every second across the steps
                # the minute in progress at the new time is summarised once it is over
                wait_for(
                    f"a minute summary {what}",
                    lambda: any(
                        abs(m[1]["minute_ms"] - (time.time() * 1000 + offset_ms)) < 180_000 for m in list(sub.messages)
                    ),
                    timeout_s=30,
                )
            status = daemon.status()
            assert status["clock"]["steps"] >= 4 and daemon.pid == pid and daemon.alive()
            out = subprocess.run(
                [sys.executable, "-m", "gatewayd", "status", "--config", str(daemon.config)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "stepped 4 times" in out and not re.search(r"\(status -|-\d+ s (ago|old)", out), (
                out
            )  # no negative ages
            # the channel's last reading is the one written last, not the one a year ahead
            assert re.search(r"current .* minute of " + time.strftime("%Y-%m-%d", time.gmtime()), out), out
        finally:
            sub.close()
            assert daemon.stop() == 0, daemon.log()[-3000:]
        db = tmp_path / "state" / "gatewayd.sqlite3"
        rows = export_rows(daemon)
        assert len(rows) == stored(db, "SELECT sum(count) FROM reading_blocks")[0][0] > 1000
        years = {row["timestamp"][:4] for row in rows}
        assert len(years) == 2, years  # now and a year ahead, every reading exported
        # the batch written right after each step is marked: its readings may carry the old time
        assert stored(db, "SELECT count(*) FROM reading_blocks WHERE clock_unsynced = 1")[0][0] >= 1
        assert "Traceback" not in daemon.log()


def test_a_gateway_that_boots_60_days_behind_and_gets_ntp_later(tmp_path, mosquitto):
    clock = SteppedClock(tmp_path, "-60d")
    with VirtualNode(unit=1, seed=22, period_ms=20) as node:
        daemon = Daemon(
            tmp_path, tmp_path / "state", [node], extra=SETTINGS.format(port=mosquitto.port), env=clock.env
        ).start()
        try:
            goes_on(daemon, "booting 60 days behind")
            clock.set("+0")  # NTP answers
            wait_for("the clock synchronised", offset_reached(daemon, 0))
            goes_on(daemon, "NTP's step")
        finally:
            assert daemon.stop() == 0, daemon.log()[-3000:]
        # the next start compacts across the 60-day gap, which used to end every start
        daemon.start()
        try:
            goes_on(daemon, "a restart")
            written = daemon.written()
            wait_for(
                "a compaction pass after the restart",
                lambda: daemon.status_is(
                    lambda s: s["writer"]["compacted_blocks"] > 0 and s["writer"]["written"] > written
                ),
            )
        finally:
            assert daemon.stop() == 0, daemon.log()[-3000:]
        rows = export_rows(daemon)
        stamps = sorted(calendar.timegm(time.strptime(r["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) for r in rows)
        assert stamps[-1] - stamps[0] > 59 * 86_400, "readings of both times are kept"
        assert "Traceback" not in daemon.log()
