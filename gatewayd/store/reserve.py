"""A reserve file beside the database: preallocated space to give back on a full disk.

When the file system fills up (another program's logs, a budget larger than the disk), SQLite
needs a little room even to delete: the WAL takes the changed pages before the checkpoint
copies them home. Deleting this file gives that room, so the store can evict its oldest
readings and go on writing into the pages they leave free. The same device as CockroachDB's
emergency ballast. It is made again once the file system has room for it and as much again."""

from __future__ import annotations

import errno
import os
from pathlib import Path

RESERVE_NAME = "gatewayd.reserve"
_CHUNK = 1 << 20


def wal_allowance(capacity: int) -> int:
    """Room kept for the WAL between checkpoints: 1/128 of the capacity, 512 KiB..16 MiB (a
    checkpoint runs once half of it is used)."""
    return min(16 << 20, max(512 << 10, capacity // 128))


def reserve_bytes(capacity: int) -> int:
    """The reserve: as large as the WAL may grow, so that on a full disk a checkpoint can
    always move the whole WAL into the database file, after which the WAL is reused in place."""
    return wal_allowance(capacity)


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still take on the file system of `folder`."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def capacity(folder: Path, budget: int) -> int:
    """What a store in `folder` can ever take: its budget, or the whole file system when that
    is smaller (a budget of gigabytes on a small SD card partition)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        st = os.statvfs(existing)
    except OSError:
        return budget
    return min(budget, st.f_blocks * st.f_frsize)


class Reserve:
    def __init__(self, folder: Path, size: int):
        self.path = folder / RESERVE_NAME
        self.size = size

    def on_disk(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def ensure(self) -> bool:
        """Make the reserve if it is missing and the file system can spare it twice over (it
        must never be what fills the disk); True when it is in place."""
        if self.on_disk() >= self.size:
            return True
        try:
            if free_bytes(self.path.parent) < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    zeros = bytes(_CHUNK)
                    for offset in range(0, self.size, _CHUNK):
                        os.pwrite(fd, zeros[: min(_CHUNK, self.size - offset)], offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError:
            self.release()  # half a reserve is no use and takes space
            return False

    def release(self) -> int:
        """Delete the reserve; returns the bytes given back."""
        size = self.on_disk()
        try:
            self.path.unlink()
        except OSError:
            return 0
        return size
