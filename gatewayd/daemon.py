"""Assembles the daemon: one poller per device, the store's worker and writer, the edge alerts,
detection, MQTT, the dashboard and one supervisor."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatewayd import command_topic, commands, daemon_status, service
from gatewayd.clock import WallClock, boot_id, now_ms
from gatewayd.config import Config
from gatewayd.daemon_status import ClockStatus, DaemonStatus, DeviceStatus, StoreStatus, WriterStatus
from gatewayd.detection.stage import DetectionStage
from gatewayd.edge_alerts import EdgeAlerts
from gatewayd.mqtt import Publisher
from gatewayd.links import RtuBus, RtuLink, TcpLink
from gatewayd.poller import DeviceHealth, Poller
from gatewayd.store import Reading, Store
from gatewayd.store_faults import StoreFault
from gatewayd.store_worker import StoreWorker
from gatewayd.writer import ReadingQueue, Writer, WriterStats

if TYPE_CHECKING:
    from gatewayd.dashboard.server import Dashboard

__all__ = ["Gateway", "ReadingQueue", "WriterStats", "run"]

log = logging.getLogger(__name__)

SUMMARY_CATCH_UP_MS = 3_600_000  # minute summaries published late at most (a longer gap is a clock step)


@dataclass
class Gateway:
    """What a running daemon exposes to its callers (CLI, demo, tests)."""

    config: Config
    worker: StoreWorker
    clock: WallClock = field(default_factory=WallClock)
    pollers: dict[str, Poller] = field(default_factory=dict)
    writer: WriterStats = field(default_factory=WriterStats)
    publisher: Publisher | None = None
    detection: DetectionStage | None = None
    dashboard: Dashboard | None = None
    alerts: int = 0

    def health(self) -> dict[str, DeviceHealth]:
        return {name: p.health for name, p in self.pollers.items()}

    def making_progress(self, now: float, within_s: float) -> bool:
        """The writer turned and every poller went round its loop recently (a device that is
        down still counts: its poller is alive and backing off; so does a degraded store)."""
        if now - self.writer.heartbeat > within_s:
            return False
        return all(now - p.heartbeat <= max(within_s, p.longest_pause()) for p in self.pollers.values())

    def status(self) -> DaemonStatus:
        """What `gatewayd status` shows of the running daemon (written to status.json). The
        monotonic time and boot id let a reader tell the status's age whatever the wall clock did."""
        return DaemonStatus(
            ts_ms=now_ms(), monotonic_s=time.monotonic(), boot_id=boot_id(), pid=os.getpid(),
            devices={name: DeviceStatus(state=p.health.state, consecutive_failures=p.health.consecutive_failures,
                                        last_error=p.health.last_error, polls=p.health.polls,
                                        readings=p.health.readings, skipped_ticks=p.skipped_ticks)
                     for name, p in self.pollers.items()},
            writer=WriterStatus(written=self.writer.written, batches=self.writer.batches, queued=self.writer.queued,
                                compacted_blocks=self.writer.compacted),
            store=StoreStatus(**self.worker.status(), disk_bytes=self.worker.disk_bytes(),
                              budget_bytes=int(self.config.store.disk_budget_mb * 1e6)),
            clock=ClockStatus(**self.clock.status()),
            mqtt=None if self.publisher is None else {
                "connected": self.publisher.connected, "published": self.publisher.published,
                "queued": self.publisher.queue.qsize(), "backlogged": self.publisher.backlogged,
                "dropped": self.publisher.dropped,
            },
            alerts=self.alerts,
            detection=None if self.detection is None else self.detection.status(),
        )  # fmt: skip

    def status_line(self) -> str:
        states = [h.state for h in self.health().values()]
        online = states.count("online")
        line = (f"{online}/{len(states)} devices online, {self.writer.written} readings stored, "
                f"{self.writer.queued} queued")  # fmt: skip
        state, why = self.worker.state()
        if state != "ok":
            line = f"STORE {state.upper().replace('_', ' ')}: {why}; " + line
            if self.worker.health.readings_dropped:
                line += f", {self.worker.health.readings_dropped} readings dropped"
        return line


async def run(config: Config, stop: asyncio.Event, ready: asyncio.Future[Gateway] | None = None) -> Gateway:
    """Run until `stop` is set; flush what is queued, close the store, return the gateway."""
    clock = WallClock(config.gateway.trust_clock)
    worker = StoreWorker(config.state_path, int(config.store.disk_budget_mb * 1e6), wall_ms=clock.now_ms)
    await worker.open()  # a store that cannot be opened yet is retried by the writer: polling starts anyway
    gateway = Gateway(config=config, worker=worker, clock=clock)
    queue = ReadingQueue(config.store.queue_readings)
    writer = Writer(worker, queue, config.store, clock, gateway.writer)
    store_call = worker.call

    async def apply_command(command: commands.Command | commands.Missed) -> str:
        """Operator feedback (MQTT command topic, dashboard), applied on the store thread exactly
        as `gatewayd alert ack|label|missed` applies it. Raises CommandError for an unknown alert, and
        StoreFault while the store cannot take it."""
        return await worker.run(commands.apply, command)

    # Operator feedback over MQTT: sized, authorised and validated before anything is applied;
    # every message is answered, a refused one is kept in the dead letters, nothing raises.
    on_command = command_topic.CommandTopic(config, apply_command, store_call,
                                            store_errors=(StoreFault,)).handle  # fmt: skip

    publisher: Publisher | None = None
    if config.mqtt is not None:
        publisher = Publisher(config.mqtt, config.gateway.name, store_call, on_command)
    gateway.publisher = publisher

    def publish_alert(alert: dict) -> None:
        if alert.get("opened_ms") is not None and not alert.get("update"):
            gateway.alerts += 1
        if publisher is not None:
            publisher.alert(alert)

    detection: DetectionStage | None = None
    if config.detection.enabled:
        detection = DetectionStage(config, store_call, publish_alert)
    gateway.detection = detection
    edge_alerts = EdgeAlerts(config.gateway.name, store_call, publish_alert)

    dashboard = None
    if config.dashboard.enabled:
        from gatewayd.dashboard.server import Dashboard  # imported only when enabled: memory

        dashboard = Dashboard(config, gateway, apply_command)
    gateway.dashboard = dashboard

    async def sink(batch: list[Reading]) -> None:
        await queue.put(batch)  # waits when the store falls behind (sheds when it is down)
        if detection is not None and batch:
            detection.offer(batch[0].device, batch[0].ts_ms, {r.channel: r.value for r in batch})
        if publisher is not None and batch:
            poller = gateway.pollers[batch[0].device]
            publisher.telemetry(batch[0].device, batch[0].ts_ms, {r.channel: r.value for r in batch},
                                poller.health.units)  # fmt: skip

    buses = {b.name: RtuBus(b) for b in config.buses}
    for device in config.devices:
        link = RtuLink(device, buses[device.bus]) if device.transport == "rtu" and device.bus else TcpLink(device)
        gateway.pollers[device.name] = Poller(device, sink, worker.register, link=link, events=edge_alerts.observe,
                                              wall_ms=clock.now_ms)  # fmt: skip

    async def publish_summaries(summarised: int) -> int:
        """Minutes that are over and flushed go out once; returns the next minute to publish.
        A wall-clock step moves the schedule with it instead of replaying or waiting out the gap."""
        assert publisher is not None
        due = (clock.now_ms() - int(2000 * config.store.flush_interval_s)) // 60_000 * 60_000 - 60_000
        if due - summarised > SUMMARY_CATCH_UP_MS or summarised - due > 2 * 60_000:
            log.warning("wall clock stepped: minute summaries go on from %s", time.strftime(
                "%Y-%m-%d %H:%M UTC", time.gmtime(due / 1000)))  # fmt: skip
            summarised = due
        while summarised <= due:
            try:
                minute = await store_call("minute_of_all", summarised)
            except StoreFault:
                break  # the same minute again at the next turn
            for device, channels in minute.items():
                publisher.summary(device, summarised, channels)
            summarised += 60_000
        return summarised

    async def supervisor() -> None:
        # systemd's watchdog is fed only while the pipeline moves; STATUS= says how it is doing.
        interval = service.watchdog_interval_s()
        period = min(interval, 1.0) if interval else 1.0
        published: dict[str, str] = {}
        announced: dict[str, dict[str, str]] = {}
        store_state: tuple[str, str | None] | None = None
        status_file = config.status_path
        try:
            status_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # said by the store's state; the status is written once the folder can be
        summarised = clock.now_ms() // 60_000 * 60_000  # minutes before this one are not ours
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if publisher is not None and config.mqtt is not None and config.mqtt.telemetry == "summaries":
                summarised = await publish_summaries(summarised)
            await loop.run_in_executor(None, daemon_status.write, status_file, gateway.status())
            if publisher is not None:
                for name, h in gateway.health().items():
                    if published.get(name) != h.state:
                        publisher.health(name, h.state, h.consecutive_failures, h.last_error)
                        published[name] = h.state
                    if h.units and announced.get(name) != h.units:
                        publisher.discovery(name, h.units)
                        announced[name] = dict(h.units)
                now_state = worker.state()
                if now_state != store_state and now_state[0] != "starting":
                    publisher.store_health(*now_state)
                    store_state = now_state
            if interval is None or gateway.making_progress(loop.time(), 2 * interval):
                service.notify("WATCHDOG=1\nSTATUS=" + gateway.status_line() if interval else
                               "STATUS=" + gateway.status_line())  # fmt: skip
            else:
                log.error("pipeline stalled: withholding the watchdog (%s)", gateway.status_line())
            try:
                await asyncio.wait_for(stop.wait(), period)
            except TimeoutError:
                pass

    log.info("gatewayd started: %d devices, store %s", len(config.devices), worker.path)
    try:
        async with asyncio.TaskGroup() as tasks:
            writer_task = tasks.create_task(writer.run(stop), name="store-writer")
            poll_tasks = [tasks.create_task(p.run(stop), name=f"poll-{n}") for n, p in gateway.pollers.items()]
            supervisor_task = tasks.create_task(supervisor(), name="supervisor")
            publisher_task = tasks.create_task(publisher.run(stop), name="mqtt") if publisher else None
            detection_task = tasks.create_task(detection.run(stop), name="detection") if detection else None
            dashboard_task = tasks.create_task(dashboard.run(stop), name="dashboard") if dashboard else None
            service.notify("READY=1\nSTATUS=" + gateway.status_line())
            if ready is not None:
                ready.set_result(gateway)
            await stop.wait()
            service.notify("STOPPING=1")
            # Pollers finish the request in flight; one that hangs past its timeout is cancelled.
            grace = max(d.timeout_s for d in config.devices) + 1.0
            _, hung = await asyncio.wait(poll_tasks, timeout=grace)
            for t in hung:
                t.cancel()
            await writer_task
            await supervisor_task
            if publisher_task is not None:
                await publisher_task
            if detection_task is not None:
                await detection_task
            if dashboard_task is not None:
                await dashboard_task
        await writer.flush()  # pollers are stopped: whatever is still queued goes to disk
    finally:
        daemon_status.write(config.status_path, gateway.status().model_copy(update={"stopped": True}))
        for bus in buses.values():
            bus.close()
        try:
            await worker.run(Store.checkpoint)
        except StoreFault:
            pass
        await worker.close()
        log.info("gatewayd stopped: %d readings written in %d batches", gateway.writer.written, gateway.writer.batches)
    return gateway
