"""Collects the firmware tests in this folder and runs them inside the MicroPython unix
port (not CPython), with an ESP32-sized heap; one pytest item per test function."""

from __future__ import annotations

import ast
import atexit
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from gatewayd.demo.virtual_node import HEAP_SIZE, find_micropython, micropython_env
from edge_flash.build import compile_firmware

HERE = Path(__file__).parent
FIRMWARE = HERE.parent


@functools.cache
def compiled_firmware() -> Path:
    """The firmware as a node runs it, compiled with mpy-cross (once per session): compiling
    its larger modules from source would take heap a node never spends on them, and how much
    shifts with whatever a test imported first."""
    out = Path(tempfile.mkdtemp(prefix="firmware-mpy-"))
    atexit.register(shutil.rmtree, out, True)
    compile_firmware(FIRMWARE, out, board="virtual")
    return out


def run_micropython_tests(module: str, firmware_dir: Path | None = None, heap: str = HEAP_SIZE) -> tuple[dict[str, tuple[bool, str]], str]:
    """Run one test module in MicroPython; return {test: (passed, output)} and the raw output.
    The test modules themselves are compiled from source, as they would be on a board."""
    with tempfile.TemporaryDirectory(prefix="firmware-test-") as scratch:
        env = micropython_env(firmware_dir or compiled_firmware(), HERE)
        env["FIRMWARE_TEST_DIR"] = scratch  # files the tests write (flash, fallback configs)
        proc = subprocess.run(
            [find_micropython(), "-X", f"heapsize={heap}", str(HERE / "mprun.py"), module],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = proc.stdout + proc.stderr
    results: dict[str, tuple[bool, str]] = {}
    current: str | None = None
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("PASS", "FAIL") and parts[1] == module:
            current = parts[2]
            results[current] = (parts[0] == "PASS", "")
        elif current is not None and not results[current][0]:
            results[current] = (False, results[current][1] + line + "\n")
    return results, output


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if module_path.parent == HERE and module_path.name.startswith("test_"):
        return MicroPythonModule.from_parent(parent, path=module_path)
    return None


class MicroPythonModule(pytest.File):
    _results: tuple[dict[str, tuple[bool, str]], str] | None = None

    def collect(self):
        tree = ast.parse(self.path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonTest.from_parent(self, name=node.name)

    def results(self) -> tuple[dict[str, tuple[bool, str]], str]:
        if self._results is None:
            self._results = run_micropython_tests(self.path.stem)
        return self._results


class MicroPythonFailure(Exception):
    pass


class MicroPythonTest(pytest.Item):
    def runtest(self) -> None:
        assert isinstance(self.parent, MicroPythonModule)
        results, output = self.parent.results()
        if self.name not in results:
            raise MicroPythonFailure(f"{self.name} did not run; MicroPython printed:\n{output}")
        passed, detail = results[self.name]
        if not passed:
            raise MicroPythonFailure(detail)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"MicroPython test failed:\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"[micropython] {self.name}"
