"""Prometheus metrics (prometheus-client) on their own port: what the daemon's status says, as
a scrape reads it. The collector reads the supervisor's latest status (taken on the event
loop once a second), never the live objects, so a scrape from the server's thread races with
nothing. Names and meanings: docs/metrics.md."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gatewayd.config import MetricsSection
from gatewayd.daemon_status import DaemonStatus

log = logging.getLogger("gatewayd.metrics")

STATES = ("connecting", "online", "degraded", "offline")


def families(status: DaemonStatus) -> Iterator[Metric]:
    """Every metric of one status."""
    up = GaugeMetricFamily("gatewayd_device_up", "1 while the device answers its polls", labels=["device"])
    state = GaugeMetricFamily(
        "gatewayd_device_state", "The device's health state (one of them is 1)", labels=["device", "state"]
    )
    polls = CounterMetricFamily("gatewayd_device_polls", "Successful polls", labels=["device"])
    readings = CounterMetricFamily("gatewayd_device_readings", "Readings taken", labels=["device"])
    failures = GaugeMetricFamily("gatewayd_device_consecutive_failures", "Failed polls in a row", labels=["device"])
    skipped = CounterMetricFamily(
        "gatewayd_device_skipped_ticks", "Poll ticks skipped by a slow cycle", labels=["device"]
    )
    for name, d in sorted(status.devices.items()):
        up.add_metric([name], 1.0 if d.state == "online" else 0.0)
        for s in STATES:
            state.add_metric([name, s], 1.0 if d.state == s else 0.0)
        polls.add_metric([name], d.polls)
        readings.add_metric([name], d.readings)
        failures.add_metric([name], d.consecutive_failures)
        skipped.add_metric([name], d.skipped_ticks)
    yield from (up, state, polls, readings, failures, skipped)

    w, store = status.writer, status.store
    yield CounterMetricFamily("gatewayd_readings_stored", "Readings written to the store", value=w.written)
    yield GaugeMetricFamily("gatewayd_reading_queue", "Readings waiting for the store", value=w.queued)
    evicted = CounterMetricFamily("gatewayd_store_evicted_rows", "Rows the disk budget evicted", labels=["kind"])
    for kind, n in sorted(w.evicted.items()):
        evicted.add_metric([kind], n)
    yield evicted
    yield GaugeMetricFamily(
        "gatewayd_store_writing", "1 while the store takes writes", value=1.0 if store.writing else 0.0
    )
    yield GaugeMetricFamily("gatewayd_store_bytes", "Bytes the store takes on disk", value=store.disk_bytes or 0)
    yield GaugeMetricFamily("gatewayd_store_budget_bytes", "The store's disk budget", value=store.budget_bytes)
    yield CounterMetricFamily("gatewayd_store_faults", "Times the store went degraded", value=store.faults)
    yield CounterMetricFamily(
        "gatewayd_store_readings_dropped",
        "Readings that could not wait for a degraded store",
        value=store.readings_dropped,
    )
    yield GaugeMetricFamily(
        "gatewayd_store_writes_waiting", "Alerts and events waiting in memory", value=store.writes_waiting
    )

    if status.mqtt is not None:
        m = status.mqtt
        yield GaugeMetricFamily(
            "gatewayd_mqtt_connected", "1 while connected to the broker", value=1.0 if m["connected"] else 0.0
        )
        yield CounterMetricFamily("gatewayd_mqtt_published", "Messages published", value=m["published"])
        yield GaugeMetricFamily("gatewayd_mqtt_queue", "Messages waiting in memory", value=m["queued"])
        yield CounterMetricFamily(
            "gatewayd_mqtt_backlogged", "Messages moved to the store's backlog", value=m["backlogged"]
        )
        yield CounterMetricFamily(
            "gatewayd_mqtt_dropped", "Routine messages dropped by a full queue", value=m["dropped"]
        )

    alerts = CounterMetricFamily("gatewayd_alerts_opened", "Alerts opened in this run", labels=["kind"])
    for kind, n in sorted(status.alerts_by_kind.items()):
        alerts.add_metric([kind], n)
    yield alerts

    if status.detection is not None:
        det = status.detection
        yield CounterMetricFamily("gatewayd_windows_scored", "Windows scored by the models", value=det.get("scored", 0))
        yield CounterMetricFamily("gatewayd_incidents", "Incidents the models opened", value=det.get("incidents", 0))
        version = GaugeMetricFamily(
            "gatewayd_model_version", "The scope's installed bundle version (0: none yet)", labels=["scope"]
        )
        for scope, model in sorted(det.get("models", {}).items()):
            version.add_metric([scope], model.get("version") or 0)
        yield version


class StatusCollector(Collector):
    def __init__(self, latest) -> None:  # latest: () -> DaemonStatus | None
        self.latest = latest

    def collect(self) -> Iterator[Metric]:
        status = self.latest()
        if status is not None:
            yield from families(status)


class MetricsServer:
    """Serves /metrics from a thread while the daemon runs."""

    def __init__(self, settings: MetricsSection, latest) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatusCollector(latest))
        self.port: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            server, thread = start_http_server(self.settings.port, self.settings.host, registry=self.registry)
        except OSError as exc:  # the port taken: the daemon goes on without metrics, and says so
            log.error("metrics not served on %s:%d: %s", self.settings.host, self.settings.port, exc)
            return
        self.port = server.server_port
        log.info("metrics on http://%s:%d/metrics", self.settings.host, self.port)
        try:
            await stop.wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, server.shutdown)
            server.server_close()
            thread.join(5)
