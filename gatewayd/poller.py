"""Polling one node over Modbus TCP: connect, read its identity, then read its channel
block every interval on the monotonic clock. Failures are counted, logged once, and
retried with backoff; the task itself never dies of them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gatewayd.config import DeviceSection
from gatewayd.profiles import edge_node
from gatewayd.store import Reading

log = logging.getLogger(__name__)

DEGRADED_AFTER = 1
OFFLINE_AFTER = 3
MAX_BACKOFF_S = 30.0

Sink = Callable[[list[Reading]], Awaitable[None]]
Register = Callable[[str, str, str, dict, list[tuple[str, str]]], Awaitable[None]]


class DeviceError(Exception):
    """A device answered with a Modbus exception or with data that does not fit its profile."""


EXPECTED_FAILURES = (ModbusException, DeviceError, edge_node.ProfileError, OSError, asyncio.TimeoutError)


@dataclass
class DeviceHealth:
    state: str = "connecting"  # connecting | online | degraded | offline
    consecutive_failures: int = 0
    last_error: str | None = None
    polls: int = 0
    readings: int = 0
    last_values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


def make_tcp_client(device: DeviceSection) -> AsyncModbusTcpClient:
    # Reconnection is ours (with health tracking), so pymodbus' own is switched off.
    return AsyncModbusTcpClient(
        device.host, port=device.port, timeout=device.timeout_s, retries=0, reconnect_delay=0
    )


class EdgeNodePoller:
    def __init__(
        self,
        device: DeviceSection,
        sink: Sink,
        register: Register,
        *,
        client_factory: Callable[[DeviceSection], AsyncModbusTcpClient] = make_tcp_client,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ):
        self.device = device
        self.sink = sink
        self.register = register
        self.client_factory = client_factory
        self.clock = clock
        self.wall_ms = wall_ms
        self.health = DeviceHealth()
        self.client: AsyncModbusTcpClient | None = None
        self.channels: list[edge_node.Channel] = []
        self.skipped_ticks = 0
        self.heartbeat = clock()  # monotonic time of the last turn of the loop

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until `stop` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        interval = self.device.interval_s
        next_tick = self.clock()
        try:
            while not stop.is_set():
                self.heartbeat = self.clock()
                try:
                    await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _raise_if_cancelling(exc)
                    if not isinstance(exc, EXPECTED_FAILURES):  # a bug must not end polling
                        log.exception("%s: unexpected error while polling", self.device.name)
                    self._failed(exc)
                _raise_if_cancelling(None)
                if self.health.consecutive_failures:
                    await _pause(stop, self._backoff())
                    next_tick = self.clock()
                    continue
                next_tick += interval
                now = self.clock()
                if next_tick <= now:
                    # A slow cycle skips ticks instead of firing them back to back.
                    missed = int((now - next_tick) // interval) + 1
                    self.skipped_ticks += missed
                    next_tick += missed * interval
                await _pause(stop, next_tick - now)
        finally:
            self._close()

    async def poll_once(self) -> None:
        if self.client is None or not self.client.connected:
            await self._connect()
        assert self.client is not None
        registers: list[int] = []
        for address, count in edge_node.channel_spans(len(self.channels)):
            registers += await self._read_input(address, count)
        ts = self.wall_ms()
        samples = edge_node.parse_channels(registers, len(self.channels))
        batch = [Reading(self.device.name, ch.name, ts, s.value) for ch, s in zip(self.channels, samples)]
        await self.sink(batch)
        self.health.polls += 1
        self.health.readings += len(batch)
        self.health.last_values = {r.channel: r.value for r in batch}
        self._succeeded()

    async def _connect(self) -> None:
        self._close()
        self.client = self.client_factory(self.device)
        if not await self.client.connect():
            raise ConnectionError(f"cannot connect to {self.device.host}:{self.device.port}")
        identity = edge_node.parse_identity(await self._read_input(0, edge_node.IDENTITY_REGISTERS))
        address, count = edge_node.descriptor_span(identity.channel_count)
        self.channels = edge_node.parse_descriptors(await self._read_input(address, count), identity.channel_count)
        self.health.units = {c.name: c.unit for c in self.channels}
        await self.register(
            self.device.name,
            self.device.profile,
            f"tcp://{self.device.host}:{self.device.port}/{self.device.unit}",
            {
                "node_id": identity.node_id,
                "map_version": identity.map_version,
                "firmware_version": identity.firmware_version,
                "sample_period_ms": identity.sample_period_ms,
            },
            [(c.name, c.unit) for c in self.channels],
        )
        log.info(
            "%s: connected, node %d, map v%d, firmware %s, channels %s",
            self.device.name,
            identity.node_id,
            identity.map_version,
            identity.firmware_version,
            ", ".join(c.name for c in self.channels),
        )

    async def _read_input(self, address: int, count: int) -> list[int]:
        assert self.client is not None
        response = await self.client.read_input_registers(address, count=count, device_id=self.device.unit)
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceError(f"Modbus exception {code} reading input registers {address}..{address + count - 1}")
        return list(response.registers)

    def longest_pause(self) -> float:
        """Longest a healthy loop may go between turns: a backoff plus a request timeout."""
        return MAX_BACKOFF_S + self.device.timeout_s * 4 + self.device.interval_s

    def _backoff(self) -> float:
        base = max(self.device.interval_s, 0.5)
        delay = min(base * 2 ** (self.health.consecutive_failures - 1), MAX_BACKOFF_S)
        return delay * random.uniform(0.8, 1.0)

    def _failed(self, exc: BaseException) -> None:
        h = self.health
        h.consecutive_failures += 1
        h.last_error = f"{type(exc).__name__}: {exc}"
        previous = h.state
        h.state = "offline" if h.consecutive_failures >= OFFLINE_AFTER else "degraded"
        if previous in ("online", "connecting") and h.consecutive_failures == 1:
            log.error("%s: poll failed: %s", self.device.name, h.last_error)
        elif h.state == "offline" and previous != "offline":
            log.error("%s: offline after %d failures: %s", self.device.name, h.consecutive_failures, h.last_error)
        else:
            log.debug("%s: still failing (%d): %s", self.device.name, h.consecutive_failures, h.last_error)
        self._close()

    def _succeeded(self) -> None:
        h = self.health
        if h.consecutive_failures:
            log.info("%s: recovered after %d failures", self.device.name, h.consecutive_failures)
        h.consecutive_failures = 0
        h.state = "online"

    def _close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _raise_if_cancelling(cause: BaseException | None) -> None:
    # On Python 3.11 a cancellation can be lost inside pymodbus (its asyncio.wait_for
    # returns a response that raced the cancel, or the cancel becomes a Modbus error);
    # a task that is being cancelled must stop, not count a device failure and go on.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


async def _pause(stop: asyncio.Event, delay: float) -> None:
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        pass
