"""A MicroPython board on a serial port (or a virtual board on socket://HOST:PORT), driven
through mpremote's transport: interrupt the firmware, run code on the raw REPL, read, write
and hash files, reset, and read the console while the board boots."""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass
from pathlib import Path

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from edge_flash.errors import EdgeFlashError

BAUD = 115200
READ_TIMEOUT_S = 10.0  # a board that stops answering mid-command fails instead of hanging
WRITE_CHUNK = 1024


class BoardError(EdgeFlashError, RuntimeError):
    """The board on a serial port cannot be used; the message says which port and what to do."""


@dataclass(frozen=True)
class BoardInfo:
    platform: str  # sys.platform: "esp32", or "linux" for the unix port (virtual board)
    machine: str  # board and chip, e.g. "Generic ESP32 module with ESP32"
    version: str  # MicroPython version
    mpy: int  # .mpy format the board loads (major version)


# Runs on the board: one round trip for the board's description.
_DESCRIBE = (
    "import sys\n"
    "print(repr((sys.platform, getattr(sys.implementation, '_machine', ''),"
    " '.'.join(str(v) for v in sys.implementation.version[:3]), getattr(sys.implementation, '_mpy', 0) & 0xFF)))"
)
# Runs on the board: sha256 of each named file that exists, in one round trip.
_HASH = """\
import hashlib
def _sha(name):
    h = hashlib.sha256()
    buf = bytearray(512)
    view = memoryview(buf)
    try:
        f = open(name, 'rb')
    except OSError:
        return None
    with f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.digest()
print(repr({n: _sha(n) for n in %r}))
del _sha
"""


def check_port(port: str) -> None:
    """A missing device node is the commonest mistake: say so before anything else."""
    if "://" in port:
        return
    if not Path(port).exists():
        raise BoardError(f"no port {port}: no such device (is the board plugged in? `ls /dev/ttyUSB* /dev/ttyACM*`)")


def open_error(port: str, exc: BaseException) -> BoardError:
    """Why a port would not open: missing, busy (another program holds it) or refused."""
    text = str(exc)
    if "://" not in port and not Path(port).exists():
        return BoardError(f"no port {port}: no such device (is the board plugged in?)")
    if "lock" in text.lower() or "busy" in text.lower() or "errno 16" in text.lower():
        return BoardError(f"port {port} is busy: another program holds it (a serial monitor, mpremote, esptool?)")
    if "refused" in text.lower():
        return BoardError(f"port {port}: connection refused (is the virtual board running?)")
    return BoardError(f"port {port}: cannot open: {text}")


def probe_port(port: str) -> None:
    """Open and close the port, so that a missing, busy or refused port is named as such
    (the libraries that open it next only say they could not)."""
    try:
        serial.serial_for_url(port, baudrate=BAUD, exclusive=True, timeout=0).close()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise open_error(port, exc) from None


class Device:
    def __init__(self, port: str, *, repl_timeout_s: float = 5.0):
        check_port(port)
        self.port = port
        self.repl_timeout_s = repl_timeout_s
        self.transport = self._open()

    def _open(self) -> SerialTransport:
        try:
            return SerialTransport(self.port, baudrate=BAUD, exclusive=True, timeout=READ_TIMEOUT_S)
        except TransportError as exc:
            probe_port(self.port)  # names the reason: missing, busy, refused
            raise open_error(self.port, exc) from None

    def close(self) -> None:
        try:
            self.transport.close()
        except OSError:
            pass

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the REPL ------------------------------------------------------------------------

    def enter_repl(self) -> None:
        """Interrupt whatever runs (Ctrl-C) and take the raw REPL, without a soft reset."""
        try:
            self.transport.enter_raw_repl(soft_reset=False, timeout_overall=self.repl_timeout_s)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise BoardError(
                f"{self.port}: no MicroPython REPL answered within {self.repl_timeout_s:g} s "
                f"(is MicroPython flashed? `edge-flash firmware`) [{_short(exc)}]"
            ) from None

    def run(self, code: str) -> str:
        try:
            return self.transport.exec(code).decode(errors="replace")
        except TransportExecError as exc:
            raise BoardError(f"{self.port}: the board failed running code: {exc.error_output.strip()}") from None
        except (TransportError, serial.SerialException, OSError) as exc:
            raise BoardError(f"{self.port}: the device stopped answering [{_short(exc)}]") from None

    def describe(self) -> BoardInfo:
        platform, machine, version, mpy = ast.literal_eval(self.run(_DESCRIBE).strip())
        return BoardInfo(platform, machine, version, mpy)

    # -- files ---------------------------------------------------------------------------

    def files(self) -> set[str]:
        listing = self.run("import os\nprint(repr([e[0] for e in os.ilistdir() if not e[1] & 0x4000]))")
        return set(ast.literal_eval(listing.strip()))

    def hashes(self, names: list[str]) -> dict[str, bytes | None]:
        """sha256 of each file computed on the board; None for a file that is not there."""
        if not names:
            return {}
        return ast.literal_eval(self.run(_HASH % (list(names),)).strip())

    def write(self, name: str, data: bytes) -> None:
        try:
            self.transport.fs_writefile(name, data, chunk_size=WRITE_CHUNK)
        except TransportExecError as exc:
            raise BoardError(f"{self.port}: cannot write {name}: {exc.error_output.strip()}") from None
        except (TransportError, serial.SerialException, OSError) as exc:
            raise BoardError(f"{self.port}: writing {name} failed [{_short(exc)}]") from None

    def remove(self, name: str) -> None:
        self.run(f"import os\nos.remove({name!r})")

    # -- reset and console ---------------------------------------------------------------

    def reset(self, platform: str) -> None:
        """Hard reset. The unix port has no machine.reset(); its soft reset ends the process,
        which the virtual board takes as a reset."""
        if platform == "linux":
            code = "import machine\nmachine.soft_reset()"
        else:  # a moment for the REPL's acknowledgement to leave the USB bridge, as mpremote waits
            code = "import machine, time\ntime.sleep_ms(100)\nmachine.reset()"
        try:
            self.transport.exec_raw_no_follow(code)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise BoardError(f"{self.port}: reset failed [{_short(exc)}]") from None
        self.transport.in_raw_repl = False

    def read_console(self, pattern: re.Pattern[str], timeout_s: float) -> tuple[re.Match[str] | None, str]:
        """Read what the board prints until a line matches `pattern` or time runs out. A port
        that vanishes while the board resets (native USB) is opened again."""
        text = ""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    port = self.transport.serial
                    port.timeout = 0.05
                    chunk = port.read(max(1, port.in_waiting))
                except (serial.SerialException, OSError):
                    self._reopen(deadline)
                    continue
                if chunk:
                    text += chunk.decode(errors="replace")
                    found = pattern.search(text)
                    if found:
                        return found, text
            return None, text
        finally:
            self.transport.serial.timeout = READ_TIMEOUT_S

    def _reopen(self, deadline: float) -> None:
        self.close()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                self.transport = SerialTransport(self.port, baudrate=BAUD, exclusive=True, timeout=READ_TIMEOUT_S)
                return
            except TransportError:
                continue

    def wait_for_repl(self, timeout_s: float) -> None:
        """After a reset with no application to start: take the REPL once the board shows
        its prompt (a Ctrl-C sent while it is still booting would be lost)."""
        self.read_console(_PROMPT, timeout_s)
        self.enter_repl()


_PROMPT = re.compile(r'Type "help\(\)"|>>> ')


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
