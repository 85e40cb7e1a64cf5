"""The daemon: its parts wired together, run as tasks until stopped.

A reading's way: the `Poller` (acquisition/poller.py) reads a device over its link
(acquisition/links.py), decodes it (acquisition/registers.py or a profile) and hands the poll
to the `ReadingFanout` (fanout.py): into the `ReadingQueue` that the `Writer`
(store/writer.py) drains into the store on its worker thread (store/worker.py,
store/database.py: compressed blocks, minute summaries, the outbox), then to detection
(detection/stage.py) and MQTT (publishing/mqtt.py). Alerts from the node's own checks
(alerts/edge.py), the models, drift and devices gone offline (alerts/device.py) go through
the `AlertFanout` to MQTT and are stored through the typed store (store/async_store.py).
The `Supervisor` (supervisor.py) checks devices' health, writes the status and feeds
systemd's watchdog."""

from __future__ import annotations

import asyncio
import logging

from gatewayd import daemon_status, service
from gatewayd.acquisition.links import Links
from gatewayd.acquisition.poller import Poller
from gatewayd.alerts.device import DeviceAlerts
from gatewayd.alerts.edge import EdgeAlerts
from gatewayd.clock import WallClock
from gatewayd.config import Config
from gatewayd.detection.stage import DetectionStage
from gatewayd.fanout import AlertFanout, ReadingFanout
from gatewayd.gateway import Gateway
from gatewayd.publishing.command_topic import CommandTopic
from gatewayd.publishing.mqtt import Publisher
from gatewayd.store.async_store import AsyncStore
from gatewayd.store.database import Store
from gatewayd.store.faults import StoreFault
from gatewayd.store.worker import StoreWorker
from gatewayd.store.writer import ReadingQueue, Writer, WriterStats
from gatewayd.supervisor import Supervisor

__all__ = ["Gateway", "ReadingQueue", "WriterStats", "run"]

log = logging.getLogger(__name__)


async def run(config: Config, stop: asyncio.Event, ready: asyncio.Future[Gateway] | None = None) -> Gateway:
    """Run until `stop` is set; flush what is queued, close the store, return the gateway."""
    clock = WallClock(config.gateway.trust_clock)
    worker = StoreWorker(config.state_path, int(config.store.disk_budget_mb * 1e6), wall_ms=clock.now_ms)
    await worker.open()  # a store that cannot be opened yet is retried by the writer: polling starts anyway
    store = AsyncStore(worker)
    gateway = Gateway(config=config, worker=worker, clock=clock)
    queue = ReadingQueue(config.store.queue_readings)
    writer = Writer(worker, queue, config.store, clock, gateway.writer)
    if config.mqtt is not None:
        # Operator feedback over MQTT: sized, authorised and validated before anything is applied;
        # every message is answered, a refused one is kept in the dead letters, nothing raises.
        commands = CommandTopic(config, store.apply, store.dead_letter, store_errors=(StoreFault,))
        gateway.publisher = Publisher(config.mqtt, config.gateway.name, store, commands.handle)
    gateway.alert_fanout = AlertFanout(gateway.publisher)
    if config.detection.enabled:
        gateway.detection = DetectionStage(config, store, gateway.alert_fanout)
    edge_alerts = EdgeAlerts(config.gateway.name, store, gateway.alert_fanout)
    if config.dashboard.enabled:
        from gatewayd.dashboard.server import Dashboard  # imported only when enabled: memory

        gateway.dashboard = Dashboard(config, gateway, store.apply)
    if config.metrics.enabled:
        from gatewayd.publishing.metrics import MetricsServer  # imported only when enabled

        gateway.metrics = MetricsServer(config.metrics, lambda: gateway.last_status)
    if config.sparkplug.enabled and config.mqtt is not None:
        from gatewayd.publishing.sparkplug.node import SparkplugNode  # imported only when enabled

        gateway.sparkplug = SparkplugNode(config.mqtt, config.sparkplug, config.gateway.name)
    fanout = ReadingFanout(queue, gateway.detection, gateway.publisher, gateway.pollers, gateway.sparkplug)
    links = Links(config)
    for device in config.devices:
        gateway.pollers[device.name] = Poller(
            device, fanout, worker.register, link=links.of(device), events=edge_alerts.observe, wall_ms=clock.now_ms
        )
    device_alerts = DeviceAlerts(config.gateway.name, store, gateway.alert_fanout)
    supervisor = Supervisor(gateway, store.minute_of_all)
    log.info("gatewayd started: %d devices, store %s", len(config.devices), worker.path)
    try:
        await _serve(gateway, writer, supervisor, device_alerts, stop, ready)
    finally:
        daemon_status.write(config.status_path, gateway.status().model_copy(update={"stopped": True}))
        links.close()
        try:
            await worker.run(Store.checkpoint)
        except StoreFault:
            pass
        await worker.close()
        log.info("gatewayd stopped: %d readings written in %d batches", gateway.writer.written, gateway.writer.batches)
    return gateway


async def _serve(
    gateway: Gateway,
    writer: Writer,
    supervisor: Supervisor,
    device_alerts: DeviceAlerts,
    stop: asyncio.Event,
    ready: asyncio.Future[Gateway] | None,
) -> None:
    """Every part as one task until `stop`; then the pollers first (each finishes the request
    in flight), the other parts after, and what is still queued goes to disk."""
    parts = {
        "mqtt": gateway.publisher,
        "detection": gateway.detection,
        "dashboard": gateway.dashboard,
        "metrics": gateway.metrics,
        "sparkplug": gateway.sparkplug,
    }
    async with asyncio.TaskGroup() as tasks:
        others = [
            tasks.create_task(writer.run(stop), name="store-writer"),
            tasks.create_task(supervisor.run(stop), name="supervisor"),
            tasks.create_task(device_alerts.run(stop, gateway.health, gateway.clock.now_ms), name="device-alerts"),
        ]
        others += [tasks.create_task(part.run(stop), name=name) for name, part in parts.items() if part is not None]
        polls = [tasks.create_task(p.run(stop), name=f"poll-{n}") for n, p in gateway.pollers.items()]
        service.notify("READY=1\nSTATUS=" + gateway.status_line())
        if ready is not None:
            ready.set_result(gateway)
        await stop.wait()
        service.notify("STOPPING=1")
        # A poller that hangs past its device's timeout is cancelled.
        grace = max(d.timeout_s for d in gateway.config.devices) + 1.0
        _, hung = await asyncio.wait(polls, timeout=grace)
        for t in hung:
            t.cancel()
        for task in others:
            await task
    await writer.flush()  # pollers are stopped: whatever is still queued goes to disk
