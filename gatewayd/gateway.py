"""What a running daemon exposes to its callers (CLI, demo, dashboard, tests): its parts, its
progress for the watchdog, and its status as `gatewayd status` shows it (status.json)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatewayd.acquisition.poller import DeviceHealth, Poller
from gatewayd.clock import WallClock, boot_id, now_ms
from gatewayd.config import Config
from gatewayd.daemon_status import ClockStatus, DaemonStatus, DeviceStatus, StoreStatus, WriterStatus
from gatewayd.detection.stage import DetectionStage
from gatewayd.fanout import AlertFanout
from gatewayd.publishing.mqtt import Publisher
from gatewayd.store.worker import StoreWorker
from gatewayd.store.writer import WriterStats

if TYPE_CHECKING:
    from gatewayd.dashboard.server import Dashboard
    from gatewayd.publishing.metrics import MetricsServer
    from gatewayd.publishing.sparkplug.node import SparkplugNode


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
    alert_fanout: AlertFanout = field(default_factory=lambda: AlertFanout(None))
    metrics: MetricsServer | None = None
    sparkplug: SparkplugNode | None = None
    last_status: DaemonStatus | None = None  # the supervisor's latest, for readers off the loop

    @property
    def alerts(self) -> int:
        """Alerts opened in this run."""
        return self.alert_fanout.opened

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
            ts_ms=now_ms(),
            monotonic_s=time.monotonic(),
            boot_id=boot_id(),
            pid=os.getpid(),
            devices={
                name: DeviceStatus(
                    state=p.health.state,
                    consecutive_failures=p.health.consecutive_failures,
                    last_error=p.health.last_error,
                    polls=p.health.polls,
                    readings=p.health.readings,
                    skipped_ticks=p.skipped_ticks,
                )
                for name, p in self.pollers.items()
            },
            writer=WriterStatus(
                written=self.writer.written,
                batches=self.writer.batches,
                queued=self.writer.queued,
                evicted=dict(self.writer.evicted),
                compacted_blocks=self.writer.compacted,
            ),
            store=StoreStatus(
                **self.worker.status(),
                disk_bytes=self.worker.disk_bytes(),
                budget_bytes=int(self.config.store.disk_budget_mb * 1e6),
            ),
            clock=ClockStatus(**self.clock.status()),
            mqtt=None
            if self.publisher is None
            else {
                "connected": self.publisher.connected,
                "published": self.publisher.published,
                "queued": self.publisher.queue.qsize(),
                "backlogged": self.publisher.backlogged,
                "dropped": self.publisher.dropped,
            },
            alerts=self.alerts,
            alerts_by_kind=dict(self.alert_fanout.by_kind),
            detection=None if self.detection is None else self.detection.status(),
        )

    def status_line(self) -> str:
        states = [h.state for h in self.health().values()]
        online = states.count("online")
        line = (
            f"{online}/{len(states)} devices online, {self.writer.written} readings stored, {self.writer.queued} queued"
        )
        state, why = self.worker.state()
        if state != "ok":
            line = f"STORE {state.upper().replace('_', ' ')}: {why}; " + line
            if self.worker.health.readings_dropped:
                line += f", {self.worker.health.readings_dropped} readings dropped"
        return line
