"""For the fault tests: a daemon in its own process, small file systems of the test's own (a
tmpfs, an ext4 image on a loop device), and waiting on conditions.

Mounting needs root, as on CI (and as `make test` needs anyway for the package tests)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from gatewayd.demo.virtual_node import VirtualNode
from gatewayd.store.database import Store

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout_s: float = 30.0, every_s: float = 0.1) -> T:
    """The first truthy value of `probe()`; an AssertionError naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def need_root() -> None:
    assert os.geteuid() == 0, "the fault tests mount file systems and need root (as CI runs)"


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr.strip()}"


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: 16m) mounted on `path`."""
    need_root()
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def ext4_image(folder: Path, size_mb: int) -> Iterator[tuple[Path, Path]]:
    """An ext4 file system in an image file, mounted with errors=remount-ro on a loop device as
    a Raspberry Pi mounts its SD card; yields (mount point, image)."""
    need_root()
    image, mount = folder / "disk.img", folder / "disk"
    mount.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    _run("mkfs.ext4", "-q", "-F", str(image))
    _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount))
    try:
        yield mount, image
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def loop_device(mount: Path) -> str:
    """The block device (loopN) mounted on `mount`."""
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mount)], capture_output=True, text=True).stdout
    return Path(source.strip()).name


def fill(folder: Path, name: str = "filler", chunk: int = 64 << 10) -> Path:
    """A file that takes every free byte of `folder`'s file system (another program's log run wild)."""
    path = folder / name
    block = b"\0" * chunk
    with open(path, "ab") as f:
        while True:
            try:
                f.write(block)
                f.flush()
            except OSError:
                break
    for size in (4096, 512, 1):  # the last bytes too
        try:
            with open(path, "ab") as f:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
        except OSError:
            continue
    return path


class Daemon:
    """`gatewayd run` in a process of its own, on a configuration written here."""

    def __init__(
        self,
        folder: Path,
        state_dir: Path,
        nodes: list[VirtualNode],
        *,
        extra: str = "",
        interval_s: float = 0.05,
        prefix: tuple[str, ...] = (),
        env: dict | None = None,
    ):
        self.folder = folder
        self.state_dir = state_dir
        self.config = folder / "gatewayd.toml"
        devices = "".join(
            f'\n[[devices]]\nname = "pump-{n.unit}"\nhost = "127.0.0.1"\nport = {n.port}\nunit = {n.unit}\n'
            f"interval_s = {interval_s}\n"
            for n in nodes
        )
        # the status on a file system that does not fail with the state's (as /run/gatewayd, packaged)
        self.status_path = folder / "run" / "status.json"
        self.config.write_text(
            f'[gateway]\nname = "site"\nstate_dir = "{state_dir}"\n'
            f'runtime_dir = "{self.status_path.parent}"\n{extra}\n{devices}'
        )
        self.prefix = prefix
        self.env = env
        self.log_path = folder / "gatewayd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "gatewayd", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict | None:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def status_is(self, predicate: Callable[[dict], bool]) -> dict | None:
        status = self.status()
        assert self.alive(), f"the daemon died: {self.log()[-3000:]}"
        return status if status is not None and predicate(status) else None

    def written(self) -> int:
        status = self.status()
        return status["writer"]["written"] if status else 0

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def stored(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a query on the store, read-only as `gatewayd status` reads it; [] when it
    cannot be read right now."""
    try:
        store = Store(db, readonly=True)
    except sqlite3.Error:
        return []
    try:
        return store.conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []
    finally:
        store.close()


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert found, f"{name} is missing: make test installs it"
    return found
