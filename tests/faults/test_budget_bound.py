"""The disk budget bounds the disk: database, WAL, shared memory and the reserve file together
stay within `store.disk_budget_mb` plus a stated margin at every moment, checked every second
while the real writer (writes, checkpoints, compaction, eviction) runs at the budget."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from gatewayd.clock import WallClock
from gatewayd.config import StoreSection
from gatewayd.store.database import Reading
from gatewayd.store.worker import StoreWorker
from gatewayd.store.writer import ReadingQueue, Writer

from .support import wait_for

BUDGET_MB = 3.0
# Past the budget by at most this: the newest write before it is evicted for (a second of
# readings here), and SQLite's page-sized rounding. docs/store.md states it.
MARGIN = 0.01


async def test_the_store_stays_within_its_budget_at_every_second(tmp_path):
    settings = StoreSection(
        disk_budget_mb=BUDGET_MB,
        flush_interval_s=0.2,
        compact_after_s=1.0,
        checkpoint_interval_s=1.0,
        batch_size=10_000,
        queue_readings=50_000,
    )
    budget = int(BUDGET_MB * 1e6)
    worker = StoreWorker(tmp_path / "state", budget)
    assert await worker.open()
    channels = [(f"c{i}", "V") for i in range(40)]
    await worker.register("n", "edge-node", "x", {}, channels)
    queue = ReadingQueue(settings.queue_readings)
    writer = Writer(worker, queue, settings, WallClock("always"))
    stop = asyncio.Event()
    samples: list[int] = []
    watching = threading.Event()

    def watch() -> None:  # as `du` would see it, from outside the writer
        while not watching.wait(1.0):
            samples.append(worker.disk_bytes())

    watcher = threading.Thread(target=watch, name="disk-watch")
    rng = np.random.default_rng(7)

    async def produce() -> None:
        t = 1_800_000_000_000
        while not stop.is_set():  # 8,000 noisy readings a second: the budget is reached in seconds
            values = rng.normal(0, 1, (20, len(channels))).tolist()
            await queue.put(
                [
                    Reading("n", ch, t + 50 * i, row[c])
                    for i, row in enumerate(values)
                    for c, (ch, _) in enumerate(channels)
                ]
            )
            t += 1000
            await asyncio.sleep(0.1)

    watcher.start()
    tasks = [asyncio.create_task(writer.run(stop)), asyncio.create_task(produce())]
    try:
        await asyncio.to_thread(
            wait_for,
            "evictions at the budget",
            lambda: worker.store is not None and len(samples) >= 5 and max(samples) > 0.8 * budget,
            60,
        )
        seen = len(samples)
        await asyncio.to_thread(wait_for, "20 seconds at the budget", lambda: len(samples) >= seen + 20, 60)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        watching.set()
        watcher.join()
        await worker.close()
    print(f"peak {max(samples)} B = {max(samples) / budget:.4f} of the budget over {len(samples)} s")
    assert max(samples) <= budget * (1 + MARGIN), f"{max(samples)} B on disk for a budget of {budget} B"
    assert writer.stats.written > 100_000, "the writer wrote far more than the budget holds"
