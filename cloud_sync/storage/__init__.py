"""Where the cloud endpoint keeps what gateways upload, its tokens, retraining jobs and (with a
database URL) published bundles. `Storage` is the contract; SQLite in the data folder is the
embedded default for one site, PostgreSQL the backend a fleet shares between servers."""

from __future__ import annotations

from pathlib import Path

from cloud_sync.storage.base import BatchOutcome, BatchSeen, Storage, StorageUnavailable
from cloud_sync.storage.sqlite import SqliteStorage

DB_FILE = "cloud.sqlite3"

__all__ = ["BatchOutcome", "BatchSeen", "SqliteStorage", "Storage", "StorageUnavailable", "open_storage"]


def open_storage(data_dir: Path, database: str | None = None, *, pool_size: int = 8) -> Storage:
    """PostgreSQL when a database URL is given, else SQLite in `data_dir`."""
    if database:
        if not database.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"--database takes a postgresql:// URL, not {database.split(':', 1)[0]}:")
        from cloud_sync.storage.postgres import PostgresStorage

        return PostgresStorage(database, pool_size=pool_size)
    return SqliteStorage(data_dir / DB_FILE)
