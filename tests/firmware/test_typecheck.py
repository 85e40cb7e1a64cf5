"""The firmware type-checks against the MicroPython ESP32 stubs (micropython-esp32-stubs and
micropython-stdlib-stubs as the standard library), with mypy."""

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from gatewayd.demo.virtual_node import find_firmware_dir


def stub_folder(tmp_path: Path) -> tuple[Path, Path]:
    """The board's module stubs copied into their own folder (mypy reads no top-level .pyi
    from site-packages), and the folder holding the MicroPython stdlib stubs."""
    esp32 = metadata.distribution("micropython-esp32-stubs")
    typings = tmp_path / "typings"
    for entry in esp32.files or []:
        if entry.suffix == ".pyi":
            src = Path(esp32.locate_file(entry))
            (typings / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, typings / entry)
    stdlib = metadata.distribution("micropython-stdlib-stubs")
    root = Path(stdlib.locate_file("stdlib/VERSIONS")).parent.parent
    shutil.copytree(root / "_mpy_shed", typings / "_mpy_shed")
    return typings, root


def test_firmware_typechecks_against_esp32_stubs(tmp_path):
    typings, typeshed = stub_folder(tmp_path)
    assert (typings / "machine.pyi").exists()
    firmware = find_firmware_dir()
    sources = sorted(str(p) for p in firmware.glob("*.py"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(firmware / "mypy.ini"),
            "--custom-typeshed-dir",
            str(typeshed),
            "--cache-dir",
            str(tmp_path / "cache"),
            *sources,
        ],
        env={"MYPYPATH": str(typings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=firmware,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
