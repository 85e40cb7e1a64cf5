"""What went wrong with the store's disk: the I/O error classes a gateway meets, each with a
decided behaviour (docs/store.md, "When the disk fails").

| fault | cause | the daemon |
|---|---|---|
| `disk_full` | ENOSPC, a quota | evicts the oldest raw readings to make room (releasing its reserve file first), retries |
| `read_only` | the file system remounted read-only (ext4 `errors=remount-ro`), EROFS | reopens the database until it is writable again |
| `io_error` | EIO from a failing card or disk | reopens the database, retries with backoff |
| `locked` | another process holds a write lock past the busy timeout | retries with the same connection |
| `corrupt` | the database file is damaged | keeps retrying, slowly; a person must recover the file |
| `unavailable` | the state directory cannot be created or opened | retries opening it |

Polling, detection, MQTT and the dashboard go on in every case; alerts wait in memory (bounded)
and reach the store once it takes writes again. Pure functions, no I/O but a statvfs."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from gatewayd.errors import GatewayError

DISK_FULL = "disk_full"
READ_ONLY = "read_only"
IO_ERROR = "io_error"
LOCKED = "locked"
CORRUPT = "corrupt"
UNAVAILABLE = "unavailable"

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_BY_CODE = {
    _SQLITE_FULL: DISK_FULL,
    _SQLITE_READONLY: READ_ONLY,
    _SQLITE_IOERR: IO_ERROR,
    _SQLITE_BUSY: LOCKED,
    _SQLITE_LOCKED: LOCKED,
    _SQLITE_CORRUPT: CORRUPT,
    _SQLITE_NOTADB: CORRUPT,
    _SQLITE_CANTOPEN: UNAVAILABLE,
    _SQLITE_PERM: UNAVAILABLE,
}
_BY_ERRNO = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EIO: IO_ERROR,
    errno.EACCES: UNAVAILABLE,
    errno.EPERM: UNAVAILABLE,
    errno.ENOENT: UNAVAILABLE,
    errno.ENOTDIR: UNAVAILABLE,
}


class StoreFault(GatewayError):
    """The store cannot take this call now; `kind` says why (one of the kinds above)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def classify(exc: BaseException, state_dir: Path | None = None) -> str | None:
    """The fault kind of an exception from the store, or None when it is not the disk's doing
    (a bug, which must not be mistaken for a fault to wait out)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return _by_message(str(exc))
        kind = _BY_CODE.get(code & 0xFF)
        # SQLite reports every failed write as an I/O error, whatever the errno was (EROFS
        # after an emergency remount, ENOSPC past a quota): a write of our own tells which.
        if kind == IO_ERROR and state_dir is not None:
            return probe(state_dir) or IO_ERROR
        return kind
    if isinstance(exc, OSError):
        return _BY_ERRNO.get(exc.errno or 0)
    return None


def probe(folder: Path) -> str | None:
    """Write, sync and remove a small file in `folder`: the fault kind its errno says, or
    None when the file system takes it."""
    path = folder / ".write-probe"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError as exc:
        return _BY_ERRNO.get(exc.errno or 0, IO_ERROR)
    return None


def _by_message(text: str) -> str | None:
    # Errors raised before SQLite answered (Python's own) carry no code.
    text = text.lower()
    for needle, kind in (
        ("disk is full", DISK_FULL),
        ("readonly", READ_ONLY),
        ("read-only", READ_ONLY),
        ("disk i/o error", IO_ERROR),
        ("locked", LOCKED),
        ("malformed", CORRUPT),
        ("not a database", CORRUPT),
        ("unable to open", UNAVAILABLE),
    ):
        if needle in text:
            return kind
    return None


def describe(kind: str, exc: BaseException, where: Path) -> str:
    """One line for the log and the status: what, where, and what the daemon does about it."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    what = {
        DISK_FULL: "the disk is full",
        READ_ONLY: "the file system is read-only",
        IO_ERROR: "I/O error",
        LOCKED: "the database is locked by another process",
        CORRUPT: "the database file is damaged",
        UNAVAILABLE: "cannot open the store",
    }[kind]
    return f"{what} ({where}: {reason})"
