import asyncio

from gatewayd.daemon import ReadingQueue
from gatewayd.store.database import Reading


def batch(n):
    return [Reading("d", "c", i, 0.0) for i in range(n)]


async def test_full_queue_makes_the_producer_wait_and_memory_stays_bounded():
    q = ReadingQueue(capacity=1000)
    await q.put(batch(600))
    blocked = asyncio.create_task(q.put(batch(600)))  # would exceed the capacity
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(q) == 600
    taken = await q.take(limit=500, wait_s=0.01)
    assert len(taken) == 500
    await asyncio.wait_for(blocked, 1)
    assert len(q) == 700 <= q.capacity


async def test_oversized_batch_into_an_empty_queue_is_accepted():
    q = ReadingQueue(capacity=100)
    await asyncio.wait_for(q.put(batch(250)), 1)  # one poll's readings are never split or refused
    assert len(q) == 250


async def test_take_waits_for_a_full_batch_or_the_flush_interval():
    q = ReadingQueue(capacity=1000)
    await q.put(batch(3))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = await q.take(limit=10, wait_s=0.2)
    assert len(got) == 3 and loop.time() - t0 >= 0.19


async def test_taking_splits_a_poll_and_keeps_the_order():
    q = ReadingQueue(capacity=1000)
    await q.put(batch(300))
    await q.put([Reading("d", "c", 300 + i, 1.0) for i in range(300)])
    first = await q.take(limit=450, wait_s=0)
    rest = await q.take(limit=450, wait_s=0)
    assert [r.ts_ms for r in first + rest] == list(range(600)) and len(first) == 450 and len(q) == 0
