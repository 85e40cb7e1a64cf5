"""What the dashboard reads of the running daemon. `gatewayd.gateway.Gateway` is one; the
dashboard names only this, so the daemon imports the dashboard and not the other way round."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gatewayd.acquisition.poller import Poller
    from gatewayd.daemon_status import DaemonStatus
    from gatewayd.detection.stage import DetectionStage
    from gatewayd.store.worker import StoreWorker
    from gatewayd.store.writer import WriterStats


class RunningGateway(Protocol):
    pollers: dict[str, Poller]
    writer: WriterStats
    worker: StoreWorker
    detection: DetectionStage | None

    @property
    def alerts(self) -> int: ...

    def status(self) -> DaemonStatus: ...
