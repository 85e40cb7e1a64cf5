"""Polling one device: connect, describe it (its channels), then read it every interval on
the monotonic clock. Failures are counted, logged once, and retried with backoff; an
exception that no retry can fix backs off longest. The task itself never dies of them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymodbus.exceptions import ModbusException

from gatewayd.acquisition.links import DeviceError, Link, TcpLink
from gatewayd.acquisition.profiles import edge_node
from gatewayd.acquisition.profiles.generic import GenericProfile
from gatewayd.backoff import retry_delay
from gatewayd.clock import now_ms
from gatewayd.config import DeviceSection
from gatewayd.store.database import Reading

log = logging.getLogger(__name__)

DEGRADED_AFTER = 1
OFFLINE_AFTER = 3
MAX_BACKOFF_S = 30.0

Sink = Callable[[list[Reading]], Awaitable[None]]
EventSink = Callable[[str, int, list], Awaitable[None]]
Register = Callable[[str, str, str, dict, list[tuple[str, str]]], Awaitable[None]]


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


def make_profile(device: DeviceSection):
    if device.profile == "generic":
        return GenericProfile(device.registers)
    return edge_node.EdgeNodeProfile()


class Poller:
    def __init__(
        self,
        device: DeviceSection,
        sink: Sink,
        register: Register,
        *,
        link: Link | None = None,
        events: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ):
        self.device = device
        self.sink = sink
        self.register = register
        self.link: Link = link if link is not None else TcpLink(device)
        self.events = events
        self.profile = make_profile(device)
        self.described = False
        self.clock = clock
        self.wall_ms = wall_ms
        self.health = DeviceHealth()
        self.skipped_ticks = 0
        self.permanent = False
        self.heartbeat = clock()
        # seconds each recent poll started after its slot; `poll_starts` counts them all
        self.lateness: deque[float] = deque(maxlen=1000)
        self.poll_starts = 0  # monotonic time of the last turn of the loop

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until `stop` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        interval = self.device.interval_s
        next_tick = self.clock()
        try:
            while not stop.is_set():
                self.heartbeat = self.clock()
                self.lateness.append(self.heartbeat - next_tick)
                self.poll_starts += 1
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
        await self.link.ensure_connected()
        if not self.described:
            await self._describe()
        values = await self.profile.read(self.link, self.device.unit)
        ts = self.wall_ms()
        batch = [Reading(self.device.name, channel, ts, value) for channel, value in values]
        await self.sink(batch)
        found = getattr(self.profile, "events", None)
        if found and self.events is not None:
            await self.events(self.device.name, ts, list(found))
        self.health.polls += 1
        self.health.readings += len(batch)
        self.health.last_values = {r.channel: r.value for r in batch}
        self._succeeded()

    async def _describe(self) -> None:
        info, channels = await self.profile.describe(self.link, self.device.unit)
        self.health.units = dict(channels)
        await self.register(self.device.name, self.device.profile, self.link.address, info, channels)
        self.described = True
        log.info(
            "%s: connected (%s), channels %s",
            self.device.name,
            self.link.address,
            ", ".join(name for name, _ in channels),
        )

    def longest_pause(self) -> float:
        """Longest a healthy loop may go between turns: a backoff plus a request timeout."""
        return MAX_BACKOFF_S + self.device.timeout_s * 4 + self.device.interval_s

    def _backoff(self) -> float:
        if self.permanent:
            return MAX_BACKOFF_S  # the request is wrong for this device: retrying fast cannot help
        return retry_delay(
            max(1, self.health.consecutive_failures),
            first_s=max(self.device.interval_s, 0.5),
            max_s=MAX_BACKOFF_S,
            jitter=0.2,
        )

    def _failed(self, exc: BaseException) -> None:
        self.permanent = isinstance(exc, DeviceError) and exc.permanent
        if self.permanent:
            exc = DeviceError(f"{exc}: retrying cannot fix this, check the device's register definitions")
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
        self.permanent = False
        h = self.health
        if h.consecutive_failures:
            log.info("%s: recovered after %d failures", self.device.name, h.consecutive_failures)
        h.consecutive_failures = 0
        h.state = "online"
        h.last_error = None  # an online device shows no error from before

    def _close(self) -> None:
        # A fresh connection describes the device again (a node may have been reconfigured).
        self.described = False
        self.link.close()


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
