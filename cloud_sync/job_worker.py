"""The module Dramatiq's worker processes import (`cloud-sync worker` starts them): the broker
and the retraining actor, configured from the environment `cloud-sync worker` sets."""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq

from cloud_sync.bundles import open_bundles
from cloud_sync.jobs import ACTOR_NAME, QUEUE_NAME, redis_broker, run_job
from cloud_sync.storage import open_storage

dramatiq.set_broker(redis_broker(os.environ["CLOUD_SYNC_QUEUE"], dead_worker_ms=int(os.environ["CLOUD_SYNC_DEAD_MS"])))
_DATA = Path(os.environ["CLOUD_SYNC_DATA"])
_parts: dict[str, object] = {}


def _open():  # type: ignore[no-untyped-def]
    """Storage opened once per worker process, on its first job (not before the fork)."""
    if not _parts:
        storage = open_storage(_DATA, os.environ.get("CLOUD_SYNC_DATABASE") or None, pool_size=2)
        _parts.update(storage=storage, bundles=open_bundles(_DATA, storage))
    return _parts["storage"], _parts["bundles"]


@dramatiq.actor(
    actor_name=ACTOR_NAME,
    queue_name=QUEUE_NAME,
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=3_600_000,
)
def retrain_scope(job: str) -> None:
    storage, bundles = _open()
    run_job(storage, bundles, Path(os.environ["CLOUD_SYNC_KEY"]), job)  # type: ignore[arg-type]
