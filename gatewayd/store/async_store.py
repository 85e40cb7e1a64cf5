"""The store as the daemon's tasks see it: typed, awaitable calls that run on the store's one
worker thread (gatewayd/store/worker.py).

Each call says what it does while the store is degraded (a full or failed disk):
- alerts, anomaly windows and model events must not be lost: they wait in memory, in order,
  and are written when the store recovers (the call returns at once);
- other writes fail with StoreFault at once, and their callers decide (the MQTT backlog keeps alerts
  in memory, a dead letter is logged instead);
- reads are tried, and fail with StoreFault when the store cannot answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatewayd.alerts import commands
from gatewayd.alerts.alert import Alert, AlertChange
from gatewayd.store.database import Store
from gatewayd.store.worker import StoreWorker


class AsyncStore:
    def __init__(self, worker: StoreWorker):
        self.worker = worker

    # -- alerts and what goes with them: never lost ------------------------------------------

    async def record_alert(self, alert: Alert) -> None:
        await self.worker.write_kept(Store.record_alert, alert)

    async def update_alert(self, change: AlertChange) -> None:
        await self.worker.write_kept(Store.update_alert, change)

    async def protect(self, device: str, channel: str, start_ms: int, end_ms: int) -> None:
        """Keep the raw readings of an anomaly window from compaction and eviction."""
        await self.worker.write_kept(Store.protect, device, channel, start_ms, end_ms)

    async def record_model_event(self, body: dict[str, Any]) -> None:
        await self.worker.write_kept(Store.record_model_event, body)

    async def record_threshold_change(self, scope: str, old: float, new: float, reason: str) -> None:
        await self.worker.write_kept(Store.record_threshold_change, scope, old, new, reason)

    # -- reads ---------------------------------------------------------------------------------

    async def open_alerts(self, kind: str) -> list[dict]:
        return await self.worker.run(Store.open_alerts, kind)

    async def alerts(self, limit: int, device: str | None = None, *, kinds: Sequence[str] | None = None) -> list[dict]:
        return await self.worker.run(lambda store: store.alerts(limit, device, kinds=kinds))

    async def labels_after(self, label_id: int) -> list[tuple[int, str, str, str]]:
        return await self.worker.run(Store.labels_after, label_id)

    async def last_label_id(self) -> int:
        return await self.worker.run(Store.last_label_id)

    async def threshold_multipliers(self) -> dict[str, float]:
        return await self.worker.run(Store.threshold_multipliers)

    async def minute_of_all(self, minute_ms: int) -> dict[str, dict[str, dict]]:
        return await self.worker.run(Store.minute_of_all, minute_ms)

    async def backlog_take(self, limit: int) -> list[tuple[int, str, bytes, int, bool]]:
        return await self.worker.run(Store.backlog_take, limit)

    # -- writes -------------------------------------------------------------------------------

    async def apply(self, command: commands.Command | commands.Missed) -> str:
        """Operator feedback, applied exactly as `gatewayd alert ack|label|missed` applies it;
        tried whatever the store's state (an operator is told when it cannot be). Raises
        CommandError for an unknown alert, StoreFault when the store cannot take it."""
        return await self.worker.run(commands.apply, command)

    # StoreFault at once while the store is degraded:

    async def dead_letter(self, source: str, reason: str, payload: bytes | None) -> None:
        await self.worker.write(Store.dead_letter, source, reason, payload)

    async def backlog_push(self, messages: Sequence[tuple[str, bytes, int, bool, bool]], limit: int) -> int:
        return await self.worker.write(Store.backlog_push, messages, limit)

    async def backlog_delete(self, ids: Sequence[int]) -> None:
        await self.worker.write(Store.backlog_delete, ids)
