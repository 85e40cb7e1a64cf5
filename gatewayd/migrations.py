"""Schema migrations: registered functions, applied in order, each in its own
transaction and recorded in the `_migrations` table, so running them again is a no-op."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_devices_channels_readings(db: sqlite_utils.Database) -> None:
    db["devices"].create(
        {"id": int, "name": str, "profile": str, "address": str, "identity": str, "first_seen_ms": int},
        pk="id",
        not_null={"name"},
    )
    db["devices"].create_index(["name"], unique=True)
    db["channels"].create(
        {"id": int, "device_id": int, "name": str, "unit": str},
        pk="id",
        foreign_keys=[("device_id", "devices", "id")],
        not_null={"device_id", "name"},
    )
    db["channels"].create_index(["device_id", "name"], unique=True)
    db["readings"].create(
        {"channel_id": int, "ts_ms": int, "value": float},
        not_null={"channel_id", "ts_ms"},
    )
    db["readings"].create_index(["channel_id", "ts_ms"])


def applied(conn: sqlite3.Connection) -> list[str]:
    db = sqlite_utils.Database(conn)
    if "_migrations" not in db.table_names():
        return []
    return [row["name"] for row in db["_migrations"].rows_where(order_by="applied_ms, name")]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    db = sqlite_utils.Database(conn)
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"name": str, "applied_ms": int}, pk="name")
    done = set(applied(conn))
    new = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with conn:
            fn(db)
            db["_migrations"].insert({"name": name, "applied_ms": int(time.time() * 1000)})
        new.append(name)
    return new
