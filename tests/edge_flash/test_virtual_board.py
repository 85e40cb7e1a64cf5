"""The virtual board behaves as a board: boots main.py from its flash, takes Ctrl-C into the
REPL, reboots on reset with its outputs de-energised, resets when its watchdog is not fed,
and lets one console in at a time."""

import re
import socket

from edge_flash.device import Device
from edge_flash.virtual_board import VirtualBoard

BLINK = """\
import time
print("app started")
n = 0
while True:
    n += 1
    time.sleep_ms(10)
"""
# Arms the board's watchdog (as hal_unix.Watchdog does) and never feeds it again.
STALL = """\
with open("wdt", "w") as f:
    f.write("300")
print("armed")
while True:
    pass
"""

# Arms it, then is interrupted in mid-feed: the file is left empty, as a Ctrl-C between a
# truncating open and the write leaves it. An armed watchdog stays armed.
STALL_MID_FEED = """\
import time
with open("wdt", "w") as f:
    f.write("300")
print("armed")
time.sleep_ms(200)  # the board has read the timeout (it looks every 20 ms)
open("wdt", "w").close()
while True:
    pass
"""


def test_boot_interrupt_and_reset(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(BLINK)
    (flash / "output-pump").write_text("1")
    with VirtualBoard(flash, console_log=tmp_path / "console.log") as board:
        with Device(board.url) as dev:
            found, _ = dev.read_console(re.compile("app started"), 10)
            assert found
            with socket.create_connection(board.address) as other:
                assert other.recv(100).startswith(b"[virtual board] busy")
            dev.enter_repl()  # Ctrl-C: the application stops in the REPL
            assert dev.run("import sys\nprint(sys.platform)").strip() == "linux"
            assert "KeyboardInterrupt" in (tmp_path / "console.log").read_text(errors="replace")
            assert (flash / "output-pump").read_text() == "0", "outputs are de-energised at power-on"
            (flash / "output-pump").write_text("1")
            dev.reset("linux")
            found, text = dev.read_console(re.compile("app started"), 10)
            # the board's word on the reset comes after what the firmware printed last
            assert found and "[virtual board] reset: firmware exited with code 0" in text
            assert text.index("reset: firmware exited") < text.index("[virtual board] boot 2")
    assert (flash / "output-pump").read_text() == "0"
    log = (tmp_path / "console.log").read_text(errors="replace")
    assert log.index("[virtual board] reset: firmware exited with code 0") < log.index("[virtual board] boot 2")


def test_a_starved_watchdog_resets_the_board(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(STALL)
    with VirtualBoard(flash) as board, Device(board.url) as dev:
        found, text = dev.read_console(re.compile(r"boot 2\r\n"), 10)
    assert found, text
    starved = re.search(r"reset: watchdog not fed for (\d+) ms \(timeout 300 ms\)", text)
    assert starved and 300 < int(starved[1]) < 600, text
    assert text.index("armed") < starved.start()


def test_a_watchdog_file_left_empty_mid_feed_still_resets_the_board(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(STALL_MID_FEED)
    with VirtualBoard(flash) as board, Device(board.url) as dev:
        found, text = dev.read_console(re.compile(r"boot 2\r\n"), 10)
    assert found, text
    assert re.search(r"reset: watchdog not fed for \d+ ms \(timeout 300 ms\)", text), text
