import asyncio

from gatewayd.daemon import ReadingQueue
from gatewayd.store import Reading


def batch(n):
    return [Reading("d", "c", i, 0.0) for i in range(n)]


async def test_full_queue_makes_the_producer_wait_and_memory_stays_bounded():
    q = ReadingQueue(capacity=1000)
    await q.put(batch(600))
    blocked = asyncio.create_task(q.put(batch(600)))  # would exceed the capacity
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(q.items) == 600
    taken = await q.take(limit=500, wait_s=0.01)
    assert len(taken) == 500
    await asyncio.wait_for(blocked, 1)
    assert len(q.items) == 700 <= q.capacity


async def test_oversized_batch_into_an_empty_queue_is_accepted():
    q = ReadingQueue(capacity=100)
    await asyncio.wait_for(q.put(batch(250)), 1)  # one poll's readings are never split or refused
    assert len(q.items) == 250


async def test_take_waits_for_a_full_batch_or_the_flush_interval():
    q = ReadingQueue(capacity=1000)
    await q.put(batch(3))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = await q.take(limit=10, wait_s=0.2)
    assert len(got) == 3 and loop.time() - t0 >= 0.19
