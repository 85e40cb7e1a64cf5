"""Assembles the daemon: one poller per device, one store writer, one supervisor."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatewayd import command_topic, commands, heap, service
from gatewayd.config import Config
from gatewayd.detection.stage import DetectionStage
from gatewayd.mqtt import Publisher
from gatewayd.links import RtuBus, RtuLink, TcpLink
from gatewayd.poller import DeviceHealth, Poller
from gatewayd.store import Reading, Store

if TYPE_CHECKING:
    from gatewayd.dashboard.server import Dashboard

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def _write_status(path, status: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(status, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a full or read-only disk must not stop the daemon
        log.debug("status file not written: %s", exc)


@dataclass
class WriterStats:
    written: int = 0
    batches: int = 0
    queued: int = 0
    compacted: int = 0  # blocks merged away
    heartbeat: float = 0.0  # loop time of the writer's last turn


@dataclass
class Gateway:
    """What a running daemon exposes to its callers (CLI, demo, tests)."""

    config: Config
    store: Store
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
        down still counts: its poller is alive and backing off)."""
        if now - self.writer.heartbeat > within_s:
            return False
        return all(now - p.heartbeat <= max(within_s, p.longest_pause()) for p in self.pollers.values())

    def status(self) -> dict:
        """What `gatewayd status` shows of the running daemon (written to status.json)."""
        return {
            "ts_ms": time.time_ns() // 1_000_000,
            "devices": {
                name: {"state": p.health.state, "consecutive_failures": p.health.consecutive_failures,
                       "last_error": p.health.last_error, "polls": p.health.polls, "readings": p.health.readings,
                       "skipped_ticks": p.skipped_ticks}  # fmt: skip
                for name, p in self.pollers.items()
            },
            "writer": {"written": self.writer.written, "batches": self.writer.batches, "queued": self.writer.queued,
                       "compacted_blocks": self.writer.compacted},  # fmt: skip
            "mqtt": None if self.publisher is None else {
                "connected": self.publisher.connected, "published": self.publisher.published,
                "queued": self.publisher.queue.qsize(), "backlogged": self.publisher.backlogged,
                "dropped": self.publisher.dropped,
            },  # fmt: skip
            "alerts": self.alerts,
            "detection": None if self.detection is None else self.detection.status(),
        }

    def status_line(self) -> str:
        states = [h.state for h in self.health().values()]
        online = states.count("online")
        return (f"{online}/{len(states)} devices online, {self.writer.written} readings stored, "
                f"{self.writer.queued} queued")


COMPACT_SLICE = 100  # channels per compaction step: tens of milliseconds of the store thread


class ReadingQueue:
    """Bounded hand-off from pollers to the writer; a full queue makes pollers wait. Polls are
    kept as they came (one list each), so taking a batch never copies what stays queued."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.polls: deque[list[Reading]] = deque()
        self.size = 0
        self.changed = asyncio.Condition()

    def __len__(self) -> int:
        return self.size

    async def put(self, batch: list[Reading]) -> None:
        if not batch:
            return
        async with self.changed:
            await self.changed.wait_for(lambda: self.size + len(batch) <= self.capacity or not self.size)
            self.polls.append(batch)
            self.size += len(batch)
            self.changed.notify_all()

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


async def run(config: Config, stop: asyncio.Event, ready: asyncio.Future[Gateway] | None = None) -> Gateway:
    """Run until `stop` is set; flush what is queued, close the store, return the gateway."""
    store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(store_thread, Store.in_state_dir, config.state_path)
    gateway = Gateway(config=config, store=store)
    queue = ReadingQueue(config.store.queue_readings)

    async def register(name: str, profile: str, address: str, identity: dict, channels: list[tuple[str, str]]) -> None:
        await loop.run_in_executor(store_thread, store.register_device, name, profile, address, identity, channels)

    async def write(batch: list[Reading]) -> None:
        written = await loop.run_in_executor(store_thread, store.write_readings, batch)
        gateway.writer.written += written
        gateway.writer.batches += 1

    async def writer() -> None:
        compact_every = config.store.compact_after_s
        next_compaction = loop.time() + compact_every
        next_checkpoint = loop.time() + config.store.checkpoint_interval_s
        to_compact: list[int] = []  # channels left in the current compaction pass
        cutoff = 0

        async def end_of_pass() -> None:
            budget = int(config.store.disk_budget_mb * 1e6)
            evicted = await loop.run_in_executor(store_thread, store.enforce_budget, budget)
            if evicted:
                log.warning("disk budget of %g MB reached: evicted %s", config.store.disk_budget_mb,
                            ", ".join(f"{n} {kind} rows" for kind, n in evicted.items()))  # fmt: skip
            await loop.run_in_executor(store_thread, heap.trim)  # compaction's temporaries

        while not stop.is_set():
            gateway.writer.heartbeat = loop.time()
            # While a compaction pass is under way, take what is queued without waiting, so
            # slices of compaction and writes alternate and the queue never backs up behind it.
            wait_s = 0.0 if to_compact else config.store.flush_interval_s
            batch = await queue.take(config.store.batch_size, wait_s)
            gateway.writer.queued = len(queue)
            if batch:
                await write(batch)
            if loop.time() >= next_checkpoint:
                await loop.run_in_executor(store_thread, store.checkpoint)
                next_checkpoint = loop.time() + config.store.checkpoint_interval_s
            if to_compact:
                part, to_compact = to_compact[:COMPACT_SLICE], to_compact[COMPACT_SLICE:]
                gateway.writer.compacted += await loop.run_in_executor(
                    store_thread, store.compact_channels, part, cutoff)  # fmt: skip
                if not to_compact:
                    await end_of_pass()
            elif loop.time() >= next_compaction:
                # Small blocks from slow polls are merged so a reading costs a few bytes on disk.
                cutoff = time.time_ns() // 1_000_000 - int(compact_every * 1000)
                to_compact = await loop.run_in_executor(store_thread, store.compactable_channels, cutoff)
                next_compaction = loop.time() + compact_every
                if not to_compact:
                    await end_of_pass()

    async def store_call(name: str, *args: object, **kwargs: object) -> object:
        return await loop.run_in_executor(store_thread, lambda: getattr(store, name)(*args, **kwargs))

    async def apply_command(command: commands.Command) -> str:
        """Operator feedback (MQTT command topic, dashboard), applied on the store thread exactly
        as `gatewayd alert ack|label` applies it. Raises CommandError for an unknown alert."""
        return await loop.run_in_executor(store_thread, commands.apply, store, command)

    # Operator feedback over MQTT: sized, authorised and validated before anything is applied;
    # every message is answered, a refused one is kept in the dead letters, nothing raises.
    on_command = command_topic.CommandTopic(config, apply_command, store_call).handle

    publisher: Publisher | None = None
    if config.mqtt is not None:
        publisher = Publisher(config.mqtt, config.gateway.name, store_call, on_command)
    gateway.publisher = publisher

    detection: DetectionStage | None = None
    if config.detection.enabled:

        def publish_alert(alert: dict) -> None:
            if alert.get("opened_ms") is not None and not alert.get("update"):
                gateway.alerts += 1
            if publisher is not None:
                publisher.alert(alert)

        detection = DetectionStage(config, store_call, publish_alert)
    gateway.detection = detection

    dashboard = None
    if config.dashboard.enabled:
        from gatewayd.dashboard.server import Dashboard  # imported only when enabled: memory

        dashboard = Dashboard(config, gateway, apply_command)
    gateway.dashboard = dashboard

    async def sink(batch: list[Reading]) -> None:
        await queue.put(batch)  # waits when the store falls behind: nothing is dropped
        if detection is not None and batch:
            detection.offer(batch[0].device, batch[0].ts_ms, {r.channel: r.value for r in batch})
        if publisher is not None and batch:
            poller = gateway.pollers[batch[0].device]
            publisher.telemetry(batch[0].device, batch[0].ts_ms, {r.channel: r.value for r in batch},
                                poller.health.units)  # fmt: skip

    async def edge_events(device: str, ts_ms: int, events: list) -> None:
        # The node's own detectors fired: a critical one is an incident at once, no model needed.
        for e in events:
            alert_id = f"{config.gateway.name}:{device}:{e.channel}:{ts_ms}"
            detail = {"checks": list(e.checks), "value": e.value, "source": "node"}
            await loop.run_in_executor(store_thread, store.record_alert, alert_id, device, [e.channel], e.severity,
                                       "edge", ts_ms, detail)  # fmt: skip
            gateway.alerts += 1
            log.warning("%s/%s: node reports %s (%s), value %g", device, e.channel, e.severity,
                        ", ".join(e.checks) or "no check", e.value)  # fmt: skip
            if publisher is not None:
                publisher.alert({"id": alert_id, "device": device, "channels": [e.channel], "severity": e.severity,
                                 "kind": "edge", "opened_ms": ts_ms, "detail": detail})  # fmt: skip

    buses = {b.name: RtuBus(b) for b in config.buses}
    for device in config.devices:
        link = RtuLink(device, buses[device.bus]) if device.transport == "rtu" and device.bus else TcpLink(device)
        gateway.pollers[device.name] = Poller(device, sink, register, link=link, events=edge_events)

    async def supervisor() -> None:
        # systemd's watchdog is fed only while the pipeline moves; STATUS= says how it is doing.
        interval = service.watchdog_interval_s()
        period = min(interval, 1.0) if interval else 1.0
        published: dict[str, str] = {}
        announced: dict[str, dict[str, str]] = {}
        status_file = config.state_path / STATUS_FILE
        summarised = time.time_ns() // 1_000_000 // 60_000 * 60_000  # minutes before this one are not ours
        while not stop.is_set():
            if publisher is not None and config.mqtt is not None and config.mqtt.telemetry == "summaries":
                # a minute is published once it is over and its last flush has had time to land
                now_ms = time.time_ns() // 1_000_000
                due = (now_ms - int(2000 * config.store.flush_interval_s)) // 60_000 * 60_000 - 60_000
                while summarised <= due:
                    minute = await loop.run_in_executor(store_thread, store.minute_of_all, summarised)
                    for device, channels in minute.items():
                        publisher.summary(device, summarised, channels)
                    summarised += 60_000
            await loop.run_in_executor(None, _write_status, status_file, gateway.status())
            if publisher is not None:
                for name, h in gateway.health().items():
                    if published.get(name) != h.state:
                        publisher.health(name, h.state, h.consecutive_failures, h.last_error)
                        published[name] = h.state
                    if h.units and announced.get(name) != h.units:
                        publisher.discovery(name, h.units)
                        announced[name] = dict(h.units)
            if interval is None or gateway.making_progress(loop.time(), 2 * interval):
                service.notify("WATCHDOG=1\nSTATUS=" + gateway.status_line() if interval else
                               "STATUS=" + gateway.status_line())  # fmt: skip
            else:
                log.error("pipeline stalled: withholding the watchdog (%s)", gateway.status_line())
            try:
                await asyncio.wait_for(stop.wait(), period)
            except TimeoutError:
                pass

    log.info("gatewayd started: %d devices, store %s", len(config.devices), store.path)
    try:
        async with asyncio.TaskGroup() as tasks:
            writer_task = tasks.create_task(writer(), name="store-writer")
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
        # Pollers are stopped: whatever is still queued goes to disk before closing.
        while len(queue):
            batch = queue.take_now(config.store.batch_size)
            await write(batch)
    finally:
        _write_status(config.state_path / STATUS_FILE, {**gateway.status(), "stopped": True})
        for bus in buses.values():
            bus.close()
        await loop.run_in_executor(store_thread, store.checkpoint)
        await loop.run_in_executor(store_thread, store.close)
        store_thread.shutdown(wait=True)
        log.info("gatewayd stopped: %d readings written in %d batches", gateway.writer.written, gateway.writer.batches)
    return gateway
