"""Published model bundles, where every server sees them. A bundle is published under a scope:
a gateway's name, or `fleet`; a gateway sees its own scope and `fleet`.

- `FolderBundles` (embedded default): `<root>/<scope>/<name>/<version>/` folders of plain
  files, listed once complete and signed.
- `DatabaseBundles` (with a database URL): the same bundles as archives in the `bundles`
  table, so a second server needs no shared disk.

Publishing names the job that trained the bundle: a retried job finds its own publication
and does not publish a second version.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloud_sync.storage.postgres import PostgresStorage

FLEET = "fleet"
JOB_MARK = ".job"  # in a published folder: the job that published it


def archive(folder: Path) -> bytes:
    """A bundle folder as the gzip-compressed tar the API serves (plain files only). The same
    folder gives the same bytes, so its ETag holds and a gateway's poll answers 304."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.iterdir()):
            if not path.name.startswith("."):
                info = tar.gettarinfo(path, arcname=path.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return gzip.compress(buf.getvalue(), 9, mtime=0)


class BundleStore(Protocol):
    def latest(self, gateway: str) -> list[tuple[str, int]]:
        """(name, newest version) of every bundle the gateway may use."""

    def archive(self, gateway: str, name: str, version: int) -> bytes | None: ...

    def versions(self, scope: str, name: str) -> list[int]: ...

    def published_by(self, scope: str, name: str, job_id: str) -> int | None: ...

    def publish(self, scope: str, name: str, version: int, folder: Path, job_id: str | None) -> bool:
        """Publish a signed bundle folder; False when that version exists already."""


class FolderBundles:
    def __init__(self, root: Path):
        self.root = root

    def _complete(self, scope: str, name: str) -> dict[int, Path]:
        folder = self.root / scope / name
        if not folder.is_dir():
            return {}
        return {int(v.name): v for v in folder.iterdir() if v.name.isdigit() and (v / "manifest.sig").exists()}

    def latest(self, gateway: str) -> list[tuple[str, int]]:
        newest: dict[str, int] = {}
        for scope in (gateway, FLEET):
            if (self.root / scope).is_dir():
                for name_dir in (self.root / scope).iterdir():
                    versions = self._complete(scope, name_dir.name)
                    if versions:
                        newest[name_dir.name] = max(newest.get(name_dir.name, 0), *versions)
        return sorted(newest.items())

    def archive(self, gateway: str, name: str, version: int) -> bytes | None:
        for scope in (gateway, FLEET):
            folder = self._complete(scope, name).get(version)
            if folder is not None:
                return archive(folder)
        return None

    def versions(self, scope: str, name: str) -> list[int]:
        folder = self.root / scope / name
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []

    def published_by(self, scope: str, name: str, job_id: str) -> int | None:
        for version, folder in self._complete(scope, name).items():
            mark = folder / JOB_MARK
            if mark.exists() and mark.read_text() == job_id:
                return version
        return None

    def publish(self, scope: str, name: str, version: int, folder: Path, job_id: str | None) -> bool:
        home = self.root / scope / name
        home.mkdir(parents=True, exist_ok=True)
        staging = home / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(folder, staging)
        if job_id:
            (staging / JOB_MARK).write_text(job_id)
        try:
            staging.rename(home / str(version))  # listed only once complete; a taken version refuses
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return False
        return True


class DatabaseBundles:
    def __init__(self, storage: PostgresStorage):
        self.storage = storage

    def latest(self, gateway: str) -> list[tuple[str, int]]:
        return [(name, version) for name, version, _ in self.storage.bundle_latest((gateway, FLEET))]

    def archive(self, gateway: str, name: str, version: int) -> bytes | None:
        for scope in (gateway, FLEET):
            data = self.storage.bundle_archive(scope, name, version)
            if data is not None:
                return data
        return None

    def versions(self, scope: str, name: str) -> list[int]:
        return sorted(self.storage.bundle_versions(scope, name))

    def published_by(self, scope: str, name: str, job_id: str) -> int | None:
        return self.storage.bundle_by_job(scope, name, job_id)

    def publish(self, scope: str, name: str, version: int, folder: Path, job_id: str | None) -> bool:
        return self.storage.bundle_publish(scope, name, version, archive(folder), job_id)


def open_bundles(data_dir: Path, storage: object) -> BundleStore:
    """In the database when the storage is PostgreSQL, else in `data_dir/bundles`."""
    if hasattr(storage, "bundle_publish"):  # PostgreSQL: psycopg is imported only with a database URL
        return DatabaseBundles(storage)  # type: ignore[arg-type]
    return FolderBundles(data_dir / "bundles")
