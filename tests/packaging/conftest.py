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
from tests.packaging.nspawn import architecture, package_and_root, release

REPO = Path(__file__).resolve().parents[2]


@dataclass
class BuiltPackage:
    path: Path
    root: Path  # the minbase root of this machine's release and architecture to install it into
    lintian: subprocess.Popen[str]  # a minute on the environment's 10,000 files: started early


def package_when_prepared(codename: str, arch: str) -> tuple[Path, Path]:
    """The .deb of one release and architecture and the root to install it into."""
    assert os.geteuid() == 0, "the package tests need root (dpkg-buildpackage, mmdebstrap, systemd-nspawn)"
    prepare.wait(codename, arch)
    return package_and_root(codename, arch)


@pytest.fixture(scope="session")
def package() -> Iterator[BuiltPackage]:
    path, root = package_when_prepared(release(), architecture())
    lintian = subprocess.Popen(
        ["lintian", "--fail-on", "error", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield BuiltPackage(path, root, lintian)
    finally:
        if lintian.poll() is None:
            lintian.kill()
        lintian.communicate()


@pytest.fixture(scope="session")
def package_for() -> Callable[[str, str], tuple[Path, Path]]:
    """The package for a release and architecture and its root, made once per session."""
    built: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(codename: str, arch: str) -> tuple[Path, Path]:
        if (codename, arch) not in built:
            built[codename, arch] = package_when_prepared(codename, arch)
        return built[codename, arch]

    return get
