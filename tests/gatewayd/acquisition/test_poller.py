"""The poller against real virtual nodes: readings flow, failures are counted, the task
outlives a missing device and recovers when it appears."""

import asyncio

from gatewayd.acquisition.poller import Poller
from gatewayd.config import DeviceSection
from gatewayd.demo.virtual_node import VirtualNode, free_port


class Collector:
    def __init__(self):
        self.batches = []
        self.devices = []

    async def sink(self, batch):
        self.batches.append(batch)

    async def register(self, name, profile, address, identity, channels):
        self.devices.append((name, identity, channels))


def device(port, unit=1, interval_s=0.1):
    return DeviceSection(name="pump", host="127.0.0.1", port=port, unit=unit, interval_s=interval_s, timeout_s=0.5)


async def wait_until(predicate, timeout_s=10.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_polls_registers_device_and_delivers_batches(virtual_node):
    out = Collector()
    poller = Poller(device(virtual_node.port), out.sink, out.register)
    task = asyncio.create_task(poller.run())
    try:
        await wait_until(lambda: len(out.batches) >= 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    name, identity, channels = out.devices[0]
    assert identity["map_version"] == 1 and identity["sample_period_ms"] == 50
    assert [c for c, _ in channels] == ["pressure", "flow", "temperature", "current"]
    assert all(len(b) == 4 for b in out.batches)
    stamps = [b[0].ts_ms for b in out.batches]
    assert stamps == sorted(stamps)
    flows = [r.value for b in out.batches for r in b if r.channel == "flow"]
    assert len(set(flows)) > 1, "flow should be noisy, not constant"
    assert poller.health.state == "online" and poller.health.consecutive_failures == 0


async def test_wrong_unit_is_a_device_error_not_a_crash(virtual_node):
    out = Collector()
    poller = Poller(device(virtual_node.port, unit=9), out.sink, out.register)
    task = asyncio.create_task(poller.run())
    try:
        await wait_until(lambda: poller.health.consecutive_failures >= 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert poller.health.state == "degraded"
    assert "Modbus exception 11" in poller.health.last_error
    assert not out.batches


async def test_missing_device_goes_offline_then_recovers():
    port = free_port()
    out = Collector()
    poller = Poller(device(port, interval_s=0.05), out.sink, out.register)
    # Short backoff keeps the test quick; the schedule is the poller's own.
    poller._backoff = lambda: 0.05
    task = asyncio.create_task(poller.run())
    node = VirtualNode(unit=1, seed=3, port=port)
    try:
        await wait_until(lambda: poller.health.state == "offline")
        assert not task.done()
        assert "cannot connect" in poller.health.last_error
        await asyncio.to_thread(node.start)
        await wait_until(lambda: poller.health.state == "online")
        await wait_until(lambda: len(out.batches) >= 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        node.stop()
    assert poller.health.consecutive_failures == 0


async def test_cancel_during_a_request_stops_the_task():
    """pymodbus converts a cancellation inside a request into its own error; the poller
    must still stop instead of counting a failure and polling on."""
    accepted, requested = asyncio.Event(), asyncio.Event()

    async def silent(reader, writer):
        accepted.set()
        if await reader.read(1):
            requested.set()  # the identity request is in flight
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    out = Collector()
    poller = Poller(
        DeviceSection(name="mute", host="127.0.0.1", port=port, interval_s=0.1, timeout_s=5), out.sink, out.register
    )
    task = asyncio.create_task(poller.run())
    try:
        await asyncio.wait_for(accepted.wait(), 5)
        await asyncio.wait_for(requested.wait(), 5)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, "poller kept running after cancel"
        assert task.cancelled()
        assert poller.health.consecutive_failures == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        await server.wait_closed()
