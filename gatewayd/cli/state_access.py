"""The state directory from a command line: a folder this user cannot read or write, or a store
that is missing or cannot be opened, is one line naming the folder and the reason, never a
traceback."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gatewayd.config import Config
from gatewayd.errors import GatewayError
from gatewayd.store.database import DB_NAME, Store

EXIT_NO_STORE = 1  # nothing stored yet: the daemon has not run with this configuration
EXIT_NO_ACCESS = 2  # as for a configuration error: the folder must be fixed first


class StateUnavailable(GatewayError):
    """The state directory or the store cannot be used by this command; `status` is its exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def folder_problem(folder: Path, *, write: bool) -> str | None:
    """Why this user cannot read (or, with `write`, write or create) `folder`, or None. A folder
    that does not exist is no problem for reading: the caller says what it misses."""
    uid = os.getuid()
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except PermissionError:
        return f"permission denied for this user (uid {uid}) on a folder above it"
    if existing != folder and not write:
        return None
    where = "" if existing == folder else f"cannot create it in {existing}: "
    if not existing.is_dir():
        return f"{where}{existing} is not a folder"
    if not os.access(existing, os.R_OK | os.X_OK):
        return f"{where}no read permission for this user (uid {uid})"
    if write and not os.access(existing, os.W_OK):
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            return f"{where}the file system is read-only"
        return f"{where}no write permission for this user (uid {uid})"
    return None


def check_folder(folder: Path, what: str, *, write: bool) -> None:
    """Raise StateUnavailable when this user cannot read (or write) `folder`."""
    problem = folder_problem(folder, write=write)
    if problem is not None:
        verb = "write to" if write else "read"
        raise StateUnavailable(f"cannot {verb} {what} {folder}: {problem}", EXIT_NO_ACCESS)


def open_store(config: Config, *, readonly: bool) -> Store:
    """The configured store, opened for this command, or StateUnavailable saying why not."""
    folder = config.state_path
    db = folder / DB_NAME
    check_folder(folder, "the state directory", write=not readonly)
    if not db.exists():
        raise StateUnavailable(f"no store at {db} (has gatewayd run with this configuration?)", EXIT_NO_STORE)
    try:
        return Store(db, readonly=readonly)
    except sqlite3.Error as exc:
        raise StateUnavailable(f"the store {db} cannot be opened: {exc}", EXIT_NO_ACCESS) from None
