"""The package tests' slow inputs made in the background while the rest of the suite runs:
tools/prepare-package-tests at the lowest CPU and I/O priority, for the releases and
architectures of the package tests the session has collected (tests/conftest.py), waited for by
the fixtures that need its results. Without it (the package tests run alone) the fixtures make
the same things themselves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tests.packaging.nspawn import architecture, release

REPO = Path(__file__).resolve().parents[2]
DONE = REPO / "build" / "prepared"
LOG = REPO / "build" / "prepare-package-tests.log"

_job: subprocess.Popen[bytes] | None = None


def pairs_of(nodeids: Iterable[str]) -> list[str]:
    """The RELEASE-ARCH pairs the package tests among `nodeids` install into: this machine's
    first, then the others of its architecture, the emulated ones last."""
    package_tests = [n for n in nodeids if n.startswith("tests/packaging/test_deb")]
    if not package_tests:
        return []
    arch = architecture()
    host = f"{release()}-{arch}"
    pairs = set()
    for nodeid in package_tests:
        if nodeid.startswith("tests/packaging/test_deb_lifecycle.py"):
            pairs.add(host)
        elif found := re.search(r"\[(\w+-\w+)\]$", nodeid):
            pairs.add(found.group(1))
    return sorted(pairs, key=lambda p: (p != host, not p.endswith("-" + arch), p))


def start(pairs: list[str]) -> None:
    global _job
    if _job is not None or not pairs:
        return
    LOG.parent.mkdir(parents=True, exist_ok=True)
    for mark in DONE.glob("*"):
        mark.unlink()
    with open(LOG, "wb") as log:
        _job = subprocess.Popen(
            ["nice", "-n", "19", "ionice", "-c", "3", str(REPO / "tools" / "prepare-package-tests"), str(DONE), *pairs],
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
