"""The daemon's supervisor: once a second it writes status.json, tells MQTT what changed
(device health, Home Assistant discovery, the store's state, minute summaries) and feeds
systemd's watchdog, only while the pipeline moves (a stalled writer or poller withholds it).
It waits on the store only for minute summaries: a slow or failing disk must not hold up the
status and the watchdog."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gatewayd import daemon_status, service
from gatewayd.config import discovery_hints
from gatewayd.gateway import Gateway
from gatewayd.publishing.mqtt import Publisher
from gatewayd.store.faults import StoreFault

log = logging.getLogger("gatewayd.daemon")

MinuteSource = Callable[[int], Awaitable[dict[str, dict[str, dict]]]]
ALIVE = ("online", "degraded")  # a device answering, if not every time
SUMMARY_CATCH_UP_MS = 3_600_000  # minute summaries published late at most (a longer gap is a clock step)


class Supervisor:
    def __init__(self, gateway: Gateway, minute_of_all: MinuteSource):
        self.gateway = gateway
        self.config = gateway.config
        self.minute_of_all = minute_of_all
        self.published: dict[str, str] = {}  # device -> health state last published
        self.announced: dict[str, dict[str, str]] = {}  # device -> units last announced
        self.store_state: tuple[str, str | None] | None = None
        self.hints = {d.name: discovery_hints(d) for d in self.config.devices}
        self.summarised = gateway.clock.now_ms() // 60_000 * 60_000  # minutes before this one are not ours

    async def run(self, stop: asyncio.Event) -> None:
        interval = service.watchdog_interval_s()
        period = min(interval, 1.0) if interval else 1.0
        status_file = self.config.status_path
        try:
            status_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # said by the store's state; the status is written once the folder can be
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            publisher = self.gateway.publisher
            if publisher is not None and self.config.mqtt is not None and self.config.mqtt.telemetry == "summaries":
                self.summarised = await self.publish_summaries(publisher, self.summarised)
            # The line for systemd first, the file after: whatever STATUS= says, status.json
            # (written before it is sent) says too, or something newer.
            line = self.gateway.status_line()
            status = self.gateway.last_status = self.gateway.status()
            await loop.run_in_executor(None, daemon_status.write, status_file, status)
            if publisher is not None:
                self.publish_changes(publisher)
            self.feed_watchdog(interval, loop.time(), line)
            try:
                await asyncio.wait_for(stop.wait(), period)
            except TimeoutError:
                pass

    def publish_changes(self, publisher: Publisher) -> None:
        sparkplug = self.gateway.sparkplug
        for name, h in self.gateway.health().items():
            if self.published.get(name) != h.state:
                publisher.health(name, h.state, h.consecutive_failures, h.last_error)
                alive, was = h.state in ALIVE, self.published.get(name) in ALIVE
                if sparkplug is not None and alive != was:
                    sparkplug.device(name, alive, h.units)  # DBIRTH, or DDEATH
                self.published[name] = h.state
            if h.units and self.announced.get(name) != h.units:
                bits, classes = self.hints.get(name, (frozenset(), {}))
                publisher.discovery(name, h.units, bits=bits, classes=classes)
                self.announced[name] = dict(h.units)
        now_state = self.gateway.worker.state()
        if now_state != self.store_state and now_state[0] != "starting":
            publisher.store_health(*now_state)
            self.store_state = now_state

    def feed_watchdog(self, interval: float | None, now: float, line: str) -> None:
        if interval is None:
            service.notify("STATUS=" + line)
        elif self.gateway.making_progress(now, 2 * interval):
            service.notify("WATCHDOG=1\nSTATUS=" + line)
        else:
            log.error("pipeline stalled: withholding the watchdog (%s)", line)

    async def publish_summaries(self, publisher: Publisher, summarised: int) -> int:
        """Minutes that are over and flushed go out once; returns the next minute to publish.
        A wall-clock step moves the schedule with it instead of replaying or waiting out the gap."""
        due = (self.gateway.clock.now_ms() - int(2000 * self.config.store.flush_interval_s)) // 60_000 * 60_000 - 60_000
        if due - summarised > SUMMARY_CATCH_UP_MS or summarised - due > 2 * 60_000:
            log.warning(
                "wall clock stepped: minute summaries go on from %s",
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(due / 1000)),
            )
            summarised = due
        while summarised <= due:
            try:
                minute = await self.minute_of_all(summarised)
            except StoreFault:
                break  # the same minute again at the next turn
            for device, channels in minute.items():
                publisher.summary(device, summarised, channels)
            summarised += 60_000
        return summarised
