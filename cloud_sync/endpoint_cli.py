"""The endpoint's side of `cloud-sync`: serve, token, retrain, worker, jobs, fleet, prune.
Each takes `--data` (the embedded default's folder) and `--database` (a PostgreSQL URL a fleet
shares; then `--data` holds nothing another server needs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gatewayd.cli.parsers import add_command
from gatewayd.models.scaling import SCALE_FLOOR

COMMANDS = ("serve", "token", "retrain", "worker", "jobs", "fleet", "prune")


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder of the endpoint (SQLite, bundles)")
    parser.add_argument(
        "--database",
        default=os.environ.get("CLOUD_SYNC_DATABASE") or None,
        metavar="URL",
        help="postgresql://... shared by every server and worker (default: SQLite in --data; "
        "environment: CLOUD_SYNC_DATABASE)",
    )


def add_endpoint_commands(sub: argparse._SubParsersAction, texts: dict) -> None:
    serve = add_command(sub, "serve", texts)
    _where(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port", type=int, default=8090, help="port (default: %(default)s, beside the dashboard's 8080)"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes (several need --database; default: %(default)s)"
    )
    serve.add_argument(
        "--max-inflight", type=int, default=4, help="batches in work per process before 503 (default: %(default)s)"
    )
    serve.add_argument(
        "--pool-size", type=int, default=8, help="database connections per process (default: %(default)s)"
    )

    token = add_command(sub, "token", texts)
    token.add_argument("gateway", nargs="?")
    _where(token)
    action = token.add_mutually_exclusive_group()
    action.add_argument("--revoke", action="store_true", help="revoke every token of GATEWAY")
    action.add_argument("--list", action="store_true", help="list gateways with live tokens")

    retrain = add_command(sub, "retrain", texts)
    _where(retrain)
    scope = retrain.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--gateway",
        action="append",
        help="a gateway's data (repeat for a segment of gateways); the bundle is published for each",
    )
    scope.add_argument(
        "--fleet", action="store_true", help="one job per scope: every device of every gateway, and a global model"
    )
    retrain.add_argument(
        "--device", action="append", help="only these devices (repeatable); one device: the bundle is named after it"
    )
    retrain.add_argument("--name", help="bundle name (default: the device, or 'global')")
    retrain.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM) to sign with")
    retrain.add_argument("--trees", type=int, default=100)
    retrain.add_argument(
        "--scale-floor",
        type=float,
        default=SCALE_FLOOR,
        help="a feature's spread is at least this share of its level (default: %(default)s)",
    )
    retrain.add_argument(
        "--queue",
        default=os.environ.get("CLOUD_SYNC_QUEUE") or None,
        metavar="URL",
        help="redis://... to send the jobs to for `cloud-sync worker` (default: run them here; "
        "environment: CLOUD_SYNC_QUEUE)",
    )

    worker = add_command(sub, "worker", texts)
    _where(worker)
    worker.add_argument("--queue", default=os.environ.get("CLOUD_SYNC_QUEUE") or None, metavar="URL", required=False)
    worker.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM) to sign with")
    worker.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="worker processes (default: the CPU count)"
    )
    worker.add_argument(
        "--dead-worker-s",
        type=float,
        default=60.0,
        help="a worker silent this long is dead and its jobs go to another (default: %(default)s)",
    )

    jobs = add_command(sub, "jobs", texts)
    _where(jobs)
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")

    fleet = add_command(sub, "fleet", texts)
    _where(fleet)
    fleet.add_argument(
        "--silent-after",
        type=float,
        default=30.0,
        metavar="MINUTES",
        help="flag gateways with no upload for this long (default: %(default)s)",
    )
    fleet.add_argument("--json", action="store_true", help="one JSON object per line")

    prune = add_command(sub, "prune", texts)
    _where(prune)
    prune.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="KIND=DAYS",
        help="days a kind is kept after it arrived (repeatable; defaults: summary=400 health=30 window=400 "
        "model_report=90; other kinds are kept)",
    )


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cloud_sync.server import open_parts

    return open_parts(args.data, args.database, pool_size=2)


def _time(ms: int | None) -> str:
    return "-" if not ms else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def run_endpoint_command(args: argparse.Namespace) -> int:
    from cloud_sync.storage import StorageUnavailable

    try:
        return COMMAND_RUNNERS[args.command](args)
    except StorageUnavailable as exc:
        return _error(f"database unavailable: {exc}")
    except ValueError as exc:
        return _error(str(exc))


def _serve(args: argparse.Namespace) -> int:
    from cloud_sync.server import Limits, ServeSettings, serve

    settings = ServeSettings(
        args.data,
        args.database,
        args.host,
        args.port,
        args.workers,
        Limits(max_inflight=args.max_inflight),
        pool_size=args.pool_size,
    )
    serve(settings)
    return 0


def _token(args: argparse.Namespace) -> int:
    storage, _, tokens = _open(args)
    try:
        if args.list:
            for row in storage.token_list():
                print(f"{row['gateway']}\t{row['tokens']} token(s), last issued {_time(row['last_issued_ms'])}")
            return 0
        if not args.gateway:
            return _error("name the gateway (or --list)")
        if args.revoke:
            print(f"revoked {tokens.revoke(args.gateway)} token(s) of {args.gateway}", file=sys.stderr)
            return 0
        print(tokens.issue(args.gateway))
        return 0
    finally:
        storage.close()


def _retrain(args: argparse.Namespace) -> int:
    from cloud_sync.bundles import FLEET
    from cloud_sync.jobs import Scope, fleet_scopes, run_job, submit

    if not args.key.exists():
        return _error(f"no signing key at {args.key} (gatewayd model keygen makes one)")
    storage, bundles, _ = _open(args)
    try:
        if args.fleet:
            scopes = fleet_scopes(storage, trees=args.trees, scale_floor=args.scale_floor)
            if not scopes:
                return _error("no summaries uploaded yet: nothing to train on")
        else:
            gateways = list(dict.fromkeys(args.gateway))
            name = args.name or (args.device[0] if args.device and len(args.device) == 1 else "global")
            scopes = [Scope(name, gateways, args.device, gateways, args.trees, args.scale_floor)]
        print(f"{len(scopes)} job(s)" + (f" to {args.queue}" if args.queue else ""), file=sys.stderr)
        ids = submit(
            storage,
            scopes,
            queue=args.queue,
            run_here=lambda job: run_job(storage, bundles, args.key, job, lambda t: print(t, file=sys.stderr)),
            progress=lambda t: print(t, file=sys.stderr),
        )
        if args.queue:
            print(f"queued {len(ids)} job(s); `cloud-sync jobs` shows their progress")
            return 0
        failed = [j for j in (storage.job(i) for i in ids) if j and j["state"] != "done"]
        for j in (storage.job(i) for i in ids):
            if j and j["state"] == "done":
                scope = j["scope"]
                where = "the fleet" if scope["publish_to"] == [FLEET] else ", ".join(scope["publish_to"])
                print(f"published {scope['name']} v{j['version']} for {where}")
        for j in failed:
            print(f"error: {j['scope']['name']}: {j['error']}", file=sys.stderr)
        return 2 if failed else 0
    finally:
        storage.close()


def _worker(args: argparse.Namespace) -> int:
    if not args.queue:
        return _error("--queue redis://... is required (or CLOUD_SYNC_QUEUE)")
    if not args.key.exists():
        return _error(f"no signing key at {args.key}")
    env = {
        **os.environ,
        "CLOUD_SYNC_QUEUE": args.queue,
        "CLOUD_SYNC_DATA": str(args.data),
        "CLOUD_SYNC_DATABASE": args.database or "",
        "CLOUD_SYNC_KEY": str(args.key.resolve()),
        "CLOUD_SYNC_DEAD_MS": str(int(args.dead_worker_s * 1000)),
        "dramatiq_queue_prefetch": "1",  # a process holds one job: the others stay free for other workers
        # one core per process: training's numeric libraries would otherwise each start a thread per core
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "cloud_sync.job_worker",
        "--processes",
        str(args.processes),
        "--threads",
        "1",
        "--queues",
        "retrain",
    ]
    os.execvpe(command[0], command, env)
    return 0  # not reached


def _jobs(args: argparse.Namespace) -> int:
    storage, _, _ = _open(args)
    try:
        rows = storage.jobs(args.limit)
    finally:
        storage.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs")
    for row in rows:
        outcome = f"v{row['version']}" if row["version"] else (row["error"] or "")
        print(
            f"{row['id']:<40} {row['state']:<8} tries {row['attempts']}  {_time(row['started_ms'])}  "
            f"{row['worker'] or '-':<20} {outcome}"
        )
    return 0


def _fleet(args: argparse.Namespace) -> int:
    storage, _, _ = _open(args)
    try:
        rows = storage.fleet()
    finally:
        storage.close()
    now = time.time() * 1000
    silent = 0
    for row in rows:
        row["silent"] = now - row["last_upload_ms"] > args.silent_after * 60_000
        silent += row["silent"]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"{len(rows)} gateway(s), {silent} silent for more than {args.silent_after:g} min")
    for row in rows:
        models = ", ".join(f"{n} v{v}" for n, v in sorted(row["models"].items())) or "-"
        backlog = "-" if row["backlog"] is None else str(row["backlog"])
        flag = "  SILENT" if row["silent"] else ""
        print(
            f"{row['gateway']:<24} last upload {_time(row['last_upload_ms'])}  backlog {backlog:>6}  "
            f"alerts open {row['alerts_open']:>3}  models {models}{flag}"
        )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from cloud_sync.storage.base import DEFAULT_RETENTION_DAYS

    retention = dict(DEFAULT_RETENTION_DAYS)
    for item in args.keep:
        kind, _, days = item.partition("=")
        if not days.isdigit():
            return _error(f"--keep takes KIND=DAYS, not {item!r}")
        retention[kind] = int(days)
    storage, _, _ = _open(args)
    try:
        deleted = storage.prune(retention, int(time.time() * 1000))
    finally:
        storage.close()
    for what, count in deleted.items():
        print(f"{what}: {count} deleted")
    return 0


COMMAND_RUNNERS = {
    "serve": _serve,
    "token": _token,
    "retrain": _retrain,
    "worker": _worker,
    "jobs": _jobs,
    "fleet": _fleet,
    "prune": _prune,
}
