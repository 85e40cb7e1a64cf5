"""Pulling model bundles from the cloud endpoint: list, download what is newer than what is
installed, verify, install atomically for gatewayd to hot-reload.

A download goes to a temporary file beside the models directory (same filesystem), is capped
at `max_bytes`, unpacked into a temporary directory (plain file names only), then handed to
`ModelStore.install`, which verifies the signature against the gateway's configured keys, the
hashes, the version and the expiry, and switches atomically. Any failure (network, disk full,
a bad bundle) removes the temporaries and leaves the installed model as it was.
"""

from __future__ import annotations

import logging
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from cloud_sync.errors import CloudSyncError
from gatewayd.models.bundle import BundleError
from gatewayd.models.install import ModelStore

log = logging.getLogger("cloud_sync.models")
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class PullError(CloudSyncError):
    """A bundle that could not be fetched or unpacked; the message says why."""


@dataclass
class PullOutcome:
    installed: list[str] = field(default_factory=list)  # "name vN"
    rejected: list[str] = field(default_factory=list)  # "name vN: reason"
    unchanged: int = 0


class ModelPuller:
    def __init__(
        self,
        session: requests.Session,
        url: str,
        models: ModelStore,
        *,
        max_bytes: int = 16 << 20,
        timeout_s: float = 30.0,
    ):
        self.session = session
        self.url = url.rstrip("/")
        self.models = models
        self.max_bytes = max_bytes
        self.timeout = timeout_s
        self.etags: dict[str, str] = {}  # url -> ETag of a download that was refused: not fetched again
        self.refused: set[tuple[str, int]] = set()
        self.not_modified = 0

    def poll(self) -> PullOutcome:
        outcome = PullOutcome()
        listing_url = f"{self.url}/v1/models"
        headers = {"If-None-Match": self.etags[listing_url]} if listing_url in self.etags else {}
        response = self.session.get(listing_url, headers=headers, timeout=self.timeout, verify=self.session.verify)
        if response.status_code == 304:  # nothing published since the last look
            self.not_modified += 1
            return outcome
        if response.status_code != 200:
            raise PullError(f"listing models: HTTP {response.status_code}")
        entries = response.json().get("models", [])
        for entry in entries:
            name, version = str(entry["name"]), int(entry["version"])
            installed = self.models.installed_version(name)
            if (installed is not None and version <= installed) or (name, version) in self.refused:
                outcome.unchanged += 1
                continue
            if version in self.models.rolled_back(name):
                outcome.unchanged += 1
                continue
            try:
                self._fetch_and_install(name, version, f"{self.url}{entry['url']}")
                outcome.installed.append(f"{name} v{version}")
                log.info("installed %s v%d from the cloud", name, version)
            except (PullError, BundleError, OSError) as exc:
                self.refused.add((name, version))
                outcome.rejected.append(f"{name} v{version}: {exc}")
                log.error("bundle %s v%d refused, the installed model stays: %s", name, version, exc)
        if response.headers.get("ETag") and not outcome.rejected:
            self.etags[listing_url] = response.headers["ETag"]
        return outcome

    def _fetch_and_install(self, name: str, version: int, url: str) -> None:
        self.models.root.mkdir(parents=True, exist_ok=True)
        headers = {"If-None-Match": self.etags[url]} if url in self.etags else {}
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.models.root) as tmp:
            archive = Path(tmp) / "bundle.tar.gz"
            with self.session.get(
                url, headers=headers, stream=True, timeout=self.timeout, verify=self.session.verify
            ) as response:
                if response.status_code == 304:
                    raise PullError("not modified since it was refused")
                if response.status_code != 200:
                    raise PullError(f"download: HTTP {response.status_code}")
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > self.max_bytes:
                    raise PullError(f"{declared} bytes, over the {self.max_bytes}-byte limit")
                size = 0
                with open(archive, "wb") as f:
                    for chunk in response.iter_content(1 << 16):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise PullError(f"over the {self.max_bytes}-byte limit")
                        f.write(chunk)
                if declared and size != declared:
                    raise PullError(f"truncated download: {size} of {declared} bytes")
                if response.headers.get("ETag"):
                    self.etags[url] = response.headers["ETag"]
            folder = Path(tmp) / "bundle"
            folder.mkdir()
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    for member in tar.getmembers():
                        if not member.isfile() or not _PLAIN.match(member.name):
                            raise PullError(f"archive member {member.name!r} is not a plain file")
                        if member.size > self.max_bytes:
                            raise PullError(f"archive member {member.name!r} too large")
                    tar.extractall(folder, filter="data")
            except (tarfile.TarError, EOFError) as exc:
                raise PullError(f"not a readable archive: {exc}") from None
            self.models.install(folder)
