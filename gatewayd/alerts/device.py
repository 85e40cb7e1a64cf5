"""Devices that go offline as alerts: kind `device`, severity `warning`, opened when a
device's health turns `offline` (after several failed polls in a row, so one lost answer
raises nothing) and closed when it is back online. Published, stored and uploaded like every
alert. The open ones are read back at start: a device still down continues its alert, one
that came back while the gateway was down has it closed at its first good poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gatewayd.acquisition.poller import DeviceHealth
from gatewayd.alerts.alert import Alert, AlertChange, AlertSink
from gatewayd.store.faults import StoreFault

if TYPE_CHECKING:
    from gatewayd.store.async_store import AsyncStore

log = logging.getLogger("gatewayd.daemon")

KIND = "device"
SUBJECT = "offline"


class DeviceAlerts:
    def __init__(self, gateway: str, store: AsyncStore, publish: AlertSink):
        self.gateway = gateway
        self.store = store
        self.publish = publish
        self.open: dict[str, str] = {}  # device -> id of its open alert
        self.loaded = False

    async def run(
        self,
        stop: asyncio.Event,
        health: Callable[[], Mapping[str, DeviceHealth]],
        now_ms: Callable[[], int],
        period_s: float = 1.0,
    ) -> None:
        """A task of its own: it waits on the store, which the supervisor must never do."""
        while not stop.is_set():
            try:
                await self.check(health(), now_ms())
            except Exception:  # a bug here must not end the daemon's task group
                log.exception("device alerts not checked")
            try:
                await asyncio.wait_for(stop.wait(), period_s)
            except TimeoutError:
                pass

    async def check(self, health: Mapping[str, DeviceHealth], now_ms: int) -> None:
        """Once a second or so, with every device's health."""
        if not self.loaded:
            await self._load(now_ms)
        for device, h in health.items():
            current = self.open.get(device)
            if h.state == "offline" and current is None:
                detail = {"source": "gateway", "last_error": h.last_error, "failures": h.consecutive_failures}
                alert = Alert.new(
                    self.gateway,
                    device,
                    SUBJECT,
                    kind=KIND,
                    severity="warning",
                    opened_ms=now_ms,
                    channels=(),
                    detail=detail,
                )
                self.open[device] = alert.id
                await self.store.record_alert(alert)
                log.warning("%s: offline (%s): alert %s", device, h.last_error, alert.id)
                self.publish(alert)
            elif h.state == "online" and current is not None:
                del self.open[device]
                closed = AlertChange(
                    current, device, KIND, closed_ms=now_ms, detail={"source": "gateway", "closed": "back online"}
                )
                await self.store.update_alert(closed)
                log.info("%s: back online: alert %s closed", device, current)
                self.publish(closed)

    async def _load(self, now_ms: int) -> None:
        try:
            rows = await self.store.open_alerts(KIND)
        except StoreFault:
            return  # tried again at the next check; meanwhile new ones open as they come
        found: dict[str, dict] = {}
        for row in rows:  # oldest first: of two for one device, the newer goes on
            older = found.get(row["device"])
            if older is not None:
                await self._supersede(older, row["opened_ms"])
            found[row["device"]] = row
        for device, row in found.items():
            newer = self.open.get(device)  # opened in this run while the store could not say
            if newer is not None and newer != row["id"]:
                await self._supersede(row, now_ms)
            else:
                self.open[device] = row["id"]
        self.loaded = True

    async def _supersede(self, row: dict, closed_ms: int) -> None:
        await self.store.update_alert(
            AlertChange(row["id"], row["device"], KIND, closed_ms=closed_ms, detail={"closed": "superseded"})
        )
