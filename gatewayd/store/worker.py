"""The store's one worker thread, and its health when the disk fails.

Every call of the running daemon into SQLite goes through here and runs on one thread. A
fault of the disk (gatewayd/store/faults.py: full, read-only, I/O error, locked, damaged,
cannot be opened) never ends the daemon: the store turns *degraded*, callers get StoreFault
(or, for the writes that must not be lost, their call waits in memory), and `recover()`,
called by the writer, repairs what it can (an emergency eviction for a full disk, a new
connection after an I/O error or a remount) until the store takes writes again. Devices are
registered again on every new connection, so readings find their channels."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gatewayd.clock import now_ms
from gatewayd.store import reserve as reserve_file
from gatewayd.store import upload_state
from gatewayd.store.database import DB_NAME, Reading, Store, file_sizes
from gatewayd.store.faults import CORRUPT, DISK_FULL, LOCKED, UNAVAILABLE, StoreFault, classify, describe

log = logging.getLogger(__name__)

T = TypeVar("T")

OK = "ok"
KEPT_MAX = 10_000  # writes held in memory at most (about 2 KB each: 20 MB)
RETRY_S = (1.0, 2.0, 5.0, 10.0)
CORRUPT_RETRY_S = 60.0
REPEAT_QUIET_S = 600.0  # a fault that comes back within this of its recovery is logged at debug level


@dataclass
class StoreHealth:
    state: str = "starting"  # ok, or a fault kind of store/faults.py
    since_mono: float = 0.0
    since_ms: int = 0
    last_error: str | None = None
    faults: int = 0  # times the store went from ok to degraded
    recoveries: int = 0
    last_outage_s: float | None = None
    readings_dropped: int = 0  # readings that could not wait for the store (counted by the writer)
    kept_dropped: int = 0  # kept writes lost to the memory bound
    emergency_evictions: int = 0
    attempts: int = 0  # recovery attempts during this outage
    disk_full: bool = False  # writing, but the file system, not the budget, bounds the store
    disk_full_since_ms: int = 0


class StoreWorker:
    def __init__(
        self,
        state_dir: Path,
        budget_bytes: int,
        *,
        wall_ms: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.folder = Path(state_dir)
        self.path = self.folder / DB_NAME
        self.budget = budget_bytes
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: Store | None = None
        self.health = StoreHealth()
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        self.devices: dict[str, tuple[str, str, dict, list[tuple[str, str]]]] = {}
        self.kept: deque[tuple[Callable[..., Any], tuple]] = deque()
        most = reserve_file.capacity(self.folder, budget_bytes)
        self.reserve = reserve_file.Reserve(self.folder, reserve_file.reserve_bytes(most))
        self.wal_bytes = reserve_file.wal_allowance(most)
        self.next_attempt = 0.0
        self.last_fault: str | None = None
        self.recovered_mono = -REPEAT_QUIET_S

    # -- state ---------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        return self.health.state != OK

    def state(self) -> tuple[str, str | None]:
        """What to tell people: a fault, or `disk_full` while the store keeps writing only by
        evicting its oldest readings because the file system has no room left."""
        h = self.health
        if h.state == OK and h.disk_full:
            return DISK_FULL, "the file system is full: the oldest readings are evicted to go on writing"
        return h.state, h.last_error

    def status(self) -> dict:
        h = self.health
        state, last_error = self.state()
        since = h.disk_full_since_ms if h.state == OK and h.disk_full else h.since_ms
        return {
            "state": state,
            "writing": not self.degraded,
            "since_ms": since,
            "last_error": last_error,
            "faults": h.faults,
            "recoveries": h.recoveries,
            "last_outage_s": h.last_outage_s,
            "readings_dropped": h.readings_dropped,
            "writes_waiting": len(self.kept),
            "writes_dropped": h.kept_dropped,
            "emergency_evictions": h.emergency_evictions,
        }

    def _fault(self, kind: str, exc: BaseException) -> StoreFault:
        message = describe(kind, exc, self.path if kind != UNAVAILABLE else self.folder)
        h = self.health
        if h.state != kind:
            if h.state in (OK, "starting"):
                h.faults += 1
                h.since_mono, h.since_ms, h.attempts = self.monotonic(), self.wall_ms(), 0
                # The same fault again soon after it was overcome (a disk another program keeps
                # full) is told once, not at every turn.
                again = kind == self.last_fault and h.since_mono - self.recovered_mono < REPEAT_QUIET_S
                log.log(
                    logging.DEBUG if again else logging.ERROR,
                    "store degraded: %s; polling, detection and MQTT go on, alerts wait in memory",
                    message,
                )
                self.last_fault = kind
            else:
                log.error("store still degraded, now: %s", message)
            h.state = kind
            self.next_attempt = self.monotonic() + RETRY_S[0]
        h.last_error = message
        return StoreFault(kind, message)

    def _recovered(self) -> None:
        h = self.health
        if h.state == OK:
            return
        if h.state != "starting":
            h.recoveries += 1
            h.last_outage_s = round(self.monotonic() - h.since_mono, 3)
            quiet = self.monotonic() - self.recovered_mono < REPEAT_QUIET_S
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "store recovered after %.1f s (%d readings dropped meanwhile)",
                h.last_outage_s,
                h.readings_dropped,
            )
            self.recovered_mono = self.monotonic()
        h.state, h.last_error = OK, None
        h.since_mono, h.since_ms = self.monotonic(), self.wall_ms()

    # -- calls ---------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(store, *args) on the store's thread; a disk fault raises StoreFault."""
        if self.store is None:
            raise StoreFault(self.health.state, self.health.last_error or "the store is not open")
        store = self.store
        try:
            return await asyncio.get_running_loop().run_in_executor(self.thread, lambda: fn(store, *args))
        except (sqlite3.Error, OSError) as exc:
            kind = classify(exc, self.folder)
            if kind is None:
                raise
            raise self._fault(kind, exc) from exc

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """A write that fails at once with StoreFault while the store is degraded (a read is
        `run`: it is tried whatever the state)."""
        if self.degraded:
            raise StoreFault(self.health.state, self.health.last_error or "the store is degraded")
        return await self.run(fn, *args)

    async def write_kept(self, fn: Callable[..., Any], *args: Any) -> None:
        """A write that must reach the store whatever happens (alerts, model events): while
        the store is degraded it waits in memory, in order, and is written first when the store
        recovers. fn must be idempotent: a write that failed may have landed."""
        if not self.degraded:
            try:
                await self.run(fn, *args)
                return
            except StoreFault:
                pass
        if len(self.kept) >= KEPT_MAX:
            self.kept.popleft()
            self.health.kept_dropped += 1
            if self.health.kept_dropped == 1:
                log.error("store degraded for long: %d waiting writes, the oldest are dropped", KEPT_MAX)
        self.kept.append((fn, args))

    async def register(
        self, name: str, profile: str, address: str, identity: dict, channels: list[tuple[str, str]]
    ) -> None:
        """Record a device; remembered, so that every new connection registers it again."""
        self.devices[name] = (profile, address, identity, list(channels))
        if self.degraded:
            return  # registered when the store comes back
        try:
            await self.run(Store.register_device, name, profile, address, identity, channels)
        except StoreFault:
            pass  # the poller goes on: readings wait for the store like everything else

    async def write_readings(self, batch: Sequence[Reading], clock_synced: bool = True) -> int:
        return await self.run(lambda store: store.write_readings(batch, clock_synced=clock_synced))

    # -- opening, closing, recovering ------------------------------------------------------

    async def open(self) -> bool:
        """Open (and migrate) the store; a fault leaves it degraded instead of raising."""
        try:
            self.store = await asyncio.get_running_loop().run_in_executor(self.thread, self._open_blocking)
        except (sqlite3.Error, OSError) as exc:
            kind = classify(exc, self.folder)
            if kind is None:
                raise
            self._fault(kind, exc)
            return False
        self.next_attempt = 0.0
        if self.health.state == "starting":
            self._recovered()
        return True

    def _open_blocking(self) -> Store:
        store = Store(self.path)
        try:
            store.limit_wal(self.wal_bytes)
            for name, (profile, address, identity, channels) in self.devices.items():
                store.register_device(name, profile, address, identity, channels)
        except BaseException:
            store.close()
            raise
        return store

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await asyncio.get_running_loop().run_in_executor(self.thread, _close_quietly, store)
        self.thread.shutdown(wait=True)

    def due(self) -> bool:
        """Time for the next recovery attempt."""
        return self.degraded and self.monotonic() >= self.next_attempt

    async def recover(self) -> bool:
        """One attempt at bringing a degraded store back: reopen it when its connection is
        suspect, make room on a full disk, then write what waits in memory. True when the store
        takes writes again (the caller's next write is the proof)."""
        if not self.degraded:
            return True
        h = self.health
        h.attempts += 1
        kind = h.state
        delay = CORRUPT_RETRY_S if kind == CORRUPT else RETRY_S[min(h.attempts, len(RETRY_S) - 1)]
        self.next_attempt = self.monotonic() + delay
        loop = asyncio.get_running_loop()
        if kind not in (LOCKED, DISK_FULL) or self.store is None:
            if self.store is not None:
                store, self.store = self.store, None
                await loop.run_in_executor(self.thread, _close_quietly, store)
            if not await self.open():
                return False
        if kind == DISK_FULL:
            try:
                await self._make_room()
            except StoreFault:
                return False
        while self.kept:
            fn, args = self.kept[0]
            try:
                await self.run(fn, *args)
            except StoreFault:
                return False
            self.kept.popleft()
        self._recovered()
        return True

    async def _make_room(self) -> None:
        """A full file system: give back the reserve, so SQLite has room to delete, then evict
        the oldest routine readings so that the writes that wait (alerts first) have pages."""
        released = self.reserve.release()
        if released:
            log.warning("disk full: released the %d KB reserve for an emergency eviction", released // 1024)
        # The WAL first: once the database file has taken it, the WAL is written again from its
        # start, in space it already has, and the eviction needs no new space at all.
        await self.run(Store.checkpoint)
        evicted = await self.run(lambda store: store.evict_oldest(_headroom(store.disk_bytes(), self.reserve.size)))
        await self.run(Store.checkpoint)
        if evicted:
            self.health.emergency_evictions += 1
            log.log(
                logging.WARNING if self.health.emergency_evictions == 1 else logging.DEBUG,
                "disk full: evicted %d of the oldest raw blocks to go on writing",
                evicted.get("raw", 0),
            )

    # -- the budget -----------------------------------------------------------------------

    async def enforce_budget(self) -> dict[str, int]:
        """Keep the store's files (database, WAL, shared memory and reserve) within the budget
        and within what the file system has left, evicting routine data oldest written first."""
        return await self.run(self._budget_blocking)

    def _uploaded(self) -> dict[str, int]:
        """How far the cloud agent has uploaded the outbox (nothing when none runs here)."""
        return upload_state.outbox_cursors(upload_state.read(self.folder))

    def _budget_blocking(self, store: Store) -> dict[str, int]:
        usage = store.disk_usage()
        try:
            fs_free = reserve_file.free_bytes(self.folder)
        except OSError:
            fs_free = self.budget
        reserve_on_disk = self.reserve.on_disk()
        missing_reserve = self.reserve.size - reserve_on_disk  # room left free for it to be made again
        room = usage.files + reserve_on_disk + fs_free - missing_reserve
        if room >= self.budget:  # the budget is the limit
            overhead = max(usage.wal, self.wal_bytes) + usage.shm + self.reserve.size
            evicted = store.enforce_budget(self.budget, overhead_bytes=overhead, uploaded=self._uploaded)
        else:
            # The file system is the limit (it is smaller than the budget, or something else
            # filled it): the data stays within the database as it is (with what the WAL holds
            # of it), plus what the file system can spare after the WAL's room, keeping a few
            # free pages for the next writes. The file is never shrunk here: what it gave back,
            # another writer would take.
            wal_room = max(0, self.wal_bytes - usage.wal)
            spare = max(0, fs_free - missing_reserve - wal_room)
            size = max(usage.database, usage.pages)
            evicted = store.enforce_budget(
                size + spare - _headroom(size, self.reserve.size), release_free=False, uploaded=self._uploaded
            )
        if not reserve_on_disk and self.reserve.ensure():
            log.info("reserve of %d KB in place", self.reserve.size // 1024)
        # The file system is the limit when it leaves less than the budget and no room to spare.
        full = room < self.budget and fs_free < 2 * self.reserve.size
        if full != self.health.disk_full:
            if full:
                self.health.disk_full_since_ms = self.wall_ms()
                log.error(
                    "the file system of %s is full (%d KB free): the store keeps writing by evicting its "
                    "oldest readings; free some space or lower store.disk_budget_mb",
                    self.folder,
                    fs_free // 1024,
                )
            else:
                log.warning("the file system of %s has room again (%d MB free)", self.folder, fs_free >> 20)
        self.health.disk_full = full
        return evicted

    def disk_bytes(self) -> int:
        """Bytes the store occupies now: its files and the reserve (for status and tests)."""
        return self.reserve.on_disk() + sum(file_sizes(self.path))


def _headroom(database: int, reserve: int) -> int:
    """Free pages kept for the next writes on a full file system: a sixteenth of the database,
    16 KiB at least, the reserve's size at most (a few seconds to minutes of readings)."""
    return min(reserve, max(16 << 10, database // 16))


def _close_quietly(store: Store) -> None:
    try:
        store.close()
    except sqlite3.Error:
        pass  # a connection on a failed disk may not close cleanly; it is dropped either way
