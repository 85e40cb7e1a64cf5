"""From the pollers to the disk: the bounded reading queue and the store writer.

The writer takes batches from the queue, writes each in one transaction, checkpoints, merges
small blocks, and minutes that are over into summary blocks, and keeps the store within its
disk budget after every write. When the store is degraded (a full or failed disk,
store/worker.py) it stops writing, lets the queue shed its oldest readings instead of holding
up polling, and asks the store to recover at intervals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from gatewayd import heap
from gatewayd.clock import WallClock
from gatewayd.config import StoreSection
from gatewayd.store.database import Reading, Store
from gatewayd.store.faults import StoreFault
from gatewayd.store.worker import StoreWorker

log = logging.getLogger("gatewayd.daemon")

COMPACT_SLICE = 100  # channels per compaction step: tens of milliseconds of the store thread
SUMMARY_SLICE = 10  # channels per step of the summaries' compaction: a few ms each, tens at most
DEGRADED_TURN_S = 0.5  # how often a degraded writer looks at the queue and the clock
EVICTION_LOG_S = 600.0  # at most one line a period about routine evictions


@dataclass
class WriterStats:
    written: int = 0
    batches: int = 0
    queued: int = 0
    compacted: int = 0  # blocks merged away
    summarised: int = 0  # minute rows merged into summary blocks
    evicted: dict[str, int] = field(default_factory=dict)  # rows evicted by the disk budget, by kind
    heartbeat: float = 0.0  # loop time of the writer's last turn


class ReadingQueue:
    """Bounded hand-off from pollers to the writer; a full queue makes pollers wait, unless it
    sheds (the store is degraded: polling must go on, so the oldest readings give way).
    Polls are kept as they came (one list each), so taking a batch never copies what stays."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.polls: deque[list[Reading]] = deque()
        self.size = 0
        self.changed = asyncio.Condition()
        self.shedding = False
        self.dropped = 0  # readings shed

    def __len__(self) -> int:
        return self.size

    async def put(self, batch: list[Reading]) -> None:
        if not batch:
            return
        async with self.changed:
            if self.shedding:
                while self.polls and self.size + len(batch) > self.capacity:
                    self.size -= len(old := self.polls.popleft())
                    self.dropped += len(old)
            else:
                await self.changed.wait_for(
                    lambda: self.size + len(batch) <= self.capacity or not self.size or self.shedding
                )
            self.polls.append(batch)
            self.size += len(batch)
            self.changed.notify_all()

    async def shed(self, on: bool) -> None:
        """Start or stop shedding; producers waiting for room go on at once."""
        if on != self.shedding:
            async with self.changed:
                self.shedding = on
                self.changed.notify_all()

    def put_back(self, batch: list[Reading]) -> None:
        """A batch the store did not take goes back to the head, to be written first."""
        if batch:
            self.polls.appendleft(batch)
            self.size += len(batch)

    def take_now(self, limit: int) -> list[Reading]:
        """Up to `limit` readings, oldest first, without waiting."""
        out: list[Reading] = []
        while self.polls and len(out) < limit:
            head = self.polls.popleft()
            room = limit - len(out)
            if len(head) > room:  # the writer's batch may split a poll; a poll is never refused
                self.polls.appendleft(head[room:])
                head = head[:room]
            out.extend(head)
        self.size -= len(out)
        return out

    async def take(self, limit: int, wait_s: float) -> list[Reading]:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.size >= limit), wait_s)
            except TimeoutError:
                pass
            batch = self.take_now(limit)
            self.changed.notify_all()
            return batch


class Writer:
    def __init__(
        self,
        worker: StoreWorker,
        queue: ReadingQueue,
        settings: StoreSection,
        clock: WallClock,
        stats: WriterStats | None = None,
    ):
        self.worker = worker
        self.queue = queue
        self.settings = settings
        self.clock = clock
        self.stats = stats or WriterStats()
        self.to_compact: list[int] = []  # channels left in the current compaction pass
        self.to_summarise: list[int] = []  # channels whose minutes are left in it
        self.cutoff = 0
        self.evicted: dict[str, int] = {}  # since the last line about it
        self.next_eviction_log = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.next_compaction = loop.time() + self.settings.compact_after_s
        self.next_checkpoint = loop.time() + self.settings.checkpoint_interval_s
        while not stop.is_set():
            self.stats.heartbeat = loop.time()
            stepped = self.clock.check_step() is not None
            if self.worker.degraded:
                await self.queue.shed(True)
                if self.worker.due():
                    await self.worker.recover()
                self.worker.health.readings_dropped = self.queue.dropped
                self.stats.queued = len(self.queue)
                if self.worker.degraded:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DEGRADED_TURN_S)
                    continue
                await self.queue.shed(False)
            # While a compaction pass is under way, take what is queued without waiting, so
            # slices of compaction and writes alternate and the queue never backs up behind it.
            wait_s = 0.0 if self.to_compact or self.to_summarise else self.settings.flush_interval_s
            batch = await self.queue.take(self.settings.batch_size, wait_s)
            self.stats.queued = len(self.queue)
            try:
                await self.write(batch, synced=self.clock.synchronized() and not stepped)
            except StoreFault:
                self.queue.put_back(batch)
                continue
            try:
                await self._maintain(loop)
            except StoreFault:
                continue

    async def write(self, batch: list[Reading], *, synced: bool = True) -> None:
        if not batch:
            return
        self.stats.written += await self.worker.write_readings(batch, synced)
        self.stats.batches += 1

    async def _maintain(self, loop: asyncio.AbstractEventLoop) -> None:
        evicted = await self.worker.enforce_budget()
        if evicted:
            for kind, n in evicted.items():
                self.stats.evicted[kind] = self.stats.evicted.get(kind, 0) + n
            self._log_evictions(evicted, loop.time())
        if loop.time() >= self.next_checkpoint:
            await self.worker.run(Store.checkpoint)
            self.next_checkpoint = loop.time() + self.settings.checkpoint_interval_s
        if self.to_compact:
            part, self.to_compact = self.to_compact[:COMPACT_SLICE], self.to_compact[COMPACT_SLICE:]
            self.stats.compacted += await self.worker.run(Store.compact_channels, part, self.cutoff)
            if not self.to_compact and not self.to_summarise:
                await self.worker.run(lambda _store: heap.trim())  # compaction's temporaries
        elif self.to_summarise:
            part, self.to_summarise = self.to_summarise[:SUMMARY_SLICE], self.to_summarise[SUMMARY_SLICE:]
            self.stats.summarised += await self.worker.run(Store.compact_summaries, part, self.cutoff)
            if not self.to_summarise:
                await self.worker.run(lambda _store: heap.trim())
        elif loop.time() >= self.next_compaction:
            # Small blocks from slow polls are merged so a reading costs a few bytes on disk,
            # and minutes that are over go into summary blocks, about 9 bytes a minute.
            self.cutoff = self.clock.now_ms() - int(self.settings.compact_after_s * 1000)
            self.to_compact = await self.worker.run(Store.compactable_channels, self.cutoff)
            self.to_summarise = await self.worker.run(Store.compactable_summaries, self.cutoff)
            self.next_compaction = loop.time() + self.settings.compact_after_s

    def _log_evictions(self, evicted: dict[str, int], now: float) -> None:
        # At the budget the store evicts at every write: logged once, then a sum now and then.
        for kind, n in evicted.items():
            self.evicted[kind] = self.evicted.get(kind, 0) + n
        if now < self.next_eviction_log:
            return
        what = ", ".join(f"{n} {kind} rows" for kind, n in self.evicted.items())
        if self.next_eviction_log == 0.0:
            limit = (
                "the file system is full"
                if self.worker.health.disk_full
                else f"disk budget of {self.settings.disk_budget_mb:g} MB reached"
            )
            log.warning("%s: evicting the oldest routine data (%s)", limit, what)
        else:
            log.info("evicted in the last %.0f minutes: %s", EVICTION_LOG_S / 60, what)
        self.evicted.clear()
        self.next_eviction_log = now + EVICTION_LOG_S

    async def flush(self) -> None:
        """At shutdown, with the pollers stopped: whatever is queued goes to disk if it can."""
        if self.worker.degraded:
            await self.worker.recover()
        try:
            while len(self.queue):
                batch = self.queue.take_now(self.settings.batch_size)
                try:
                    await self.write(batch, synced=self.clock.synchronized())
                except StoreFault:
                    self.queue.put_back(batch)
                    raise
        except StoreFault as exc:
            log.error("%d readings not stored at shutdown: %s", len(self.queue), exc)
