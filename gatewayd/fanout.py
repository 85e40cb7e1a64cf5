"""Where readings and alerts go once they exist.

A device's poll (one batch of readings, one timestamp) goes to the store's queue first (it
waits when the store falls behind), then to detection's windows and to MQTT telemetry, which
never hold it up (and to Sparkplug B, when on). An alert, or a change of one, goes to MQTT; an opened one is counted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gatewayd.acquisition.poller import Poller
from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.detection.stage import DetectionStage
from gatewayd.publishing.mqtt import Publisher
from gatewayd.store.database import Reading

if TYPE_CHECKING:
    from gatewayd.publishing.sparkplug.node import SparkplugNode
from gatewayd.store.writer import ReadingQueue


class ReadingFanout:
    """The pollers' sink: `await fanout(batch)`."""

    def __init__(
        self,
        queue: ReadingQueue,
        detection: DetectionStage | None,
        publisher: Publisher | None,
        pollers: Mapping[str, Poller],
        sparkplug: SparkplugNode | None = None,
    ):
        self.queue = queue
        self.detection = detection
        self.publisher = publisher
        self.pollers = pollers  # for the units telemetry names
        self.sparkplug = sparkplug

    async def __call__(self, batch: list[Reading]) -> None:
        await self.queue.put(batch)  # waits when the store falls behind (sheds when it is down)
        if not batch:
            return
        device, ts_ms = batch[0].device, batch[0].ts_ms
        values = {r.channel: r.value for r in batch}
        if self.detection is not None:
            self.detection.offer(device, ts_ms, values)
        if self.publisher is not None:
            self.publisher.telemetry(device, ts_ms, values, self.pollers[device].health.units)
        if self.sparkplug is not None:
            self.sparkplug.data(device, ts_ms, values)


class AlertFanout:
    """The alert producers' sink (edge alerts, detection, drift): `fanout(alert)`."""

    def __init__(self, publisher: Publisher | None):
        self.publisher = publisher
        self.opened = 0
        self.by_kind: dict[str, int] = {}

    def __call__(self, alert: Alert | AlertChange) -> None:
        if isinstance(alert, Alert):
            self.opened += 1
            self.by_kind[alert.kind] = self.by_kind.get(alert.kind, 0) + 1
        if self.publisher is not None:
            self.publisher.alert(alert)
