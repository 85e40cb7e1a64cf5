"""The models directory: verified bundles installed atomically, the previous one kept.

    ROOT/<name>/<version>/     a verified copy of each bundle
    ROOT/<name>/current  -> <version>
    ROOT/<name>/previous -> <version>
    ROOT/<name>/rolled_back.json   versions taken back after a failed health check

Installing copies into a staging directory (each file fsynced), verifies the copy, renames it
into place, then swaps the `previous` and `current` symlinks with rename(2). A crash at any step
leaves `current` naming a complete, verified version: the old one or the new one, never a mix.
Every filesystem call goes through `os` so a test can stop the sequence at any point.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .bundle import MANIFEST, SIGNATURE, BundleError, Manifest, verify


class ModelStore:
    def __init__(self, root: str | Path, public_keys: list[Ed25519PublicKey]):
        self.root = Path(root)
        self.public_keys = public_keys

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "current").is_symlink())

    def linked(self, name: str, which: str) -> Path | None:
        link = self.root / name / which
        if not os.path.islink(link):
            return None
        return self.root / name / os.readlink(link)

    def current(self, name: str) -> tuple[Manifest, Path] | None:
        """The installed bundle, verified again (signature and hashes), or None."""
        folder = self.linked(name, "current")
        if folder is None:
            return None
        return verify(folder, self.public_keys), folder

    def installed_version(self, name: str) -> int | None:
        folder = self.linked(name, "current")
        if folder is None:
            return None
        return int(folder.name)

    def rolled_back(self, name: str) -> list[int]:
        path = self.root / name / "rolled_back.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def install(self, source: str | Path) -> Manifest:
        """Verify `source` and make it the current version of its name."""
        source = Path(source)
        manifest = verify(source, self.public_keys)
        name = manifest.name
        installed = self.installed_version(name)
        if installed is not None and manifest.version <= installed:
            raise BundleError(f"{name} v{manifest.version}: not above the installed version {installed}")
        if manifest.version in self.rolled_back(name):
            raise BundleError(f"{name} v{manifest.version}: was rolled back after a failed health check")
        home = self.root / name
        os.makedirs(home, exist_ok=True)
        staging = home / f".staging-{manifest.version}-{uuid.uuid4().hex[:8]}"
        os.mkdir(staging)
        for file in [MANIFEST, SIGNATURE, *manifest.files]:
            _copy_synced(source / file, staging / file)
        _fsync_dir(staging)
        verify(staging, self.public_keys)  # the copy, not just the source
        final = home / str(manifest.version)
        if os.path.lexists(final):  # left by an install that stopped before switching
            shutil.rmtree(final)
        os.rename(staging, final)
        _fsync_dir(home)
        if installed is not None:
            _point(home, "previous", str(installed))
        _point(home, "current", str(manifest.version))
        self._prune(name)
        return manifest

    def rollback(self, name: str) -> int:
        """Make the previous version current again; the rolled-back version is remembered and
        refused if offered again. Returns the version now current."""
        home = self.root / name
        previous, current = self.linked(name, "previous"), self.linked(name, "current")
        if previous is None or current is None:
            raise BundleError(f"{name}: no previous version to roll back to")
        verify(previous, self.public_keys)
        refused = sorted({*self.rolled_back(name), int(current.name)})
        _write_synced(home / "rolled_back.json", json.dumps(refused).encode())
        _point(home, "current", previous.name)
        os.unlink(home / "previous")
        _fsync_dir(home)
        self._prune(name)
        return int(previous.name)

    def _prune(self, name: str) -> None:
        """Drop staging leftovers and versions that are neither current nor previous."""
        home = self.root / name
        keep = {p.name for p in (self.linked(name, "current"), self.linked(name, "previous")) if p is not None}
        for entry in os.listdir(home):
            path = home / entry
            if (entry.isdigit() and entry not in keep) or entry.startswith(".staging-"):
                shutil.rmtree(path, ignore_errors=True)


def _copy_synced(source: Path, target: Path) -> None:
    with open(source, "rb") as f:
        data = f.read()
    _write_synced(target, data, replace=False)


def _write_synced(target: Path, data: bytes, *, replace: bool = True) -> None:
    """Write, fsync, and (for `replace`) rename over the old file, so readers see old or new."""
    temp = target.with_name(f".{target.name}.tmp") if replace else target
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(temp, target)
        _fsync_dir(target.parent)


def _point(home: Path, link: str, version: str) -> None:
    """Atomically (re)point a symlink in `home` at a version directory."""
    temp = home / f".{link}.tmp"
    if os.path.lexists(temp):
        os.unlink(temp)
    os.symlink(version, temp)
    os.replace(temp, home / link)
    _fsync_dir(home)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
