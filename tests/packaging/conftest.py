"""The packages under test: built by `make deb` (a no-op when one is up to date) for this
machine's release and architecture, and for the others a gateway runs (Debian 12 and 13, amd64
and arm64); the one for this machine is checked by lintian in the background while the other
tests install and run it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging import prepare
from tests.packaging.nspawn import architecture, release

REPO = Path(__file__).resolve().parents[2]


@dataclass
class BuiltPackage:
    path: Path
    lintian: subprocess.Popen[str]  # a minute on the environment's 10,000 files: started early


def build_package(codename: str, arch: str) -> Path:
    """`make deb` for one release and architecture; the .deb it leaves."""
    assert os.geteuid() == 0, "the package tests need root (dpkg-buildpackage, mmdebstrap, systemd-nspawn)"
    prepare.wait(codename, arch)
    build = subprocess.run(
        ["make", "--no-print-directory", "deb", f"RELEASE={codename}", f"ARCH={arch}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"make deb failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    version = subprocess.run(
        ["dpkg-parsechangelog", "-S", "Version"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    path = REPO / "build" / "deb" / codename / f"edge-gateway_{version}_{arch}.deb"
    assert path.is_file(), f"make deb did not produce {path}"
    return path


@pytest.fixture(scope="session")
def package() -> Iterator[BuiltPackage]:
    path = build_package(release(), architecture())
    lintian = subprocess.Popen(
        ["lintian", "--fail-on", "error", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield BuiltPackage(path, lintian)
    finally:
        if lintian.poll() is None:
            lintian.kill()
        lintian.communicate()


@pytest.fixture(scope="session")
def package_for() -> Callable[[str, str], Path]:
    """The package for a release and architecture, built once per session."""
    built: dict[tuple[str, str], Path] = {}

    def get(codename: str, arch: str) -> Path:
        if (codename, arch) not in built:
            built[codename, arch] = build_package(codename, arch)
        return built[codename, arch]

    return get
