"""The I/O rig: what drives a node's sensor inputs and watches its safety outputs.

The suite needs four things from a rig, whatever it is built from:

- `drive(channel, kind, size)`: take over the signal of one input channel from now on:
  `value` (the input reads `size`, in engineering units), `ramp` (the live signal plus
  `size` units per second, from now), `stuck` (the input freezes at its present reading);
  returns when the new signal is on the wire, as a `time.time()` timestamp.
- `release(channel)`: give the input back to its sensor.
- `output(name)`: whether a safety output is energised now.
- `wait_output(name, energised, timeout_s)`: the `time.time()` of the moment the output
  reached that state (None on timeout), measured by the rig, not by when it was looked at.

A real rig (docs in hil_tests/README.md) is a Python class with these methods, loaded with
`--rig module:factory`; `factory(config)` gets the pytest config to read its own options.
`VirtualRig` is the virtual board's: its wires are files in the board's flash folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

KINDS = ("value", "ramp", "stuck")


class Rig(Protocol):
    def drive(self, channel: int, kind: str, size: float = 0.0) -> float: ...

    def release(self, channel: int) -> None: ...

    def output(self, name: str) -> bool: ...

    def wait_output(self, name: str, energised: bool, timeout_s: float) -> float | None: ...


class VirtualRig:
    """Injects into the virtual board's simulated sensors (`rig`, read by hal_unix at every
    sample) and reads its outputs (`output-NAME`, written by hal_unix when they change).
    Timestamps are the files' modification times: the moment the rig's command landed and
    the moment the firmware switched the output, not when this process noticed."""

    TAKE_TIMEOUT_S = 5.0

    def __init__(self, flash: Path):
        self.flash = Path(flash)
        self.command = self.flash / "rig"

    def drive(self, channel: int, kind: str, size: float = 0.0) -> float:
        if kind not in KINDS:
            raise ValueError(f"unknown signal {kind!r}; one of {', '.join(KINDS)}")
        return self._send(f"{channel} {kind} {size!r}\n")

    def release(self, channel: int) -> None:
        self._send(f"{channel} clear\n")

    def output(self, name: str) -> bool:
        return self._read(name)[0] is True

    def wait_output(self, name: str, energised: bool, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state, stamp = self._read(name)
            if state is energised:
                return stamp
            time.sleep(0.002)
        return None

    def _read(self, name: str) -> tuple[bool | None, float]:
        """The output's state and when it was set; None while the firmware is rewriting it."""
        path = self.flash / f"output-{name}"
        try:
            stamp = path.stat().st_mtime_ns / 1e9
            text = path.read_text()
        except FileNotFoundError:
            return False, time.time()  # never switched on since the board was flashed
        return {"1": True, "0": False}.get(text), stamp

    def _send(self, text: str) -> float:
        """Replace the command file atomically; wait until the firmware has taken the previous
        one, so that no command is lost."""
        deadline = time.monotonic() + self.TAKE_TIMEOUT_S
        while self.command.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the board did not take the rig's last command ({self.command})")
            time.sleep(0.005)
        tmp = self.command.with_name("rig.tmp")
        tmp.write_text(text)
        stamp = tmp.stat().st_mtime_ns / 1e9  # a rename keeps it; the firmware may take the file at once
        os.replace(tmp, self.command)
        return stamp
