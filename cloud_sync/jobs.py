"""Retraining as jobs: one per model scope (a device of a gateway, a segment of gateways, the
global model of the fleet), recorded in the storage (`cloud-sync jobs` shows them) and run in
this process (the embedded default) or sent to a queue that `cloud-sync worker` processes on
any number of machines take from.

The queue is Dramatiq on Redis: a message is acknowledged only after its job ran, a worker
that dies (killed, machine lost) stops sending heartbeats and its messages go back on the
queue for another worker, a failing job is retried with backoff, and a worker is a plain
process per core, which CPU-bound training needs (threads would share one interpreter lock).
Celery does the same with far more to configure; RQ does not re-run a killed worker's job on
its own; Ray is a cluster to run, not a queue. The job itself is idempotent: a job run twice
publishes one bundle version (`retrain.retrain`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cloud_sync.bundles import FLEET, BundleStore
from cloud_sync.storage import Storage
from gatewayd.clock import now_ms
from gatewayd.models.scaling import SCALE_FLOOR

log = logging.getLogger("cloud_sync.jobs")
QUEUE_NAME = "retrain"
ACTOR_NAME = "retrain_scope"


@dataclass(frozen=True)
class Scope:
    """What one job trains: whose data, which devices, under what name, published where."""

    name: str
    gateways: list[str]
    devices: list[str] | None
    publish_to: list[str]
    trees: int = 100
    scale_floor: float = SCALE_FLOOR

    def describe(self) -> str:
        who = "the fleet" if self.publish_to == [FLEET] else "+".join(self.gateways)
        return f"{self.name} for {who}" + (f" ({', '.join(self.devices)})" if self.devices else "")


def fleet_scopes(
    storage: Storage, segments: Sequence[Sequence[str]] = (), trees: int = 100, scale_floor: float = SCALE_FLOOR
) -> list[Scope]:
    """Every device of every gateway that uploaded summaries, each segment, and the global model."""
    devices = storage.summary_devices()
    scopes = [Scope(d, [g], [d], [g], trees, scale_floor) for g, names in sorted(devices.items()) for d in names]
    for segment in segments:
        scopes.append(Scope("segment-" + "-".join(segment), list(segment), None, list(segment), trees, scale_floor))
    if devices:
        scopes.append(Scope("global", sorted(devices), None, [FLEET], trees, scale_floor))
    return scopes


def job_id(run: str, scope: Scope) -> str:
    digest = hashlib.sha256(json.dumps(asdict(scope), sort_keys=True).encode()).hexdigest()[:12]
    return f"{run}:{scope.name}:{digest}"


def run_job(
    storage: Storage, bundles: BundleStore, key_path: Path, job: str, progress: Callable[[str], None] = lambda _: None
) -> int | None:
    """Run a recorded job here; its state, attempts and outcome go to the storage."""
    from cloud_sync.retrain import retrain
    from gatewayd.models.bundle import BundleError
    from gatewayd.models.training import TrainingError

    record = storage.job(job)
    if record is None:
        raise KeyError(f"no job {job}")
    if record["state"] == "done":
        return record["version"]
    scope = Scope(**record["scope"])
    storage.job_started(job, f"{socket.gethostname()}:{os.getpid()}", now_ms())
    try:
        result = retrain(
            storage,
            bundles,
            key_path,
            name=scope.name,
            gateways=scope.gateways,
            devices=scope.devices,
            publish_to=scope.publish_to,
            trees=scope.trees,
            scale_floor=scope.scale_floor,
            job_id=job,
            progress=progress,
        )
    except (ValueError, TrainingError, BundleError) as exc:  # the data, not the worker: no retry
        storage.job_finished(job, now_ms(), version=None, error=str(exc))
        return None
    storage.job_finished(job, now_ms(), version=result.version, error=None)
    return result.version


def submit(
    storage: Storage,
    scopes: list[Scope],
    *,
    queue: str | None,
    run_here: Callable[[str], int | None],
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Record a job per scope; send each to the queue, or run it here when there is none."""
    run = f"r{now_ms()}"
    ids = []
    broker = redis_broker(queue) if queue else None
    for scope in scopes:
        job = job_id(run, scope)
        storage.create_job(job, asdict(scope), now_ms())
        ids.append(job)
        if broker is not None:
            import redis

            try:
                broker.enqueue(_message(job))
            except redis.RedisError as exc:  # the job stays recorded as queued; run it again
                raise ValueError(f"the queue at {queue} cannot be reached: {exc}") from None
            progress(f"queued {job}: {scope.describe()}")
        else:
            version = run_here(job)
            progress(f"{scope.describe()}: " + (f"v{version}" if version else f"failed: {storage.job(job)['error']}"))  # type: ignore[index]
    return ids


def redis_broker(url: str, *, dead_worker_ms: int = 60_000):  # type: ignore[no-untyped-def]
    from dramatiq.brokers.redis import RedisBroker

    # Maintenance (moving a dead worker's messages back to the queue) on one command in ten:
    # the queue holds one message per scope, so the check is cheap and a dead worker's jobs
    # come back within a few polls of its heartbeat timing out.
    return RedisBroker(url=url, heartbeat_timeout=dead_worker_ms, maintenance_chance=100_000)


def _message(job: str):  # type: ignore[no-untyped-def]
    import dramatiq

    return dramatiq.Message(queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(job,), kwargs={}, options={})
