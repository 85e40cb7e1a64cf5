"""The virtual board: the MicroPython unix port standing in for an ESP32, a folder for its
flash and a TCP socket for its USB serial port.

It behaves like a board, not like a REPL per connection: one interpreter runs at a time and
boots `main.py` from the flash folder, as the ESP32 does; Ctrl-C from the console interrupts
it (the pty delivers it as SIGINT, as the ESP32's UART driver raises KeyboardInterrupt) and
leaves the REPL, which mpremote drives with `resume`. When the interpreter exits (a soft
reset ends the unix port, `machine.soft_reset()` included) the board reboots. At every boot
the safety outputs read de-energised, as GPIOs do after a reset, and the watchdog is
disarmed until the firmware starts it again; once started, a watchdog that is not fed within
its timeout resets the board, so a stalled loop is caught as on the chip.

    python -m edge_flash.virtual_board --flash DIR [--port N]      (or: edge-flash virtual-board)

The console connection is relayed to one client at a time (a second one is told the port is
busy); what the board prints is also appended to a log file.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import selectors
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

from gatewayd.demo.virtual_node import HEAP_SIZE, find_micropython, stop_process

WDT_FILE = "wdt"
OUTPUT_PREFIX = "output-"
# The ESP32 runs boot.py then main.py from its flash; the module path is the flash root first,
# then the modules frozen into the firmware image (with --frozen, a folder stands in for them).
BOOT = """\
import sys
sys.path[:] = ["", ".frozen"{frozen}, "lib"]
def _boot(name):
    try:
        f = open(name)
    except OSError:
        return
    with f:
        source = f.read()
    exec(source, {"__name__": "__main__"})
_boot("boot.py")
_boot("main.py")
"""
REBOOT_DELAY_S = 0.2  # a board takes a moment to come back; lets a console see the gap
TICK_S = 0.02


class BoardSupervisor:
    def __init__(
        self,
        flash: Path,
        listener: socket.socket,
        *,
        log: Path | None = None,
        heap: str = HEAP_SIZE,
        frozen: Path | None = None,
    ):
        self.flash = flash
        self.boot = BOOT.replace("{frozen}", f", {str(frozen)!r}" if frozen is not None else "")
        self.listener = listener
        self.log = open(log, "ab", buffering=0) if log else None  # noqa: SIM115 -- lives as long as the board
        self.heap = heap
        self.process: subprocess.Popen[bytes] | None = None
        self.master: int | None = None
        self.client: socket.socket | None = None
        self.booted_at = 0.0
        self.reboot_at: float | None = 0.0
        self.wdt_timeout_ms = 0  # the watchdog's timeout once the firmware arms it
        self.boots = 0
        self.stopping = False

    # -- the chip ------------------------------------------------------------------------

    def power_on(self) -> None:
        for output in self.flash.glob(OUTPUT_PREFIX + "*"):
            output.write_text("0")  # pins come up de-energised after any reset
        (self.flash / WDT_FILE).unlink(missing_ok=True)  # a reset disarms the watchdog
        self.wdt_timeout_ms = 0
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG  # Ctrl-C becomes SIGINT: KeyboardInterrupt in the firmware
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        self.process = subprocess.Popen(
            [find_micropython(), "-X", f"heapsize={self.heap}", "-i", "-c", self.boot],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.flash,
            env=env,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.master = master
        self.booted_at = time.time()
        self.reboot_at = None
        self.boots += 1
        self.note(f"boot {self.boots}")

    def power_off(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        if self.master is not None:
            self._drain()
            os.close(self.master)
            self.master = None

    def _drain(self) -> None:
        """What the interpreter printed last (a traceback) still reaches the console."""
        assert self.master is not None
        os.set_blocking(self.master, False)
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            self.to_console(data)

    def reset(self, reason: str) -> None:
        self.power_off()  # what the firmware printed before it stopped reaches the console first
        self.note(f"reset: {reason}")
        self.reboot_at = time.monotonic() + REBOOT_DELAY_S

    def check_watchdog(self) -> None:
        try:
            stat = (self.flash / WDT_FILE).stat()
            text = (self.flash / WDT_FILE).read_text()
        except OSError:
            return  # not armed in this boot
        if stat.st_mtime < self.booted_at:
            return  # left by an earlier boot
        # Once armed, a watchdog stays armed until the next reset, as the chip's does: a file
        # caught empty (a firmware interrupted mid-write) keeps the timeout read before.
        try:
            self.wdt_timeout_ms = int(text)
        except ValueError:
            pass
        if self.wdt_timeout_ms <= 0:
            return
        starved_ms = (time.time() - stat.st_mtime) * 1000
        if starved_ms > self.wdt_timeout_ms:
            self.reset(f"watchdog not fed for {starved_ms:.0f} ms (timeout {self.wdt_timeout_ms} ms)")

    # -- the console ---------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A line from the board itself (boot, reset cause), as a ROM prints on the console."""
        line = f"\r\n[virtual board] {text}\r\n".encode()
        self.to_console(line)

    def to_console(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
        if self.client is not None:
            try:
                self.client.sendall(data)
            except OSError:
                self.drop_client()

    def drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            while not self.stopping:
                if self.process is None and self.reboot_at is not None and time.monotonic() >= self.reboot_at:
                    self.power_on()
                self._wait_and_relay()
                if self.process is not None and self.process.poll() is not None:
                    self.reset(f"firmware exited with code {self.process.returncode}")
                elif self.process is not None:
                    self.check_watchdog()
        finally:
            self.power_off()
            self.drop_client()
            self.listener.close()
            if self.log is not None:
                self.log.close()

    def _wait_and_relay(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.listener, selectors.EVENT_READ, "listen")
            if self.client is not None:
                sel.register(self.client, selectors.EVENT_READ, "client")
            if self.master is not None:
                sel.register(self.master, selectors.EVENT_READ, "board")
            try:
                events = sel.select(TICK_S)
            except InterruptedError:
                return
            # A client that left is dropped before a new one is let in.
            for key, _ in sorted(events, key=lambda e: e[0].data == "listen"):
                if key.data == "listen":
                    self._accept()
                elif key.data == "client" and self.client is not None:
                    try:
                        data = self.client.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        self.drop_client()
                    elif self.master is not None:
                        _write_all(self.master, data)
                elif key.data == "board" and self.master is not None:
                    try:
                        data = os.read(self.master, 4096)
                    except OSError:
                        data = b""  # EIO: the interpreter closed its terminal
                    if data:
                        self.to_console(data)
                    else:
                        os.close(self.master)
                        self.master = None

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        if self.client is not None:
            conn.sendall(b"[virtual board] busy: another client holds the console\r\n")
            conn.close()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = conn

    def _stop(self, *_: object) -> None:
        self.stopping = True


class VirtualBoard:
    """A virtual board as a child process, for tests and benches: `url` is its console."""

    def __init__(
        self, flash: Path, *, console_log: Path | None = None, heap: str = HEAP_SIZE, frozen: Path | None = None
    ):
        self.flash = Path(flash)
        self.console_log = console_log
        self.heap = heap
        self.frozen = frozen
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout_s: float = 15.0) -> str:
        cmd = [sys.executable, "-m", "edge_flash.virtual_board", "--flash", str(self.flash), "--heap", self.heap]
        if self.console_log is not None:
            cmd += ["--console-log", str(self.console_log)]
        if self.frozen is not None:
            cmd += ["--frozen", str(self.frozen)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            line = self.process.stdout.readline() if sel.select(timeout_s) else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"virtual board did not start: {line.strip() or 'no answer'}")
        self.url = line.split()[1]
        return self.url

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("socket://").rsplit(":", 1)
        return host, int(port)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            return  # the board is gone; what was typed is lost, as on a real line


def _take_terminal() -> None:
    # The pty becomes the interpreter's controlling terminal, so Ctrl-C reaches it as SIGINT;
    # and the board dies with its supervisor, even one killed outright.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtual_board", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flash", type=Path, required=True, help="folder that is the board's flash (created if missing)"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port of the console (default: a free one)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--console-log", type=Path, help="append everything the board prints to this file")
    parser.add_argument("--heap", default=HEAP_SIZE, help="MicroPython heap (default: %(default)s, ESP32-sized)")
    parser.add_argument(
        "--frozen",
        type=Path,
        help="folder of compiled modules (edge-flash build --out DIR) standing in for an application frozen "
        "into the firmware image: importable after the flash's own files, as frozen modules are",
    )


def serve(args: argparse.Namespace) -> int:
    args.flash.mkdir(parents=True, exist_ok=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.bind, args.port))
    except OSError as exc:
        print(f"error: cannot listen on {args.bind}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 3
    listener.listen(4)
    port = listener.getsockname()[1]
    print(f"READY socket://{args.bind}:{port}", flush=True)
    frozen = args.frozen.resolve() if args.frozen is not None else None
    BoardSupervisor(args.flash.resolve(), listener, log=args.console_log, heap=args.heap, frozen=frozen).run()
    return 0


if __name__ == "__main__":
    sys.exit(serve(build_parser().parse_args()))
