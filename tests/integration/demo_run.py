"""The demo's detection story (test_demo_detection.py) runs in real time, six of its seven minutes
waiting for the pump's data, at a fraction of a core. It is started when the session has
collected that test (tests/conftest.py), in the background beside the rest of the suite, and
the test waits for it to end and judges what it left. Run alone, the test waits the whole run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAULT_AFTER_S = 360  # the demo's five minutes of data, then a minute of scoring
DURATION_S = 400
NODE_ID = "tests/integration/test_demo_detection.py"


@dataclass
class DemoRun:
    folder: Path  # the demo's working folder: var/ holds its store
    returncode: int
    stdout: str
    stderr: str


_process: subprocess.Popen[bytes] | None = None
_folder: Path | None = None


def start() -> None:
    global _process, _folder
    if _process is not None:
        return
    _folder = Path(tempfile.mkdtemp(prefix="demo-detection-"))
    command = [sys.executable, "-m", "gatewayd", "demo", "--nodes", "1", "--duration", str(DURATION_S)]
    command += ["--fault-after", str(FAULT_AFTER_S), "--dashboard-port", "0"]
    with open(_folder / "stdout", "wb") as out, open(_folder / "stderr", "wb") as err:
        _process = subprocess.Popen(
            command,
            cwd=_folder,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def wait(timeout_s: float) -> DemoRun:
    """The demo's run once it has ended (started now if the session did not start it)."""
    start()
    assert _process is not None and _folder is not None
    deadline = time.monotonic() + timeout_s
    while _process.poll() is None:
        assert time.monotonic() < deadline, f"the demo did not end within {timeout_s:.0f} s"
        time.sleep(1.0)
    out, err = ((_folder / name).read_text(errors="replace") for name in ("stdout", "stderr"))
    return DemoRun(_folder, _process.returncode, out, err)


def stop() -> None:
    global _process, _folder
    if _process is not None and _process.poll() is None:
        os.killpg(_process.pid, signal.SIGTERM)
        try:
            _process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(_process.pid, signal.SIGKILL)
            _process.wait()
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
    _process = _folder = None
