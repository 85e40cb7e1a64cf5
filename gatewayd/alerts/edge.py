"""The nodes' own detections as alerts: a critical one is an incident at once, no model needed.

One alert per channel while the node reports a severity for it: opened when a check fires,
raised to critical if it gets worse, closed when the node reports the channel clear. The open
ones are read back from the store at start, so a restarted gateway continues an ongoing
condition under the same id, and closes one that ended while it was down."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from gatewayd.acquisition.profiles.edge_node import EdgeEvent
from gatewayd.alerts.alert import Alert, AlertChange, AlertSink
from gatewayd.store.faults import StoreFault

if TYPE_CHECKING:
    from gatewayd.store.async_store import AsyncStore

log = logging.getLogger("gatewayd.daemon")

RANK = {"warning": 1, "critical": 2}


class EdgeAlerts:
    def __init__(self, gateway: str, store: AsyncStore, publish: AlertSink):
        self.gateway = gateway
        self.store = store
        self.publish = publish
        self.open: dict[tuple[str, str], dict] = {}  # (device, channel) -> {"id", "severity", "opened_ms"}
        self.loaded = False

    async def load(self) -> None:
        """Read the open edge alerts back (once the store can answer). Older gateways left
        several open per channel: the newest carries on, the others are closed now."""
        try:
            rows = await self.store.open_alerts("edge")
        except StoreFault:
            return  # tried again at the next event
        found: dict[tuple[str, str], dict] = {}
        for row in rows or []:
            key = (row["device"], (row["channels"] or [""])[0])
            if key in found:
                await self._close(key, found[key], row["opened_ms"], "superseded by a newer alert of the same channel")
            found[key] = {"id": row["id"], "severity": row["severity"], "opened_ms": row["opened_ms"]}
        for key, alert in found.items():
            newer = self.open.get(key)
            if newer is not None and newer["id"] != alert["id"]:  # raised again while the store could not say
                await self._close(key, alert, newer["opened_ms"], "superseded by a newer alert of the same channel")
        self.open = {**found, **self.open}
        self.loaded = True

    async def observe(self, device: str, ts_ms: int, events: list[EdgeEvent]) -> None:
        if not self.loaded:
            await self.load()
        for e in events:
            key = (device, e.channel)
            current = self.open.get(key)
            detail = {"checks": list(e.checks), "value": e.value, "source": "node"}
            if e.severity is None:
                if current is not None:
                    del self.open[key]
                    await self._close(key, current, ts_ms, "the node reports the channel clear", detail)
                continue
            if current is None:
                alert = Alert.new(
                    self.gateway,
                    device,
                    e.channel,
                    kind="edge",
                    severity=e.severity,
                    opened_ms=ts_ms,
                    channels=(e.channel,),
                    detail=detail,
                )
                self.open[key] = {"id": alert.id, "severity": e.severity, "opened_ms": ts_ms}
                await self.store.record_alert(alert)
                log.warning(
                    "%s/%s: node reports %s (%s), value %g",
                    device,
                    e.channel,
                    e.severity,
                    ", ".join(e.checks) or "no check",
                    e.value,
                )
                self.publish(alert)
            elif RANK[e.severity] > RANK.get(current["severity"], 0):
                current["severity"] = e.severity
                change = AlertChange(current["id"], device, "edge", severity=e.severity, detail=detail)
                await self.store.update_alert(change)
                log.warning(
                    "%s/%s: node now reports %s (%s), value %g",
                    device,
                    e.channel,
                    e.severity,
                    ", ".join(e.checks) or "no check",
                    e.value,
                )
                self.publish(change)

    async def _close(self, key: tuple[str, str], alert: dict, ts_ms: int, why: str, detail: dict | None = None) -> None:
        closed = AlertChange(alert["id"], key[0], "edge", closed_ms=ts_ms)
        await self.store.update_alert(closed)  # the stored detail stays the opening one
        log.info("%s/%s: alert %s closed: %s", key[0], key[1], alert["id"], why)
        self.publish(replace(closed, detail={**(detail or {}), "source": "node", "closed": why}))
