"""The package tests' slow inputs made in the background while the rest of the suite runs:
tools/prepare-package-tests at the lowest CPU and I/O priority, started when the session has
collected package tests (tests/conftest.py), waited for by the fixtures that need its results.
Without it (the package tests run alone) the fixtures make the same things themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DONE = REPO / "build" / "prepared"
LOG = REPO / "build" / "prepare-package-tests.log"

_job: subprocess.Popen[bytes] | None = None


def start() -> None:
    global _job
    if _job is not None:
        return
    LOG.parent.mkdir(parents=True, exist_ok=True)
    for mark in DONE.glob("*"):
        mark.unlink()
    with open(LOG, "wb") as log:
        _job = subprocess.Popen(
            ["nice", "-n", "19", "ionice", "-c", "3", str(REPO / "tools" / "prepare-package-tests"), str(DONE)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait(codename: str, arch: str) -> None:
    """Until the background job has made the package and root of `codename`/`arch`, or has ended
    (if it failed, the fixture's own attempt says why)."""
    if _job is None:
        return
    while not (DONE / f"{codename}-{arch}").exists() and _job.poll() is None:
        time.sleep(1.0)


def stop() -> None:
    if _job is not None and _job.poll() is None:
        os.killpg(_job.pid, signal.SIGTERM)  # the script and what it started: make, mmdebstrap
        _job.wait(timeout=60)
