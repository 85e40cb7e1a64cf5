"""Drift alerts an operator can read: at most one open per device, naming every feature that moved.

The detectors' Page-Hinkley tests report changes window by window ("score up",
"pressure:mean down"). Here they become alerts of kind `drift`, severity `info`:

- A change on a device with no open drift alert opens one, id `<gateway>:<device>:drift:<opened_ms>`,
  whose detail lists every feature that moved with its direction and whose channels are those
  features' channels (the name before the first ':'; the combined score is no channel).
- Further changes while it is open update it (features added to its list); no other opens.
- It closes after `quiet_windows` scored windows of the device without a change, or when a newer
  model takes over the device (retraining is the usual remedy); the closed detail says why.
- After it closes, the device opens no new one for `holdoff_s` (monotonic time, so a wall-clock
  step neither shortens nor stretches it): changes meanwhile are counted and logged once, and
  the next alert's detail says how many there were. A restart forgets the hold-off.
- Drift alerts a previous run left open are read back: the newest of each device carries on
  under its id (older ones, as an older gateway left one per feature, are closed as superseded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gatewayd.alerts.alert import Alert, AlertChange, AlertSink, alert_id
from gatewayd.store.faults import StoreFault

if TYPE_CHECKING:
    from gatewayd.store.async_store import AsyncStore

log = logging.getLogger("gatewayd.detection")

LOAD_RETRY_S = 60.0  # open alerts not read (store degraded): tried again at most this often


def parse(change: str) -> tuple[str, str]:
    """ "pressure:mean down" -> ("pressure:mean", "down")."""
    feature, _, direction = change.rpartition(" ")
    return (feature, direction) if feature else (change, "")


def channel_of(feature: str) -> str | None:
    return None if feature == "score" else feature.split(":", 1)[0]


@dataclass
class DriftAlert:
    id: str
    device: str
    opened_ms: int
    changes: list[tuple[str, str]] = field(default_factory=list)  # (feature, direction), first seen first
    bundle: str | None = None
    last_change_ms: int | None = None
    events: int = 0  # changes folded in (a feature moving again counts again)
    quiet: int = 0  # scored windows since the last change
    extra: dict = field(default_factory=dict)  # more detail: held_off, continued (after a restart)

    @property
    def channels(self) -> list[str]:
        out: list[str] = []
        for feature, _ in self.changes:
            c = channel_of(feature)
            if c is not None and c not in out:
                out.append(c)
        return out

    def add(self, changes: list[tuple[str, str]], end_ms: int) -> list[tuple[str, str]]:
        """Fold in a window's changes; returns those not listed yet."""
        new = [c for c in changes if c not in self.changes]
        self.changes.extend(new)
        self.events += len(changes)
        self.last_change_ms = end_ms
        self.quiet = 0
        return new

    def detail(self, retrain: bool) -> dict:
        return {
            "source": "drift",
            "changes": [list(c) for c in self.changes],
            "channels": self.channels,
            "bundle": self.bundle,
            "events": self.events,
            "last_change_ms": self.last_change_ms,
            "retrain": retrain,
            **self.extra,
        }


def _stored_changes(detail: dict) -> list[tuple[str, str]]:
    """The changes of a stored drift alert: this module's list, or an older gateway's one change."""
    if isinstance(detail.get("changes"), list):
        pairs = [c for c in detail["changes"] if isinstance(c, list | tuple) and len(c) == 2]
        return [(str(f), str(d)) for f, d in pairs]
    if isinstance(detail.get("change"), str):
        return [parse(detail["change"])]
    return []


class DriftAlerts:
    def __init__(
        self,
        gateway: str,
        store: AsyncStore,
        publish: AlertSink,
        *,
        holdoff_s: float = 3600.0,
        quiet_windows: int = 120,
        retrain: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.gateway = gateway
        self.store = store
        self.publish = publish
        self.holdoff_s = holdoff_s
        self.quiet_windows = quiet_windows
        self.retrain = retrain
        self.clock = clock
        self.open: dict[str, DriftAlert] = {}  # device -> its open drift alert
        self.closed_at: dict[str, float] = {}  # device -> clock() when its last drift alert closed
        self.held_off: dict[str, int] = {}  # device -> changes not alerted in its current hold-off
        self.held_off_total = 0
        self.last_ms: dict[str, int] = {}  # device -> end of its last scored window
        self.versions: dict[str, int] = {}  # device -> version of the bundle scoring it
        self.loaded = False
        self.next_load = 0.0

    # -- the previous run's open alerts --------------------------------------------------------

    async def load(self) -> None:
        """Read the open drift alerts back; the store degraded leaves it for later."""
        try:
            rows = await self.store.open_alerts("drift")
        except StoreFault:
            self.next_load = self.clock() + LOAD_RETRY_S
            log.warning("open drift alerts not read (the store is degraded): tried again later")
            return
        by_device: dict[str, list[dict]] = {}
        for row in rows or []:  # oldest first
            by_device.setdefault(row["device"], []).append(row)
        for device, found in by_device.items():
            details = await self._details(device, len(found))
            newest = found[-1]
            current = self.open.get(device)  # opened in this run while the store could not say
            if current is None:
                alert = DriftAlert(newest["id"], device, newest["opened_ms"])
                for row in found:  # an older gateway's burst (one alert per feature) is one alert
                    if row["opened_ms"] == newest["opened_ms"]:
                        alert.changes.extend(
                            c for c in _stored_changes(details.get(row["id"], {})) if c not in alert.changes
                        )
                stored = details.get(newest["id"], {})
                alert.bundle = stored.get("bundle")
                alert.last_change_ms = stored.get("last_change_ms", newest["opened_ms"])
                alert.events = int(stored.get("events", len(alert.changes)))
                alert.extra = {**{k: stored[k] for k in ("held_off",) if k in stored}, "continued": True}
                if newest["id"] not in details:  # its detail is replaced at the next update: say so
                    alert.extra["earlier_changes"] = "not read after a restart"
                self.open[device] = alert
                log.info(
                    "%s: continuing the open drift alert %s (%s)",
                    device,
                    alert.id,
                    ", ".join(f"{f} {d}" for f, d in alert.changes) or "changes not read",
                )
                superseded, by = found[:-1], alert
            else:
                superseded, by = [r for r in found if r["id"] != current.id], current
            why = f"superseded by {by.id}"
            for row in superseded:
                closed_ms = max(by.opened_ms, row["opened_ms"])
                was = details.get(row["id"])  # None: not read, the stored detail stays as it is
                detail = None if was is None else {**was, "closed": why}
                closed = AlertChange(row["id"], device, "drift", closed_ms=closed_ms, detail=detail)
                await self.store.update_alert(closed)
                self.publish(replace(closed, detail=detail or {"source": "drift", "closed": why}))
            if superseded:
                log.info("%s: %d older open drift alert(s) closed, %s", device, len(superseded), why)
        self.loaded = True

    async def _details(self, device: str, n: int) -> dict[str, dict]:
        """The stored details of a device's newest drift alerts (open_alerts leaves them out)."""
        try:
            rows = await self.store.alerts(max(50, 2 * n), device, kinds=["drift"])
        except StoreFault:
            return {}
        return {r["id"]: r.get("detail") or {} for r in rows or []}

    # -- window by window ----------------------------------------------------------------------

    async def window(self, device: str, end_ms: int, changes: list[str], bundle: str | None = None) -> str | None:
        """One scored window of a device and its drift changes (maybe none). Returns the changes
        of a newly opened alert ("pressure:mean up, score up"), else None."""
        if not self.loaded and (changes or self.clock() >= self.next_load):
            await self.load()
        self.last_ms[device] = end_ms
        parsed = [parse(c) for c in changes]
        alert = self.open.get(device)
        if alert is not None:
            if not parsed:
                alert.quiet += 1
                if alert.quiet >= self.quiet_windows:
                    await self._close(alert, end_ms, f"no new drift for {alert.quiet} windows")
                return None
            new = alert.add(parsed, end_ms)
            alert.bundle = bundle or alert.bundle
            detail = alert.detail(self.retrain)
            await self.store.update_alert(AlertChange(alert.id, device, "drift", detail=detail))
            self.publish(AlertChange(alert.id, device, "drift", channels=tuple(alert.channels), detail=detail))
            added = ", ".join(f"{f} {d}" for f, d in new)
            log.info(
                "%s: drift alert %s goes on: %s",
                device,
                alert.id,
                f"{added} added" if new else "the same features moved again",
            )
            return None
        if not parsed:
            return None
        closed = self.closed_at.get(device)
        if closed is not None and self.clock() - closed < self.holdoff_s:
            if not self.held_off.get(device):
                left = self.holdoff_s - (self.clock() - closed)
                log.info(
                    "%s: drift in %s, in the hold-off after its last drift alert: not alerted "
                    "(%.0f s left; changes until then are counted only)",
                    device,
                    ", ".join(changes),
                    left,
                )
            self.held_off[device] = self.held_off.get(device, 0) + len(parsed)
            self.held_off_total += len(parsed)
            return None
        alert = DriftAlert(alert_id(self.gateway, device, "drift", end_ms), device, end_ms, bundle=bundle)
        alert.add(parsed, end_ms)
        held = self.held_off.pop(device, 0)
        if held:
            alert.extra["held_off"] = held  # changes seen in the hold-off before it, not alerted
        self.open[device] = alert
        opened = Alert(alert.id, device, tuple(alert.channels), "info", "drift", end_ms, alert.detail(self.retrain))
        await self.store.record_alert(opened)
        named = ", ".join(f"{f} {d}" for f, d in alert.changes)
        log.warning("%s: drift in %s (alert %s)", device, named, alert.id)
        self.publish(opened)
        return named

    async def model_loaded(self, devices: list[str], version: int, bundle: str) -> None:
        """A bundle took over these devices: a newer one than they had in this run closes their
        drift alerts (its drift tests start afresh). The first load of a run and a rollback do not."""
        for device in devices:
            before = self.versions.get(device)
            self.versions[device] = version
            alert = self.open.get(device)
            if alert is not None and before is not None and version > before:
                await self._close(
                    alert, max(self.last_ms.get(device, 0), alert.opened_ms), f"a new model took over: {bundle}"
                )

    async def _close(self, alert: DriftAlert, closed_ms: int, why: str) -> None:
        del self.open[alert.device]
        self.closed_at[alert.device] = self.clock()
        self.held_off.pop(alert.device, None)
        closed = AlertChange(
            alert.id, alert.device, "drift", closed_ms=closed_ms, detail={**alert.detail(self.retrain), "closed": why}
        )
        await self.store.update_alert(closed)
        log.info("%s: drift alert %s closed: %s", alert.device, alert.id, why)
        self.publish(closed)
