"""The package under test: built by `make deb` (a no-op when it is up to date), checked by
lintian in the background while the other tests install and run it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class BuiltPackage:
    path: Path
    lintian: subprocess.Popen[str]  # a minute on the environment's 10,000 files: started early


@pytest.fixture(scope="session")
def package() -> Iterator[BuiltPackage]:
    assert os.geteuid() == 0, "the package tests need root (dpkg-buildpackage, debootstrap, systemd-nspawn)"
    build = subprocess.run(["make", "--no-print-directory", "deb"], cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, f"make deb failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    version = subprocess.run(
        ["dpkg-parsechangelog", "-S", "Version"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    path = REPO / "build" / "deb" / f"edge-gateway_{version}_{arch}.deb"
    assert path.is_file(), f"make deb did not produce {path}"
    lintian = subprocess.Popen(
        ["lintian", "--fail-on", "error", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield BuiltPackage(path, lintian)
    finally:
        if lintian.poll() is None:
            lintian.kill()
        lintian.communicate()
